"""Runs that survive a failover: a 3-member replica set whose primary goes away mid-run.

A replica set is started from FiftyOne's own ``mongod`` on three local ports.
A worker process computes, updates or reweights a run and pauses at one of
the named write points (:mod:`dequity.faults`); meanwhile the primary is
stepped down (``replSetStepDown``) or killed (``SIGKILL``, then restarted).
The worker then goes on: it must succeed (the driver retries after the
election) or raise one ``DequityError``. Afterwards a fresh process checks
each dataset as :mod:`benchmarks.robustness` does: the run is complete, or
absent, or finished by the next call, every field holds its results, no
claim or staging data is left, and export, reweight and a rerun work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.robustness import (
    check_datasets,
    free_port,
    mongod_binary,
    start_worker,
    summarize,
    worker_env,
)
from reporting import REPO, git_commit, md_table, update_readme

NAME = "failover"
#: the page whose generated block this benchmark fills
DOCUMENT = "docs/scale_out.md"
RESULTS_JSON = REPO / "benchmarks" / f"results-{NAME}.json"
REPLICA_SET = "rs0"
ACTIONS = ("step_down", "kill")
#: the action that leaves no primary until the worker has given up
QUORUM_LOST = "quorum_lost"
#: how long a worker's driver looks for a primary in a quorum-lost trial (ms)
SELECTION_TIMEOUT_MS = 5_000
SCENARIOS = ("new", "overwrite", "update", "reweight")
#: the points before which a failed run has not committed: it is then absent (or old)
PRE_COMMIT = ("claimed", "staged", "run_saved")


@dataclass
class ReplicaSet:
    """Three local ``mongod`` members of one replica set, and their processes."""

    folder: Path
    ports: list[int]
    processes: dict[int, subprocess.Popen] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"mongodb://{hosts}/?replicaSet={REPLICA_SET}"

    def start(self, port: int) -> None:
        """Start (or restart) the member on ``port`` with its own data folder."""
        data = self.folder / str(port)
        data.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [str(mongod_binary()), "--replSet", REPLICA_SET, "--port", str(port)]
            + ["--dbpath", str(data), "--bind_ip", "127.0.0.1"]
            + ["--logpath", str(data / "mongod.log"), "--logappend"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def listening(self, timeout: float = 120.0) -> None:
        """Wait until every member answers a ping (``replSetInitiate`` needs them all)."""
        import pymongo

        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                if self.processes[port].poll() is not None:
                    log = self.folder / str(port) / "mongod.log"
                    tail = log.read_text()[-2_000:] if log.exists() else "(no log)"
                    raise RuntimeError(f"mongod on port {port} exited:\n{tail}")
                try:
                    with pymongo.MongoClient(
                        f"mongodb://127.0.0.1:{port}", directConnection=True,
                        serverSelectionTimeoutMS=1_000,
                    ) as client:  # fmt: skip
                        client.admin.command("ping")
                    break
                except pymongo.errors.PyMongoError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"mongod on port {port} not listening") from None
                    time.sleep(0.25)

    def primary(self, timeout: float = 120.0) -> int:
        """The port of the current primary, once there is one."""
        import pymongo

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for port in self.ports:
                try:
                    with pymongo.MongoClient(
                        f"mongodb://127.0.0.1:{port}", directConnection=True,
                        serverSelectionTimeoutMS=1_000,
                    ) as client:  # fmt: skip
                        if client.admin.command("hello").get("isWritablePrimary"):
                            return port
                except pymongo.errors.PyMongoError:
                    continue
            time.sleep(0.25)
        raise TimeoutError(f"no primary within {timeout:.0f} s")

    def healthy(self, timeout: float = 120.0) -> None:
        """Wait until every member is primary or secondary."""
        import pymongo

        deadline = time.monotonic() + timeout
        with pymongo.MongoClient(
            f"mongodb://127.0.0.1:{self.primary()}", directConnection=True
        ) as client:
            while time.monotonic() < deadline:
                status = client.admin.command("replSetGetStatus")
                states = [m["stateStr"] for m in status["members"]]
                if sorted(states) == ["PRIMARY", "SECONDARY", "SECONDARY"]:
                    return
                time.sleep(0.25)
        raise TimeoutError(f"members not healthy within {timeout:.0f} s: {states}")

    def step_down(self) -> int:
        """Make the primary step down; returns its port."""
        import pymongo

        port = self.primary()
        with pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", directConnection=True) as client:
            try:
                client.admin.command("replSetStepDown", 30, secondaryCatchUpPeriodSecs=10)
            except pymongo.errors.AutoReconnect:  # older servers drop the connection
                pass
        return port

    def kill_primary(self) -> int:
        """``SIGKILL`` the primary, wait for a new one, restart the old; returns its port."""
        port = self.primary()
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.primary()
        self.start(port)
        return port

    def kill_majority(self) -> list[int]:
        """``SIGKILL`` the primary and one secondary: no primary can be elected."""
        primary = self.primary()
        ports = [primary, next(p for p in self.ports if p != primary)]
        for port in ports:
            self.processes[port].send_signal(signal.SIGKILL)
            self.processes[port].wait()
        return ports

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def replica_set(folder: Path) -> Iterator[ReplicaSet]:
    """A 3-member replica set of FiftyOne's ``mongod`` on free local ports.

    Elections are quick (a 2 s election timeout) so that a killed primary is
    replaced within seconds.

    Example::

        with replica_set(Path("/tmp/rs")) as rs:
            os.environ["FIFTYONE_DATABASE_URI"] = rs.uri
    """
    import pymongo

    ports = [free_port() for _ in range(3)]
    members = ReplicaSet(folder, ports)
    try:
        for port in ports:
            members.start(port)
        members.listening()
        config = {
            "_id": REPLICA_SET,
            "members": [{"_id": i, "host": f"127.0.0.1:{p}"} for i, p in enumerate(ports)],
            "settings": {"electionTimeoutMillis": 2_000},
        }
        with pymongo.MongoClient(
            f"mongodb://127.0.0.1:{ports[0]}",
            directConnection=True,
            serverSelectionTimeoutMS=60_000,
        ) as client:
            client.admin.command("replSetInitiate", config)
        members.healthy()
        yield members
    finally:
        members.stop()


def _pause_at(worker: subprocess.Popen, pause: Path, timeout: float = 300.0) -> bool:
    """Wait until the worker reached its point (True) or ended first (False)."""
    deadline = time.monotonic() + timeout
    while not (pause / "reached").exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _expected(scenario: str, point: str, result: str) -> dict:
    """What the checker must find: the run's eta, or no run (``None`` for either eta)."""
    from benchmarks.robustness_worker import NEW_ETA, OLD_ETA, RUN_KEY

    committed = result == "ok" or point not in PRE_COMMIT
    if scenario == "new":
        return {"runs": {RUN_KEY: NEW_ETA} if committed else {}, "num_ids": {}}
    new_eta = NEW_ETA if scenario in ("overwrite", "reweight") else OLD_ETA
    return {"runs": {RUN_KEY: new_eta if committed else OLD_ETA}, "num_ids": {}}


