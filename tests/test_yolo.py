"""Ultralytics YOLO with DatasetEquity weights, on the demo frames, offline.

A few steps at 64-96 px on a handful of images: the per-image weighted loss
is Ultralytics' loss at weights 1 and linear in the weights, the export
loads back with the same boxes, and `dequity train --framework yolo` writes a
run that `dequity compare` sets beside a torchvision run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys

import fiftyone as fo
import numpy as np
import pytest
import torch
from PIL import Image

from dequity.errors import DequityError
from tests.conftest import REPO, frames_with_thumbnail_run
from training import compare_runs, export_yolo, load_training_run, train_detector
from training.cli import main
from training.yolo import read_weights, view_weights
from training.yolo_loss import WeightedDetectionLoss, WeightedDetectionModel, image_key

CLASSES = ["car", "person", "truck"]
TINY = {"image_size": 64, "batch_size": 4, "epochs": 1, "progress": False}


@pytest.fixture(scope="module")
def frames() -> fo.Dataset:
    """The demo frames with a dequity run on grey thumbnails; 8 tagged train, 4 val."""
    dataset = frames_with_thumbnail_run()
    dataset.sort_by("dequity_weight").skip(90).limit(8).tag_samples("train")
    dataset.match_tags("train", bool=False).skip(140).limit(4).tag_samples("val")
    dataset.set_values("ones", [1.0] * len(dataset))
    yield dataset
    dataset.delete()


def _batch(view: fo.DatasetView, size: int = 96) -> dict[str, torch.Tensor]:
    """An Ultralytics training batch of the view's images and boxes (stretched to size)."""
    images, idx, cls, boxes = [], [], [], []
    for i, sample in enumerate(view):
        img = Image.open(sample.filepath).convert("RGB").resize((size, size))
        images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255)
        for det in sample.ground_truth.detections:
            x, y, w, h = det.bounding_box
            idx.append(i)
            cls.append(CLASSES.index(det.label))
            boxes.append([x + w / 2, y + h / 2, w, h])
    return {
        "img": torch.stack(images),
        "batch_idx": torch.tensor(idx, dtype=torch.float32),
        "cls": torch.tensor(cls, dtype=torch.float32).view(-1, 1),
        "bboxes": torch.tensor(boxes, dtype=torch.float32),
    }


