"""Write a small FiftyOne dataset with stored runs, for ``tests/test_stored_runs.py``.

The dataset is written by the release whose code is on ``PYTHONPATH`` and
exported (without media) so that later releases can prove they still load,
list, reweight and delete runs stored by it. Only the public API is used,
so the same script runs against any release.

Usage, from a checkout (or ``git worktree``) of the release, with the
project's virtual environment::

    FIFTYONE_DO_NOT_TRACK=true PYTHONPATH=. .venv/bin/python \\
        tests/data/make_release_dataset.py tests/data/release-<commit>

The dataset holds 90 of the demo frames (``data/demo``; filepaths are
exported relative to the repository, see ``--rel-dir``) with two or three
synthetic boxes each in ``ground_truth``, and:

- an image run ``dequity`` on a seeded 3-component Gaussian mixture in 32-D,
- an object run ``objects`` on ``ground_truth``, one seeded vector per box,
- a training run ``baseline`` (2 steps of the default detector on 128 px
  images, evaluated on 4 frames), unless ``--no-training``.

Run it in a private database (``FIFTYONE_DATABASE_NAME``, and
``FIFTYONE_DATABASE_DIR`` or ``FIFTYONE_DATABASE_URI``): it creates and
deletes a dataset named ``dequity-release-fixture``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402

import dequity  # noqa: E402

NAME = "dequity-release-fixture"
NUM_SAMPLES = 90
DIM = 32
#: image run: three well separated components of unequal size (a rare one)
COMPONENT_SIZES = (52, 26, 12)
CLASSES = ("car", "person", "truck")
SEED = 0
IMAGE_RUN = {
    "projection": "pca",
    "projection_kwargs": {"n_components": 8},
    "clustering": "hdbscan_knn",
    "clustering_kwargs": {"min_cluster_size": 8, "k": 10},
    "eta": 1.0,
    "gamma": 5.0,
}
OBJECT_RUN = {
    "projection": "pca",
    "projection_kwargs": {"n_components": 8},
    "clustering": "hdbscan_knn",
    "clustering_kwargs": {"min_cluster_size": 8, "k": 10},
    "eta": 0.5,
    "gamma": 2.0,
}


def mixture(rng: np.random.Generator, sizes: tuple[int, ...], dim: int) -> np.ndarray:
    """Rows of a Gaussian mixture: ``sizes[c]`` rows around centre ``c``, in order."""
    centres = rng.normal(0.0, 4.0, size=(len(sizes), dim))
    rows = [c + rng.normal(0.0, 1.0, size=(n, dim)) for c, n in zip(centres, sizes)]
    return np.concatenate(rows).astype(np.float32)


def build(repo: Path) -> fo.Dataset:
    """The dataset with its runs (see the module docstring)."""
    rng = np.random.default_rng(SEED)
    frames = sorted((repo / "data" / "demo" / "data").glob("*.jpg"))[:NUM_SAMPLES]
    if len(frames) < NUM_SAMPLES:
        sys.exit(f"need {NUM_SAMPLES} demo frames under {repo / 'data/demo/data'}")
    if fo.dataset_exists(NAME):
        fo.delete_dataset(NAME)
    dataset = fo.Dataset(NAME)
    samples = []
    for i, path in enumerate(frames):
        boxes = []
        for _ in range(2 + i % 2):
            x, y = rng.uniform(0.05, 0.6, size=2)
            w, h = rng.uniform(0.1, 0.3, size=2)
            label = CLASSES[int(rng.integers(len(CLASSES)))]
            boxes.append(fo.Detection(label=label, bounding_box=[x, y, w, h]))
        samples.append(fo.Sample(filepath=str(path), ground_truth=fo.Detections(detections=boxes)))
    dataset.add_samples(samples, progress=False)

    # the image run: rows in dataset order, the mixture's components shuffled
    vectors = mixture(rng, COMPONENT_SIZES, DIM)[rng.permutation(NUM_SAMPLES)]
    dequity.compute_dequity(dataset, "dequity", embeddings=vectors, progress=False, **IMAGE_RUN)

    # the object run: one row per box, samples in order, boxes in list order
    num_boxes = sum(len(d.detections) for d in dataset.values("ground_truth"))
    sizes = (num_boxes - num_boxes // 3 - num_boxes // 8, num_boxes // 3, num_boxes // 8)
    box_vectors = mixture(rng, sizes, DIM)[rng.permutation(num_boxes)]
    dequity.compute_dequity(
        dataset,
        "objects",
        embeddings=box_vectors,
        patches_field="ground_truth",
        progress=False,
        **OBJECT_RUN,
    )
    return dataset


def add_training_run(dataset: fo.Dataset, run_dir: Path) -> None:
    """A 2-step training run ``baseline`` on 8 frames, evaluated on 4."""
    import training

    dataset.limit(8).tag_samples("train")
    dataset.skip(8).limit(4).tag_samples("val")
    training.train_detector(
        dataset,
        train_key="baseline",
        weight_field=None,
        classes=list(CLASSES),
        train_tag="train",
        val_tag="val",
        steps=2,
        image_size=128,
        batch_size=2,
        output_dir=run_dir,
        progress=False,
    )
    dataset.untag_samples(["train", "val"])


def commit_of(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument(
        "--rel-dir",
        type=Path,
        default=Path(dequity.__file__).resolve().parents[1],
        help="repository root: filepaths are exported relative to it",
    )
    parser.add_argument("--no-training", action="store_true", help="skip the training run")
    args = parser.parse_args()
    repo = args.rel_dir.resolve()

    dataset = build(repo)
    with tempfile.TemporaryDirectory(prefix="dequity-release-run-") as tmp:
        if not args.no_training:
            add_training_run(dataset, Path(tmp) / "baseline")
        if args.export_dir.exists():
            shutil.rmtree(args.export_dir)
        dataset.export(
            export_dir=str(args.export_dir),
            dataset_type=fo.types.FiftyOneDataset,
            export_media=False,
            rel_dir=str(repo),
            export_runs=True,
            progress=False,
        )
    manifest = {
        "commit": commit_of(repo),
        "dequity_version": dequity.__version__,
        "fiftyone_version": fo.__version__,
        "num_samples": len(dataset),
        "runs": dataset.list_runs(),
        "evaluations": dataset.list_evaluations(),
    }
    (args.export_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))
    dataset.delete()


if __name__ == "__main__":
    main()
