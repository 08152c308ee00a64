"""Test session set-up: a private FiftyOne database and the demo dataset.

The environment is set before FiftyOne is imported, so tests never touch a
user's datasets: each session gets its own database directory and name (or
its own database name on ``FIFTYONE_DATABASE_URI``, when set), and the
plugin is found through a private ``FIFTYONE_PLUGINS_DIR``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="dequity-tests-"))

os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_DATABASE_NAME"] = f"dequity_tests_{os.getpid()}"
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
if "FIFTYONE_DATABASE_URI" not in os.environ:
    os.environ["FIFTYONE_DATABASE_DIR"] = str(_SESSION_DIR / "db")
_PLUGINS = _SESSION_DIR / "plugins"
_PLUGINS.mkdir()
(_PLUGINS / "dequity").symlink_to(REPO)
os.environ["FIFTYONE_PLUGINS_DIR"] = str(_PLUGINS)
os.environ.setdefault("DEQUITY_DEMO_DIR", str(REPO / "data" / "demo"))

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from dequity import DequityResults, compute_dequity, delete_dequity_run  # noqa: E402
from dequity.demo import load_demo_dataset  # noqa: E402

DEMO_FRAMES = REPO / "data" / "demo"

EMBEDDINGS_FIELD = "embedding"


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine similarity of each row of ``a`` with the same row of ``b``."""
    from sklearn.metrics.pairwise import paired_cosine_distances

    return 1 - paired_cosine_distances(a, b)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    """A temporary folder shared by the whole session."""
    return _SESSION_DIR


@pytest.fixture(scope="session")
def demo_run() -> tuple[fo.Dataset, DequityResults]:
    """The demo dataset with a default run ``dequity`` by the offline model.

    Computed once per session; its embeddings are stored in ``embedding``.
    Tests must not modify it: use :func:`demo` for a private copy.
    """
    dataset = load_demo_dataset("dequity-tests-demo", overwrite=True)
    results = compute_dequity(
        dataset,
        "dequity",
        embeddings_field=EMBEDDINGS_FIELD,
        num_workers=2,
        device="cpu",
        progress=False,
    )
    return dataset, results


@pytest.fixture()
def demo(demo_run: tuple[fo.Dataset, DequityResults]) -> fo.Dataset:
    """A private copy of the demo dataset with its ``embedding`` field and no run."""
    dataset = demo_run[0].clone()
    delete_dequity_run(dataset, "dequity")
    yield dataset
    dataset.delete()


def frames_with_thumbnail_run() -> fo.Dataset:
    """A new dataset of the demo frames with a default run ``dequity`` on grey thumbnails.

    24 x 18 grey thumbnails are enough for the clustering to run on real images
    without the cost of a network. The caller deletes the dataset.
    """
    dataset = fo.Dataset.from_dir(
        dataset_dir=str(DEMO_FRAMES),
        dataset_type=fo.types.FiftyOneImageDetectionDataset,
        label_field="ground_truth",
        progress=False,
    )
    thumbs = np.stack(
        [
            np.asarray(Image.open(p).convert("L").resize((24, 18)), dtype=np.float32).ravel()
            for p in dataset.values("filepath")
        ]
    )
    compute_dequity(dataset, embeddings=thumbs / 255.0, progress=False)
    return dataset


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray instance with 2 CPUs for the module."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
