"""Likelihood stage (projection, clustering, likelihood, weight): default vs paper."""

from __future__ import annotations

from dataclasses import replace

from benchmarks import methods as bm
from benchmarks.common import md_table, spearman, timed
from benchmarks.mixtures import HARD, make_mixture, true_frequency
from dequity.weights import gfl_weight

NAME = "likelihood"


def _stage(estimator: bm.Estimator, x) -> tuple:
    p, labels = estimator(x)
    gfl_weight(p)
    return p, labels


def run(quick: bool) -> str:
    """Time each estimator's whole stage on GUIDE's harder mixture."""
    spec = replace(HARD, n=2_000 if quick else 10_000)
    x, comp = make_mixture(spec)
    truth = true_frequency(comp)
    names = [bm.REFERENCE, bm.DEFAULT, bm.SUBSAMPLED]
    rows, ref_time = [], None
    for name in names:
        seconds, (p, labels) = timed(_stage, bm.CANDIDATES[name], x)
        ref_time = ref_time or seconds
        rows.append([name, ref_time / seconds, spearman(p, truth), bm.noise_share(labels)])
    header = (
        f"### Likelihood stage, {spec.n:,} x {spec.dim} overlapping mixture "
        f"({spec.label()}, power-law sizes)\n\n"
        f"Reference: the paper's stage took {ref_time:.1f} s in this run. "
        "Target: default >= 100x faster.\n\n"
    )
    table = md_table(["method", "speed-up vs paper", "Spearman", "noise share"], rows)
    return header + table
