"""Classification on Fashion-MNIST, trained six ways, on two kinds of imbalance.

- Long tail: class sizes fall off as a power law (imbalance ratio 100).
- Appearance: labels balanced, but in every class a few images are shown
  inverted (a rare style), like the paper's "70 % NYC, 30 % desert".

A small CNN is trained unweighted, with dequity weights (label-free, from
``compute_dequity`` with its defaults, with the previous clustering (HDBSCAN
cluster sizes, noise as singletons) and with
``clustering="knn"``), with the class-balanced loss of Cui et al. (2019)
and with class-balanced resampling. The test sets are balanced: the whole
test split, and for the appearance set each test image in both styles.

Run: ``python -m experiments.classification [--quick] [--seeds 0 1 2]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.classifier import (
    LABEL_FREE,
    METHODS,
    method_weights,
    predict,
    train_classifier,
)
from experiments.fashion_mnist import (
    CLASSES,
    TrainingSet,
    appearance_set,
    load_split,
    long_tail_set,
    power_law_sizes,
)
from experiments.pool import dequity_fields, training_dataset, values_in_order
from experiments.report import Section, bar_chart, mean_spread, script_main, table, verdict

NAME = "classification"
RARE_CLASSES = 3


@dataclass(frozen=True)
class Sizes:
    """How big each part of the experiment is."""

    largest: int  # long tail: images in the largest class
    per_class: int  # appearance: images per class
    rare_share: float  # appearance: share of inverted images per class
    epochs: int
    test_per_class: int | None  # None: the whole test split


def sizes(quick: bool) -> Sizes:
    """Tiny sizes for ``--quick``, the reported sizes otherwise."""
    if quick:
        return Sizes(largest=60, per_class=30, rare_share=0.1, epochs=1, test_per_class=30)
    return Sizes(largest=1000, per_class=300, rare_share=0.05, epochs=12, test_per_class=None)


def test_split(per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The balanced test split, or ``per_class`` images of each class."""
    images, labels = load_split("test")
    if per_class is None:
        return images, labels
    rows = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASSES))])
    return images[rows], labels[rows]


