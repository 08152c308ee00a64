"""Many writers and an App reader at once (separate processes, a private MongoDB)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.load import readme_block, summarize, trial


def _call(op: str, seconds: float, result: str = "ok") -> dict:
    return {"role": op, "key": "k", "op": op, "samples": 100, "start": 0.0,
            "seconds": seconds, "result": result}  # fmt: skip


def test_a_failed_call_fails_the_load_trial_and_says_so():
    raw = {
        "wall_seconds": 60.0,
        "exit_codes": {"compute kc0": 0, "app": 0},
        "calls": [_call("compute", 5.0), _call("update", 1.0, "DequityError: lost"),
                  _call("reweight", 0.5), _call("add samples", 0.3)],
        "requests": [_call("grid", 0.2), _call("sidebar", 0.4)],
        "waits": ["12:00 Waiting for 'x:schema', held by pid 1 (10 s of at most 120 s)"],
        "check_problems": [],
    }  # fmt: skip
    summary = summarize(raw)
    assert not summary["survived"]
    assert summary["operations"]["update"]["failures"] == ["DequityError: lost"]
    assert summary["longest_wait_reported_s"] == 10.0
    assert summary["slowest_call"]["op"] == "compute"
    record = {"config": {"minutes": 1, "samples": 100}, "commit": "c" * 40,
              "values": {"summary": summary}}  # fmt: skip
    assert "NOT every call held: 1 calls failed" in readme_block(record)


@pytest.mark.slow
def test_eight_processes_at_once_leave_every_run_complete_and_the_app_answering(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    raw = trial(tmp_path, 3_000, 45.0)
    summary = summarize(raw)
    with capsys.disabled():
        print("\n" + json.dumps({k: summary[k] for k in ("operations", "app")}, default=str))
    assert {"compute", "update", "reweight", "add samples"} <= set(summary["operations"])
    assert summary["survived"], json.dumps(
        {k: raw[k] for k in ("exit_codes", "check_problems", "worker_log_tails")}
        | {"failures": {op: o["failures"] for op, o in summary["operations"].items()},
           "app": summary["app"]["failures"]}, indent=1, default=str
    )  # fmt: skip
