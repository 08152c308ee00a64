"""Tests of the k-nearest-neighbour likelihood."""

import numpy as np
import pytest

from dequity.errors import DequityError
from dequity.pipeline.density import knn_likelihood


def _mixture(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A tight component of 300 points and a spread-out one of 100, in 8-D."""
    rng = np.random.default_rng(seed)
    tight = rng.normal(0.0, 0.2, size=(300, 8))
    loose = rng.normal(4.0, 1.5, size=(100, 8))
    return np.concatenate([tight, loose]), np.repeat([0, 1], [300, 100])


def test_range_and_scale() -> None:
    x, _ = _mixture()
    p = knn_likelihood(x, k=10)
    assert p.shape == (400,)
    assert p.dtype == np.float64
    assert np.all(p > 0) and np.all(p <= 1)
    assert p.max() == pytest.approx(1.0)


def test_denser_component_is_more_likely() -> None:
    x, comp = _mixture()
    p = knn_likelihood(x, k=10)
    assert np.median(p[comp == 0]) > 5 * np.median(p[comp == 1])
    # the densest sample belongs to the tight component
    assert comp[np.argmax(p)] == 0


def test_outlier_is_least_likely() -> None:
    x, _ = _mixture()
    x = np.concatenate([x, np.full((1, 8), 50.0)])
    p = knn_likelihood(x, k=5)
    # alone within the radius: the lowest possible likelihood, 1 / max count
    assert p[-1] == p.min() == pytest.approx(1 / round(1 / p.min()))
    assert p[-1] < np.median(p)


def test_invariant_to_scale_and_order() -> None:
    x, _ = _mixture()
    perm = np.random.default_rng(1).permutation(len(x))
    p = knn_likelihood(x, k=10)
    np.testing.assert_allclose(knn_likelihood(3.0 * x, k=10), p, rtol=1e-9)
    np.testing.assert_allclose(knn_likelihood(x[perm], k=10), p[perm], rtol=1e-9)


def test_duplicates_count_as_densest() -> None:
    x = np.concatenate([np.zeros((5, 3)), 10.0 + 10.0 * np.arange(15.0).reshape(5, 3)])
    p = knn_likelihood(x, k=2)
    assert np.all(p[:5] == 1.0)
    assert np.all((p[5:] > 0) & (p[5:] <= 1)) and p[5:].min() < 1
    np.testing.assert_array_equal(knn_likelihood(np.ones((4, 2)), k=2), np.ones(4))


@pytest.mark.parametrize(
    "points, k",
    [
        (np.zeros(5), 2),
        (np.zeros((5, 0)), 2),
        (np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]]), 1),
        (np.zeros((5, 2)), 0),
        (np.zeros((5, 2)), 2.5),
        (np.zeros((5, 2)), True),
        (np.zeros((5, 2)), 5),
    ],
)
def test_invalid_input(points: np.ndarray, k: object) -> None:
    with pytest.raises(DequityError):
        knn_likelihood(points, k=k)


def test_compute_dequity_with_knn_density_writes_likelihoods_without_clusters(demo, tmp_path):
    import dequity
    from dequity.pipeline.density import knn_likelihood as reference
    from dequity.pipeline.projection import project
    from dequity.pipeline.weights import gfl_weight
    from tests.conftest import EMBEDDINGS_FIELD

    res = dequity.compute_dequity(
        demo,
        "dens",
        embeddings=EMBEDDINGS_FIELD,
        clustering="knn",
        clustering_kwargs={"k": 5},
        views=None,  # the crowding of the whole vector alone
    )
    vectors = np.stack(demo.values(EMBEDDINGS_FIELD))
    expected = reference(project(vectors, "pca"), k=5)
    ids = demo.values("id")
    by_id = dict(zip(res.sample_ids, res.likelihoods))
    assert np.allclose([by_id[i] for i in ids], expected)
    assert np.allclose(demo.values("dens_likelihood"), expected)
    assert np.allclose(demo.values("dens_weight"), gfl_weight(expected, 1.0, 5.0))
    assert demo.count("dens_cluster") == 0  # no clusters: the field stays empty
    assert res.labels == [] and res.num_clusters == 0 and res.cluster_sizes() == {}
    reloaded = dequity.load_dequity_results(demo, "dens")
    assert reloaded.config.clustering == "knn" and reloaded.config.clustering_kwargs == {
        "k": 5,
        "fit_samples": 5_000,
    }
    assert dequity.export_weights(demo, "dens", tmp_path / "w.csv").exists()
    with pytest.raises(DequityError, match="forms no clusters"):
        dequity.export_weights(demo, "dens", tmp_path / "w.pkl")


def test_knn_density_parameters_are_checked_before_any_work(demo):
    import dequity
    from dequity.pipeline.clustering import cluster
    from tests.conftest import EMBEDDINGS_FIELD

    fields = set(demo.get_field_schema())
    for kwargs, message in (
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": len(demo)}, "too few for k="),
        ({"k": 5, "backend": "cuml"}, "unknown clustering_kwargs"),
    ):
        with pytest.raises(DequityError, match=message):
            dequity.compute_dequity(
                demo,
                "dens",
                embeddings=EMBEDDINGS_FIELD,
                clustering="knn",
                clustering_kwargs=kwargs,
            )
    assert set(demo.get_field_schema()) == fields and "dens" not in demo.list_runs()
    with pytest.raises(DequityError, match="forms no clusters"):
        cluster(np.zeros((20, 2)), "knn")


def test_one_pass_finds_the_nearest_reference_points_and_the_clusters_they_give() -> None:
    from sklearn.metrics import pairwise_distances_argmin

    from dequity.pipeline.clustering import cluster_with, clustering_params
    from dequity.pipeline.density import count_and_nearest, count_within, crowding

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(c, 0.5, size=(1500, 6)) for c in range(4)])
    reference = x[rng.choice(len(x), 400, replace=False)]
    counts, nearest = count_and_nearest(x, reference, 0.8, None)
    assert counts.tolist() == count_within(x, reference, 0.8, None).tolist()
    assert (nearest == pairwise_distances_argmin(x, reference)).mean() > 0.999

    params = clustering_params("hdbscan_knn", {"fit_samples": 1000})
    shared = crowding(x, params["k"], 1000, nearest=True).nearest_rows
    own = cluster_with(x, "hdbscan_knn", params)
    assert (cluster_with(x, "hdbscan_knn", params, shared) == own).mean() > 0.999
