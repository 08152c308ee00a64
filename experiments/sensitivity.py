"""Sensitivity: how much do dequity's parameters change what the classifier learns?

On the appearance-imbalance set of the classification experiment (balanced
labels, 5 % of each class inverted), the same small CNN is trained with
dequity weights from many configurations: an (eta, gamma) grid including the
paper's values, HDBSCAN's ``min_cluster_size`` and ``min_samples``, and the
projection (PCA, openTSNE, none, and the paper's t-SNE 3-D with DBSCAN at
several eps). Each is compared with the unweighted model of the same seed.

Per-seed raw values go to ``docs/results/sensitivity_runs.json`` with the
config and commit; :func:`section_from_json` turns that file into the report.

Run: ``python -m experiments.sensitivity [--quick] [--seeds 0 1 2]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

import dequity
from experiments.classification import sizes, test_split, train_and_test
from experiments.fashion_mnist import appearance_set, load_split
from experiments.pool import EMBEDDING_FIELD, dequity_fields, training_dataset, values_in_order
from experiments.report import Section, script_main, table
from experiments.stats import PairedTest, mean_ci, paired_tests
from reporting import git_commit

NAME = "sensitivity"
RAW_FILE = "sensitivity_runs.json"
UNWEIGHTED = "unweighted"
DEFAULT_LABEL = "eta 1, gamma 5"
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


#: per configuration and seed: what :func:`run` saves, in this order
VALUES = ("inverted acc", "overall acc", "weight ratio", "clusters", "noise share")


def run(quick: bool, seeds: Sequence[int], output: Path) -> Section:
    """Every configuration on the appearance set of every seed; raw values to ``RAW_FILE``."""
    size = sizes(quick)
    images, labels = load_split("train")
    test = test_split(size.test_per_class)
    test_x = np.concatenate([test[0], 255 - test[0]])
    test_y = np.concatenate([test[1], test[1]])
    inverted = np.arange(len(test_y)) >= len(test[1])
    configs = configurations(quick)
    runs: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        train_set = appearance_set(labels, size.per_class, size.rare_share, seed=seed)
        dataset = training_dataset(train_set, images, labels)
        x, y = train_set.images(images), labels[train_set.rows]
        correct = train_and_test("unweighted", x, y, None, test_x, size.epochs, seed) == test_y
        runs[str(seed)] = {UNWEIGHTED: [float(correct[inverted].mean()), float(correct.mean())]}
        tsne = None
        if any(TSNE in c for _, _, c in configs):
            vectors = np.stack(values_in_order(dataset, train_set, EMBEDDING_FIELD))
            tsne = dequity.project(vectors, "tsne")
        for i, (_, label, config) in enumerate(configs):
            print(f"seed {seed}, configuration {i + 1}/{len(configs)}: {label}", flush=True)
            w, clusters = weights_of(dataset, train_set, config, tsne)
            correct = train_and_test("dequity", x, y, w, test_x, size.epochs, seed) == test_y
            runs[str(seed)][label] = [
                float(correct[inverted].mean()),
                float(correct.mean()),
                float(w[train_set.inverted].mean() / w[~train_set.inverted].mean()),
                float(clusters.max() + 1),
                float(np.mean(clusters < 0)),
            ]
    data = {
        "experiment": NAME,
        "mode": "quick" if quick else "full",
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "config": {**asdict(size), "unweighted": UNWEIGHTED},
        "configurations": [[g, label, c] for g, label, c in configs],
        "seeds": list(seeds),
        "values": list(VALUES),
        "runs": runs,
    }
    path = output / RAW_FILE
    path.write_text(json.dumps(data, indent=1))
    return section_from_json(path)


def section_from_json(path: Path) -> Section:
    """The report of a saved run (``sensitivity_runs.json``): 95 % intervals, paired tests.

    Each configuration's inverted-style accuracy is compared with the
    unweighted model of the same seeds (paired t-test, Holm-corrected over
    the configurations).

    Example::

        print(section_from_json(Path("docs/results/sensitivity_runs.json")).markdown())
    """
    data = json.loads(Path(path).read_text())
    seeds, configs = data["seeds"], [tuple(c) for c in data["configurations"]]
    size = data["config"]

    def values(label: str, i: int) -> np.ndarray:
        return np.array([data["runs"][str(s)][label][i] for s in seeds], dtype=float)

    base_rare, base_all = values(UNWEIGHTED, 0), values(UNWEIGHTED, 1)
    labels = [label for _, label, _ in configs]
    tests = paired_tests({label: values(label, 0) for label in labels}, base_rare)
    overall = paired_tests({label: values(label, 1) for label in labels}, base_all)
    rows = [[UNWEIGHTED + " (reference)", "", mean_ci(base_rare).format(),
             mean_ci(base_all).format(), "", "", "", "", ""]]  # fmt: skip
    for group, label, _ in configs:
        t = tests[label]
        rows.append(
            [
                group,
                label,
                mean_ci(values(label, 0)).format(),
                mean_ci(values(label, 1)).format(),
                t.diff.format(signed=True),
                f"{t.p_holm:.3f}" + (" *" if t.significant else ""),
                overall[label].diff.format(signed=True),
                f"{values(label, 2).mean():.2f}",
                f"{values(label, 3).mean():.1f} / {values(label, 4).mean():.0%}",
            ]
        )
    best = max(labels, key=lambda label: values(label, 0).mean())
    verdicts = [
        f"Sensitivity, {label}{' (the best, chosen after the fact)' * (label == best)}: "
        f"inverted-style accuracy {tests[label].diff.format(signed=True)} points against "
        f"unweighted (95 % CI, {len(seeds)} seeds, Holm p {tests[label].p_holm:.3f}): "
        + _reading(tests[label])
        for label in dict.fromkeys([DEFAULT_LABEL, best])
        if label in labels
    ]
    chart = _heatmap(
        Path(path).parent / "sensitivity_eta_gamma.png",
        {label: c for group, label, c in configs if group == "eta, gamma"},
        {label: values(label, 0) - base_rare for label in labels},
    )
    body = f"""Generated from `results/{RAW_FILE}` ({data["mode"]} mode, commit
`{data["commit"][:12]}`, {data["date"]}). Appearance-imbalance set ({size["per_class"]}
images per class, {size["rare_share"]:.0%} inverted), small CNN, {size["epochs"]} epochs'
worth of steps, seeds {seeds}. Accuracies are means with 95 % t intervals; changes are
paired per seed against the unweighted model, in accuracy points, with Holm's correction
over the {len(labels)} configurations (\\* = significant). "weight ratio" is the mean
weight of inverted training images over that of the others: how strongly the
configuration up-weights the rare style, found without labels.

{
        table(
            [
                "group",
                "configuration",
                "inverted-style acc %",
                "overall acc %",
                "change, inverted",
                "p (Holm)",
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


def _reading(test: PairedTest) -> str:
    """``"a significant gain"``, ``"a significant loss"`` or ``"no significant change"``."""
    if not test.significant:
        return "no significant change"
    return "a significant gain" if test.diff.mean > 0 else "a significant loss"


def _heatmap(path: Path, grid: dict[str, dict], gains: dict[str, np.ndarray]) -> Path:
    """Change in inverted-style accuracy over the (eta, gamma) grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    etas = sorted({c["eta"] for c in grid.values()})
    gammas = sorted({c["gamma"] for c in grid.values()})
    values = np.full((len(etas), len(gammas)), np.nan)
    for label, c in grid.items():
        values[etas.index(c["eta"]), gammas.index(c["gamma"])] = 100 * gains[label].mean()
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
