"""Torch datasets from FiftyOne views: boxes, labels, weights, workers, errors."""

from __future__ import annotations

import fiftyone as fo
import fiftyone.core.labels as fol
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from dequity import compute_dequity, delete_dequity_run
from dequity.errors import DequityError
from dequity.pipeline.weights import gfl_weight
from training.datasets import (
    FiftyOneTorchDataset,
    classification_dataset,
    collate_detection,
    detection_dataset,
    resolve_classes,
)

CLASSES = ["person", "car", "truck"]
W, H = 64, 48


def _dequity_run(dataset: fo.Dataset, run_key: str) -> None:
    """A real dequity run on four images (k-NN density on fixed vectors)."""
    compute_dequity(
        dataset,
        run_key,
        embeddings=np.eye(4, 3),
        projection=None,
        clustering="knn",
        clustering_kwargs={"k": 2},
        progress=False,
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> fo.Dataset:
    """Four synthetic images with known boxes, one without any, and a dequity run.

    The run's likelihood and weight fields are then set to known values.
    """
    folder = tmp_path_factory.mktemp("images")
    dataset = fo.Dataset()
    boxes = [
        [("person", [0.25, 0.5, 0.5, 0.25]), ("truck", [0.0, 0.0, 1.0, 1.0])],
        [("car", [0.5, 0.25, 0.25, 0.5])],
        [],
        [("person", [0.125, 0.125, 0.25, 0.25])],
    ]
    samples = []
    for i, dets in enumerate(boxes):
        path = folder / f"img{i}.png"
        Image.fromarray(np.full((H, W, 3), 40 * i, dtype=np.uint8)).save(path)
        samples.append(
            fo.Sample(
                filepath=str(path),
                ground_truth=fol.Detections(
                    detections=[fol.Detection(label=lab, bounding_box=b) for lab, b in dets]
                ),
                kind=fol.Classification(label="even" if i % 2 == 0 else "odd"),
            )
        )
    dataset.add_samples(samples)
    _dequity_run(dataset, "dequity")
    dataset.set_values("dequity_likelihood", [0.0, 0.5, 1.0, 0.25])
    dataset.set_values("dequity_weight", [1.0, 0.75, 0.5, 0.9])
    yield dataset
    dataset.delete()


def test_boxes_round_trip_to_absolute_xyxy(small):
    ds = detection_dataset(small, "ground_truth", CLASSES)
    assert len(ds) == 4
    image, target = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    expected = torch.tensor([[16.0, 24.0, 48.0, 36.0], [0.0, 0.0, 64.0, 48.0]])
    torch.testing.assert_close(target["boxes"], expected)
    assert target["labels"].dtype == torch.int64
    assert target["labels"].tolist() == [1, 3]  # 1-based positions in CLASSES
    assert target["weight"].item() == pytest.approx(1.0)
    assert target["likelihood"].item() == pytest.approx(0.0)
    assert target["sample_id"] == small.first().id
    # and back: absolute xyxy -> relative xywh gives FiftyOne's boxes
    x1, y1, x2, y2 = target["boxes"][0].tolist()
    assert [x1 / W, y1 / H, (x2 - x1) / W, (y2 - y1) / H] == pytest.approx([0.25, 0.5, 0.5, 0.25])


def test_image_without_boxes(small):
    _, target = detection_dataset(small, "ground_truth", CLASSES)[2]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64


def test_boxes_are_clamped_and_degenerate_ones_dropped(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(path)
    dataset = fo.Dataset()
    boxes = [
        ("person", [0.5, 0.5, 0.0, 0.25]),  # no width
        ("car", [0.75, 0.5, 0.5, 0.25]),  # past the right edge
        ("truck", [0.1, 0.1, 0.005, 0.5]),  # a third of a pixel wide
    ]
    dets = [fol.Detection(label=label, bounding_box=box) for label, box in boxes]
    dataset.add_sample(fo.Sample(filepath=str(path), ground_truth=fol.Detections(detections=dets)))
    try:
        _, target = detection_dataset(dataset, "ground_truth", CLASSES, weight_field=None)[0]
    finally:
        dataset.delete()
    torch.testing.assert_close(target["boxes"], torch.tensor([[48.0, 24.0, 64.0, 36.0]]))
    assert target["labels"].tolist() == [2]


def test_label_mapping_follows_the_class_list(small):
    _, target = detection_dataset(small, "ground_truth", ["truck", "car", "person"])[0]
    assert target["labels"].tolist() == [3, 1]
    assert resolve_classes(small, "ground_truth") == ["car", "person", "truck"]
    with pytest.raises(DequityError, match=r"\['truck'\].*not in the classes"):
        detection_dataset(small, "ground_truth", ["person", "car"])


def test_flip_moves_the_boxes(small):
    flip = v2.Compose([v2.RandomHorizontalFlip(1.0), v2.ToDtype(torch.float32, scale=True)])
    _, target = detection_dataset(small, "ground_truth", CLASSES, transforms=flip)[1]
    # car at x 32..48 of 64 -> 16..32 after the flip
    torch.testing.assert_close(target["boxes"], torch.tensor([[16.0, 12.0, 32.0, 36.0]]))


def test_weights_baseline_and_eta_gamma_override(small):
    weights = [t["weight"].item() for _, t in detection_dataset(small, "ground_truth", CLASSES)]
    assert weights == pytest.approx([1.0, 0.75, 0.5, 0.9])
    base = detection_dataset(small, "ground_truth", CLASSES, weight_field=None)
    assert [t["weight"].item() for _, t in base] == [1.0] * 4
    again = detection_dataset(small, "ground_truth", CLASSES, eta=0.5, gamma=2.0)
    expected = gfl_weight(np.array([0.0, 0.5, 1.0, 0.25]), 0.5, 2.0)
    assert [t["weight"].item() for _, t in again] == pytest.approx(expected.tolist())


def test_the_likelihood_field_is_read_from_the_run_config(small):
    _dequity_run(small, "night")
    small.set_values("night_likelihood", [1.0, 0.25, 0.5, 0.0])
    small.clone_sample_field("dequity_weight", "copied_weight")
    small.clone_sample_field("dequity_likelihood", "copied_likelihood")
    try:
        night = detection_dataset(
            small, "ground_truth", CLASSES, weight_field="night_weight", eta=0.5, gamma=2.0
        )
        assert [t["likelihood"].item() for _, t in night] == [1.0, 0.25, 0.5, 0.0]
        expected = gfl_weight(np.array([1.0, 0.25, 0.5, 0.0]), 0.5, 2.0)
        assert [t["weight"].item() for _, t in night] == pytest.approx(expected.tolist())
        # no dequity run wrote copied_weight: no likelihood is beside it, whatever the names
        copied = detection_dataset(small, "ground_truth", CLASSES, weight_field="copied_weight")
        assert all(np.isnan(t["likelihood"].item()) for _, t in copied)
        with pytest.raises(DequityError, match="no likelihood field"):
            detection_dataset(small, "ground_truth", CLASSES, weight_field="copied_weight", eta=0.5)
    finally:
        delete_dequity_run(small, "night")
        small.delete_sample_fields(["copied_weight", "copied_likelihood"])


def test_missing_weight_field_names_the_run_to_compute(small):
    with pytest.raises(DequityError, match=r"dequity compute.*run-key other"):
        detection_dataset(small, "ground_truth", CLASSES, weight_field="other_weight")
    view = small.limit(2)
    small.add_sample_field("partial_weight", fo.FloatField)
    sample = small.first()
    sample["partial_weight"] = 1.0
    sample.save()
    with pytest.raises(DequityError, match="1 samples of the view have no"):
        detection_dataset(view, "ground_truth", CLASSES, weight_field="partial_weight")
    with pytest.raises(DequityError, match="label field 'nope' does not exist"):
        detection_dataset(small, "nope", CLASSES)


def test_dataloader_with_two_workers(small):
    ds = detection_dataset(small, "ground_truth", CLASSES, train=True)
    loader = DataLoader(
        ds,
        batch_size=2,
        num_workers=2,
        collate_fn=collate_detection,
        worker_init_fn=FiftyOneTorchDataset.worker_init,
    )
    seen = []
    for images, targets in loader:
        assert len(images) == len(targets) == 2
        seen += [t["sample_id"] for t in targets]
        for image, target in zip(images, targets, strict=True):
            assert image.shape == (3, H, W)
            assert target["boxes"].shape[0] == target["labels"].shape[0]
    assert sorted(seen) == sorted(small.values("id"))


def test_classification_dataset(small):
    ds = classification_dataset(small, "kind", ["even", "odd"])
    image, label, weight = ds[1]
    assert image.shape == (3, H, W)
    assert label.item() == 1 and label.dtype == torch.int64
    assert weight.item() == pytest.approx(0.75)
    with pytest.raises(DequityError, match="not in the classes"):
        classification_dataset(small, "kind", ["even"])


# per-object weights: the attributes are written on the Detections directly


def test_object_level_targets_carry_box_weights(small):
    small.set_values("ground_truth.detections.obj_weight", [[0.5, 2.0], [0.25], [], [0.8]])
    ds = detection_dataset(
        small, "ground_truth", CLASSES, weight_field="obj_weight", weight_level="object"
    )
    targets = [t for _, t in ds]
    for target, expected in zip(targets, [[0.5, 2.0], [0.25], [], [0.8]], strict=True):
        assert target["box_weights"].dtype == torch.float32
        assert target["box_weights"].tolist() == pytest.approx(expected)
        assert target["box_weights"].shape[0] == target["boxes"].shape[0]
        # the image's own weight is not applied on top of its boxes'
        assert target["weight"].item() == 1.0 and np.isnan(target["likelihood"].item())
    assert targets[0]["labels"].tolist() == [1, 3]
    # the default level is unchanged: image weights, no box weights
    _, image_level = detection_dataset(small, "ground_truth", CLASSES)[0]
    assert "box_weights" not in image_level and image_level["weight"].item() == 1.0
    # the vectorized path and DataLoader workers give the same
    loader = DataLoader(
        detection_dataset(
            small,
            "ground_truth",
            CLASSES,
            weight_field="obj_weight",
            weight_level="object",
            vectorize=True,
        ),
        batch_size=2,
        num_workers=2,
        collate_fn=collate_detection,
        worker_init_fn=FiftyOneTorchDataset.worker_init,
    )
    by_id = {t["sample_id"]: t["box_weights"].tolist() for _, batch in loader for t in batch}
    assert by_id == {t["sample_id"]: t["box_weights"].tolist() for t in targets}


def test_dropped_boxes_drop_their_weights(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(path)
    dataset = fo.Dataset()
    boxes = [
        ("person", [0.5, 0.5, 0.0, 0.25]),  # no width
        ("car", [0.75, 0.5, 0.5, 0.25]),  # past the right edge: clamped, kept
        ("truck", [0.1, 0.1, 0.005, 0.5]),  # a third of a pixel wide
        ("person", [0.0, 0.0, 0.5, 0.5]),
    ]
    dets = [fol.Detection(label=label, bounding_box=box) for label, box in boxes]
    dataset.add_sample(fo.Sample(filepath=str(path), ground_truth=fol.Detections(detections=dets)))
    dataset.set_values("ground_truth.detections.dequity_weight", [[0.1, 0.2, 0.3, 0.4]])
    try:
        _, target = detection_dataset(
            dataset, "ground_truth", CLASSES, weight_level="object", train=True
        )[0]
    finally:
        dataset.delete()
    assert target["labels"].tolist() == [2, 1]
    assert target["box_weights"].tolist() == pytest.approx([0.2, 0.4])


def test_boxes_without_a_weight(small):
    small.set_values("ground_truth.detections.part_weight", [[0.5, None], [0.25], [], [0.8]])
    with pytest.raises(DequityError, match=r"1 of the 4 boxes.*'part_weight'.*run_key='part'"):
        detection_dataset(
            small, "ground_truth", CLASSES, weight_field="part_weight", weight_level="object"
        )
    with pytest.raises(DequityError, match=r"4 of the 4 boxes.*patches_field"):
        detection_dataset(
            small, "ground_truth", CLASSES, weight_field="none_weight", weight_level="object"
        )
    ds = detection_dataset(
        small,
        "ground_truth",
        CLASSES,
        weight_field="part_weight",
        weight_level="object",
        missing_box_weight=1.0,
    )
    assert ds[0][1]["box_weights"].tolist() == [0.5, 1.0]
    # a box that loses its weight after the check is caught when it is read
    small.set_values("ground_truth.detections.obj_weight", [[0.5, 2.0], [0.25], [], [0.8]])
    strict = detection_dataset(
        small.limit(1), "ground_truth", CLASSES, weight_field="obj_weight", weight_level="object"
    )
    small.set_values("ground_truth.detections.obj_weight", [[0.5, None], [0.25], [], [0.8]])
    with pytest.raises(DequityError, match=r"sample .*: 1 of its 2 boxes have no 'obj_weight'"):
        strict[0]
    with pytest.raises(DequityError, match="missing_box_weight must be finite and >= 0"):
        detection_dataset(
            small,
            "ground_truth",
            CLASSES,
            weight_field="part_weight",
            weight_level="object",
            missing_box_weight=-1.0,
        )
    with pytest.raises(DequityError, match="weight_level must be 'image'.*or 'object'"):
        detection_dataset(small, "ground_truth", CLASSES, weight_level="box")


def test_object_weights_recomputed_from_box_likelihoods(small):
    likelihoods = [[0.0, 0.5], [1.0], [], [0.25]]
    small.set_values("ground_truth.detections.dequity_likelihood", likelihoods)
    ds = detection_dataset(
        small, "ground_truth", CLASSES, weight_level="object", eta=0.5, gamma=2.0
    )
    for (_, target), p in zip(ds, likelihoods, strict=True):
        expected = gfl_weight(np.array(p, dtype=float), 0.5, 2.0).tolist() if p else []
        assert target["box_weights"].tolist() == pytest.approx(expected)
