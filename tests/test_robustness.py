"""Runs survive kills and concurrent writers (separate processes, a private MongoDB).

Each test prints how many trials survived; ``python -m benchmarks --only
robustness`` runs more of them and keeps the raw outcomes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.robustness import (
    RACE_MODES,
    fault_trials,
    kill_trials,
    private_mongod,
    race_trials,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A private ``mongod`` for the worker processes of this module."""
    with private_mongod(tmp_path_factory.mktemp("mongod")) as uri:
        yield uri


def report(summary: dict, capsys: pytest.CaptureFixture) -> None:
    """Print the trial count; fail with every problem found."""
    with capsys.disabled():
        print(f"\n{summary['kind']}: {summary['survived']} of {summary['total']} trials survived")
    failed = [t for t in summary["trials"] if t["problems"]]
    assert not failed and not summary["leftovers"], json.dumps(
        {"failed": failed, "leftovers": summary["leftovers"]}, indent=1, default=str
    )


def test_a_run_killed_at_each_write_point_leaves_a_consistent_dataset(
    mongo_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    summary = fault_trials(mongo_uri, tmp_path)
    assert summary["total"] == 18
    report(summary, capsys)


def test_a_run_killed_at_random_moments_leaves_a_consistent_dataset(
    mongo_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report(kill_trials(mongo_uri, tmp_path, count=3, seed=1), capsys)


def test_two_processes_at_once_never_lose_or_break_a_run(
    mongo_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    summaries = race_trials(mongo_uri, tmp_path, list(RACE_MODES), count=4)
    for summary in summaries:
        report(summary, capsys)
    same = summaries[0]["trials"]
    refused = [r for t in same for r in t["outcomes"].values() if r.startswith("DequityError")]
    assert len(refused) == len(same)  # exactly one of each pair ran
