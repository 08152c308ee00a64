"""The fast embedding path: reduced-size JPEG decoding and the default workers."""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
import torch
from PIL import Image

from dequity.sources.embeddings import default_num_workers, from_model
from dequity.sources.models import load_image, load_model
from tests.conftest import row_cosines

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo" / "data"


@pytest.fixture()
def large_jpegs(tmp_path):
    """Four demo frames upscaled 4x (1536 x 1152), as a camera would write them."""
    paths = []
    for i, src in enumerate(sorted(DEMO.glob("*.jpg"))[::50][:4]):
        path = tmp_path / f"large_{i}.jpg"
        Image.open(src).convert("RGB").resize((1536, 1152), Image.BICUBIC).save(path, quality=92)
        paths.append(str(path))
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    yield dataset
    dataset.delete()


def test_large_jpegs_decode_at_reduced_size_with_the_same_embeddings(large_jpegs):
    path = large_jpegs.first().filepath
    assert load_image(path, 224).size == (384, 288)  # 1/4 scale: both sides >= 224
    assert load_image(path).size == (1536, 1152)

    model = load_model("efficientnet-lite0", device="cpu")
    fast = from_model(large_jpegs, model, num_workers=0, progress=False).vectors
    del model.build_get_item  # back to FiftyOne's own loader: full-size decode
    full = np.stack(large_jpegs.compute_embeddings(model, num_workers=0, progress=False))
    assert fast.shape == full.shape == (4, 1280)
    assert row_cosines(fast, full).min() > 0.99


def test_small_jpegs_decode_as_before():
    """The demo frames (384 x 288) are too small to scale: pixels are unchanged."""
    path = str(sorted(DEMO.glob("*.jpg"))[0])
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(load_image(path, 224)), expected)


def test_default_workers_follow_device_and_cores():
    cpu = load_model("efficientnet-lite0", device="cpu")
    assert default_num_workers(cpu, cores=2) == 0
    assert default_num_workers(cpu, cores=4) == 0
    assert default_num_workers(cpu, cores=32) == 8

    class OnGpu:
        device = torch.device("cuda:0")

    assert default_num_workers(OnGpu(), cores=2) is None  # FiftyOne's default
    assert default_num_workers(object(), cores=2) is None  # not a torch model


def test_numpy_preprocessing_matches_fiftyones_transforms():
    """Resize + normalise in numpy: the tensors of FiftyOne's torchvision transforms."""
    from fiftyone.utils.torch import TorchImageModel, TorchImageModelConfig

    model = load_model("efficientnet-lite0", device="cpu")
    reference = TorchImageModel(
        TorchImageModelConfig(
            {
                "model": model._model,
                "image_size": [224, 224],
                "image_mean": [0.498] * 3,
                "image_std": [0.502] * 3,
                "as_feature_extractor": True,
            }
        )
    )
    for path in sorted(DEMO.glob("*.jpg"))[::60]:
        img = Image.open(path).convert("RGB")
        ours, theirs = model.transforms(img), reference.transforms(img)
        assert ours.dtype == torch.float32 and ours.shape == theirs.shape == (3, 224, 224)
        assert (ours - theirs).abs().max() < 1e-5
    assert model.transforms(np.zeros((10, 12, 3), np.uint8)).shape == (3, 224, 224)
