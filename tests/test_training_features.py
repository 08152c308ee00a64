"""Training on cached features of a frozen backbone: same detections, frozen body, repeatable."""

from __future__ import annotations

import fiftyone as fo
import pytest
import torch

from tests.conftest import frames_with_thumbnail_run
from training import train_detector
from training.datasets import detection_dataset
from training.detectors import build_detector
from training.features import FeatureDataset, cached_features, head_forward, predict_features

SIZE = 128
COMMON = {
    "train_tag": "train",
    "image_size": SIZE,
    "batch_size": 2,
    "steps": 4,
    "lr": 1e-3,
    "freeze_backbone": True,
    "channels": 64,
    "head_convs": 1,
    "evaluate": False,
    "progress": False,
    "weight_field": "dequity_weight",
}


@pytest.fixture(scope="module")
def frames() -> fo.Dataset:
    """The demo frames with a real dequity run, 4 of them tagged train."""
    dataset = frames_with_thumbnail_run()
    dataset.take(4, seed=0).tag_samples("train")
    yield dataset
    dataset.delete()


def test_head_on_cached_features_gives_the_whole_detectors_detections(frames, tmp_path):
    torch.manual_seed(0)
    model = build_detector(num_classes=4, image_size=SIZE, channels=64, head_convs=1).eval()
    model.score_thresh = 0.0  # an untrained head: keep every candidate to compare
    view = frames.match_tags("train")
    cache = cached_features(
        model, view, model_name="lite0", image_size=SIZE, flips=True, folder=tmp_path
    )
    assert len(list(tmp_path.glob("*.pt"))) == 1
    again = cached_features(model, view, model_name="lite0", image_size=SIZE, folder=tmp_path)
    assert torch.equal(again.levels[0], cache.levels[0])  # served from the file
    images = [image for image, _ in detection_dataset(view, classes=None, weight_field=None)]
    with torch.no_grad():
        whole = model(images)
        batch, _ = model.transform(images)
        levels = model.backbone.body(batch.tensors)
        sizes = [tuple(image.shape[-2:]) for image in images]
        rest = head_forward(model, levels, batch.image_sizes, cache.padded_size, None, sizes)
    for a, b in zip(whole, rest, strict=True):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(b[key], a[key])
    for stored, exact in zip(cache.levels, levels, strict=True):
        # float16 in the cache: half the memory, its rounding only
        torch.testing.assert_close(stored.float(), exact, atol=1e-2, rtol=1e-2)
    assert len(predict_features(model, cache)) == len(images)


def test_mirrored_items_mirror_their_boxes(frames, tmp_path):
    model = build_detector(num_classes=4, image_size=SIZE, channels=64, head_convs=1)
    view = frames.match_tags("train")
    cache = cached_features(model, view, model_name="lite0", image_size=SIZE, flips=True)
    targets = [t for _, t in detection_dataset(view, weight_field=None)]
    data = FeatureDataset(cache, targets)
    width = cache.image_sizes[0][1]
    torch.manual_seed(0)
    draws = [data[0] for _ in range(16)]
    plain = data.targets[0]["boxes"]
    mirrored = plain[:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1, -1, 1]) + torch.tensor(
        [width, 0.0, width, 0]
    )
    kinds = {torch.equal(t["boxes"], plain) for _, t in draws} | {
        torch.equal(t["boxes"], mirrored) for _, t in draws
    }
    assert kinds == {True, False}  # both kinds drawn, nothing else
    seen = [torch.equal(maps[0], cache.maps(0, True)[0]) for maps, _ in draws]
    assert seen == [not torch.equal(t["boxes"], plain) for _, t in draws]
    model.train()
    losses = head_forward(
        model,
        [m[None] for m in draws[0][0]],
        [draws[0][1]["image_size"]],
        cache.padded_size,
        [draws[0][1]],
    )
    assert all(torch.isfinite(v) for v in losses.values())


def test_frozen_backbone_training_keeps_the_body_and_repeats_exactly(frames, tmp_path):
    runs = []
    for name in ("a", "b"):
        runs.append(
            train_detector(
                frames,
                train_key=f"frozen_{name}",
                output_dir=tmp_path / name,
                feature_cache=tmp_path / "features",
                **COMMON,
            )
        )
    assert runs[0].step_losses == runs[1].step_losses  # CPU runs repeat exactly
    trained = torch.load(runs[0].checkpoint, weights_only=True)["model"]
    torch.manual_seed(0)  # the run's initial weights (seed 0)
    fresh = build_detector(num_classes=4, image_size=SIZE, channels=64, head_convs=1).state_dict()
    body = [k for k in fresh if k.startswith("backbone.body.")]
    head = [k for k in fresh if k.startswith("head.") and fresh[k].is_floating_point()]
    assert body and all(torch.equal(trained[k], fresh[k]) for k in body)
    assert any(not torch.equal(trained[k], fresh[k]) for k in head)
    assert runs[0].config["freeze_backbone"] is True
