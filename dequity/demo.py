"""The bundled demo dataset: real road-camera frames with detector boxes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dequity.errors import DequityError

DEMO_NAME = "dequity-demo"
LABEL_FIELD = "ground_truth"
#: the frames are a video: the demo's second run counts runs of consecutive
#: frames at least this similar (cosine of centred embeddings) once
DEMO_NEAR_DUPLICATES = 0.8
DEMO_SCENES_RUN_KEY = "dequity_scenes"


def demo_dir() -> Path:
    """Folder of the bundled demo set (``$DEQUITY_DEMO_DIR`` overrides it)."""
    override = os.environ.get("DEQUITY_DEMO_DIR")
    folder = Path(override) if override else Path(__file__).resolve().parents[1] / "data" / "demo"
    if not (folder / "labels.json").exists():
        raise DequityError(
            f"no demo dataset at {folder}; run from a checkout of the repository, "
            "set DEQUITY_DEMO_DIR, or rebuild it with scripts/make_demo_dataset.py"
        )
    return folder


def load_demo_dataset(name: str = DEMO_NAME, overwrite: bool = False) -> Any:
    """The demo set as a persistent FiftyOne dataset (imported on first use).

    199 frames of OpenCV's ``vtest.avi`` with person/car/truck boxes in the
    ``ground_truth`` field.

    Example::

        ds = dequity.demo.load_demo_dataset()
        dequity.compute_dequity(ds)
    """
    import fiftyone as fo

    if fo.dataset_exists(name) and not overwrite:
        return fo.load_dataset(name)
    dataset = fo.Dataset.from_dir(
        dataset_dir=str(demo_dir()),
        dataset_type=fo.types.FiftyOneImageDetectionDataset,
        label_field=LABEL_FIELD,
        name=name,
        overwrite=True,
        persistent=True,
    )
    dataset.compute_metadata()
    return dataset
