"""The ``train`` and ``compare`` sub-commands of the ``dequity`` command line.

Example::

    parser = argparse.ArgumentParser(prog="dequity")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--dataset", "demo", "--steps", "100"])
    args.func(args)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dequity.argtypes import output_folder, output_path

__all__ = ["add_compare", "add_train", "main", "register"]


def _none_or_str(value: str) -> str | None:
    return None if value.lower() in ("none", "") else value


def _train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from training.config import TrainConfig
    from training.runner import train_detector

    # every option named like a TrainConfig field is that field
    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    config = TrainConfig(**options, evaluate=not args.no_eval, progress=not args.quiet)
    result = train_detector(args.dataset, config)
    print(f"run folder: {result.run_dir}")
    if result.evaluation:
        print(f"validation mAP: {result.evaluation['mAP']}")
        print(json.dumps(result.evaluation["per_class_ap"], indent=2))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from training.compare import compare_runs

    output = args.output or f"compare_{Path(args.run_a).name}_{Path(args.run_b).name}.png"
    comparison = compare_runs(args.run_a, args.run_b, dataset=args.dataset, output=output)
    print(comparison.table())
    print(f"chart: {comparison.chart}")
    if args.json:
        Path(args.json).write_text(json.dumps(comparison.to_dict(), indent=2))
    return 0


def add_train(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``train`` sub-command, which sets ``func(args)``.

    Example::

        add_train(argparse.ArgumentParser(prog="dequity").add_subparsers())
    """
    p = subparsers.add_parser(
        "train",
        help="train a detector on a dataset with DatasetEquity weights",
        description=(
            "Train a torchvision detector (default: FCOS on ImageNet-pretrained "
            "EfficientNet-Lite0, works offline) on a FiftyOne dataset, weighting each "
            "image's loss (or, with --weight-level object, each box's) by its DatasetEquity "
            "weight. Writes a run folder, stores "
            "predictions on the validation view as <train-key>_predictions and evaluates "
            "them (COCO mAP, per-class AP). --framework yolo trains Ultralytics YOLO "
            "(yolov8n.yaml from scratch, offline) with the same weights and records."
        ),
    )
    p.add_argument("--dataset", required=True, help="FiftyOne dataset name")
    p.add_argument("--view", help="name of a saved view of the dataset to train on")
    p.add_argument("--train-key", help="name of the run (default: dequity_train or baseline)")
    p.add_argument("--label-field", default="ground_truth", help="Detections field")
    p.add_argument("--classes", nargs="+", help="class names (default: all labels, sorted)")
    p.add_argument(
        "--weight-field",
        type=_none_or_str,
        default="dequity_weight",
        help="per-sample weight field, or 'none' for the unweighted baseline",
    )
    p.add_argument("--likelihood-field", help="likelihood field (default: beside the weights)")
    p.add_argument("--eta", type=float, help="recompute weights from the likelihood with this eta")
    p.add_argument("--gamma", type=float, help="recompute weights with this gamma")
    p.add_argument(
        "--weight-level",
        choices=("image", "object"),
        default="image",
        help="weight each image by its sample field, or each box by the attribute of the "
        "same name on its Detection (default: image)",
    )
    p.add_argument(
        "--missing-box-weight",
        type=float,
        help="with --weight-level object: the weight of a box without one "
        "(default: such a box is an error)",
    )
    p.add_argument(
        "--sampling-field",
        help="draw training images with replacement, with probability proportional to this "
        "field (e.g. dequity_weight; add --weight-field none to sample without loss weights)",
    )
    p.add_argument(
        "--sampling-power",
        type=float,
        default=1.0,
        help="draw in proportion to the sampling field raised to this power; "
        "--sampling-field dequity_likelihood --sampling-power -0.5 draws rare images more "
        "without loss weights (default 1)",
    )
    p.add_argument(
        "--normalize-weights",
        action="store_true",
        help="divide each batch's weights by their mean (weights change the balance "
        "between images, not the learning rate)",
    )
    split = p.add_argument_group("split")
    split.add_argument("--train-tag", help="tag of the training samples")
    split.add_argument("--val-tag", help="tag of the validation samples")
    split.add_argument(
        "--val-fraction", type=float, default=0.2, help="validation fraction without tags"
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--framework",
        choices=("torchvision", "yolo"),
        default="torchvision",
        help="torchvision detectors, or Ultralytics YOLO (pip install 'dequity[yolo]')",
    )
    model.add_argument(
        "--detector",
        default="fcos_efficientnet_lite0",
        help="fcos_efficientnet_lite0, retinanet_efficientnet_lite0 or a torchvision name; "
        "with --framework yolo a model YAML shipped with ultralytics (default yolov8n.yaml, "
        "trained from scratch)",
    )
    model.add_argument(
        "--weights",
        help="torchvision detection weights (e.g. DEFAULT); with --framework yolo a local .pt",
    )
    model.add_argument("--weights-backbone", help="torchvision backbone weights")
    model.add_argument("--image-size", type=int, default=512, help="longest image side")
    model.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="keep the backbone's body pretrained and train the pyramid and head on its "
        "feature maps, computed once per image (many more steps per minute on a CPU)",
    )
    model.add_argument("--feature-cache", help="folder keeping those feature maps between runs")
    model.add_argument(
        "--channels", type=int, default=128, help="EfficientNet-Lite pyramid and head width"
    )
    model.add_argument("--head-convs", type=int, default=4, help="convolutions per FCOS head tower")
    loop = p.add_argument_group("optimisation")
    loop.add_argument("--steps", type=int, help="total optimiser steps (overrides --epochs)")
    loop.add_argument("--epochs", type=int, help="total epochs (default 1)")
    loop.add_argument("--batch-size", type=int, default=4)
    loop.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    loop.add_argument(
        "--warmup-steps", type=int, default=0, help="linear learning-rate warm-up steps"
    )
    loop.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    out = p.add_argument_group("output")
    out.add_argument(
        "--output-dir", type=output_folder, help="run folder (default: runs/<train-key>)"
    )
    out.add_argument("--resume", help="run folder or checkpoint.pt to continue from")
    out.add_argument("--overwrite", action="store_true", help="replace a run of the same key")
    out.add_argument("--no-eval", action="store_true", help="skip predicting and evaluating")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def add_compare(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``compare`` sub-command, which sets ``func(args)``.

    Example::

        add_compare(argparse.ArgumentParser(prog="dequity").add_subparsers())
    """
    p = subparsers.add_parser(
        "compare",
        help="per-class AP of two training runs side by side",
        description=(
            "Print the per-class AP of RUN_B against RUN_A with the change in percent, "
            "and save a bar chart. A run is a run folder or, with --dataset, a train key."
        ),
    )
    p.add_argument("run_a", metavar="RUN_A", help="run folder or train key (the reference)")
    p.add_argument("run_b", metavar="RUN_B", help="run folder or train key")
    p.add_argument("--dataset", help="dataset holding the runs when given by train key")
    p.add_argument(
        "--output", type=output_path, help="bar chart PNG (default: compare_<A>_<B>.png)"
    )
    p.add_argument("--json", type=output_path, help="also write the table as JSON here")
    p.set_defaults(func=_compare)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``train`` and ``compare`` sub-commands; each sets ``func(args)``.

    Example::

        parser = argparse.ArgumentParser(prog="dequity")
        register(parser.add_subparsers(dest="command", required=True))
    """
    add_train(subparsers)
    add_compare(subparsers)


def main(argv: list[str] | None = None) -> int:
    """Runs the ``dequity`` command line (``python -m training.cli train ...``).

    Example::

        main(["compare", "runs/baseline", "runs/dequity_train"])
    """
    from dequity.cli import main as dequity_main

    return dequity_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
