"""On a mixture with known, unequal component sizes, likelihoods rank the components."""

import numpy as np
import pytest
from scipy.stats import spearmanr

import dequity.pipeline.projection
from dequity import DequityError, cluster, project, scaled_likelihood
from dequity.pipeline.projection import projection_params

SIZES = [400, 200, 120, 60, 30, 15]


def mixture(seed: int = 0, dim: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian components of SIZES samples each; returns vectors and component ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (len(SIZES), dim))
    vectors, components = [], []
    for i, size in enumerate(SIZES):
        spread = rng.uniform(0.1, 0.3)
        vectors.append(centres[i] + rng.normal(0.0, spread, (size, dim)))
        components += [i] * size
    order = rng.permutation(sum(SIZES))
    return np.concatenate(vectors)[order], np.array(components)[order]


@pytest.mark.parametrize("projection", ["pca", "opentsne"])
def test_default_clustering_ranks_components_by_frequency(projection):
    vectors, components = mixture()
    labels = cluster(project(vectors, projection), "hdbscan")
    likelihood = scaled_likelihood(labels)
    mean_per_component = [likelihood[components == i].mean() for i in range(len(SIZES))]
    rho = spearmanr(mean_per_component, SIZES).statistic
    assert rho == pytest.approx(1.0)
    assert np.mean(labels < 0) < 0.05
    # the largest component is the most likely; the smallest gets about 15/400
    assert mean_per_component[0] == pytest.approx(1.0, abs=0.05)
    assert mean_per_component[-1] < 0.1


@pytest.mark.slow
def test_paper_configuration_depends_on_the_tsne_scale():
    """The paper's DBSCAN eps is tied to the t-SNE output scale, which grows with n."""
    vectors, _ = mixture(seed=1)
    points = project(vectors, "tsne")
    assert points.shape == (len(vectors), 3)
    assert np.ptp(points, axis=0).min() > 20  # far wider than eps
    labels = cluster(points, "dbscan", eps=2.0, min_samples=10)
    assert (labels == -1).all()
    # the authors' noise policy then makes every sample equally likely
    assert (scaled_likelihood(labels, noise="cluster") == 1.0).all()


def test_pca_caps_components_to_sample_count():
    vectors = np.random.default_rng(0).normal(size=(20, 64))
    assert project(vectors, "pca").shape == (20, 20)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: projection_params("umap"), "projection must be one of"),
        (lambda: projection_params("pca", {"perplexity": 5}), "unknown projection_kwargs"),
        (lambda: cluster(np.zeros((50, 2)), "kmeans"), "clustering must be one of"),
        (lambda: cluster(np.zeros((50, 2)), "dbscan", eps=-1.0), "eps must be"),
        (lambda: cluster(np.zeros((50, 2)), "hdbscan", min_cluster_size=1), "min_cluster_size"),
        (lambda: cluster(np.zeros((50, 2)), "hdbscan", radius=3), "unknown clustering_kwargs"),
        (lambda: cluster(np.zeros((5, 2)), "hdbscan"), "fewer than the 10"),
    ],
)
def test_parameters_are_validated_at_the_door(call, message):
    with pytest.raises(DequityError, match=message):
        call()


def test_pca_fitted_on_a_subsample_matches_the_full_fit():
    vectors, _ = mixture(seed=2)
    full = project(vectors, "pca", n_components=5)
    sub = dequity.pipeline.projection._pca(vectors, 5, fit_samples=500, random_state=0)[0]
    # the same subspace up to sign: each axis correlates almost perfectly with its twin
    corr = [abs(np.corrcoef(full[:, i], sub[:, i])[0, 1]) for i in range(5)]
    assert min(corr) > 0.99


def test_hdbscan_fitted_on_a_subsample_keeps_the_ranking():
    """Above fit_samples, HDBSCAN runs on a subsample and the rest join their nearest point."""
    vectors, components = mixture(seed=3)
    points = project(vectors, "pca")
    labels = cluster(points, "hdbscan", fit_samples=300)
    likelihood = scaled_likelihood(labels)
    mean_per_component = [likelihood[components == i].mean() for i in range(len(SIZES))]
    assert spearmanr(mean_per_component, SIZES).statistic == pytest.approx(1.0)
    # sizes are counted over all points: the largest component holds about 400
    assert np.bincount(labels[labels >= 0]).max() == pytest.approx(400, abs=20)
    with pytest.raises(DequityError, match="fit_samples"):
        cluster(points, "hdbscan", fit_samples=5)


@pytest.mark.parametrize("seed", [0, 1])
def test_hdbscan_partitions_are_those_of_its_default_tree(seed):
    """The spanning tree dequity builds (Prim's) cuts the mixture as HDBSCAN's default does."""
    import hdbscan
    from sklearn.metrics import adjusted_rand_score

    vectors, _ = mixture(seed=seed)
    noisy = np.random.default_rng(seed).normal(0.0, 1.5, (40, vectors.shape[1]))
    points = project(np.concatenate([vectors, noisy]), "pca")
    labels = cluster(points, "hdbscan")
    default = hdbscan.HDBSCAN(min_cluster_size=10, min_samples=1).fit_predict(points)
    assert adjusted_rand_score(default, labels) == 1.0
    assert np.array_equal(labels < 0, default < 0)
