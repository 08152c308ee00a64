"""Start-up of the ``dequity`` command: help and argument errors, in fresh processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from reporting import md_table

NAME = "startup"
REPO = Path(__file__).resolve().parents[1]
RAW = Path(__file__).resolve().parent / "results-startup.json"
TARGET_SECONDS = 1.0


def dequity_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m dequity.cli``."""
    exe = Path(sys.executable).with_name("dequity")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("dequity")
    return [found] if found else [sys.executable, "-m", "dequity.cli"]


def time_command(argv: list[str], repeats: int, expect_rc: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` fresh runs of ``argv`` (each must exit ``expect_rc``)."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - start)
        if done.returncode != expect_rc:
            raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr[-500:]}")
    return times


def run(quick: bool) -> str:
    """Median start-up of help and argument errors, against a bare interpreter."""
    repeats = 3 if quick else 10
    dq = dequity_command()
    py = [sys.executable, "-c"]
    cases = [
        ("bare interpreter (reference)", py + ["pass"], 0, repeats),
        ("dequity --help", dq + ["--help"], 0, repeats),
        ("dequity compute (missing --dataset)", dq + ["compute"], 2, repeats),
        ("dequity compute --eta x", dq + ["compute", "--dataset=d", "--eta=x"], 2, repeats),
        ("dequity train --help", dq + ["train", "--help"], 0, repeats),
        ("import fiftyone (avoided)", py + ["import fiftyone"], 0, 1 if quick else 3),
        ("import torch (avoided)", py + ["import torch"], 0, 1 if quick else 3),
    ]
    raw = {name: time_command(argv, n, rc) for name, argv, rc, n in cases}
    ref = float(np.median(raw[cases[0][0]]))
    rows = []
    for name, *_ in cases:
        median, worst = float(np.median(raw[name])), max(raw[name])
        cli = name.startswith("dequity")
        verdict = ("yes" if worst < TARGET_SECONDS else "NO") if cli else ""
        rows.append([name, median, worst, median / ref, verdict])
    if not quick:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        record = {"commit": commit, "command": dq, "repeats": repeats, "seconds": raw}
        RAW.write_text(json.dumps(record, indent=1))
    header = (
        f"### Start-up, {repeats} fresh processes each\n\n"
        f"Target: every help and argument error answers in under {TARGET_SECONDS:.0f} s. "
        f"The bare interpreter took {ref:.3f} s (median) in this run; the last two "
        "rows are what the command no longer imports before parsing.\n\n"
    )
    headers = ["command", "median s", "max s", "median / reference", f"< {TARGET_SECONDS:.0f} s"]
    return header + md_table(headers, rows)
