"""The ``dequity`` command line, in-process and as the installed console script."""

import ast
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import fiftyone as fo
import pytest

from dequity.cli import main, parse_kwargs
from dequity.console import MONGODB_NOTICE
from tests.conftest import EMBEDDINGS_FIELD, REPO

HEAVY_MODULES = ("fiftyone", "torch", "sklearn", "dequity.api.compute", "training.runner")

SUBCOMMANDS = [
    "compute",
    "update",
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


def test_parsing_the_command_line_imports_nothing_heavy():
    code = (
        "import sys; from dequity.cli import build_parser; "
        "build_parser().parse_args(['train', '--dataset', 'd']); "
        f"print([m for m in {HEAVY_MODULES!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_library_never_imports_training_at_module_level():
    for path in (REPO / "dequity").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in getattr(node, "names", [])]
            module = getattr(node, "module", None) or ""
            if isinstance(node, ast.Import | ast.ImportFrom):
                assert not any(n.split(".")[0] == "training" for n in [module, *names]), path


@pytest.mark.parametrize(
    ("argv", "rc"), [(["--help"], 0), (["compute"], 2), (["export", "--dataset=d"], 2)]
)
def test_help_and_argument_errors_answer_within_a_second(argv, rc):
    times = []
    for _ in range(3):
        start = time.perf_counter()
        done = subprocess.run([dequity_exe(), *argv], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        assert done.returncode == rc, done.stderr
    assert min(times) < 1.0, times


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


@pytest.mark.slow
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


@pytest.mark.slow
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
    dataset_dir = Path(os.environ["DEQUITY_DEMO_DIR"]) / "data"
    assert f"dataset '{name}': 199 images from {dataset_dir}\n" in out
    assert "Embedding images..." in out and "Writing fields" in out
    assert MONGODB_NOTICE not in out + result.stderr
    assert "cluster sizes" in out and "noise" in out and "rarest samples" in out
    assert f"fiftyone app launch {name}" in out
    dataset = fo.load_dataset(name)
    assert dataset.persistent
    assert dataset.count("dequity_weight") == 199
    ranked = dataset.sort_by("dequity_weight", reverse=True).first()
    assert str(ranked.filepath) in out
    # the second ranking counts runs of near-identical frames once
    assert "near-identical frames counted once" in out
    assert dataset.count("dequity_scenes_weight") == 199
    scenes = dataset.sort_by("dequity_scenes_weight", reverse=True).first()
    assert str(scenes.filepath) in out.split("counted once")[1]
    dataset.delete()


def test_update_adds_new_samples_and_says_when_there_are_none(demo, capsys):
    ids = demo.values("id")
    base = demo.exclude(ids[::10]).clone()
    main(["compute", "--dataset", base.name, "--embeddings", EMBEDDINGS_FIELD])
    base.add_samples(demo.select(ids[::10]))
    capsys.readouterr()
    assert main(["update", "--dataset", base.name]) == 0
    assert f"added {len(ids[::10])} new samples to run 'dequity'" in capsys.readouterr().out
    assert base.count("dequity_weight") == len(base)
    assert main(["update", "--dataset", base.name]) == 0
    assert "no new samples" in capsys.readouterr().out
    base.delete()


def test_group_options_from_the_command_line(demo, capsys):
    argv = ["compute", "--dataset", demo.name, "--embeddings", EMBEDDINGS_FIELD]
    assert main([*argv, "--run-key", "scenes", "--collapse-near-duplicates", "0.8"]) == 0
    assert demo.get_run_info("scenes").config.collapse_near_duplicates == 0.8
    assert main([*argv, "--run-key", "bad", "--group-field", "scene_id"]) == 2
    err = capsys.readouterr().err
    assert "no field 'scene_id' to group by" in err and "Traceback" not in err
    assert not demo.has_sample_field("bad_weight")


def run_cli(*argv: str, **env: str) -> subprocess.CompletedProcess:
    """``dequity ARGV`` in a fresh process, on the test session's database."""
    return subprocess.run(
        [dequity_exe(), *argv], capture_output=True, text=True, env={**os.environ, **env}
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2, one ``dequity: error:`` line naming ``words``, no traceback."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and all(w in error[0] for w in words), done.stderr


def test_export_to_unwritable_paths_exits_2(demo_run, tmp_path):
    name = demo_run[0].name
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = {
        "/proc/w.csv": ["/proc/w.csv"],  # passes the early check, fails at the write
        str(a_file / "w.csv"): ["is a file"],
        str(tmp_path): ["is a folder"],
    }
    for path, words in cases.items():
        done = run_cli("export", "--dataset", name, path)
        assert_one_line_error(done, *words)
        assert "wrote" not in done.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--dataset", "d", "--output-dir", "{file}/run"],
        ["train", "--dataset", "d", "--output-dir", "{file}"],
        ["compare", "a", "b", "--output", "{file}/chart.png"],
        ["compare", "a", "b", "--json", "{file}/table.json"],
    ],
)
def test_commands_that_write_files_check_the_path_first(argv, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main([arg.format(file=a_file) for arg in argv])
    assert exit_info.value.code == 2
    assert "is a file" in capsys.readouterr().err


def test_os_error_at_run_time_exits_2(demo, capsys):
    """The early check passes (root may write /proc), the write fails."""
    common = ["--dataset", demo.name]
    assert main(["compute", *common, "--embeddings", EMBEDDINGS_FIELD]) == 0
    capsys.readouterr()
    assert main(["export", *common, "/proc/w.json"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("dequity: error: /proc/w.json:") and "wrote" not in out


def test_late_parameter_error_exits_2_with_one_line(demo, capsys):
    argv = ["compute", "--dataset", demo.name, "--embeddings", EMBEDDINGS_FIELD]
    assert main(argv + ["--projection-kwargs", "n_components=-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("dequity: error:") == 1 and "n_components" in err
    assert "Traceback" not in err and demo.list_runs() == []


def test_rename_that_fails_exits_2_and_keeps_the_run(demo, capsys):
    common = ["--dataset", demo.name]
    assert main(["compute", *common, "--embeddings", EMBEDDINGS_FIELD]) == 0
    capsys.readouterr()
    assert main(["rename", *common, "_"]) == 2
    out, err = capsys.readouterr()
    assert "renamed" not in out and "dequity: error:" in err
    demo.reload()
    assert demo.list_runs() == ["dequity"] and demo.has_sample_field("dequity_weight")


def test_progress_is_labelled(demo, capsys):
    assert main(["compute", "--dataset", demo.name, "--embeddings", EMBEDDINGS_FIELD]) == 0
    out = capsys.readouterr().out
    fields = "dequity_cluster, dequity_likelihood, dequity_weight, dequity_rare_by"
    assert f"Writing fields {fields}..." in out


def test_no_mongodb_version_notice(demo_run):
    """FiftyOne logs it on every connection to MongoDB 6.0 when validating."""
    done = run_cli("list", "--dataset", demo_run[0].name, FIFTYONE_DATABASE_VALIDATION="true")
    assert done.returncode == 0, done.stderr
    assert "dequity:" in done.stdout
    assert MONGODB_NOTICE not in done.stdout + done.stderr
