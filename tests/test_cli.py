"""The ``dequity`` command line, in-process and as the installed console script."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import fiftyone as fo
import pytest

from dequity.cli import main, parse_kwargs
from tests.conftest import EMBEDDINGS_FIELD

SUBCOMMANDS = [
    "compute",
    "reweight",
    "export",
    "list",
    "delete",
    "rename",
    "demo",
    "train",
    "compare",
]


def dequity_exe() -> str:
    exe = Path(sys.executable).with_name("dequity")
    return str(exe) if exe.exists() else shutil.which("dequity")


@pytest.mark.parametrize("subcommand", [None, *SUBCOMMANDS])
def test_help(subcommand):
    argv = [dequity_exe()] + ([subcommand] if subcommand else []) + ["--help"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert "usage: dequity" in out
    if subcommand is None:
        assert all(name in out for name in SUBCOMMANDS)


def test_parse_kwargs():
    assert parse_kwargs(["eps=2.0", "min_samples=10", "metric=euclidean"]) == {
        "eps": 2.0,
        "min_samples": 10,
        "metric": "euclidean",
    }


def test_compute_list_reweight_export_rename_delete(demo, tmp_path, capsys):
    name = demo.name
    common = ["--dataset", name]
    assert main(["compute", *common, "--embeddings", EMBEDDINGS_FIELD]) == 0
    out = capsys.readouterr().out
    assert "clusters" in out and "rarest samples" in out
    assert demo.count("dequity_weight") == len(demo)

    assert main(["list", *common]) == 0
    assert "dequity:" in capsys.readouterr().out

    weights = demo.values("dequity_weight")
    assert main(["reweight", *common, "--eta", "0.5", "--gamma", "2"]) == 0
    demo.reload()
    assert demo.values("dequity_weight") != weights

    out_file = tmp_path / "w.csv"
    assert main(["export", *common, str(out_file)]) == 0
    assert len(out_file.read_text().splitlines()) == len(demo) + 1

    assert main(["rename", *common, "paper"]) == 0
    assert main(["delete", *common, "--run-key", "paper"]) == 0
    demo.reload()
    assert demo.list_runs() == [] and not demo.has_sample_field("paper_weight")


def test_paper_configuration_from_the_command_line(demo, capsys):
    argv = [
        "compute",
        "--dataset",
        demo.name,
        "--run-key",
        "paper",
        "--embeddings",
        EMBEDDINGS_FIELD,
        "--projection",
        "tsne",
        "--clustering",
        "dbscan",
        "--clustering-kwargs",
        "eps=20",
        "min_samples=10",
        "--noise",
        "cluster",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    config = demo.get_run_info("paper").config
    assert config.clustering_kwargs == {"eps": 20, "min_samples": 10}
    assert config.projection_kwargs["n_components"] == 3


def test_noise_nearest_from_the_command_line(demo, capsys):
    argv = ["compute", "--dataset", demo.name, "--embeddings", EMBEDDINGS_FIELD]
    assert main(argv + ["--run-key", "near", "--noise", "nearest"]) == 0, capsys.readouterr().err
    assert demo.get_run_info("near").config.noise == "nearest"
    assert min(demo.values("near_cluster")) == 0 and "0.0% noise" in capsys.readouterr().out


def test_errors_exit_2_with_the_fix(demo, capsys):
    assert main(["compute", "--dataset", "no-such-dataset"]) == 2
    assert "no FiftyOne dataset 'no-such-dataset'" in capsys.readouterr().err
    assert (
        main(["compute", "--dataset", demo.name, "--embeddings", EMBEDDINGS_FIELD, "--eta", "-1"])
        == 2
    )
    assert "eta must be" in capsys.readouterr().err


def test_demo_main_job_as_a_newcomer_runs_it():
    """`dequity demo`, the README's main command, in a fresh process."""
    name = "dequity-cli-demo"
    result = subprocess.run(
        [dequity_exe(), "demo", "--name", name],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "199 images" in out
    assert "cluster sizes" in out and "noise" in out and "rarest samples" in out
    assert f"fiftyone app launch {name}" in out
    dataset = fo.load_dataset(name)
    assert dataset.persistent
    assert dataset.count("dequity_weight") == 199
    ranked = dataset.sort_by("dequity_weight", reverse=True).first()
    assert str(ranked.filepath) in out
    dataset.delete()
