"""The likelihood stage in partitions gives the local stage's likelihoods."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import spearmanr

from benchmarks.mixtures import HARD, make_mixture
from dequity import DequityError
from dequity.config import resolve
from dequity.pipeline import partitioned as pt
from dequity.pipeline.score import score
from dequity.store.runs import DequityRunConfig

N = 12_000  # above the default fit_samples, so the local stage fits on subsamples too


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return make_mixture(replace(HARD, n=N, dim=512))[0]


def partitioned_likelihoods(x: np.ndarray, settings) -> tuple[np.ndarray, np.ndarray]:
    rows = pt.fit_rows(len(x), settings)
    fit = pt.fit_partitioned(rows, x[rows.all], settings)
    placed = [pt.place(fit, x[part]) for part in np.array_split(np.arange(len(x)), 5)]
    pt.finish(fit, sum((pt.Tally.of(labels, counts) for labels, counts, _ in placed), pt.Tally()))
    likelihoods = [pt.likelihoods(fit, labels, counts) for labels, counts, _ in placed]
    return np.concatenate([labels for labels, _, _ in placed]), np.concatenate(likelihoods)


@pytest.mark.parametrize(
    "options", [{}, {"clustering": "hdbscan"}, {"clustering": "knn"}, {"noise": "singleton"}]
)
def test_partitions_give_the_local_stages_likelihoods(vectors, options):
    settings = resolve(DequityRunConfig(run_key="k", **options), N)
    local = score(vectors, settings)
    labels, likelihoods = partitioned_likelihoods(vectors, settings)
    assert spearmanr(likelihoods, local.likelihoods)[0] > 0.999
    if len(local.labels):
        assert (labels == local.labels).mean() > 0.99
    assert np.abs(likelihoods - local.likelihoods).max() < 0.05


@pytest.mark.parametrize(
    "options, message",
    [
        ({"projection": "tsne"}, "projection='tsne' has no map"),
        ({"clustering": "dbscan"}, "clustering='dbscan' cannot place"),
        ({"clustering_kwargs": {"fit_samples": None}}, "fit_samples=None"),
    ],
)
def test_settings_that_cannot_be_partitioned_are_refused(options, message):
    settings = resolve(DequityRunConfig(run_key="k", **options), N)
    with pytest.raises(DequityError, match=message):
        pt.check_partitionable(settings)
