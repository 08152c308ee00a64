"""The ``dequity`` command line.

Examples::

    dequity demo
    dequity compute --dataset kitti --model efficientnet-lite0
    dequity compute --dataset kitti --run-key objects --patches-field ground_truth
    dequity compute --dataset kitti --run-key paper --projection tsne \\
        --clustering dbscan --clustering-kwargs eps=2.0 min_samples=10 --noise cluster
    dequity reweight --dataset kitti --eta 0.5 --gamma 2
    dequity export --dataset kitti kitti_weights.json
    dequity list --dataset kitti
    dequity delete --dataset kitti --run-key paper
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from dequity import defaults
from dequity.argtypes import output_path
from dequity.console import cli_output
from dequity.errors import DequityError
from dequity.pipeline import clustering as dc
from dequity.pipeline import projection as dp
from dequity.pipeline.likelihood import NOISE_POLICIES
from dequity.pipeline.views import AUTO, MODES, describe_split
from dequity.sources.shards import Shards

#: Sub-commands that live in other packages: name -> ``"module:function"``
#: that adds them to the sub-parsers. Imported when the parser is built, so
#: this module imports nothing heavy (``training`` loads torch on first use).
EXTERNAL_COMMANDS = {
    "train": "training.cli:add_train",
    "compare": "training.cli:add_compare",
}


def parse_kwargs(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["eps=2.0", "metric=euclidean"]`` -> ``{"eps": 2.0, "metric": "euclidean"}``.

    Example::

        >>> parse_kwargs(["eps=2.0", "min_samples=10"])
        {'eps': 2.0, 'min_samples': 10}
    """
    kwargs: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DequityError(f"expected key=value, got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


def _load_samples(args: argparse.Namespace) -> Any:
    import fiftyone as fo

    if not fo.dataset_exists(args.dataset):
        raise DequityError(f"no FiftyOne dataset {args.dataset!r}; datasets: {fo.list_datasets()}")
    dataset = fo.load_dataset(args.dataset)
    if getattr(args, "view", None):
        if not dataset.has_saved_view(args.view):
            raise DequityError(
                f"dataset {args.dataset!r} has no saved view {args.view!r}; "
                f"saved views: {dataset.list_saved_views()}"
            )
        return dataset.load_saved_view(args.view)
    return dataset


def _add_dataset_args(parser: argparse.ArgumentParser, view: bool = False) -> None:
    parser.add_argument("--dataset", required=True, help="FiftyOne dataset name")
    if view:
        parser.add_argument("--view", help="a saved view of the dataset to restrict the run to")
    parser.add_argument(
        "--run-key",
        default=defaults.DEFAULT_RUN_KEY,
        help=f"run name (default: {defaults.DEFAULT_RUN_KEY})",
    )


def _add_compute_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--embeddings", help="read embeddings from this vector field")
    source.add_argument(
        "--shards",
        metavar="DIR",
        help="read embeddings from the Parquet vector shards in DIR (--likelihood-backend ray)",
    )
    source.add_argument(
        "--model",
        help=f"embedding model: {defaults.DEFAULT_MODEL} (default, offline), efficientnet-lite0 or "
        "clip:ViT-B-32@laion2b_s34b_b79k (open_clip tag or checkpoint path)",
    )
    parser.add_argument("--embeddings-field", help="store computed embeddings in this field")
    projections = [m or dp.NO_PROJECTION for m in dp.PROJECTIONS]
    parser.add_argument("--projection", default=defaults.DEFAULT_PROJECTION, choices=projections)
    parser.add_argument("--projection-kwargs", nargs="*", metavar="KEY=VALUE")
    parser.add_argument(
        "--clustering", default=defaults.DEFAULT_CLUSTERING, choices=list(dc.CLUSTERINGS)
    )
    parser.add_argument(
        "--clustering-kwargs", nargs="*", metavar="KEY=VALUE", help="e.g. eps=2.0 min_samples=10"
    )
    parser.add_argument("--noise", default=defaults.DEFAULT_NOISE, choices=list(NOISE_POLICIES))
    parser.add_argument(
        "--views",
        default=defaults.DEFAULT_VIEWS,
        choices=[AUTO, *MODES, "none"],
        help="with the default model's vectors, a sample is also scored on its final features "
        "and keeps the smallest view's likelihood (writes <run-key>_rare_by). ranked "
        "(default): the content and off-domain views' ranks; content: the content view's "
        "likelihood; auto: the default's mode; none: the whole vector only",
    )
    groups = parser.add_mutually_exclusive_group()
    groups.add_argument(
        "--group-field",
        help="count each scene/sequence once: a field naming each sample's group",
    )
    groups.add_argument(
        "--collapse-near-duplicates",
        type=float,
        metavar="COSINE",
        help="count runs of consecutive near-identical samples once (e.g. 0.8)",
    )
    parser.add_argument(
        "--patches-field",
        help="score each box of this Detections field instead of each image (an object run)",
    )
    parser.add_argument("--eta", type=float, default=defaults.DEFAULT_ETA)
    parser.add_argument("--gamma", type=float, default=defaults.DEFAULT_GAMMA)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run")
    parser.add_argument("--batch-size", type=int, default=defaults.DEFAULT_BATCH_SIZE)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--precision",
        default=defaults.DEFAULT_PRECISION,
        choices=list(defaults.PRECISIONS),
        help="embedding precision (auto: fp16 autocast on CUDA, fp32 on CPU)",
    )
    parser.add_argument(
        "--fail-on-unreadable",
        action="store_true",
        help="stop on an unreadable image (default: skip it with a warning)",
    )
    parser.add_argument(
        "--likelihood-backend",
        default="local",
        choices=["local", "ray"],
        help="ray: place and write the samples in partitions on Ray, for vectors that do not "
        "fit one machine; reads --embeddings or --shards, or embeds with --embedding-backend ray",
    )
    parser.add_argument(
        "--embedding-backend",
        default="local",
        choices=["local", "ray"],
        help="ray: embed on Ray, one model actor per --ray-workers (pip install 'dequity[ray]')",
    )
    parser.add_argument(
        "--ray-shards",
        metavar="DIR",
        help="with both backends on Ray: keep the vector shards the workers write in DIR "
        "(default: a temporary directory, removed after the run)",
    )
    parser.add_argument(
        "--ray-address",
        help="Ray cluster to join (auto, ray://host:10001; default: a local instance)",
    )
    parser.add_argument(
        "--ray-workers", type=int, default=None, help="Ray tasks to run at once (default: 2)"
    )


