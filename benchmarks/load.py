"""Many writers and an App reader on one dataset at once, for ten minutes.

On a private ``mongod``, dataset ``load`` holds 100k samples with 512-number
vectors in a field. Eight processes then work on it at once
(:mod:`benchmarks.load_worker`):

- four compute runs ``kc0`` .. ``kc3`` with ``overwrite=True``, in a loop;
- two add 1,000 samples and update runs ``ku0`` and ``ku1``, in a loop;
- one reweights run ``kr0``, in a loop;
- one serves the App (``fo.launch_app``) and requests its grid (the first
  page sorted by weight) and its sidebar (counts and ranges of every run's
  fields) over HTTP, as a browser does.

Writers start calls until the time is up; the App is requested until the
last writer ends. Afterwards a fresh process checks the dataset as the
robustness trials do (:func:`benchmarks.robustness.check_datasets`): every
run complete, its fields exactly its results, no claim or staging data left,
and export, reweight and a rerun work. Saved: every call's duration and
outcome, the App's latencies, the waits for other processes' claims as their
progress lines reported them, and the check's problems.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import save_raw
from benchmarks.load_worker import DATASET, REWEIGHTED_KEY, UPDATED_KEYS
from benchmarks.robustness import (
    REPO,
    check_datasets,
    free_port,
    private_mongod,
    worker_env,
)
from reporting import md_table

NAME = "load"
#: the page whose generated block this benchmark fills
DOCUMENT = "README.md"
COMPUTED_KEYS = ("kc0", "kc1", "kc2", "kc3")
WAIT_LINE = "Waiting for "


def _worker(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.load_worker", *args],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def trial(folder: Path, n: int, seconds: float) -> dict:
    """Set up, run every process for ``seconds``, check; the raw outcome.

    Example::

        trial(Path("/tmp/load"), 5_000, 60)["check_problems"]   # []
    """
    with private_mongod(folder / "db") as uri:
        env = worker_env(uri, "dequity_load")
        setup_log = folder / "setup.log"
        start = time.perf_counter()
        if _worker("setup", str(n), env=env, log=setup_log).wait():
            raise RuntimeError(f"setup failed:\n{setup_log.read_text()[-3000:]}")
        setup_seconds = time.perf_counter() - start
        calls, requests, stop = folder / "calls.jsonl", folder / "requests.jsonl", folder / "stop"
        reader_log = folder / "app.log"
        reader = _worker("app", str(free_port()), str(stop), str(requests), env=env, log=reader_log)
        _wait_until_ready(reader, reader_log)
        until = time.time() + seconds
        roles = [("compute", k) for k in COMPUTED_KEYS] + [("update", k) for k in UPDATED_KEYS]
        roles.append(("reweight", REWEIGHTED_KEY))
        writers = {
            f"{role} {key}": _worker(
                role, key, str(until), str(calls), env=env, log=folder / f"{role}-{key}.log"
            )
            for role, key in roles
        }
        exits = {name: process.wait() for name, process in writers.items()}
        wall = time.time() - (until - seconds)
        stop.touch()
        reader_exit = reader.wait(timeout=300)
        spec = {DATASET: {"runs": {k: None for _, k in roles}, "num_ids": {}}}
        report = check_datasets(env, folder / "check", spec)
    logs = {name: (folder / f"{name.replace(' ', '-')}.log").read_text() for name in writers}
    return {
        "setup_seconds": setup_seconds,
        "wall_seconds": wall,
        "exit_codes": {**exits, "app": reader_exit},
        "calls": _rows(calls),
        "requests": _rows(requests),
        "waits": [
            line for text in logs.values() for line in text.splitlines() if WAIT_LINE in line
        ],
        "check_problems": report[DATASET]["problems"] + report["_database"]["problems"],
        "dataset_after": report[DATASET]["observed"],
        "worker_log_tails": {name: text[-1500:] for name, text in logs.items() if exits[name]},
    }


def _wait_until_ready(process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while "ready" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the App reader did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def summarize(raw: dict) -> dict:
    """Per operation: calls, failures, median and slowest seconds; the App's latencies; a verdict.

    Example::

        summary = summarize(trial(Path("/tmp/load"), 5_000, 60))
        summary["survived"], summary["app"]["p99_ms"]
    """
    operations = {}
    for op in sorted({row["op"] for row in raw["calls"]}):
        rows = [row for row in raw["calls"] if row["op"] == op]
        seconds = [row["seconds"] for row in rows]
        failed = [row["result"] for row in rows if row["result"] != "ok"]
        operations[op] = {
            "calls": len(rows),
            "failed": len(failed),
            "failures": sorted(set(failed))[:5],
            "median_s": statistics.median(seconds),
            "max_s": max(seconds),
            "per_minute": 60 * len(rows) / raw["wall_seconds"],
        }
    latencies = np.array([row["seconds"] for row in raw["requests"]]) * 1000
    failed_requests = [row["result"] for row in raw["requests"] if row["result"] != "ok"]
    slowest = max(raw["calls"], key=lambda row: row["seconds"])
    waited = [float(line.split("(")[-1].split(" s of")[0]) for line in raw["waits"]]
    scored = sum(row["samples"] for row in raw["calls"] if row["op"] == "compute")
    summary = {
        "operations": operations,
        "app": {
            "requests": len(latencies),
            "failed": len(failed_requests),
            "failures": sorted(set(failed_requests))[:5],
            "median_ms": float(np.median(latencies)),
            "p99_ms": float(np.percentile(latencies, 99)),
            "max_ms": float(latencies.max()),
        },
        "slowest_call": {k: slowest[k] for k in ("op", "key", "seconds", "result")},
        "computed_samples_per_s": scored / raw["wall_seconds"],
        "wait_reports": len(raw["waits"]),
        "longest_wait_reported_s": max(waited, default=0.0),
        "check_problems": raw["check_problems"],
    }
    summary["survived"] = (
        not raw["check_problems"]
        and not any(raw["exit_codes"].values())
        and all(o["failed"] == 0 for o in operations.values())
        and not failed_requests
    )
    return summary


def readme_block(record: dict) -> str:
    """The README's paragraph from the saved record.

    Example::

        from benchmarks.common import load_raw

        print(readme_block(load_raw(NAME)))
    """
    config, summary = record["config"], record["values"]["summary"]
    ops, app = summary["operations"], summary["app"]
    calls = sum(o["calls"] for o in ops.values())
    failed = sum(o["failed"] for o in ops.values())
    verdict = (
        "every call succeeded and the check found nothing wrong"
        if summary["survived"]
        else f"NOT every call held: {failed} calls failed, {app['failed']} App requests failed, "
        f"check problems: {len(summary['check_problems'])}"
    )
    slowest = summary["slowest_call"]
    longest = summary["longest_wait_reported_s"]
    share = ops["update"]["median_s"] / ops["compute"]["median_s"]
    return (
        f"Under load ({config['minutes']:g} min, {config['samples']:,} samples, commit "
        f"{record['commit'][:10]}): four processes recomputing runs, two adding 1,000 samples "
        "and updating, one reweighting and one requesting the App, all at once on one "
        f"dataset, made {calls:,} calls: "
        f"{ops['compute']['calls']} computes (median {ops['compute']['median_s']:.0f} s), "
        f"{ops['update']['calls']} updates (median {ops['update']['median_s']:.1f} s), "
        f"{ops['reweight']['calls']} reweights (median {ops['reweight']['median_s']:.1f} s) "
        f"and {ops['add samples']['calls']} additions of samples; {verdict}. The slowest call "
        f"was a {slowest['op']} of {slowest['seconds']:.0f} s. An update of 1 % new samples "
        f"took {share:.0%} as long as a compute here: it rescales every old sample on the "
        "server, and the database shares the cores with four computes. "
        f"The App answered {app['requests']:,} requests, {app['failed']} failed, with a median "
        f"latency of {app['median_ms']:.0f} ms and a 99th percentile of {app['p99_ms']:.0f} ms. "
        f"Waits for another process's claim were reported {summary['wait_reports']} times "
        + (f"(longest {longest:.0f} s)." if longest >= 1 else "(each under a second).")
    )


def run(quick: bool) -> str:
    """The load trial: 100k samples for 10 min (5k for 1 min in quick mode); saved in full mode."""
    n, seconds = (5_000, 60.0) if quick else (100_000, 600.0)
    with tempfile.TemporaryDirectory(prefix="dequity-load-") as tmp:
        raw = trial(Path(tmp), n, seconds)
    summary = summarize(raw)
    config = {"samples": n, "minutes": seconds / 60, "processes": 8}
    if not quick:
        values = {"summary": summary, "raw": raw}
        record = save_raw(NAME, values, config, block=readme_block, document=DOCUMENT)
    else:
        record = {"config": config, "commit": "quick", "values": {"summary": summary}}
    rows = [
        [op, o["calls"], o["failed"], f"{o['median_s']:.2f}", f"{o['max_s']:.2f}"]
        for op, o in summary["operations"].items()
    ]
    app = summary["app"]
    rows.append(
        [
            "App request",
            app["requests"],
            app["failed"],
            f"{app['median_ms'] / 1000:.3f}",
            f"{app['max_ms'] / 1000:.3f}",
        ]
    )
    return (
        "### Load: eight processes on one dataset\n\n"
        + readme_block(record)
        + "\n\n"
        + md_table(["operation", "calls", "failed", "median s", "slowest s"], rows)
    )