def failover_trials(members: ReplicaSet, folder: Path, cases: list[tuple[str, str, str]]) -> dict:
    """One trial per ``(scenario, point, action)``; the summary of what survived.

    Example::

        with replica_set(Path("/tmp/rs")) as rs:
            failover_trials(rs, Path("/tmp/trials"), [("new", "staged", "kill")])
    """
    env = worker_env(members.uri, "dequity_failover")
    impatient = worker_env(
        f"{members.uri}&serverSelectionTimeoutMS={SELECTION_TIMEOUT_MS}", "dequity_failover"
    )
    outcomes = {}
    for index, (scenario, point, action) in enumerate(cases):
        name = f"failover-{index}-{scenario}-{point}-{action}"
        pause = folder / name
        pause.mkdir(parents=True)
        trial_env = impatient if action == QUORUM_LOST else env
        worker = start_worker("failover", name, scenario, point, str(pause), env=trial_env)
        reached = _pause_at(worker, pause)
        killed: list[int] = []
        if reached and action == QUORUM_LOST:
            killed = members.kill_majority()
        elif reached:
            (members.step_down if action == "step_down" else members.kill_primary)()
        (pause / "resume").touch()
        output, _ = worker.communicate(timeout=600)
        for port in killed:
            members.start(port)
        members.healthy()
        lines = [line for line in output.splitlines() if line.startswith("result: ")]
        result = lines[-1].removeprefix("result: ") if lines else ""
        problems = [] if reached else [f"never reached {point}:\n{output[-2000:]}"]
        if worker.returncode or not lines:
            problems.append(f"exit code {worker.returncode}, no result:\n{output[-3000:]}")
        elif result != "ok" and not result.startswith("DequityError"):
            problems.append(f"unexpected outcome: {result}")
        elif action == QUORUM_LOST and "rerun" not in result:
            problems.append(f"no primary, yet the call did not say to rerun: {result}")
        outcomes[name] = {
            "scenario": scenario,
            "point": point,
            "action": action,
            "result": result,
            "problems": problems,
        }
    spec = {name: _expected(o["scenario"], o["point"], o["result"]) for name, o in outcomes.items()}
    report = check_datasets(env, folder / "check", spec)
    trials = []
    for name, outcome in outcomes.items():
        problems = outcome.pop("problems") + report[name]["problems"]
        trials.append({"case": name, **outcome, "problems": problems})
    kind = "failover at a write point (step-down or SIGKILL of the primary)"
    return summarize(kind, trials, report)


