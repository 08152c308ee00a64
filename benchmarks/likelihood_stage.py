"""Likelihood stage against the paper's: projection, clustering, likelihood, weight.

The default is timed as a user runs it, ``compute_dequity`` on a FiftyOne
dataset from given embeddings, database writes and run record included;
the paper's step is timed without any writes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from benchmarks import methods as bm
from benchmarks.common import timed
from benchmarks.mixtures import HARD, make_mixture, true_frequency
from dequity.weights import gfl_weight
from reporting import md_table, spearman

NAME = "likelihood"


def _stage(estimator: bm.Estimator, x: np.ndarray) -> tuple:
    p, labels = estimator(x)
    gfl_weight(p)
    return p, labels


def _compute_dequity(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``(seconds, likelihoods, labels)`` of ``compute_dequity`` with its defaults.

    It runs on a new dataset holding ``len(x)`` samples.
    """
    import fiftyone as fo

    import dequity

    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=f"/none/{i}.jpg") for i in range(len(x))])
    try:
        seconds, results = timed(dequity.compute_dequity, dataset, embeddings=x, progress=False)
        # in the order of the samples
        return seconds, np.asarray(results.likelihoods), np.asarray(results.labels)
    finally:
        dataset.delete()


def run(quick: bool) -> str:
    """Time the paper's stage and the default's whole run on GUIDE's harder mixture."""
    spec = replace(HARD, n=2_000 if quick else 10_000)
    x, comp = make_mixture(spec)
    truth = true_frequency(comp)
    ref_time, (p_ref, labels) = timed(_stage, bm.paper, x)
    rows = [[bm.REFERENCE + " (stage only)", 1.0, spearman(p_ref, truth), bm.noise_share(labels)]]
    for name, estimator in ((bm.PREVIOUS, bm.previous_default), (bm.DEFAULT, bm.default)):
        seconds, (p, labels) = timed(_stage, estimator, x)
        rows.append(
            [name + " (stage only)", ref_time / seconds, spearman(p, truth), bm.noise_share(labels)]
        )
    seconds, p, labels = _compute_dequity(x)
    rows.append(
        [
            "default, compute_dequity with database writes",
            ref_time / seconds,
            spearman(p, truth),
            bm.noise_share(labels),
        ]
    )
    header = (
        f"### Likelihood stage, {spec.n:,} x {spec.dim} overlapping mixture "
        f"({spec.label()}, power-law sizes)\n\n"
        f"Reference: the paper's stage took {ref_time:.1f} s in this run. "
        "Target: the default, database writes included, >= 100x faster.\n\n"
    )
    table = md_table(["method", "speed-up vs paper", "Spearman", "noise share"], rows)
    return header + table
