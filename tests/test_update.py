"""update_dequity on the real demo frames: held-back frames join a run without a refit."""

from __future__ import annotations

import logging

import fiftyone as fo
import numpy as np
import pytest

import dequity
from dequity.errors import DequityError
from dequity.update import DriftWarning
from tests.conftest import EMBEDDINGS_FIELD

HELD_EVERY = 10  # every 10th frame is held back, then added


@pytest.fixture()
def grown(demo: fo.Dataset) -> tuple[fo.Dataset, fo.Dataset]:
    """A dataset of the demo minus every 5th frame with a run ``dequity``, and the held frames."""
    ids = demo.values("id")
    held = demo.select(ids[::HELD_EVERY])
    base = demo.exclude(ids[::HELD_EVERY]).clone()
    dequity.compute_dequity(base, embeddings=EMBEDDINGS_FIELD, progress=False)
    yield base, held
    base.delete()


def _agreement(fitted: np.ndarray, refit: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """How often the first fit's clusters match a full refit's: on new and on old samples.

    Each refit cluster is matched to the fitted cluster holding most of its
    old members. The old samples' agreement is the clustering's own stability
    (a refit on 10 % more frames moves some of them); the new samples' shows
    what placing them without a refit adds to that.
    """
    old = ~new
    mapping = {}
    for c in np.unique(refit[old]):
        values, counts = np.unique(fitted[old][refit[old] == c], return_counts=True)
        mapping[c] = values[np.argmax(counts)]
    mapped = np.array([mapping.get(c, -2) for c in refit])
    return float(np.mean(mapped[new] == fitted[new])), float(np.mean(mapped[old] == fitted[old]))


def test_new_frames_are_placed_as_consistently_as_a_refit_keeps_the_old_ones(demo_run):
    from dequity.estimate import estimate
    from dequity.projection import fit_projection

    dataset, _ = demo_run
    vectors = np.array(dataset.values(EMBEDDINGS_FIELD))
    refit = estimate(fit_projection(vectors, "pca")[0], "hdbscan_knn", "nearest").labels
    on_new, on_old = [], []
    for seed in range(5):
        new = np.random.default_rng(seed).random(len(vectors)) < 0.1
        points, transform = fit_projection(vectors[~new], "pca")
        first = estimate(points, "hdbscan_knn", "nearest")
        first.fit.projection = transform
        placed = first.fit.extend(first.labels, first.likelihoods, transform(vectors[new]))
        fitted = np.empty(len(vectors), dtype=np.int64)
        fitted[~new], fitted[new] = first.labels, placed.labels
        a_new, a_old = _agreement(fitted, refit, new)
        on_new.append(a_new)
        on_old.append(a_old)
    assert np.mean(on_new) >= 0.95 * np.mean(on_old), (on_new, on_old)


def test_held_back_frames_get_the_values_of_the_stored_fit(grown):
    base, held = grown
    results = dequity.load_dequity_results(base)
    base.add_samples(held)  # new samples: new ids, with their embeddings
    new = np.array([v is None for v in base.values("dequity_likelihood")])
    assert new.sum() == len(held)

    updated = dequity.update_dequity(base)

    assert len(updated.sample_ids) == len(base)
    assert len(base.exists("dequity_weight", False)) == 0
    # the database holds what the stored fit computes for the same frames
    from dequity.fit import LikelihoodFit

    fit = LikelihoodFit.from_dict(results.fit)
    vectors = np.array(base.values(EMBEDDINGS_FIELD))
    expected = fit.extend(
        np.array(results.labels), np.array(results.likelihoods), fit.projection(vectors[new])
    )
    assert base.values("dequity_cluster") == results.labels + expected.labels.tolist()
    p = np.array(base.values("dequity_likelihood"))
    assert np.allclose(p[new], expected.new_likelihoods)
    assert np.allclose(p[~new], expected.old_likelihoods)
    # weights follow the likelihoods with the run's eta and gamma, on old and new samples
    assert np.allclose(base.values("dequity_weight"), dequity.gfl_weight(p, 1.0, 5.0))


def test_old_likelihoods_follow_the_new_cluster_sizes(grown):
    base, held = grown
    before = dict(zip(base.values("id"), base.values("dequity_likelihood")))
    base.add_samples(held)
    dequity.update_dequity(base)
    after = dict(zip(base.values("id"), base.values("dequity_likelihood")))
    changed = [i for i in before if not np.isclose(before[i], after[i])]
    assert changed, "adding 10 % more frames must move some old likelihoods"
    # a rerun of load_dequity_results sees the grown run
    assert dequity.load_dequity_results(base).summary()["num_samples"] == len(base)


def test_no_new_samples_is_a_no_op_that_says_so(grown, caplog):
    base, _ = grown
    before = base.values("dequity_weight")
    stamp = base.get_run_info("dequity").timestamp
    with caplog.at_level(logging.WARNING):
        dequity.update_dequity(base)
    assert "no new samples" in caplog.text
    assert base.values("dequity_weight") == before
    assert base.get_run_info("dequity").timestamp == stamp


def test_new_samples_unlike_the_fit_warn_to_refit(grown):
    base, held = grown
    added = base.add_samples(held)
    # the new frames' embeddings point far from everything the run was fitted on
    vectors = np.array(base.select(added).values(EMBEDDINGS_FIELD))
    far = vectors + 50 * np.random.default_rng(0).normal(size=vectors.shape[1])
    base.select(added).set_values(EMBEDDINGS_FIELD, list(far.astype(np.float32)))
    with pytest.warns(DriftWarning, match="far from every fitted sample.*recompute"):
        dequity.update_dequity(base)


def test_runs_that_cannot_place_new_samples_say_to_recompute(grown):
    base, held = grown
    base.add_samples(held)
    with pytest.raises(DequityError, match="not a view"):
        dequity.update_dequity(base.limit(10))
    dequity.compute_dequity(
        base, "scenes", embeddings=EMBEDDINGS_FIELD, collapse_near_duplicates=0.8, progress=False
    )
    with pytest.raises(DequityError, match="counts groups.*Recompute"):
        dequity.update_dequity(base, "scenes")
    results = dequity.load_dequity_results(base)
    results.fit = None  # a run stored before runs kept their fit
    results.save()
    with pytest.raises(DequityError, match="no stored fit.*overwrite=True"):
        dequity.update_dequity(base)


def test_a_failed_update_writes_nothing(grown):
    base, held = grown
    added = base.add_samples(held)
    before = base.values("dequity_weight")
    with pytest.raises(DequityError):
        dequity.update_dequity(base, embeddings=np.zeros((len(added) + 3, 4)))
    assert base.values("dequity_weight") == before
    assert len(dequity.load_dequity_results(base).sample_ids) == len(base) - len(added)


def test_a_tsne_run_cannot_be_updated(demo):
    dequity.compute_dequity(
        demo, "paper", embeddings=EMBEDDINGS_FIELD, projection="tsne", progress=False
    )
    with pytest.raises(DequityError, match="t-SNE has no transform.*overwrite=True"):
        dequity.update_dequity(demo, "paper")