@pytest.fixture(scope="module")
def criteria_and_preds(frames):
    """Ultralytics' loss and the weighted one on one model's predictions of 4 frames."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils.loss import v8DetectionLoss

    torch.manual_seed(0)
    model = WeightedDetectionModel("yolov8n.yaml", nc=len(CLASSES), verbose=False)
    model.args = get_cfg()
    batch = _batch(frames.match_tags("train").limit(4))
    model.train()
    preds = model(batch["img"])
    return v8DetectionLoss(model), WeightedDetectionLoss(model), preds, batch


def test_weighted_loss_is_ultralytics_loss_when_all_weights_are_one(criteria_and_preds):
    stock, weighted, preds, batch = criteria_and_preds
    loss, items = stock(preds, batch)
    ones, ones_items = weighted(preds, {**batch, "weight": torch.ones(4)})
    assert torch.equal(loss, ones)
    assert all(torch.equal(items[k], ones_items[k]) for k in items)
    assert float(items["cls_loss"]) > 0


def test_weighted_loss_changes_and_is_linear_in_the_weights(criteria_and_preds):
    stock, weighted, preds, batch = criteria_and_preds
    loss, _ = stock(preds, batch)
    w = torch.tensor([1.0, 0.5, 0.8, 0.2])
    mixed, _ = weighted(preds, {**batch, "weight": w})
    assert not torch.allclose(mixed, loss)
    # the weighted loss is sum_i w_i * (image i's share); the shares add up to the stock loss
    shares = torch.stack(
        [weighted(preds, {**batch, "weight": torch.eye(4)[i]})[0] for i in range(4)]
    )
    torch.testing.assert_close(shares.sum(0), loss, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close((w[:, None] * shares).sum(0), mixed, rtol=1e-5, atol=1e-9)
    # a tuple of per-image weights, as the collate function leaves them, works the same
    as_tuple, _ = weighted(preds, {**batch, "weight": tuple(w)})
    assert torch.equal(as_tuple, mixed)
    with pytest.raises(DequityError, match="no 'weight'"):
        weighted(preds, batch)
    with pytest.raises(DequityError, match="one weight per image"):
        weighted(preds, {**batch, "weight": torch.ones(3)})


def test_weighted_model_has_ultralytics_parameters_and_rejects_end_to_end_heads():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    a = WeightedDetectionModel("yolov8n.yaml", nc=3, verbose=False)
    torch.manual_seed(0)
    b = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    assert a.state_dict().keys() == b.state_dict().keys()
    with pytest.raises(DequityError, match="end-to-end heads"):
        WeightedDetectionModel("yolo26n.yaml", nc=3, verbose=False).init_criterion()


def test_export_loads_back_into_fiftyone_with_the_same_boxes(frames, tmp_path):
    view = frames.match_tags("train")
    yaml_path = export_yolo(view, tmp_path, classes=CLASSES)
    export_yolo(frames.match_tags("val"), tmp_path, classes=CLASSES, split="val")
    back = fo.Dataset.from_dir(
        dataset_type=fo.types.YOLOv5Dataset, yaml_path=str(yaml_path), split="train"
    )
    try:
        with open(tmp_path / "dequity_weights.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
        assert [r["sample_id"] for r in rows] == view.values("id")
        by_path = {str(tmp_path / r["image"]): r["sample_id"] for r in rows}
        assert len(back) == len(view) == len(by_path)
        for sample in back:
            original = frames[by_path[sample.filepath]].ground_truth.detections
            loaded = sample.ground_truth.detections
            assert [d.label for d in loaded] == [d.label for d in original]
            np.testing.assert_allclose(
                [d.bounding_box for d in loaded], [d.bounding_box for d in original], atol=1e-5
            )
        weights = read_weights(tmp_path, "train")
        assert list(weights.values()) == pytest.approx(view.values("dequity_weight"))
        assert set(weights) == {image_key(p) for p in by_path}
        assert len(read_weights(tmp_path, "val")) == 4  # both splits, one file
    finally:
        back.delete()


@pytest.fixture()
def no_network(monkeypatch):
    """Any connection or name lookup beyond this machine fails the test."""
    real_connect, real_lookup = socket.socket.connect, socket.getaddrinfo
    local = {"localhost", "127.0.0.1", "::1"}

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in local:
            raise AssertionError(f"network connection to {address}")
        return real_connect(sock, address)

    def lookup(host, *args, **kwargs):
        if host not in local:
            raise AssertionError(f"name lookup of {host}")
        return real_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)


def _first_step(result) -> dict:
    with open(result.run_dir / "steps.csv") as f:
        return next(csv.DictReader(f))


def test_a_few_weighted_steps_offline_equal_unweighted_at_weight_one(frames, tmp_path, no_network):
    split = {"train_tag": "train", "val_tag": "val", "seed": 3}
    base = train_detector(
        frames, framework="yolo", train_key="yolo_base", weight_field=None,
        output_dir=tmp_path / "base", **split, **TINY,
    )  # fmt: skip
    ones = train_detector(
        frames, framework="yolo", train_key="yolo_ones", weight_field="ones",
        evaluate=False, output_dir=tmp_path / "ones", **split, **TINY,
    )  # fmt: skip
    weighted = train_detector(
        frames, framework="yolo", train_key="yolo_dequity",
        evaluate=False, output_dir=tmp_path / "weighted", **split, **TINY,
    )  # fmt: skip
    assert len(base.step_losses) == 2  # 8 images, batch 4, one epoch
    assert base.step_losses == ones.step_losses
    assert weighted.step_losses[0] != base.step_losses[0]
    first = _first_step(weighted)
    assert float(first["mean_weight"]) < 1 and float(_first_step(ones)["mean_weight"]) == 1
    # the run folder holds the export, Ultralytics' files and the run's own
    for name in ("config.json", "steps.csv", "metrics.json", "evaluation.json", "yolo.pt"):
        assert (base.run_dir / name).is_file(), name
    assert (base.run_dir / "ultralytics" / "weights" / "last.pt").is_file()
    assert (base.run_dir / "yolo_data" / "dequity_weights.csv").is_file()
    config = json.loads((weighted.run_dir / "config.json").read_text())
    assert config["framework"] == "yolo" and config["detector"] == "yolov8n.yaml"
    assert frames.count("yolo_base_predictions") == 4
    assert load_training_run(frames, "yolo_base").evaluation["eval_key"] == "yolo_base_eval"
    assert set(base.evaluation["per_class_ap"]) == set(CLASSES)


def test_cli_trains_yolo_with_sampling_and_compares_with_a_torchvision_run(
    frames, tmp_path, capsys
):
    common = ["--dataset", frames.name, "--train-tag", "train", "--val-tag", "val", "--quiet"]
    tiny = ["--image-size", "64", "--batch-size", "4", "--steps", "1"]
    assert main(["train", *common, *tiny, "--train-key", "fcos_run",
                 "--output-dir", str(tmp_path / "fcos")]) == 0  # fmt: skip
    assert main(["train", *common, *tiny, "--framework", "yolo", "--train-key", "yolo_sampled",
                 "--weight-field", "none", "--sampling-field", "dequity_weight",
                 "--output-dir", str(tmp_path / "yolo")]) == 0  # fmt: skip
    config = json.loads((tmp_path / "yolo" / "config.json").read_text())
    assert config["sampling_field"] == "dequity_weight" and config["weight_field"] is None
    assert main(["compare", "fcos_run", "yolo_sampled", "--dataset", frames.name,
                 "--output", str(tmp_path / "cmp.png")]) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert "fcos_run" in table and "yolo_sampled" in table and "truck" in table
    assert (tmp_path / "cmp.png").is_file()
    cmp = compare_runs(tmp_path / "fcos", tmp_path / "yolo")
    assert [r[0] for r in cmp.rows] == [*CLASSES, "mAP"]


def test_bad_input_names_the_problem(frames, tmp_path):
    args = {"framework": "yolo", "train_tag": "train", "val_tag": "val", **TINY}
    with pytest.raises(DequityError, match="weight field 'nope' does not exist"):
        train_detector(frames, weight_field="nope", output_dir=tmp_path / "a", **args)
    with pytest.raises(DequityError, match="label field 'boxes' does not exist"):
        train_detector(frames, label_field="boxes", output_dir=tmp_path / "b", **args)
    with pytest.raises(DequityError, match="not a local file"):
        train_detector(frames, weights="yolov8n.pt", output_dir=tmp_path / "c", **args)
    with pytest.raises(DequityError, match="framework must be one of"):
        train_detector(frames, framework="keras")
    with pytest.raises(DequityError, match="weight field 'nope'"):
        view_weights(frames, "nope")


def _readme_block(heading: str) -> str:
    """The ``python`` code block under a README heading."""
    section = (REPO / "README.md").read_text().split(f"\n{heading}\n", 1)[1]
    return re.search(r"```python\n(.+?)\n```", section, re.DOTALL).group(1)


def test_readme_yolo_and_sampler_snippets_run(frames, tmp_path, monkeypatch):
    yolo = _readme_block("#### Ultralytics YOLO")
    sampler = _readme_block("#### Samplers for any framework")
    # the README's settings, shrunk to seconds on two CPU cores
    assert "epochs=10," in yolo and "image_size=320," in yolo
    yolo = yolo.replace("epochs=10,", "epochs=1,").replace("image_size=320,", "image_size=64,")
    dataset = frames.clone("dequity-demo")
    try:
        dataset.delete_samples(dataset.skip(30))
        monkeypatch.chdir(tmp_path)
        exec(compile(yolo, "README.md", "exec"), {})
        exec(compile(sampler, "README.md", "exec"), {})
        assert (tmp_path / "yolo_data" / "dequity_weights.csv").is_file()
        assert (tmp_path / "runs" / "yolo_dequity" / "evaluation.json").is_file()
        assert dataset.count("yolo_dequity_predictions") == 6
    finally:
        dataset.delete()


def test_importing_the_yolo_path_keeps_numpy_print_options():
    code = (
        "import numpy as np; before = np.get_printoptions(); import training.yolo_loss; "
        "assert np.get_printoptions() == before; print(repr(np.array([1.0, 0.5])))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "array([1. , 0.5])"
