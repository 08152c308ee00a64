"""Leases in the database: one writer per run key, one schema change at a time.

A claim is a document in the ``dequity_claims`` collection of FiftyOne's
database, inserted under a unique ``_id``: the insert is atomic, so of two
processes claiming the same name exactly one succeeds. The document names its
holder (pid, host, process start time) and carries a heartbeat, so a claim
whose holder died (killed, crashed, machine lost) expires and is taken over:
at once on the same host, after :data:`LEASE_SECONDS` without a heartbeat from
another host. The holder may store a journal of its work in the document; whoever
takes a dead claim over receives that journal to finish or undo the work.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil

from dequity.errors import DequityError
from dequity.store import compat as fc

logger = logging.getLogger(__name__)

COLLECTION = "dequity_claims"
LEASE_SECONDS = float(os.environ.get("DEQUITY_LEASE_SECONDS", 90))
LOCK_WAIT_SECONDS = 120.0
#: how often a wait for a live holder is reported, in seconds
WAIT_REPORT_SECONDS = 10.0
_HEARTBEAT_SECONDS = LEASE_SECONDS / 6

_active: set[str] = set()
_active_lock = threading.Lock()
_heartbeat: dict[int, threading.Thread] = {}
_lock_depth: dict[tuple[str, int], int] = {}
_me: dict[int, dict[str, Any]] = {}


def collection() -> Any:
    """The claims collection (pymongo) in FiftyOne's database."""
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[COLLECTION]


def owner() -> dict[str, Any]:
    """This process, as recorded in the claims it holds."""
    pid = os.getpid()
    if pid not in _me:
        _me[pid] = {
            "pid": pid,
            "host": socket.gethostname(),
            "started": psutil.Process(pid).create_time(),
            "process": uuid.uuid4().hex,
        }
    return _me[pid]


def server_now() -> Any:
    """The database server's clock (UTC), which every heartbeat uses."""
    import fiftyone.core.odm as foo

    return foo.get_db_conn().command("hello")["localTime"].replace(tzinfo=None)


def holder_alive(doc: dict) -> bool:
    """Whether the process that holds claim ``doc`` still runs.

    Example::

        holder_alive(collection().find_one({"_id": claim_id}))
    """
    holder = doc.get("owner") or {}
    if not holder.get("pid"):
        return False
    if holder.get("host") == socket.gethostname():
        try:
            process = psutil.Process(holder["pid"])
            return (
                abs(process.create_time() - holder["started"]) < 1.0
                and process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False
    age = (server_now() - doc["heartbeat_at"]).total_seconds()
    return age < LEASE_SECONDS


def describe(doc: dict) -> str:
    """``pid 123 on host h since 2026-11-30 21:07 UTC``: who holds claim ``doc``."""
    holder = doc.get("owner") or {}
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')!r} since "
        f"{doc.get('since', doc.get('heartbeat_at')):%Y-%m-%d %H:%M:%S} UTC"
    )


class Claim:
    """A claim this process holds; its document doubles as a journal.

    Example::

        claim, _ = acquire("dataset:run:dequity", lambda doc: "busy")
        claim.update(phase="writing")
        claim.release()
    """

    def __init__(self, doc: dict) -> None:
        self.id = doc["_id"]
        self.token = doc["token"]
        self.doc = doc
        self._held = True
        with _active_lock:
            _active.add(self.id)
        _start_heartbeat()

    def update(self, **fields: Any) -> None:
        """Record ``fields`` in the claim's document (None unsets a field)."""
        sets = {k: v for k, v in fields.items() if v is not None}
        unsets = {k: "" for k, v in fields.items() if v is None}
        update = {"$set": sets} if sets else {}
        if unsets:
            update["$unset"] = unsets
        if collection().update_one({"_id": self.id, "token": self.token}, update).matched_count:
            self.doc.update(sets)
            for k in unsets:
                self.doc.pop(k, None)
            return
        raise DequityError(f"lost the claim {self.id!r}; another process took it over")

    def release(self) -> None:
        """Delete the claim (a no-op once released or abandoned)."""
        if self._held:
            self._forget()
            collection().delete_one({"_id": self.id, "token": self.token})

    def abandon(self) -> None:
        """Keep the journal but mark the holder gone, so the next caller takes it over."""
        if self._held:
            self._forget()
            collection().update_one(
                {"_id": self.id, "token": self.token}, {"$set": {"owner.pid": 0}}
            )

    def _forget(self) -> None:
        self._held = False
        with _active_lock:
            _active.discard(self.id)


