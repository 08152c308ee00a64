"""Detection on the bundled demo set: baseline against dequity training, over seeds.

The 199 demo frames are split in time: the first 80 % train, the last 20 %
validate (neighbouring frames of a video are near-duplicates, so a random
split would test on the training images). ``compute_dequity`` runs on the
training frames with its defaults; then FCOS on EfficientNet-Lite0
(``training.train_detector``) is trained unweighted and with the weights,
with the same seed, steps and images, and evaluated COCO-style on the
validation frames. The table follows the paper's Table 3: per-class AP,
then the change in percent.

Run: ``python -m experiments.detection [--quick] [--seeds 0 1 2]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

import dequity
from dequity.demo import load_demo_dataset
from dequity.weights import DEFAULT_ETA, DEFAULT_GAMMA
from experiments.pool import cache_dir
from experiments.report import Section, bar_chart, mean_spread, script_main, table, verdict

NAME = "detection"
DATASET = "dequity-exp-demo"
CLASSES = ("person", "car", "truck")
VAL_SHARE = 0.2


def demo_split() -> object:
    """The demo set, tagged ``train``/``val`` in time order, with a dequity run on train."""
    dataset = load_demo_dataset(DATASET)
    if "dequity" in dataset.list_runs():
        return dataset
    dataset.untag_samples(["train", "val"])
    ordered = dataset.sort_by("filepath")
    ids = ordered.values("id")
    cut = round(len(ids) * (1 - VAL_SHARE))
    dataset.select(ids[:cut]).tag_samples("train")
    dataset.select(ids[cut:]).tag_samples("val")
    dequity.compute_dequity(dataset.match_tags("train"), "dequity", progress=False)
    return dataset


def train_pair(dataset, seed: int, steps: int, image_size: int) -> dict[str, dict]:
    """Evaluations of the baseline and the dequity run of one seed."""
    from training import train_detector

    out = {}
    for name, weight_field in (("baseline", None), ("dequity", "dequity_weight")):
        result = train_detector(
            dataset,
            train_key=f"exp_{name}_seed{seed}",
            classes=list(CLASSES),
            weight_field=weight_field,
            train_tag="train",
            val_tag="val",
            steps=steps,
            image_size=image_size,
            seed=seed,
            output_dir=cache_dir() / "detection" / f"{name}_seed{seed}",
            overwrite=True,
            progress=False,
        )
        out[name] = result.evaluation
    return out


def run(quick: bool, seeds: Sequence[int], output: Path) -> Section:
    """Baseline and dequity detectors for every seed, and the Table 3 layout."""
    steps, image_size = (2, 128) if quick else (150, 320)
    dataset = demo_split()
    evals = [train_pair(dataset, seed, steps, image_size) for seed in seeds]
    columns = [*CLASSES, "mAP"]

    def ap(e: dict, col: str) -> float:
        value = e["mAP"] if col == "mAP" else e["per_class_ap"].get(col)
        return float("nan") if value is None else float(value)

    values = {
        m: {c: [ap(e[m], c) for e in evals] for c in columns} for m in ("baseline", "dequity")
    }
    means = {m: {c: np.mean(v) for c, v in values[m].items()} for m in values}
    change = [_change(means["baseline"][c], means["dequity"][c]) for c in columns]
    rows = [
        ["FCOS-EfficientNet-Lite0", "-", "-",
         *(mean_spread(values["baseline"][c]) for c in columns)],
        ["FCOS-EfficientNet-Lite0-DE", DEFAULT_ETA, DEFAULT_GAMMA,
         *(mean_spread(values["dequity"][c]) for c in columns)],
        ["Δ", "", "", *change],
    ]  # fmt: skip
    chart = bar_chart(
        output / "detection_ap.png",
        columns,
        {m: [values[m][c] for c in columns] for m in values},
        "AP (IoU 0.50:0.95) %",
        "Demo set, validation frames",
    )
    train, val = dataset.match_tags("train"), dataset.match_tags("val")
    counts = {
        c: int(train.count_values("ground_truth.detections.label").get(c, 0)) for c in CLASSES
    }
    weights = np.array(train.values("dequity_weight"))
    lines = [
        verdict(
            "Detection, dequity vs baseline:",
            values["dequity"][c],
            values["baseline"][c],
            c if c == "mAP" else f"{c} AP",
        )
        for c in columns
    ]
    body = f"""{len(train)} training and {len(val)} validation frames (a split in time) of the
demo set; boxes in training: {", ".join(f"{c} {n}" for c, n in counts.items())}. The boxes
are SSD-MobileNetV2 detections, not human annotation. FCOS on an ImageNet
EfficientNet-Lite0, {steps} steps of batch 4 at {image_size} px, seeds {list(seeds)};
dequity weights from the default run on the training frames (range
{weights.min():.2f}..{weights.max():.2f}, eta {DEFAULT_ETA:g}, gamma {DEFAULT_GAMMA:g}).
AP is COCO-style (IoU 0.50:0.95), in percent, mean ± std over seeds.

{table(["method", "eta", "gamma", *columns], rows)}

![detection](results/{chart.name})

{chr(10).join("- " + line for line in lines)}
"""
    return Section("4. Detection on the demo set (the paper's Table 3 layout)", body, lines)


def _change(base: float, ours: float) -> str:
    """Relative change in percent, as in the paper's tables ("n/a" from zero)."""
    if not np.isfinite(base) or not np.isfinite(ours) or base <= 0:
        return "n/a"
    return f"{100 * (ours / base - 1):+.1f} %"


if __name__ == "__main__":
    script_main(run, __doc__, NAME)
