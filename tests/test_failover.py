"""Runs survive a replica set's failover mid-run (three local ``mongod``, separate processes).

One trial per write point: a worker computes, updates or reweights a run and
pauses there while the primary is stepped down or killed and restarted; it
must then succeed or raise one ``DequityError``, and the dataset must be
consistent afterwards. ``python -m benchmarks --only failover`` runs every
scenario at every point with both actions and saves the outcomes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.failover import failover_trials, replica_set, sample_cases

pytestmark = pytest.mark.slow


def test_a_primary_lost_at_each_write_point_leaves_every_run_consistent(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with replica_set(tmp_path / "rs") as members:
        summary = failover_trials(members, tmp_path / "trials", sample_cases())
    with capsys.disabled():
        print(f"\n{summary['kind']}: {summary['survived']} of {summary['total']} trials survived")
    assert summary["total"] == 9
    failed = [t for t in summary["trials"] if t["problems"]]
    assert not failed and not summary["leftovers"], json.dumps(
        {"failed": failed, "leftovers": summary["leftovers"]}, indent=1, default=str
    )