def acquire(
    claim_id: str,
    busy: Callable[[dict], str],
    wait: float = 0.0,
    **fields: Any,
) -> tuple[Claim, dict | None]:
    """Claim ``claim_id``; return the claim and the journal of a dead holder, if any.

    A live holder makes this wait up to ``wait`` seconds, then raise
    :class:`DequityError` with ``busy(its document)`` as the message. A wait
    is logged (INFO) when it starts and every :data:`WAIT_REPORT_SECONDS`,
    naming the holder, so that it reads as progress rather than a hang.

    Example::

        claim, previous = acquire("x:run:dequity", lambda d: "busy: " + describe(d))
    """
    coll = collection()
    from pymongo import ReturnDocument
    from pymongo.errors import DuplicateKeyError

    started = time.monotonic()
    deadline, next_report = started + wait, started
    while True:
        now = server_now()
        doc = {
            "_id": claim_id,
            "token": uuid.uuid4().hex,
            "owner": owner(),
            "heartbeat_at": now,
            "since": now,
            **fields,
        }
        try:
            coll.insert_one(doc)
            return Claim(doc), None
        except DuplicateKeyError:
            held = coll.find_one({"_id": claim_id})
        if held is None:
            continue
        if not holder_alive(held):
            taken = coll.find_one_and_update(
                {"_id": claim_id, "token": held["token"]},
                {"$set": {k: doc[k] for k in ("token", "owner", "heartbeat_at", "since")}},
                return_document=ReturnDocument.AFTER,
            )
            if taken is not None:
                logger.warning("took over %r from a dead holder (%s)", claim_id, describe(held))
                return Claim(taken), held
            continue
        clock = time.monotonic()
        if clock >= deadline:
            raise DequityError(busy(held))
        if clock >= next_report:
            logger.info(
                "Waiting for %r, held by %s (%.0f s of at most %.0f s)",
                claim_id,
                describe(held),
                clock - started,
                wait,
            )
            next_report = clock + WAIT_REPORT_SECONDS
        time.sleep(random.uniform(0.02, 0.1))


def take_over(doc: dict) -> Claim | None:
    """Take claim ``doc`` over if its holder is dead; None if it lives or was taken."""
    from pymongo import ReturnDocument

    if holder_alive(doc):
        return None
    now = server_now()
    taken = collection().find_one_and_update(
        {"_id": doc["_id"], "token": doc["token"]},
        {"$set": {"token": uuid.uuid4().hex, "owner": owner(), "heartbeat_at": now, "since": now}},
        return_document=ReturnDocument.AFTER,
    )
    return None if taken is None else Claim(taken)


@contextmanager
def dataset_lock(dataset: Any) -> Iterator[None]:
    """Serialise changes of ``dataset``'s document (schema, runs) across processes.

    Reloads the dataset on entry, so changes are made to its latest schema.
    Re-entrant within a thread.

    Example::

        with dataset_lock(dataset):
            dataset.add_sample_field("x", fo.FloatField)
    """
    lock_id = f"{fc.dataset_id(dataset)}:schema"
    depth_key = (lock_id, threading.get_ident())
    if _lock_depth.get(depth_key):
        _lock_depth[depth_key] += 1
        try:
            yield
        finally:
            _lock_depth[depth_key] -= 1
        return
    claim, _ = acquire(
        lock_id,
        lambda doc: f"dataset {dataset.name!r} is locked by {describe(doc)}; try again later",
        wait=LOCK_WAIT_SECONDS,
        dataset_id=str(fc.dataset_id(dataset)),
        kind="schema",
    )
    _lock_depth[depth_key] = 1
    try:
        dataset.reload()
        yield
    finally:
        _lock_depth.pop(depth_key, None)
        claim.release()


def _start_heartbeat() -> None:
    pid = os.getpid()
    if pid in _heartbeat and _heartbeat[pid].is_alive():
        return
    thread = threading.Thread(target=_beat, name="dequity-heartbeat", daemon=True)
    _heartbeat[pid] = thread
    thread.start()


def _beat() -> None:
    while True:
        time.sleep(_HEARTBEAT_SECONDS)
        with _active_lock:
            ids = list(_active)
        if not ids:
            continue
        try:
            collection().update_many(
                {"_id": {"$in": ids}, "owner.process": owner()["process"]},
                {"$currentDate": {"heartbeat_at": True}},
            )
        except Exception as e:  # a missed beat only shortens the lease
            logger.debug("heartbeat failed: %s", e)