def label_free_weights(
    train_set: TrainingSet, images: np.ndarray, labels: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each label-free method's weights of the set's images, and the default run's clusters.

    The methods (:data:`LABEL_FREE`) run ``compute_dequity``; no labels are used.
    """
    ds = training_dataset(train_set, images, labels)
    weights = {}
    for method in reversed(LABEL_FREE):  # the default runs last: its clusters stay
        (weights[method],) = dequity_fields(ds, train_set, ("weight",), **LABEL_FREE[method])
    return weights, values_in_order(ds, train_set, "dequity_cluster")


def train_and_test(
    method: str,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    weights: np.ndarray | None,
    test_images: np.ndarray,
    epochs: int,
    seed: int,
) -> np.ndarray:
    """Predictions on ``test_images`` of a classifier trained by ``method``."""
    loss_w, sample_w = method_weights(method, train_labels, weights)
    net = train_classifier(
        train_images,
        train_labels,
        loss_weights=loss_w,
        sampler_weights=sample_w,
        epochs=epochs,
        seed=seed,
    )
    return predict(net, test_images)


def per_class_accuracy(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Accuracy of each of the 10 classes (NaN for a class absent from ``truth``)."""
    return np.array(
        [(pred[truth == c] == c).mean() if (truth == c).any() else np.nan for c in range(10)]
    )


def long_tail_results(size: Sizes, seeds: Sequence[int], images, labels, test) -> dict:
    """Per method: overall, rare-class and common-class accuracy per seed, per-class mean."""
    out = {m: {"overall": [], "rare": [], "common": [], "per_class": []} for m in METHODS}
    diag = []
    for seed in seeds:
        train_set = long_tail_set(labels, size.largest, seed=seed)
        y = labels[train_set.rows]
        x = train_set.images(images)
        label_free, clusters = label_free_weights(train_set, images, labels)
        counts = np.bincount(y, minlength=10)
        by_size = np.argsort(counts)
        rare, common = by_size[:RARE_CLASSES], by_size[-RARE_CLASSES:]
        diag.append(_weight_diagnostics(label_free["dequity"], clusters, np.isin(y, rare)))
        for m in METHODS:
            print(f"{train_set.name}: training {m}", flush=True)
            pred = train_and_test(m, x, y, label_free.get(m), test[0], size.epochs, seed)
            acc = per_class_accuracy(pred, test[1])
            out[m]["overall"].append(np.nanmean(acc))
            out[m]["rare"].append(np.nanmean(acc[rare]))
            out[m]["common"].append(np.nanmean(acc[common]))
            out[m]["per_class"].append(acc[np.argsort(-counts)])
    return {"methods": out, "diagnostics": diag}


def appearance_results(size: Sizes, seeds: Sequence[int], images, labels, test) -> dict:
    """Per method: overall, inverted-style and normal-style accuracy per seed."""
    test_x = np.concatenate([test[0], 255 - test[0]])
    test_y = np.concatenate([test[1], test[1]])
    inverted = np.arange(len(test_y)) >= len(test[1])
    out = {m: {"overall": [], "rare": [], "common": [], "worst class": []} for m in METHODS}
    diag = []
    for seed in seeds:
        train_set = appearance_set(labels, size.per_class, size.rare_share, seed=seed)
        y = labels[train_set.rows]
        x = train_set.images(images)
        label_free, clusters = label_free_weights(train_set, images, labels)
        diag.append(_weight_diagnostics(label_free["dequity"], clusters, train_set.inverted))
        for m in METHODS:
            print(f"{train_set.name}: training {m}", flush=True)
            pred = train_and_test(m, x, y, label_free.get(m), test_x, size.epochs, seed)
            correct = pred == test_y
            out[m]["overall"].append(correct.mean())
            out[m]["rare"].append(correct[inverted].mean())
            out[m]["common"].append(correct[~inverted].mean())
            out[m]["worst class"].append(np.nanmin(per_class_accuracy(pred, test_y)))
    return {"methods": out, "diagnostics": diag}


def _weight_diagnostics(weights: np.ndarray, clusters: np.ndarray, rare: np.ndarray) -> dict:
    """What the label-free weights saw: clusters, noise, weight of the rare part."""
    return {
        "clusters": int(clusters.max()) + 1,
        "noise": float(np.mean(clusters < 0)),
        "rare_weight": float(weights[rare].mean()),
        "common_weight": float(weights[~rare].mean()),
    }


def _method_table(results: dict, rare_label: str, common_label: str, extra: str | None) -> str:
    headers = ["method", "overall accuracy %", f"{rare_label} %", f"{common_label} %"]
    headers += [f"{extra} %"] if extra else []
    rows = []
    for m, r in results["methods"].items():
        row = [m, mean_spread(r["overall"]), mean_spread(r["rare"]), mean_spread(r["common"])]
        rows.append(row + ([mean_spread(r[extra])] if extra else []))
    return table(headers, rows)


def _diagnostics_line(diag: list[dict], rare_label: str) -> str:
    def avg(key: str) -> float:
        return float(np.mean([d[key] for d in diag]))

    return (
        f"dequity's default run found {avg('clusters'):.1f} clusters on average, "
        f"{avg('noise'):.1%} noise; mean weight {avg('rare_weight'):.3f} on the "
        f"{rare_label} against {avg('common_weight'):.3f} on the rest "
        "(weights lie in [0.5, 1] with the paper's eta 1, gamma 5)."
    )


def _verdicts(results: dict, part: str) -> list[str]:
    m = results["methods"]
    best_class = max(
        ("class-balanced loss", "class-balanced resampling"), key=lambda k: np.mean(m[k]["rare"])
    )
    return [
        verdict("dequity vs unweighted:", m["dequity"]["rare"], m["unweighted"]["rare"], part),
        verdict(
            "dequity vs unweighted:",
            m["dequity"]["overall"],
            m["unweighted"]["overall"],
            "overall accuracy",
        ),
        verdict(f"dequity vs {best_class}:", m["dequity"]["rare"], m[best_class]["rare"], part),
        verdict(
            "dequity with k-NN density vs unweighted:",
            m["dequity, k-NN"]["rare"],
            m["unweighted"]["rare"],
            part,
        ),
    ]


def run(quick: bool, seeds: Sequence[int], output: Path) -> Section:
    """Both imbalance settings, every method, every seed."""
    size = sizes(quick)
    images, labels = load_split("train")
    test = test_split(size.test_per_class)
    lt = long_tail_results(size, seeds, images, labels, test)
    ap = appearance_results(size, seeds, images, labels, test)
    groups = ["overall", "rare part", "common part"]
    charts = []
    for key, res, title in (
        ("long_tail", lt, "Long-tailed classes (imbalance 100)"),
        ("appearance", ap, f"Appearance imbalance ({size.rare_share:.0%} inverted)"),
    ):
        chart = bar_chart(
            output / f"classification_{key}.png",
            groups,
            {m: [r["overall"], r["rare"], r["common"]] for m, r in res["methods"].items()},
            "test accuracy %",
            title,
        )
        charts.append(chart.name)
    class_sizes = power_law_sizes(10, size.largest, 100.0)
    lt_verdicts = [f"Long tail, {v}" for v in _verdicts(lt, "rare-class accuracy")]
    ap_verdicts = [f"Appearance, {v}" for v in _verdicts(ap, "inverted-style accuracy")]
    per_class_rows = [
        [m, *(f"{100 * v:.1f}" for v in np.nanmean(r["per_class"], axis=0))]
        for m, r in lt["methods"].items()
    ]
    body = f"""Small CNN (about 110k parameters), {size.epochs} epochs' worth of steps, Adam
with a cosine schedule; mean ± std over seeds {list(seeds)}. Each seed draws its
own initialisation; for the long tail also its own subsample and class order, for
the appearance set its own choice of inverted images. Test sets are balanced
({len(test[1]):,} test images; the appearance test shows each in both styles).

### Long-tailed classes

About {class_sizes.sum():,} training images, class sizes {class_sizes.max()} down to
{class_sizes.min()} (ratio 100, classes in a random order per seed).
Rare part: the {RARE_CLASSES} smallest classes; common part: the {RARE_CLASSES} largest.

{_method_table(lt, "rare classes", "common classes", None)}

{_diagnostics_line(lt["diagnostics"], "rare classes")}

Per-class accuracy %, classes from most to least frequent in training (mean over seeds):

{table(["method", *(f"#{i + 1}" for i in range(10))], per_class_rows)}

![long tail](results/{charts[0]})

{chr(10).join("- " + v for v in lt_verdicts)}

### Appearance imbalance, balanced labels

{size.per_class} training images per class; {size.rare_share:.0%} of each class inverted
(white background). Rare part: the inverted test images.

{_method_table(ap, "inverted style", "normal style", "worst class")}

{_diagnostics_line(ap["diagnostics"], "inverted images")}

![appearance](results/{charts[1]})

{chr(10).join("- " + v for v in ap_verdicts)}
"""
    return Section(
        "1. Classification: dequity against class-based rebalancing",
        body,
        lt_verdicts + ap_verdicts,
    )


if __name__ == "__main__":
    script_main(run, __doc__, NAME)