def _compute_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "embeddings": Shards.open(args.shards) if args.shards else args.embeddings,
        "model": args.model,
        "embeddings_field": args.embeddings_field,
        "projection": None if args.projection == dp.NO_PROJECTION else args.projection,
        "projection_kwargs": parse_kwargs(args.projection_kwargs),
        "clustering": args.clustering,
        "clustering_kwargs": parse_kwargs(args.clustering_kwargs),
        "noise": args.noise,
        "views": None if args.views == "none" else args.views,
        "eta": args.eta,
        "gamma": args.gamma,
        "group_field": args.group_field,
        "collapse_near_duplicates": args.collapse_near_duplicates,
        "patches_field": args.patches_field,
        "overwrite": args.overwrite,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "device": args.device,
        "precision": args.precision,
        "skip_failures": not args.fail_on_unreadable,
        "embedding_backend": args.embedding_backend,
        "likelihood_backend": args.likelihood_backend,
        "ray_options": _ray_options(args),
        "progress": True,
    }


def _ray_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``ray_options`` from ``--ray-address``, ``--ray-workers`` and ``--ray-shards`` (or None)."""
    options = {
        "address": args.ray_address,
        "num_workers": args.ray_workers,
        "shards": args.ray_shards,
    }
    return {k: v for k, v in options.items() if v is not None} or None


def format_summary(results: Any, samples: Any, num_rarest: int = 5) -> str:
    """Human-readable summary of a run: clusters, noise, weights, rarest samples.

    Example::

        print(format_summary(dequity.load_dequity_results(ds, "dequity"), ds))
    """
    s = results.summary()
    sizes = ", ".join(f"{k}:{v}" for k, v in s["cluster_sizes"].items())
    objects = (
        f"{s['num_objects']} objects of {s['patches_field']!r} on " if "num_objects" in s else ""
    )
    lines = [
        f"run {s['run_key']!r}: {objects}{s['num_samples']} samples, {s['num_clusters']} clusters, "
        f"{s['noise_fraction']:.1%} noise, {s['num_missing']} without embedding",
        f"cluster sizes (id:size, common to rare; -1 = noise): {sizes}",
        f"weights (eta={s['eta']}, gamma={s['gamma']}): "
        f"{s['min_weight']:.3f} (most common) .. {s['max_weight']:.3f} (rarest)",
        "rarest samples:",
    ]
    weight_field = results.config.weight_field
    if results.views:
        split = describe_split(results.rare_by)
        lines.insert(-1, f"rare in any view ({results.config.rare_by_field}): {split}")
    rarest = samples.exists(weight_field).sort_by(weight_field, reverse=True).limit(num_rarest)
    fields = ["filepath", weight_field] + ([results.config.rare_by_field] if results.views else [])
    for path, weight, *why in zip(*rarest.values(fields)):
        lines.append(f"  {weight:.3f}  {path}" + (f"  ({why[0]})" if why else ""))
    return "\n".join(lines)


def _cmd_compute(args: argparse.Namespace) -> None:
    import dequity

    samples = _load_samples(args)
    results = dequity.compute_dequity(samples, args.run_key, **_compute_options(args))
    print(format_summary(results, samples))


def _cmd_update(args: argparse.Namespace) -> None:
    import dequity

    samples = _load_samples(args)
    before = len(dequity.load_dequity_results(samples, args.run_key).sample_ids)
    results = dequity.update_dequity(
        samples,
        args.run_key,
        embeddings=args.embeddings,
        progress=True,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
    )
    added = len(results.sample_ids) - before
    print(f"added {added} new samples to run {args.run_key!r}" if added else "no new samples")
    print(format_summary(results, samples))


def _cmd_reweight(args: argparse.Namespace) -> None:
    import dequity

    samples = _load_samples(args)
    results = dequity.load_dequity_results(samples, args.run_key)
    results.reweight(args.eta, args.gamma, progress=True)
    print(format_summary(results, samples))


def _cmd_export(args: argparse.Namespace) -> None:
    import dequity

    path = dequity.export_weights(
        _load_samples(args),
        args.run_key,
        args.path,
        format=args.format,
        token_field=args.token_field,
    )
    print(f"wrote {path}")


def _cmd_list(args: argparse.Namespace) -> None:
    import dequity

    samples = _load_samples(args)
    keys = dequity.list_dequity_runs(samples)
    if not keys:
        print(f"no dequity runs on {args.dataset!r}; compute one with `dequity compute`")
    for key in keys:
        info = samples.get_run_info(key)
        c = info.config
        s = dequity.load_dequity_results(samples, key).summary()
        print(
            f"{key}: {info.timestamp:%Y-%m-%d %H:%M} {c.model or c.embeddings_field} "
            f"{c.projection}+{c.clustering} noise={c.noise} eta={c.eta} gamma={c.gamma} | "
            f"{s['num_samples']} samples, {s['num_clusters']} clusters, "
            f"{s['noise_fraction']:.1%} noise"
        )


def _cmd_delete(args: argparse.Namespace) -> None:
    import dequity

    dequity.delete_dequity_run(_load_samples(args), args.run_key)
    print(f"deleted run {args.run_key!r} and its fields")


def _cmd_rename(args: argparse.Namespace) -> None:
    import dequity
    from dequity.store.names import field_names

    dataset = _load_samples(args)
    old, new = args.run_key, args.new_run_key
    dequity.rename_dequity_run(dataset, old, new)
    # FiftyOne only logs a failure of the run's own rename step (its fields)
    if dataset.get_run_info(new).config.weight_field != field_names(new)["weight"]:
        dataset.rename_run(new, old)
        raise DequityError(
            f"could not rename the fields of run {old!r} to {new!r}; "
            f"the run keeps its key {old!r}: choose another new key"
        )
    print(f"renamed run {old!r} to {new!r}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from dequity.api.compute import compute_dequity
    from dequity.demo import DEMO_NEAR_DUPLICATES, DEMO_SCENES_RUN_KEY, load_demo_dataset

    dataset = load_demo_dataset(args.name, overwrite=args.fresh)
    folder = os.path.commonpath([os.path.dirname(p) for p in dataset.values("filepath")])
    print(f"dataset {dataset.name!r}: {len(dataset)} images from {folder}")
    results = compute_dequity(
        dataset,
        defaults.DEFAULT_RUN_KEY,
        model=args.model,
        embeddings_field="embedding",
        overwrite=True,
        progress=True,
        num_workers=args.num_workers,
    )
    print(format_summary(results, dataset))
    scenes = compute_dequity(
        dataset,
        DEMO_SCENES_RUN_KEY,
        embeddings="embedding",
        collapse_near_duplicates=DEMO_NEAR_DUPLICATES,
        overwrite=True,
        progress=False,
    )
    print(
        f"\nthe frames are a video: with runs of near-identical frames counted once "
        f"(collapse_near_duplicates={DEMO_NEAR_DUPLICATES}, run {DEMO_SCENES_RUN_KEY!r}):"
    )
    print(format_summary(scenes, dataset))
    print(
        "\nopen it in the App:  fiftyone app launch " + dataset.name + "\n"
        "then sort the grid by dequity_weight (rarest first), or in Python:\n"
        f"  fo.load_dataset({dataset.name!r}).sort_by('dequity_weight', reverse=True)"
    )


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors take one line, as every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dequity`` command."""
    parser = _Parser(
        prog="dequity",
        description="Find visually common and rare images in FiftyOne datasets "
        "(DatasetEquity) and weight them for training.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compute", help="compute likelihoods and weights for a dataset")
    _add_dataset_args(p, view=True)
    _add_compute_args(p)
    p.set_defaults(func=_cmd_compute)

    p = sub.add_parser(
        "update", help="give new samples a run's values from its stored fit, without a refit"
    )
    _add_dataset_args(p)
    p.add_argument("--embeddings", help="the new samples' embeddings field (default: the run's)")
    p.add_argument("--batch-size", type=int, default=defaults.DEFAULT_BATCH_SIZE)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
    p.set_defaults(func=_cmd_update)

    p = sub.add_parser("reweight", help="new eta/gamma for a run; rewrites only the weights")
    _add_dataset_args(p)
    p.add_argument("--eta", type=float, required=True)
    p.add_argument("--gamma", type=float, required=True)
    p.set_defaults(func=_cmd_reweight)

    p = sub.add_parser("export", help="write a run's weights as JSON, CSV or the authors' pkl")
    _add_dataset_args(p)
    p.add_argument("path", type=output_path, help="output file: .json, .csv or .pkl")
    p.add_argument("--format", choices=["json", "csv", "pkl"], help="default: from the suffix")
    p.add_argument("--token-field", help="pkl keys from this field (default: file stem)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("list", help="list the dequity runs of a dataset")
    p.add_argument("--dataset", required=True, help="FiftyOne dataset name")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("delete", help="delete a run and its fields")
    _add_dataset_args(p)
    p.set_defaults(func=_cmd_delete)

    p = sub.add_parser("rename", help="rename a run and its fields")
    _add_dataset_args(p)
    p.add_argument("new_run_key", help="the new run key")
    p.set_defaults(func=_cmd_rename)

    p = sub.add_parser("demo", help="run the full pipeline on the bundled demo dataset")
    p.add_argument("--name", default="dequity-demo", help="FiftyOne dataset name")
    p.add_argument("--model", default=defaults.DEFAULT_MODEL, help="embedding model")
    p.add_argument(
        "--num-workers", type=int, default=None, help="image decoding workers (default: automatic)"
    )
    p.add_argument("--fresh", action="store_true", help="re-import the demo images first")
    p.set_defaults(func=_cmd_demo)

    for target in EXTERNAL_COMMANDS.values():
        _resolve(target)(sub)
    return parser


def _resolve(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dequity`` console script.

    Every error exits with status 2 and a one-line message on stderr; set
    ``DEQUITY_TRACEBACK=1`` to see the traceback of an unexpected one.

    Example::

        main(["list", "--dataset", "kitti"])
    """
    args = build_parser().parse_args(argv)
    try:
        with cli_output():
            args.func(args)
    except DequityError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e))
    except Exception as e:
        if os.environ.get("DEQUITY_TRACEBACK"):
            raise
        return _fail(f"{type(e).__name__}: {e}")
    except KeyboardInterrupt:
        print("dequity: interrupted", file=sys.stderr)
        return 130
    return 0


def _fail(message: str) -> int:
    one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"dequity: error: {one_line or 'unknown error'}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
