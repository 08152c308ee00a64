"""Classification on Fashion-MNIST, trained ten ways, on two kinds of imbalance.

- Long tail: class sizes fall off as a power law (imbalance ratio 100).
- Appearance: labels balanced, but in every class a few images are shown
  inverted (a rare style), like the paper's "70 % NYC, 30 % desert".

A small CNN is trained unweighted, with dequity weights (label-free, from
``compute_dequity`` with its defaults, with the previous default (the content
view as a likelihood, ``views="content"``), with the earlier default on the whole vector
(``views=None``), with the default before the every-stage model (final
EfficientNet-Lite0 features, HDBSCAN cluster sizes, noise as singletons) and
with ``clustering="knn"``), with the tools a user would reach for instead
(FiftyOne Brain's uniqueness in the same GFL weights; JTT, its epochs and
lambda chosen on a validation split of seed 100's sets), with the
class-balanced loss of Cui et al. (2019) and with class-balanced resampling.
The test sets are balanced: the whole test split, and for the appearance set
each test image in both styles.

Per-seed raw values go to ``docs/results/classification_runs.json`` with the
config and commit; :func:`section_from_json` turns that file into the report.

Run: ``python -m experiments.classification [--quick] [--seeds 0 1 2 3 4]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from experiments.classifier import (
    JTT_GRID,
    LABEL_FREE,
    METHODS,
    PEERS,
    jtt_weights,
    label_free_models,
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
from experiments.pool import (
    brain_likelihoods,
    dequity_fields,
    prepare_pool,
    training_dataset,
    values_in_order,
)
from experiments.report import Section, bar_chart, script_main, table
from experiments.stats import PairedTest, mean_ci, paired_tests
from reporting import git_commit

NAME = "classification"
RAW_FILE = "classification_runs.json"
RARE_CLASSES = 3
SELECTION_SEED = 100  # JTT's (epochs, lambda) are chosen on this seed's sets, never reported
VALIDATION_PER_CLASS = 100


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

    The methods (:data:`LABEL_FREE`) run ``compute_dequity``; FiftyOne Brain's
    uniqueness enters the same GFL weights (the library's eta and gamma) as
    the likelihood ``1 - uniqueness``. No labels are used.
    """
    from dequity.pipeline.weights import gfl_weight

    ds = training_dataset(train_set, images, labels)
    weights = {"FiftyOne Brain uniqueness": gfl_weight(brain_likelihoods(ds, train_set))}
    for method in reversed(LABEL_FREE):  # the default runs last: its clusters stay
        (weights[method],) = dequity_fields(ds, train_set, ("weight",), **LABEL_FREE[method])
    return weights, values_in_order(ds, train_set, "dequity_cluster")