def all_cases() -> list[tuple[str, str, str]]:
    """Every scenario at every write point it crosses, with each action and without quorum."""
    from dequity.faults import POINTS

    return [
        (scenario, point, action)
        for scenario in SCENARIOS
        for point in POINTS
        if not (point == "claimed" and scenario in ("update", "reweight"))
        for action in (*ACTIONS, QUORUM_LOST)
    ]


def sample_cases() -> list[tuple[str, str, str]]:
    """One case per write point, the scenarios and actions taken in turn; one without quorum.

    Example::

        >>> len(sample_cases())
        9
    """
    from dequity.faults import POINTS

    cases = []
    for i, point in enumerate(POINTS):
        scenario = SCENARIOS[i % len(SCENARIOS)]
        if point == "claimed" and scenario in ("update", "reweight"):
            scenario = "new"
        cases.append((scenario, point, ACTIONS[i % len(ACTIONS)]))
    return [*cases, ("overwrite", "staged", QUORUM_LOST)]


def readme_block(record: dict) -> str:
    """``docs/scale_out.md``'s count of failover trials survived, from the saved record.

    Example::

        print(readme_block(json.loads(RESULTS_JSON.read_text())))
    """
    summary = record["summary"]
    trials = summary["trials"]
    errors = sum(t["result"].startswith("DequityError") for t in trials)
    failed = [f"{t['scenario']} at `{t['point']}` ({t['action']})" for t in trials if t["problems"]]
    return (
        f"At commit {record['commit'][:10]}, {summary['survived']} of {summary['total']} "
        f"trials survived (every scenario at every write point, with each action and "
        f"without quorum); {len(trials) - errors} calls succeeded and {errors} raised the "
        f"`DequityError` that says to rerun. "
        + (f"Failed: {', '.join(failed)}." if failed else "None failed.")
        + f" Leftovers: {len(summary['leftovers']) or 'none'}."
    )


def run(quick: bool) -> str:
    """Every case (quick: one per write point); save the raw outcomes (full mode)."""
    cases = sample_cases() if quick else all_cases()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dequity-failover-") as tmp:
        with replica_set(Path(tmp) / "rs") as members:
            summary = failover_trials(members, Path(tmp) / "trials", cases)
    seconds = time.perf_counter() - start
    if not quick:
        record = {"commit": git_commit(), "seconds": seconds, "summary": summary}
        RESULTS_JSON.write_text(json.dumps(record, indent=1, default=str))
        update_readme(NAME, readme_block(record), document=DOCUMENT)
    rows = [
        [t["scenario"], t["point"], t["action"], t["result"][:60], "; ".join(t["problems"])[:80]]
        for t in summary["trials"]
    ]
    return (
        "### Failover: a 3-member replica set loses its primary mid-run\n\n"
        f"{summary['survived']} of {summary['total']} trials survived in {seconds:.0f} s; "
        f"leftovers: {summary['leftovers'] or 'none'}.\n\n"
        + md_table(["scenario", "point", "action", "outcome", "problems"], rows)
    )


if __name__ == "__main__":
    print(run(quick=os.environ.get("DEQUITY_QUICK") == "1"))
