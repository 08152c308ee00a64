"""Label-free discovery: does the likelihood find the rare classes without labels?

On the long-tailed Fashion-MNIST sets of the classification experiment,
each configuration computes likelihoods from the embeddings alone; we then
ask how well the mean likelihood of each class tracks the class's frequency
(Spearman over the 10 classes), and what share of the 10 % highest-weighted
images belongs to the 3 rarest classes (against their share of the set).

Run: ``python -m experiments.discovery [--quick] [--seeds 0 1 2]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dequity.errors import DequityError
from experiments.fashion_mnist import load_split, long_tail_set
from experiments.pool import dequity_fields, training_dataset
from experiments.report import Section, mean_spread, script_main, table
from reporting import spearman

NAME = "discovery"
TOP_SHARE = 0.1
RARE_CLASSES = 3

#: name -> keyword arguments of compute_dequity
CONFIGS: dict[str, dict] = {
    "default: PCA-50 + HDBSCAN(10) x sqrt k-NN crowding, noise to nearest": {},
    "previous clustering: PCA-50 + HDBSCAN(10), noise as singletons": {
        "clustering": "hdbscan",
        "noise": "singleton",
    },
    "paper: t-SNE 3-D + DBSCAN(eps 2, min_samples 10), noise as one cluster": {
        "projection": "tsne",
        "clustering": "dbscan",
        "noise": "cluster",
    },
    "openTSNE 2-D + HDBSCAN(10)": {"projection": "opentsne", "clustering": "hdbscan"},
    "PCA-50 + HDBSCAN(25)": {
        "clustering": "hdbscan",
        "clustering_kwargs": {"min_cluster_size": 25},
    },
    "PCA-50 + HDBSCAN(10), noise joins the nearest cluster": {"clustering": "hdbscan"},
    "k-NN density (k 10) on PCA-50, no clusters": {
        "clustering": "knn",
        "clustering_kwargs": {"k": 10},
    },
    "k-NN density (k 30) on PCA-50, no clusters": {"clustering": "knn"},
}


def likelihoods(dataset, train_set, config: dict) -> np.ndarray:
    """Likelihood of each image of ``train_set`` under ``config`` (no labels used)."""
    return dequity_fields(dataset, train_set, ("likelihood",), **config)[0]


def scores(p: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(Spearman of class mean likelihood vs frequency, rare share of the top 10 %, base rate)."""
    classes, counts = np.unique(y, return_counts=True)
    per_class = np.array([p[y == c].mean() for c in classes])
    rare = classes[np.argsort(counts)[:RARE_CLASSES]]
    top = np.argsort(p, kind="stable")[: max(1, round(TOP_SHARE * len(p)))]
    return (
        spearman(per_class, counts),
        float(np.isin(y[top], rare).mean()),
        float(np.isin(y, rare).mean()),
    )


def run(quick: bool, seeds: Sequence[int], output: Path) -> Section:
    """Every configuration on the long-tailed set of every seed."""
    images, labels = load_split("train")
    largest = 60 if quick else 1000
    configs = {k: v for k, v in CONFIGS.items() if not (quick and "tsne" in str(v))}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in configs}
    for seed in seeds:
        train_set = long_tail_set(labels, largest, seed=seed)
        dataset = training_dataset(train_set, images, labels)
        y = labels[train_set.rows]
        for name, config in configs.items():
            try:
                results[name].append(scores(likelihoods(dataset, train_set, config), y))
            except DequityError as e:  # e.g. every sample noise on a small set
                print(f"{name}: {e}")
                results[name].append((np.nan, np.nan, np.nan))
    rows = [
        [name, _mean_std([r[0] for r in res]), *(mean_spread([r[i] for r in res]) for i in (1, 2))]
        if not np.isnan(res).any()
        else [name, "failed on some seed (every sample noise)", "", ""]
        for name, res in results.items()
    ]
    best = max(results, key=lambda k: np.nan_to_num(np.mean([r[0] for r in results[k]]), nan=-2))
    default = next(iter(results))
    verdicts = [
        f"Label-free discovery: the default's class mean likelihood tracks class frequency "
        f"with Spearman {_mean_std([r[0] for r in results[default]])}; best: {best}."
    ]
    body = f"""Long-tailed Fashion-MNIST (largest class {largest}, imbalance 100), embedded
with EfficientNet-Lite0; seeds {list(seeds)} (each its own subsample and class
order). No labels are used to compute the likelihoods; labels only score them.

{
        table(
            [
                "configuration",
                "Spearman: class mean likelihood vs class frequency",
                f"rare-class share of the top {TOP_SHARE:.0%} weighted %",
                "rare-class share of the set %",
            ],
            rows,
        )
    }

- Best rank correlation: {best}.
- The default's correlation is {_mean_std([r[0] for r in results[default]])}; a value of 1
  would mean the classes' mean likelihoods are ordered exactly as their sizes.
- The top-weighted images hold the rare classes at
  {np.mean([r[1] for r in results[default]]) / np.mean([r[2] for r in results[default]]):.1f}x
  their share of the set with the default configuration.
"""
    return Section("3. Label-free discovery: do likelihoods find the rare classes?", body, verdicts)


def _mean_std(values: Sequence[float]) -> str:
    return mean_spread(values, scale=1.0, digits=2)


if __name__ == "__main__":
    script_main(run, __doc__, NAME)
