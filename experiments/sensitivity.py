"""Sensitivity: how much do dequity's parameters change what the classifier learns?

On the appearance-imbalance set of the classification experiment (balanced
labels, 5 % of each class inverted), the same small CNN is trained with
dequity weights from many configurations: an (eta, gamma) grid including the
paper's values, HDBSCAN's ``min_cluster_size`` and ``min_samples``, and the
projection (PCA, openTSNE, none, and the paper's t-SNE 3-D with DBSCAN at
several eps). Each is compared with the unweighted model of the same seed.

Run: ``python -m experiments.sensitivity [--quick] [--seeds 0 1 2]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

import dequity
from experiments.classification import sizes, test_split, train_and_test
from experiments.fashion_mnist import appearance_set, load_split
from experiments.pool import EMBEDDING_FIELD, dequity_fields, training_dataset, values_in_order
from experiments.report import Section, mean_spread, script_main, table, verdict

NAME = "sensitivity"
ETAS = (0.0, 0.5, 1.0, 3.0)
GAMMAS = (1.0, 2.0, 5.0)
TSNE = "tsne"  # marks configurations clustered on precomputed t-SNE points


def configurations(quick: bool) -> list[tuple[str, str, dict]]:
    """``(group, label, compute_dequity kwargs)`` of every configuration."""
    etas, gammas = ((0.0, 1.0), (1.0, 5.0)) if quick else (ETAS, GAMMAS)
    configs = [("eta, gamma", f"eta {e:g}, gamma {g:g}", {"eta": e, "gamma": g})
               for e in etas for g in gammas]  # fmt: skip
    sizes_ = (5, 50) if quick else (5, 25, 50)
    configs += [
        (
            "clustering",
            f"HDBSCAN min_cluster_size {m}",
            {"clustering_kwargs": {"min_cluster_size": m}},
        )
        for m in sizes_
    ]
    if quick:
        return configs
    configs += [
        ("clustering", "HDBSCAN min_samples 5", {"clustering_kwargs": {"min_samples": 5}}),
        ("projection", "openTSNE 2-D + HDBSCAN", {"projection": "opentsne"}),
        ("projection", "none (1280-d) + HDBSCAN", {"projection": None}),
    ]
    configs += [
        ("projection", f"paper: t-SNE 3-D + DBSCAN eps {eps:g}",
         {TSNE: True, "clustering": "dbscan", "noise": "cluster",
          "clustering_kwargs": {"eps": eps, "min_samples": 10}})
        for eps in (1.0, 2.0, 4.0)
    ]  # fmt: skip
    return configs


def weights_of(dataset, train_set, config: dict, tsne_points: np.ndarray | None) -> tuple:
    """``(weights, clusters)`` from ``compute_dequity`` with ``config``."""
    kwargs = dict(config)
    if kwargs.pop(TSNE, False):
        kwargs["embeddings"], kwargs["projection"] = tsne_points, None
    return dequity_fields(dataset, train_set, ("weight", "cluster"), **kwargs)


def run(quick: bool, seeds: Sequence[int], output: Path) -> Section:
    """Every configuration on the appearance set of every seed."""
    size = sizes(quick)
    images, labels = load_split("train")
    test = test_split(size.test_per_class)
    test_x = np.concatenate([test[0], 255 - test[0]])
    test_y = np.concatenate([test[1], test[1]])
    inverted = np.arange(len(test_y)) >= len(test[1])
    configs = configurations(quick)
    # per configuration: (rare acc, overall acc, rare/common weight ratio, clusters, noise)
    found: dict[str, list[tuple[float, ...]]] = {label: [] for _, label, _ in configs}
    base: list[tuple[float, float]] = []
    for seed in seeds:
        train_set = appearance_set(labels, size.per_class, size.rare_share, seed=seed)
        dataset = training_dataset(train_set, images, labels)
        x, y = train_set.images(images), labels[train_set.rows]
        correct = train_and_test("unweighted", x, y, None, test_x, size.epochs, seed) == test_y
        base.append((correct[inverted].mean(), correct.mean()))
        tsne = None
        if any(TSNE in c for _, _, c in configs):
            vectors = np.stack(values_in_order(dataset, train_set, EMBEDDING_FIELD))
            tsne = dequity.project(vectors, "tsne")
        for i, (_, label, config) in enumerate(configs):
            print(f"seed {seed}, configuration {i + 1}/{len(configs)}: {label}", flush=True)
            w, clusters = weights_of(dataset, train_set, config, tsne)
            pred = train_and_test("dequity", x, y, w, test_x, size.epochs, seed)
            correct = pred == test_y
            found[label].append(
                (
                    correct[inverted].mean(),
                    correct.mean(),
                    w[train_set.inverted].mean() / w[~train_set.inverted].mean(),
                    clusters.max() + 1,
                    np.mean(clusters < 0),
                )
            )
    base_rare, base_all = np.array(base).T
    rows = [["unweighted (reference)", "", mean_spread(base_rare), mean_spread(base_all),
             "", "", "", ""]]  # fmt: skip
    for group, label, _ in configs:
        r = np.array(found[label])
        rows.append(
            [
                group,
                label,
                mean_spread(r[:, 0]),
                mean_spread(r[:, 1]),
                mean_spread(r[:, 0] - base_rare, signed=True),
                mean_spread(r[:, 1] - base_all, signed=True),
                f"{r[:, 2].mean():.2f}",
                f"{r[:, 3].mean():.1f} / {r[:, 4].mean():.0%}",
            ]
        )
    best = max(found, key=lambda k: np.mean(np.array(found[k])[:, 0]))
    default_label = "eta 1, gamma 5"
    verdicts = [
        verdict(
            f"Sensitivity, {label}{' (the best, chosen after the fact)' * (label == best)}:",
            np.array(found[label])[:, 0],
            base_rare,
            "inverted-style accuracy",
        )
        for label in dict.fromkeys([default_label, best])
        if label in found
    ]
    chart = _heatmap(output / "sensitivity_eta_gamma.png", configs, found, base_rare)
    body = f"""Appearance-imbalance set ({size.per_class} images per class, {size.rare_share:.0%}
inverted), small CNN, {size.epochs} epochs' worth of steps, seeds {list(seeds)}. Changes are
in accuracy points against the unweighted model of the same seed (mean ± std).
"weight ratio" is the mean weight of inverted training images over that of the others:
how strongly the configuration up-weights the rare style, found without labels.

