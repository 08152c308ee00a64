"""Do samples added without a refit land where a full recompute puts them?

For each draw, a random 10 % of a real set is held back; the rest is fitted
(PCA, clustering) and the held-back samples join through the stored fit, as in
``update_dequity``. A full recompute on every sample then gives the reference:

- **new agreement**: the share of held-back samples whose placed cluster is
  the recompute's (clusters paired one to one, on the old samples);
- **refit stability**: the same share over the old samples, that is how much
  the clustering itself moves when 10 % more samples are added. No placement
  can agree with a recompute more often than the recompute agrees with itself;
- **likelihood rank**: Spearman's rho of the new samples' likelihoods, placed
  against recomputed.

Two real sets: the demo frames (199 frames of one drive: a continuum, with
no natural cut) and 3,000 Fashion-MNIST images (10 kinds). On the demo frames
a grid of projections and HDBSCAN settings shows which reach 95 %. Raw
values go to ``benchmarks/results-agreement.json``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np

from benchmarks.common import mean_ci, save_raw
from reporting import md_table

NAME = "agreement"
#: the page whose generated block this benchmark fills
DOCUMENT = "README.md"
TARGET = 0.95
HELD_SHARE = 0.1
#: the default run (PCA-50, min_cluster_size 10, min_samples 1) comes first
DEFAULT_SETTING = {"n_components": 50, "min_cluster_size": 10, "min_samples": 1}
GRID = [
    {"n_components": c, "min_cluster_size": s, "min_samples": m}
    for c, s, m in itertools.product((50, 10, 3), (5, 10, 20), (1, 5))
]
FASHION_PER_CLASS = 300


def matched_agreement(fitted: np.ndarray, refit: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Per sample, whether its fitted cluster is the one its refit cluster is paired with.

    Clusters are paired one to one (Hungarian matching on the old samples'
    contingency table, ``old`` a boolean mask), so a fit that merges or splits
    clusters does not count as agreeing; unpaired clusters agree with nothing.

    Example::

        >>> matched_agreement(np.array([0, 0, 1, 1, 1]), np.array([5, 5, 6, 6, 5]),
        ...                   np.array([True, True, True, True, False])).tolist()
        [True, True, True, True, False]
        >>> matched_agreement(np.array([0, 0, 0, 0]), np.array([1, 1, 2, 2]),
        ...                   np.ones(4, bool)).tolist()   # a merge agrees on half
        [True, True, False, False]
    """
    from scipy.optimize import linear_sum_assignment

    fitted_ids, fitted_rows = np.unique(fitted[old], return_inverse=True)
    refit_ids, refit_rows = np.unique(refit[old], return_inverse=True)
    table = np.zeros((len(refit_ids), len(fitted_ids)), dtype=np.int64)
    np.add.at(table, (refit_rows, fitted_rows), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    pairs = dict(zip(refit_ids[rows].tolist(), fitted_ids[cols].tolist()))
    return np.array([pairs.get(c, -2) for c in refit.tolist()]) == fitted


def _fit(vectors: np.ndarray, setting: dict[str, int]):
    """The default run's estimate of ``vectors`` under ``setting``, with its projection set."""
    from dequity.defaults import DEFAULT_CLUSTERING, DEFAULT_NOISE
    from dequity.pipeline.estimate import estimate
    from dequity.pipeline.projection import fit_projection

    params = {k: v for k, v in setting.items() if k != "n_components"}
    points, transform = fit_projection(vectors, "pca", n_components=setting["n_components"])
    result = estimate(points, DEFAULT_CLUSTERING, DEFAULT_NOISE, **params)
    result.fit.projection = transform
    return result


def held_back_agreement(
    vectors: np.ndarray, seeds: Iterable[int], setting: dict[str, int]
) -> list[dict[str, Any]]:
    """One record per seed: new agreement, refit stability and likelihood rank (module doc).

    The full recompute does not depend on the draw, so it is fitted once.

    Example::

        x = np.random.default_rng(0).normal(size=(300, 32))
        held_back_agreement(x, range(3), DEFAULT_SETTING)[0]["new_agreement"]
    """
    from scipy.stats import spearmanr

    refit = _fit(vectors, setting)
    records = []
    for seed in seeds:
        new = np.random.default_rng(seed).random(len(vectors)) < HELD_SHARE
        first = _fit(vectors[~new], setting)
        placed = first.fit.extend(
            first.labels, first.likelihoods, first.fit.projection(vectors[new])
        )
        fitted = np.empty(len(vectors), dtype=np.int64)
        fitted[~new], fitted[new] = first.labels, placed.labels
        agrees = matched_agreement(fitted, refit.labels, ~new)
        rho = spearmanr(placed.new_likelihoods, refit.likelihoods[new])[0]
        records.append(
            {
                "seed": seed,
                "held": int(new.sum()),
                "refit_clusters": len(set(refit.labels.tolist())),
                "fit_clusters": len(set(first.labels.tolist())),
                "new_agreement": float(agrees[new].mean()),
                "refit_stability": float(agrees[~new].mean()),
                "new_likelihood_rho": float(rho),
            }
        )
    return records


def demo_vectors() -> np.ndarray:
    """The demo frames' embeddings by the default model, as ``compute_dequity`` stores them."""
    import dequity
    from dequity.demo import load_demo_dataset

    dataset = load_demo_dataset("dequity-benchmark-agreement", overwrite=True)
    try:
        dequity.compute_dequity(dataset, embeddings_field="embedding", progress=False)
        return np.array(dataset.values("embedding"), dtype=np.float32)
    finally:
        dataset.delete()


def fashion_vectors() -> np.ndarray:
    """3,000 Fashion-MNIST images (300 per kind) by the default model (cached)."""
    from benchmarks.real_sets import MODELS, pool_embeddings

    pool = pool_embeddings(MODELS[0], "normal", FASHION_PER_CLASS)
    return np.concatenate([pool[c] for c in sorted(pool)])


def measure(quick: bool) -> dict[str, list[dict[str, Any]]]:
    """Per set and setting, one record per draw."""
    draws = range(3 if quick else 10)
    sets = {"demo frames": (demo_vectors(), [DEFAULT_SETTING] if quick else GRID)}
    if not quick:
        sets["Fashion-MNIST 3,000"] = (fashion_vectors(), [DEFAULT_SETTING])
    return {
        name: [_entry(vectors, s, draws) for s in settings]
        for name, (vectors, settings) in sets.items()
    }


def _entry(vectors: np.ndarray, setting: dict[str, int], draws: range) -> dict[str, Any]:
    """The setting's draws, or why it could not cluster (e.g. every sample noise)."""
    from dequity.errors import DequityError

    try:
        return {"setting": setting, "draws": held_back_agreement(vectors, draws, setting)}
    except DequityError as error:
        return {"setting": setting, "draws": [], "error": str(error).split(";")[0]}


def _cell(values: list[float]) -> str:
    mean, low, high = mean_ci(values)
    return f"{mean:.3f}" if low is None else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown rows: set, setting, clusters, the three figures with 95 % intervals."""
    rows = []
    for name, entries in results.items():
        for entry in entries:
            s, draws = entry["setting"], entry["draws"]
            label = f"PCA-{s['n_components']}, mcs {s['min_cluster_size']}, ms {s['min_samples']}"
            label += " (default)" if s == DEFAULT_SETTING else ""
            if not draws:
                rows.append([name, label, entry["error"], "", "", ""])
                continue
            fits = [d["fit_clusters"] for d in draws]
            rows.append(
                [
                    name,
                    label,
                    f"{draws[0]['refit_clusters']}; {min(fits)}-{max(fits)}",
                    _cell([d["new_agreement"] for d in draws]),
                    _cell([d["refit_stability"] for d in draws]),
                    _cell([d["new_likelihood_rho"] for d in draws]),
                ]
            )
    return md_table(
        ["set", "setting", "clusters", "new agreement", "refit stability", "likelihood rho"],
        rows,
    )


def reaching_target(results: dict[str, list[dict[str, Any]]]) -> str:
    """A sentence: the settings whose mean new agreement reaches the target, per set."""
    parts = []
    for name, entries in results.items():
        hits = [
            f"PCA-{e['setting']['n_components']}/mcs {e['setting']['min_cluster_size']}/"
            f"ms {e['setting']['min_samples']} "
            f"({e['draws'][0]['refit_clusters']} clusters)"
            for e in entries
            if e["draws"] and np.mean([d["new_agreement"] for d in e["draws"]]) >= TARGET
        ]
        parts.append(f"{name}: {', '.join(hits) if hits else 'none'}")
    return f"Settings with a mean new agreement of at least {TARGET:.0%}: " + "; ".join(parts) + "."


def readme_block(record: dict) -> str:
    """The README's block from the saved record: the default's rows and the settings on target.

    Example::

        from benchmarks.common import load_raw

        print(readme_block(load_raw(NAME)))
    """
    results = record["values"]
    defaults = {
        name: [e for e in entries if e["setting"] == DEFAULT_SETTING]
        for name, entries in results.items()
    }
    return table(defaults) + "\n\n" + reaching_target(results)


def run(quick: bool) -> str:
    """The demo frames (the default alone in quick mode; the grid in full) and Fashion-MNIST."""
    results = measure(quick)
    if not quick:
        save_raw(
            NAME,
            results,
            {"held_share": HELD_SHARE, "target": TARGET},
            block=readme_block,
            document=DOCUMENT,
        )
    draws = 3 if quick else 10
    return (
        "### Placing new samples against a full recompute\n\n"
        f"{HELD_SHARE:.0%} of each set held back and added through the stored fit, "
        f"{draws} draws, means with 95 % t intervals. mcs / ms: HDBSCAN's "
        "min_cluster_size / min_samples; clusters: the recompute's; the first fits' "
        "range over the draws.\n\n" + table(results) + "\n\n" + reaching_target(results)
    )


if __name__ == "__main__":
    print(run(quick=False))
