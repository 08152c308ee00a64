"""A short real training run on the demo frames: run folder, evaluation, resume, compare, CLI."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest

from dequity.errors import DequityError
from tests.conftest import frames_with_thumbnail_run
from training import TrainConfig, compare_runs, load_training_run, train_detector
from training.checkpoints import checkpoint_file, file_sha256, load_checkpoint
from training.cli import main, register
from training.samples import sampling_probabilities

STEPS = 6
COMMON = {"train_tag": "train", "val_tag": "val", "image_size": 192, "batch_size": 2}


@pytest.fixture(scope="module")
def demo_weighted() -> fo.Dataset:
    """The demo frames with real DatasetEquity fields, 4 frames tagged train, 6 val.

    The embeddings are small grey thumbnails, enough for the clustering to run
    on real images without the cost of a network.
    """
    dataset = frames_with_thumbnail_run()
    with_truck = dataset.match(
        fo.ViewField("ground_truth.detections").filter(fo.ViewField("label") == "truck").length()
        > 0
    )
    val_ids = with_truck.values("id")[:3] + dataset.skip(150).values("id")[:3]
    dataset.select(val_ids).tag_samples("val")
    dataset.exclude(val_ids).take(4, seed=1).tag_samples("train")
    dataset.save_view("subset", dataset.match_tags(["train", "val"]))
    yield dataset
    dataset.delete()


@pytest.fixture(scope="module")
def weighted_run(demo_weighted, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "weighted"
    result = train_detector(
        demo_weighted,
        view="subset",
        train_key="weighted",
        steps=STEPS,
        lr=5e-4,
        output_dir=run_dir,
        progress=False,
        **COMMON,
    )
    return result


def test_training_lowers_the_loss_and_writes_a_run_folder(demo_weighted, weighted_run):
    run_dir = weighted_run.run_dir
    for name in ("config.json", "metrics.json", "metrics.csv", "steps.csv", "checkpoint.pt"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["weight_field"] == "dequity_weight" and config["num_train"] == 4
    assert config["classes"] == ["car", "person", "truck"]
    losses = weighted_run.step_losses
    assert len(losses) == STEPS
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    with open(run_dir / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == STEPS and float(rows[0]["mean_weight"]) < 1.0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics[-1]["step"] == STEPS and "val_mAP" in metrics[-1]


def test_evaluation_gives_per_class_ap(demo_weighted, weighted_run):
    evaluation = weighted_run.evaluation
    assert set(evaluation["per_class_ap"]) == {"car", "person", "truck"}
    assert all(0.0 <= ap <= 1.0 for ap in evaluation["per_class_ap"].values())
    assert json.loads((weighted_run.run_dir / "evaluation.json").read_text()) == evaluation
    val = demo_weighted.match_tags("val")
    assert val.count("weighted_predictions") == len(val) == 6
    assert demo_weighted.match_tags("val", bool=False).count("weighted_predictions") == 0
    assert "weighted_eval" in demo_weighted.list_evaluations()
    record = load_training_run(demo_weighted, "weighted")
    assert record.evaluation == evaluation and record.config.train_key == "weighted"


def test_resume_continues_the_step_count(demo_weighted, weighted_run, tmp_path):
    resumed = train_detector(
        demo_weighted,
        view="subset",
        train_key="resumed",
        steps=STEPS + 1,
        lr=5e-4,
        output_dir=tmp_path / "resumed",
        resume=weighted_run.run_dir,
        progress=False,
        evaluate=False,
        **COMMON,
    )
    assert len(resumed.step_losses) == STEPS + 1
    assert resumed.step_losses[:STEPS] == weighted_run.step_losses
    with pytest.raises(DequityError, match="exists"):
        train_detector(demo_weighted, train_key="weighted", output_dir=weighted_run.run_dir)


class _RunsCode:
    """Unpickling this object runs ``touch <path>``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def test_resume_never_runs_code_from_a_checkpoint(demo_weighted, weighted_run, tmp_path):
    import shutil

    import torch

    crafted = tmp_path / "crafted"
    shutil.copytree(weighted_run.run_dir, crafted)
    marker = tmp_path / "code-ran"
    torch.save({"model": _RunsCode(str(marker))}, crafted / "checkpoint.pt")
    meta = json.loads((crafted / "checkpoint.json").read_text())
    meta["sha256"] = file_sha256(crafted / "checkpoint.pt")
    (crafted / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(DequityError, match="more than tensors"):
        load_checkpoint(checkpoint_file(crafted))
    assert not marker.exists()
    (crafted / "checkpoint.json").unlink()
    with pytest.raises(DequityError, match="metadata"):
        checkpoint_file(crafted)


def test_cli_trains_a_baseline_and_compares(demo_weighted, weighted_run, tmp_path, capsys):
    base_dir = tmp_path / "baseline"
    args = ["train", "--dataset", demo_weighted.name, "--view", "subset"]
    args += ["--train-key", "baseline", "--weight-field", "none", "--steps", "2"]
    args += ["--train-tag", "train", "--val-tag", "val", "--image-size", "192"]
    args += ["--batch-size", "2"]
    args += ["--output-dir", str(base_dir), "--quiet"]
    assert main(args) == 0
    assert json.loads((base_dir / "config.json").read_text())["weight_field"] is None
    chart, table = tmp_path / "compare.png", tmp_path / "compare.json"
    capsys.readouterr()
    assert (
        main(
            [
                "compare",
                str(base_dir),
                str(weighted_run.run_dir),
                "--output",
                str(chart),
                "--json",
                str(table),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    for name in ("car", "person", "truck", "mAP", "change"):
        assert name in out
    assert chart.read_bytes()[:4] == b"\x89PNG"
    rows = json.loads(table.read_text())["rows"]
    assert [r["class"] for r in rows] == ["car", "person", "truck", "mAP"]
    by_key = compare_runs("baseline", "weighted", dataset=demo_weighted.name)
    assert by_key.rows == [(r["class"], r["ap_a"], r["ap_b"], r["change_percent"]) for r in rows]
    for _, a, b, change in by_key.rows:
        if a:
            assert change == pytest.approx(100 * (b - a) / a)
    demo_weighted.delete_run("baseline")
    assert not demo_weighted.has_sample_field("baseline_predictions")
    assert "baseline_eval" not in demo_weighted.list_evaluations()


def test_missing_weights_name_the_command(demo_weighted, tmp_path):
    with pytest.raises(DequityError, match="dequity compute"):
        train_detector(
            demo_weighted, weight_field="other_weight", output_dir=tmp_path, progress=False
        )


def test_train_config_defaults_and_checks():
    assert TrainConfig().key == "dequity_train"
    assert TrainConfig(weight_field=None).key == "baseline"
    assert TrainConfig(weight_field=None, eta=0.5).key == "dequity_train"
    assert TrainConfig(weight_field=None).checkpoint == Path("runs/baseline/checkpoint.pt")
    assert TrainConfig(output_dir="out").run_dir == Path("out")
    with pytest.raises(DequityError, match="identifier"):
        TrainConfig(train_key="two words")
    with pytest.raises(DequityError, match=">= 1"):
        TrainConfig(steps=0)
    # keywords replace the config's fields, and are checked before any work
    with pytest.raises(DequityError, match=">= 1"):
        train_detector("no such dataset", TrainConfig(steps=5), epochs=0)


@pytest.mark.parametrize("command", ["train", "compare"])
def test_cli_help(command, capsys):
    parser = argparse.ArgumentParser(prog="dequity")
    register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert ("--weight-field" in out) if command == "train" else ("RUN_A" in out)
    assert ("--freeze-backbone" in out) == (command == "train")


def test_sampling_field_draws_images_in_proportion(demo_weighted, tmp_path):
    train = demo_weighted.match_tags("train")
    train.set_values("image_w", [0.1, 0.2, 0.3, 0.4])
    train.set_values("draw_p", [0.0, 0.0, 1.0, 0.0])  # only the third image can be drawn
    result = train_detector(
        demo_weighted,
        train_key="resampled",
        weight_field="image_w",
        sampling_field="draw_p",
        train_tag="train",
        val_fraction=0,
        steps=3,
        image_size=128,
        batch_size=2,
        vectorize=True,
        output_dir=tmp_path / "resampled",
        progress=False,
    )
    with open(result.run_dir / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["mean_weight"]) for r in rows] == pytest.approx([0.3, 0.3, 0.3])
    train.set_values("draw_p", [0.0, -1.0, 1.0, 0.0])
    with pytest.raises(DequityError, match="draw_p"):
        train_detector(
            demo_weighted,
            train_key="resampled",
            weight_field=None,
            sampling_field="draw_p",
            train_tag="train",
            steps=1,
            output_dir=tmp_path / "bad",
            overwrite=True,
            progress=False,
        )


def test_a_negative_sampling_power_draws_by_inverse_likelihood(demo_weighted, tmp_path):
    train = demo_weighted.match_tags("train")
    train.set_values("likelihood", [0.0, 0.25, 1.0, 4.0])
    draw = sampling_probabilities(train, "likelihood", power=-0.5)
    # the zero takes the smallest positive value, 0.25: drawn most, but finitely often
    assert draw.tolist() == pytest.approx([2.0, 2.0, 1.0, 0.5])
    assert sampling_probabilities(train, "likelihood").tolist() == [0.0, 0.25, 1.0, 4.0]
    with pytest.raises(DequityError, match="sampling_power must be a finite number other than 0"):
        TrainConfig(sampling_field="likelihood", sampling_power=0)
    # from the command line: power -1 draws the image of likelihood 1e-8 (weight 0.3) only
    train.set_values("image_w", [0.1, 0.2, 0.3, 0.4])
    train.set_values("likelihood", [1.0, 1.0, 1e-8, 1.0])
    args = ["train", "--dataset", demo_weighted.name, "--train-tag", "train", "--quiet"]
    args += ["--val-fraction", "0", "--image-size", "128", "--batch-size", "2", "--steps", "2"]
    args += ["--weight-field", "image_w", "--sampling-field", "likelihood"]
    args += ["--sampling-power", "-1", "--output-dir", str(tmp_path / "cli")]
    assert main(args) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["sampling_power"] == -1
    with open(tmp_path / "cli" / "steps.csv") as f:
        assert [float(r["mean_weight"]) for r in csv.DictReader(f)] == pytest.approx([0.3, 0.3])


def test_object_level_training_weights_each_box(demo_weighted, tmp_path, capsys):
    train = demo_weighted.match_tags("train")
    counts = [len(d.detections) for d in train.values("ground_truth")]
    assert sum(counts) > 0
    train.set_values("ground_truth.detections.box_w", [[0.0] * n for n in counts])
    common = {"train_tag": "train", "val_fraction": 0, "image_size": 128, "batch_size": 2}
    result = train_detector(
        demo_weighted,
        train_key="per_box",
        weight_field="box_w",
        weight_level="object",
        steps=2,
        output_dir=tmp_path / "per_box",
        progress=False,
        **common,
    )
    assert result.config["weight_level"] == "object"
    with open(result.run_dir / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    # weight 0 on every box: only the background anchors' classification is left
    for row in rows:
        assert float(row["bbox_regression"]) == 0 and float(row["bbox_ctrness"]) == 0
        assert float(row["classification"]) > 0 and float(row["mean_weight"]) == 1
    seed = np.random.default_rng(0)
    train.set_values("ground_truth.detections.box_w", [seed.uniform(0.2, 1, n) for n in counts])
    args = ["train", "--dataset", demo_weighted.name, "--train-tag", "train"]
    args += ["--val-fraction", "0", "--image-size", "128", "--batch-size", "2", "--steps", "1"]
    args += ["--weight-field", "box_w", "--train-key", "per_box_cli", "--quiet"]
    args += ["--output-dir", str(tmp_path / "cli"), "--weight-level", "object"]
    assert main(args) == 0
    config = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert config["weight_level"] == "object" and config["weight_field"] == "box_w"
    with open(tmp_path / "cli" / "steps.csv") as f:
        assert float(next(csv.DictReader(f))["bbox_regression"]) > 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*args[:-1], "box"])
    assert exit_info.value.code == 2
    assert "--weight-level: invalid choice: 'box'" in capsys.readouterr().err
    with pytest.raises(DequityError, match="weight_level must be"):
        TrainConfig(weight_level="box")
    # a box without a weight: the error names the run to compute, and nothing is trained
    train.set_values("ground_truth.detections.dequity_weight", [[None] * n for n in counts])
    assert main([*args, "--weight-field", "dequity_weight", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "have no 'dequity_weight' attribute" in err and "run_key='dequity'" in err