{
        table(
            [
                "group",
                "configuration",
                "inverted-style acc %",
                "overall acc %",
                "change, inverted",
                "change, overall",
                "weight ratio",
                "clusters / noise",
            ],
            rows,
        )
    }

![eta gamma](results/{chart.name})

{chr(10).join("- " + v for v in verdicts)}
"""
    return Section("2. Sensitivity to clustering, projection, eta and gamma", body, verdicts)


def _heatmap(path: Path, configs, found, base_rare: np.ndarray) -> Path:
    """Change in inverted-style accuracy over the (eta, gamma) grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [(c["eta"], c["gamma"], label) for g, label, c in configs if g == "eta, gamma"]
    etas = sorted({e for e, _, _ in grid})
    gammas = sorted({g for _, g, _ in grid})
    values = np.full((len(etas), len(gammas)), np.nan)
    for e, g, label in grid:
        gain = np.array(found[label])[:, 0] - base_rare
        values[etas.index(e), gammas.index(g)] = 100 * gain.mean()
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    lim = np.nanmax(np.abs(values)) or 1.0
    im = ax.imshow(values, cmap="RdBu", vmin=-lim, vmax=lim)
    for i in range(len(etas)):
        for j in range(len(gammas)):
            ax.text(j, i, f"{values[i, j]:+.1f}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(gammas)), [f"{g:g}" for g in gammas])
    ax.set_yticks(range(len(etas)), [f"{e:g}" for e in etas])
    ax.set_xlabel("gamma")
    ax.set_ylabel("eta")
    ax.set_title("inverted-style accuracy change (points)", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    script_main(run, __doc__, NAME)
