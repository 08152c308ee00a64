"""Fidelity: does the likelihood track how frequent a sample's kind is?"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from benchmarks import methods as bm
from benchmarks.common import md_table, spearman, timed
from benchmarks.mixtures import HARD, MixtureSpec, make_mixture, true_frequency
from dequity.likelihood import scaled_likelihood

NAME = "fidelity"


def mixture_specs(quick: bool) -> list[MixtureSpec]:
    """Mixtures varying dimension, spread and number of components."""
    n = 1_000 if quick else 2_000
    base = replace(HARD, n=n)
    specs = [base, replace(base, dim=128, seed=1)]
    if not quick:
        specs += [
            replace(base, spread=(0.5, 2.5), seed=2),
            replace(base, components=60, alpha=0.8, seed=3),
        ]
    return specs


def _candidates(x: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray | None, float]]:
    """(name, likelihood, labels, seconds) of every candidate on ``x``."""
    out = []
    for name, estimator in bm.CANDIDATES.items():
        seconds, (p, labels) = timed(estimator, x)
        out.append((name, p, labels, seconds))
        if name == bm.REFERENCE:
            out.append(("paper, noise as singletons", scaled_likelihood(labels), labels, seconds))
    return out


def _mixtures(quick: bool) -> str:
    specs = mixture_specs(quick)
    scores: dict[str, list[tuple[float, float, float]]] = {}
    for spec in specs:
        x, comp = make_mixture(spec)
        truth = true_frequency(comp)
        results = _candidates(x)
        ref_seconds = results[0][3]
        for name, p, labels, seconds in results:
            scores.setdefault(name, []).append(
                (spearman(p, truth), bm.noise_share(labels), seconds / ref_seconds)
            )
    headers = ["method"] + [f"Spearman / noise, {s.label()}" for s in specs]
    headers += ["mean Spearman", "mean noise", "time / paper"]
    rows = []
    for name, vals in scores.items():
        arr = np.array(vals)
        rows.append(
            [name]
            + [f"{v[0]:.3f} / {v[1]:.1%}" for v in vals]
            + [arr[:, 0].mean(), f"{arr[:, 1].mean():.1%}", arr[:, 2].mean()]
        )
    return (
        f"### Fidelity on Gaussian mixtures ({specs[0].n:,} samples each, power-law "
        "sizes)\n\nSpearman between each sample's likelihood and the true relative "
        "frequency of its component; noise share. Targets for the default: Spearman "
        ">= 0.95 and noise <= 5 %, both better than the paper.\n\n" + md_table(headers, rows)
    )


def _fashion(quick: bool) -> str:
    from benchmarks.fashion import long_tail_embeddings

    largest, seeds = (80, (0,)) if quick else (1000, (0, 1, 2))
    scores: dict[str, list[tuple[float, float]]] = {}
    for seed in seeds:
        x, y = long_tail_embeddings(largest, seed)
        classes, counts = np.unique(y, return_counts=True)
        for name, p, labels, _ in _candidates(x):
            per_class = np.array([p[y == c].mean() for c in classes])
            score = (spearman(per_class, counts), bm.noise_share(labels))
            scores.setdefault(name, []).append(score)
    rows = []
    for name, vals in scores.items():
        arr = np.array(vals)
        spread = arr[:, 0].std(ddof=1) if len(arr) > 1 else 0.0
        rows.append([name, f"{arr[:, 0].mean():.2f} ± {spread:.2f}", f"{arr[:, 1].mean():.1%}"])
    return (
        f"### Fidelity on long-tailed Fashion-MNIST ({len(y):,} images per set, classes "
        f"{counts.max()}..{counts.min()}, seeds {list(seeds)}, EfficientNet-Lite0 embeddings)"
        "\n\nSpearman over the 10 classes between the mean likelihood of a class and "
        "its frequency (mean ± std over seeds; each seed its own subsample and class "
        "order). Target: the default is the best candidate.\n\n"
        + md_table(["method", "Spearman (10 classes)", "noise share"], rows)
    )


def run(quick: bool) -> str:
    """Both fidelity tables."""
    return _mixtures(quick) + "\n\n" + _fashion(quick)