def validation_split(
    train_set: TrainingSet, images: np.ndarray, labels: np.ndarray, both_styles: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A balanced split of training-split images that ``train_set`` does not use.

    :data:`VALIDATION_PER_CLASS` images per class; with ``both_styles`` each
    appears normal and inverted, as in the appearance test.

    Example::

        x, y = validation_split(long_tail_set(labels, 1000, seed=100), images, labels, False)
    """
    unused = np.setdiff1d(np.arange(len(labels)), train_set.rows)
    rows = np.concatenate(
        [unused[labels[unused] == c][:VALIDATION_PER_CLASS] for c in range(len(CLASSES))]
    )
    x, y = images[rows], labels[rows]
    return (np.concatenate([x, 255 - x]), np.concatenate([y, y])) if both_styles else (x, y)


def select_jtt(size: Sizes, images: np.ndarray, labels: np.ndarray) -> dict[str, dict]:
    """JTT's (epochs, lambda) per setting, by rare-part accuracy on validation (seed 100).

    Every pair of :data:`~experiments.classifier.JTT_GRID` trains on the
    selection seed's set and is scored on :func:`validation_split`: the rare
    classes' accuracy for the long tail, the inverted images' for the appearance set.

    Example::

        select_jtt(sizes(True), *load_split("train"))["long_tail"]["lambda"]
    """
    out = {}
    for setting in ("long_tail", "appearance"):
        appearance = setting == "appearance"
        train_set = (
            appearance_set(labels, size.per_class, size.rare_share, SELECTION_SEED)
            if appearance
            else long_tail_set(labels, size.largest, seed=SELECTION_SEED)
        )
        x, y = train_set.images(images), labels[train_set.rows]
        val_x, val_y = validation_split(train_set, images, labels, appearance)
        rare = (
            np.arange(len(val_y)) >= len(val_y) // 2  # the inverted copies
            if appearance
            else np.isin(val_y, np.argsort(np.bincount(y, minlength=10))[:RARE_CLASSES])
        )
        scores = {}
        for epochs in JTT_GRID["epochs"]:
            for lam in JTT_GRID["lambda"]:
                w = jtt_weights(x, y, epochs, lam, SELECTION_SEED)
                pred = train_and_test("JTT", x, y, w, val_x, size.epochs, SELECTION_SEED)
                scores[f"{epochs},{lam:g}"] = float((pred == val_y)[rare].mean())
        best = max(scores, key=scores.get)
        epochs, lam = best.split(",")
        out[setting] = {"epochs": int(epochs), "lambda": float(lam), "validation": scores}
        print(f"JTT on {setting}: chose epochs {epochs}, lambda {lam} ({scores})", flush=True)
    return out


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


def long_tail_seed(size: Sizes, seed: int, images, labels, test, jtt: dict) -> dict:
    """One seed of the long tail: every method's accuracies, and what the weights saw."""
    train_set = long_tail_set(labels, size.largest, seed=seed)
    y = labels[train_set.rows]
    x = train_set.images(images)
    label_free, clusters = label_free_weights(train_set, images, labels)
    label_free["JTT"] = jtt_weights(x, y, jtt["epochs"], jtt["lambda"], seed)
    counts = np.bincount(y, minlength=10)
    by_size = np.argsort(counts)
    rare, common = by_size[:RARE_CLASSES], by_size[-RARE_CLASSES:]
    out = {}
    for m in METHODS:
        print(f"{train_set.name}: training {m}", flush=True)
        pred = train_and_test(m, x, y, label_free.get(m), test[0], size.epochs, seed)
        acc = per_class_accuracy(pred, test[1])
        out[m] = {
            "overall": float(np.nanmean(acc)),
            "rare": float(np.nanmean(acc[rare])),
            "common": float(np.nanmean(acc[common])),
            "per_class": acc[np.argsort(-counts)].tolist(),
        }
    diag = _weight_diagnostics(label_free["dequity"], clusters, np.isin(y, rare))
    return {"methods": out, "diagnostics": diag, "class_sizes": sorted(counts.tolist())[::-1]}


def appearance_seed(size: Sizes, seed: int, images, labels, test, jtt: dict) -> dict:
    """One seed of the appearance set: every method's accuracies, and what the weights saw."""
    test_x = np.concatenate([test[0], 255 - test[0]])
    test_y = np.concatenate([test[1], test[1]])
    inverted = np.arange(len(test_y)) >= len(test[1])
    train_set = appearance_set(labels, size.per_class, size.rare_share, seed=seed)
    y = labels[train_set.rows]
    x = train_set.images(images)
    label_free, clusters = label_free_weights(train_set, images, labels)
    label_free["JTT"] = jtt_weights(x, y, jtt["epochs"], jtt["lambda"], seed)
    out = {}
    for m in METHODS:
        print(f"{train_set.name}: training {m}", flush=True)
        pred = train_and_test(m, x, y, label_free.get(m), test_x, size.epochs, seed)
        correct = pred == test_y
        out[m] = {
            "overall": float(correct.mean()),
            "rare": float(correct[inverted].mean()),
            "common": float(correct[~inverted].mean()),
            "worst class": float(np.nanmin(per_class_accuracy(pred, test_y))),
        }
    diag = _weight_diagnostics(label_free["dequity"], clusters, train_set.inverted)
    return {"methods": out, "diagnostics": diag}


def _weight_diagnostics(weights: np.ndarray, clusters: np.ndarray, rare: np.ndarray) -> dict:
    """What the label-free weights saw: clusters, noise, weight of the rare part."""
    return {
        "clusters": int(clusters.max()) + 1,
        "noise": float(np.mean(clusters < 0)),
        "rare_weight": float(weights[rare].mean()),
        "common_weight": float(weights[~rare].mean()),
    }


def run(quick: bool, seeds: Sequence[int], output: Path) -> Section:
    """Both imbalance settings, every method, every seed; raw values to ``output/RAW_FILE``.

    A full run resumes: seeds already in the raw file under the same
    config are kept, the others are trained and added one by one.
    """
    size = sizes(quick)
    images, labels = load_split("train")
    test = test_split(size.test_per_class)
    config = {
        "sizes": asdict(size),
        "methods": list(METHODS),
        "label_free": LABEL_FREE,
        "rare_classes": RARE_CLASSES,
        "test_images": len(test[1]),
        "jtt_grid": JTT_GRID,
        "selection_seed": SELECTION_SEED,
        "validation_per_class": VALIDATION_PER_CLASS,
    }
    path = output / RAW_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    if data.get("config") != config or data.get("mode") != ("quick" if quick else "full"):
        data = {"experiment": NAME, "mode": "quick" if quick else "full", "config": config}
        data["runs"] = {}
    data |= {"seeds": list(seeds), "commit": git_commit(), "date": time.strftime("%Y-%m-%d")}
    if "jtt" not in data:
        data["jtt"] = select_jtt(size, images, labels)
        path.write_text(json.dumps(data, indent=1))
    todo = [s for s in seeds if str(s) not in data["runs"]]
    sets = [long_tail_set(labels, size.largest, seed=s) for s in todo]
    sets += [appearance_set(labels, size.per_class, size.rare_share, seed=s) for s in todo]
    prepare_pool(sets, images, labels, label_free_models())
    for seed in todo:
        data["runs"][str(seed)] = {
            "long_tail": long_tail_seed(size, seed, images, labels, test, data["jtt"]["long_tail"]),
            "appearance": appearance_seed(
                size, seed, images, labels, test, data["jtt"]["appearance"]
            ),
        }
        path.write_text(json.dumps(data, indent=1))
    path.write_text(json.dumps(data, indent=1))
    return section_from_json(path)


def _values(data: dict, setting: str, method: str, metric: str) -> list[float]:
    return [data["runs"][str(s)][setting]["methods"][method][metric] for s in data["seeds"]]


def _methods(data: dict) -> list[str]:
    """The methods of a saved run, in training order."""
    first = data["runs"][str(data["seeds"][0])]
    return list(next(iter(first.values()))["methods"])


def _comparisons(methods: list[str]) -> list[tuple[str, str]]:
    """The comparisons tested, Holm-corrected together within each setting: (method, reference)."""
    return [
        *((m, "unweighted") for m in methods if m != "unweighted"),
        *(("dequity", peer) for peer in PEERS if peer in methods),
        ("dequity", "class-balanced loss"),
        ("dequity", "class-balanced resampling"),
    ]


def _tests(data: dict, setting: str) -> dict[tuple[str, str, str], PairedTest]:
    """Paired tests of every comparison on rare-part and overall accuracy, Holm over all."""
    diffs = {}
    for metric in ("rare", "overall"):
        for method, ref in _comparisons(_methods(data)):
            a, b = _values(data, setting, method, metric), _values(data, setting, ref, metric)
            diffs[(method, ref, metric)] = np.subtract(a, b)
    tests = paired_tests({str(k): d for k, d in diffs.items()}, np.zeros(len(data["seeds"])))
    return {k: tests[str(k)] for k in diffs}


def _method_table(data: dict, setting: str, tests: dict, labels: tuple[str, ...]) -> str:
    metrics = ("overall", "rare", "common", *(("worst class",) if len(labels) > 3 else ()))
    headers = ["method", *(f"{label} %" for label in labels)]
    headers += ["rare − unweighted, points", "p (Holm)"]
    rows = []
    for m in _methods(data):
        row = [m, *(mean_ci(_values(data, setting, m, k)).format() for k in metrics)]
        t = tests.get((m, "unweighted", "rare"))
        row += [t.diff.format(signed=True), f"{t.p_holm:.3f}"] if t else ["", ""]
        rows.append(row)
    return table(headers, rows)


def _diagnostics_line(data: dict, setting: str, rare_label: str) -> str:
    diag = [data["runs"][str(s)][setting]["diagnostics"] for s in data["seeds"]]

    def avg(key: str) -> float:
        return float(np.mean([d[key] for d in diag]))

    return (
        f"dequity's default run found {avg('clusters'):.1f} clusters on average, "
        f"{avg('noise'):.1%} noise; mean weight {avg('rare_weight'):.3f} on the "
        f"{rare_label} against {avg('common_weight'):.3f} on the rest "
        "(weights lie in [0.5, 1] with the paper's eta 1, gamma 5)."
    )


def _verdicts(tests: dict, setting: str, rare_label: str) -> list[str]:
    """One sentence per comparison on the rare part, and dequity's overall change."""
    keys = [k for k in tests if k[2] == "rare"] + [("dequity", "unweighted", "overall")]
    out = []
    for method, ref, metric in keys:
        t = tests[(method, ref, metric)]
        what = rare_label if metric == "rare" else "overall accuracy"
        effect = (
            ("a significant gain" if t.diff.mean > 0 else "a significant loss")
            if t.significant
            else "no significant difference"
        )
        out.append(
            f"{setting}, {method} vs {ref}: {what} {t.diff.format(signed=True)} points "
            f"(95 % CI over {t.diff.n} seeds; Holm p = {t.p_holm:.3f}): {effect}."
        )
    return out


def _jtt_line(data: dict) -> str:
    """Which (epochs, lambda) JTT used in each setting, as chosen on validation."""
    if "jtt" not in data:
        return ""
    chosen = "; ".join(
        f"{setting.replace('_', ' ')}: {c['epochs']} epoch{'s' * (c['epochs'] > 1)}, "
        f"lambda {c['lambda']:g} (of {len(c['validation'])} pairs)"
        for setting, c in data["jtt"].items()
    )
    return (
        f" FiftyOne Brain uniqueness scores the final features; JTT's error-finding epochs "
        f"and lambda were chosen by rare-part accuracy on a validation split of seed "
        f"{data['config']['selection_seed']}'s sets ({chosen})."
    )


def section_from_json(path: Path) -> Section:
    """The report of a saved run (``classification_runs.json``): CIs, paired tests, verdicts.

    Example::

        print(section_from_json(Path("docs/results/classification_runs.json")).markdown())
    """
    data = json.loads(Path(path).read_text())
    size, seeds = Sizes(**data["config"]["sizes"]), data["seeds"]
    output = Path(path).parent
    lt_tests, ap_tests = _tests(data, "long_tail"), _tests(data, "appearance")
    charts = []
    for key, title in (
        ("long_tail", "Long-tailed classes (imbalance 100)"),
        ("appearance", f"Appearance imbalance ({size.rare_share:.0%} inverted)"),
    ):
        series = {
            m: [_values(data, key, m, k) for k in ("overall", "rare", "common")]
            for m in _methods(data)
        }
        chart = output / f"classification_{key}.png"
        bar_chart(chart, ["overall", "rare part", "common part"], series, "test accuracy %", title)
        charts.append(chart.name)
    class_sizes = power_law_sizes(10, size.largest, 100.0)
    lt_verdicts = _verdicts(lt_tests, "Long tail", "rare-class accuracy")
    ap_verdicts = _verdicts(ap_tests, "Appearance", "inverted-style accuracy")
    per_class = {
        m: np.mean([data["runs"][str(s)]["long_tail"]["methods"][m]["per_class"] for s in seeds], 0)
        for m in _methods(data)
    }
    per_class_rows = [[m, *(f"{100 * v:.1f}" for v in per_class[m])] for m in _methods(data)]
    body = f"""Generated from `results/{RAW_FILE}` ({data["mode"]} mode, commit
`{data["commit"][:12]}`, {data["date"]}). Small CNN (about 110k parameters),
{size.epochs} epochs' worth of steps, Adam with a cosine schedule; seeds {seeds}. Each
seed draws its own initialisation; for the long tail also its own subsample and class
order, for the appearance set its own choice of inverted images. Test sets are balanced
({data["config"]["test_images"]:,} test images; the appearance test shows each in both
styles). Values are means with 95 % t intervals over seeds; each comparison is a paired
t-test over seeds, Holm-corrected over the {len(lt_tests)} comparisons of its setting
(rare-part and overall accuracy).{_jtt_line(data)}

### Long-tailed classes

About {class_sizes.sum():,} training images, class sizes {class_sizes.max()} down to
{class_sizes.min()} (ratio 100, classes in a random order per seed).
Rare part: the {RARE_CLASSES} smallest classes; common part: the {RARE_CLASSES} largest.

{_method_table(data, "long_tail", lt_tests, ("overall", "rare classes", "common classes"))}

{_diagnostics_line(data, "long_tail", "rare classes")}

Per-class accuracy %, classes from most to least frequent in training (mean over seeds):

{table(["method", *(f"#{i + 1}" for i in range(10))], per_class_rows)}

![long tail](results/{charts[0]})

{chr(10).join("- " + v for v in lt_verdicts)}

### Appearance imbalance, balanced labels

{size.per_class} training images per class; {size.rare_share:.0%} of each class inverted
(white background). Rare part: the inverted test images.

{
        _method_table(
            data,
            "appearance",
            ap_tests,
            ("overall", "inverted style", "normal style", "worst class"),
        )
    }

{_diagnostics_line(data, "appearance", "inverted images")}

![appearance](results/{charts[1]})

{chr(10).join("- " + v for v in ap_verdicts)}
"""
    return Section(
        "1. Classification: dequity against its peers and class-based rebalancing",
        body,
        [v for v in lt_verdicts + ap_verdicts if ", dequity vs " in v],
    )


if __name__ == "__main__":
    script_main(run, __doc__, NAME)
