"""Object runs: objects per second and peak memory, against image runs in the same run.

Two measurements, each in its own process on a private MongoDB (``python -m
benchmarks.objects KIND N`` prints JSON with its time and peak RSS):

- **crops** (real frames, the real model): an object run with
  ``efficientnet-lite0`` on the demo's road-camera frames (crops cut while
  each image is decoded), against an image run with the same model on the
  same frames. Here the model's forward passes dominate.
- **database and likelihood path** (no model: embeddings given as an array,
  64-d mixture): an object run on ``N`` boxes (8 per image) against an image
  run on ``N`` images. This is what an object run adds on top of embedding:
  reading and checking the boxes, clustering ``N`` vectors and writing the
  Detection attributes and each image's maximum.

Raw values go to ``benchmarks/results-objects.json``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import save_raw
from reporting import md_table

NAME = "objects"
BOXES_PER_IMAGE = 8
DIM = 64
MODEL = "efficientnet-lite0"
#: the model rows cluster few frames: a small neighbourhood, the same for both
SMALL = {"clustering": "knn", "clustering_kwargs": {"k": 5}}


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _synthetic(n: int, objects: bool):
    """A dataset of ``n`` boxes (8 per image) or ``n`` images, and its embeddings."""
    from dataclasses import replace

    import fiftyone as fo
    import numpy as np

    from benchmarks.mixtures import HARD, make_mixture

    x, _ = make_mixture(replace(HARD, n=n, dim=DIM))
    num_images = -(-n // BOXES_PER_IMAGE) if objects else n
    rng = np.random.default_rng(0)
    samples = []
    left = n
    for i in range(num_images):
        sample = fo.Sample(
            filepath=f"/none/{i}.jpg", metadata=fo.ImageMetadata(width=640, height=480)
        )
        if objects:
            k = min(BOXES_PER_IMAGE, left)
            left -= k
            xy = rng.uniform(0, 0.7, size=(k, 2))
            wh = rng.uniform(0.05, 0.3, size=(k, 2))
            sample["ground_truth"] = fo.Detections(
                detections=[
                    fo.Detection(label="car", bounding_box=[*p, *s]) for p, s in zip(xy, wh)
                ]
            )
        samples.append(sample)
    dataset = fo.Dataset()
    dataset.add_samples(samples, progress=False)
    return dataset, x


def _worker(kind: str, n: int) -> dict:
    import dequity

    if kind in ("objects", "images"):
        dataset, x = _synthetic(n, objects=kind == "objects")
        extra = {"patches_field": "ground_truth"} if kind == "objects" else {}
    else:
        from dequity.demo import load_demo_dataset

        dataset = load_demo_dataset(f"bench-objects-{os.getpid()}", overwrite=True).limit(n)
        x = None
        extra = {"patches_field": "ground_truth"} if kind == "crops" else {}
    before = _peak_gb()
    start = time.perf_counter()
    if x is None:
        results = dequity.compute_dequity(
            dataset, "dq", model=MODEL, device="cpu", progress=False, **SMALL, **extra
        )
    else:
        results = dequity.compute_dequity(dataset, "dq", embeddings=x, progress=False, **extra)
    seconds = time.perf_counter() - start
    items = len(results.object_ids) if results.is_object_run else len(results.sample_ids)
    return {
        "kind": kind,
        "n": n,
        "items": items,
        "images": len(set(results.sample_ids)),
        "seconds": seconds,
        "per_second": items / seconds,
        "peak_gb": _peak_gb(),
        "peak_before_run_gb": before,
    }


def measure(kind: str, n: int, uri: str, limit: float) -> dict:
    """One measurement in a subprocess on the MongoDB at ``uri``."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.objects", kind, str(n)],
            capture_output=True,
            text=True,
            timeout=limit,
            check=True,
            env={**os.environ, "FIFTYONE_DATABASE_URI": uri},
        ).stdout
    except subprocess.TimeoutExpired:
        return {"kind": kind, "n": n, "error": f"over {limit:.0f} s"}
    except subprocess.CalledProcessError as e:
        lines = (e.stderr or "").strip().splitlines() or ["no output"]
        return {"kind": kind, "n": n, "error": lines[-1][:160]}
    return json.loads(out.strip().splitlines()[-1])


def run(quick: bool) -> str:
    """Crops on the demo frames, then the database path at growing sizes."""
    from benchmarks.robustness import private_mongod

    frames = 12 if quick else 60
    sizes = (2_000,) if quick else (10_000, 30_000, 100_000)
    limit = 300.0 if quick else 900.0
    with tempfile.TemporaryDirectory() as folder, private_mongod(Path(folder)) as uri:
        crops = [measure(kind, frames, uri, limit) for kind in ("crops", "frames")]
        paths = [measure(kind, n, uri, limit) for n in sizes for kind in ("objects", "images")]
    config = {
        "model": MODEL,
        "demo_frames": frames,
        "sizes": list(sizes),
        "boxes_per_image": BOXES_PER_IMAGE,
        "dim": DIM,
        "device": "cpu",
        "model_rows": SMALL,
    }
    if not quick:
        save_raw(NAME, {"crops": crops, "database_path": paths}, config)
    return _report(crops, paths)


def _row(v: dict, label: str, reference: dict | None) -> list:
    if "error" in v:
        return [label, f"{v['n']:,}", f"failed: {v['error']}", "", "", "", ""]
    usable = reference is not None and "error" not in reference
    ratio = v["per_second"] / reference["per_second"] if usable else ""
    return [
        label,
        f"{v['items']:,} on {v['images']:,} images",
        f"{v['seconds']:.1f}",
        f"{v['per_second']:.1f}",
        ratio,
        f"{v['peak_gb']:.2f}",
        f"{v['peak_before_run_gb']:.2f}",
    ]


def _report(crops: list[dict], paths: list[dict]) -> str:
    rows = [_row(crops[0], "object run, model on crops", crops[1])]
    rows.append(_row(crops[1], "image run, model on frames", None))
    for objects, images in zip(paths[::2], paths[1::2]):
        rows.append(_row(objects, "object run, embeddings given", images))
        rows.append(_row(images, "image run, embeddings given", None))
    table = md_table(
        [
            "run",
            "items",
            "wall s",
            "items / s",
            "rate / image run's",
            "peak RSS GB",
            "peak RSS before the run GB",
        ],
        rows,
    )
    return (
        "### Object runs: boxes per second and memory\n\n"
        "Each row is one process on a private MongoDB. The model rows run "
        f"{MODEL} on CPU on the demo frames; the other rows give a {DIM}-d mixture as "
        "embeddings, so they measure reading the boxes, the likelihood stage and the "
        f"writes ({BOXES_PER_IMAGE} boxes per image), against an image run on as many "
        "images. Peak RSS includes building the dataset in the same process.\n\n" + table
    )


if __name__ == "__main__":
    print(json.dumps(_worker(sys.argv[1], int(sys.argv[2]))))
