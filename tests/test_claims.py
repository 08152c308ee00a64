"""Claims on run keys: a live writer blocks others at once, a dead one is taken over."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest

import dequity
from dequity import DequityError, compute_dequity
from dequity.store import claims
from dequity.store.commit import run_claim_id
from tests.conftest import EMBEDDINGS_FIELD


def fake_claim(dataset, run_key: str, **owner) -> dict:
    """A claim on ``run_key`` as another process would have left it."""
    now = claims.server_now()
    doc = {
        "_id": run_claim_id(dataset, run_key),
        "token": "t" * 32,
        "owner": {"pid": 1, "host": "elsewhere", "started": 0.0, "process": "p"} | owner,
        "heartbeat_at": now,
        "since": now,
        "dataset_id": str(dataset._doc.id),
        "run_key": run_key,
        "kind": "run",
        "phase": "computing",
    }
    claims.collection().insert_one(doc)
    return doc


def test_a_key_held_by_a_live_process_is_refused_at_once(demo):
    compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, eta=0.3, progress=False)
    before = demo.values("dequity_weight")
    fake_claim(demo, "dequity")  # another host, fresh heartbeat: alive
    start = time.monotonic()
    with pytest.raises(DequityError, match="being written by pid 1 on host 'elsewhere'"):
        compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, overwrite=True, progress=False)
    assert time.monotonic() - start < 5
    assert demo.values("dequity_weight") == before
    assert dequity.load_dequity_results(demo, "dequity").config.eta == 0.3
    with pytest.raises(DequityError, match="being written"):
        dequity.delete_dequity_run(demo, "dequity")
    claims.collection().delete_one({"_id": run_claim_id(demo, "dequity")})


def test_a_claim_without_heartbeat_expires(demo):
    doc = fake_claim(demo, "dequity")
    claims.collection().update_one(
        {"_id": doc["_id"]}, {"$set": {"heartbeat_at": doc["heartbeat_at"].replace(year=2000)}}
    )
    compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, progress=False)
    assert dequity.list_dequity_runs(demo) == ["dequity"]
    assert claims.collection().count_documents({"dataset_id": str(demo._doc.id)}) == 0


def test_a_claim_of_a_dead_local_process_is_taken_over_at_once(demo):
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(child.stdout)
    fake_claim(demo, "dequity", pid=dead_pid, host=claims.owner()["host"])
    compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, progress=False)
    assert dequity.list_dequity_runs(demo) == ["dequity"]


def test_the_holder_is_named_when_a_run_is_not_there_yet(demo):
    fake_claim(demo, "pending")
    with pytest.raises(DequityError, match="no dequity run 'pending'.*being computed by pid 1"):
        dequity.load_dequity_results(demo, "pending")
    claims.collection().delete_one({"_id": run_claim_id(demo, "pending")})


def test_a_wait_for_the_schema_lock_is_reported_as_progress(demo, caplog, monkeypatch):
    monkeypatch.setattr(claims, "WAIT_REPORT_SECONDS", 0.5)
    lock = fake_claim(demo, "unused") | {"_id": f"{demo._doc.id}:schema", "kind": "schema"}
    claims.collection().insert_one(lock)  # a live holder on another host
    claims.collection().delete_one({"_id": run_claim_id(demo, "unused")})
    waits = []

    class ReleaseAfterTwoReports(logging.Handler):  # the holder lets go once the wait was seen
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Waiting for"):
                waits.append(record.getMessage())
                if len(waits) == 2:
                    claims.collection().delete_one({"_id": lock["_id"]})

    handler = ReleaseAfterTwoReports()
    logger = logging.getLogger("dequity.store.claims")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="dequity.store.claims"):
            compute_dequity(demo, "waited", embeddings=EMBEDDINGS_FIELD, progress=False)
    finally:
        logger.removeHandler(handler)
    assert len(waits) >= 2, waits
    assert "held by pid 1 on host 'elsewhere'" in waits[0]
    assert "waited" in dequity.list_dequity_runs(demo)
