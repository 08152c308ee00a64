"""Crash-safe writes of a run: stage, commit with one atomic update, finish.

A run's writes go through three steps, journalled in the claim on its key
(see :mod:`dequity.store.claims`):

1. **stage**: the new values go into a private staging collection, and the
   new run record (config and results) is saved without being linked to the
   dataset. The dataset itself is untouched: an old run with the same key
   stays intact and readable.
2. **commit**: one atomic update points the dataset's run key at the new
   record.
3. **finish**: declare the fields, merge the staged values into the samples,
   delete the replaced record and the staging collection.

A process that dies before the commit leaves only the staging data, which
the next call on the dataset drops; one that dies after it leaves a run that
the next call finishes. Every step of ``finish`` can be repeated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dequity.errors import DequityError
from dequity.faults import fault_point
from dequity.store import claims, staging
from dequity.store import compat as fc
from dequity.store.names import field_names, stamp_field
from dequity.store.staging import KINDS, Column, ObjectColumns

logger = logging.getLogger(__name__)

STAGING_PREFIX = "dequity_staging_"


@dataclass
class Rescaling:
    """Old samples' values that an update moves by a factor per group, in the database.

    Each group is ``(match, factor)``: every sample whose fields equal
    ``match`` (its cluster, and the view that made it rare) gets its
    likelihood times ``factor`` and its weight recomputed with eq. 4, in one
    server-side update per group: no sample is read or sent. Each rescaled
    sample is stamped with ``stamp`` in ``stamp_field``, and the update skips
    samples that carry it, so a resumed update rescales no sample twice; the
    samples a commit writes by id carry the stamp too.
    Values a commit's columns also set are written after the rescaling.
    """

    likelihood_field: str
    weight_field: str
    stamp_field: str
    stamp: str
    eta: float
    gamma: float
    groups: list[tuple[dict[str, Any], float]]

    def to_journal(self) -> dict[str, Any]:
        return {
            "likelihood_field": self.likelihood_field,
            "weight_field": self.weight_field,
            "stamp_field": self.stamp_field,
            "stamp": self.stamp,
            "eta": self.eta,
            "gamma": self.gamma,
            "groups": [[match, factor] for match, factor in self.groups],
        }


def run_claim_id(dataset: Any, run_key: str) -> str:
    """The claim (and journal) id of run ``run_key`` on ``dataset``."""
    return f"{fc.dataset_id(dataset)}:run:{run_key}"


@contextmanager
def claim_run(samples: Any, run_key: str) -> Iterator[claims.Claim]:
    """Hold run key ``run_key`` of ``samples``' dataset for the block.

    Raises :class:`DequityError` at once if another live process holds it;
    finishes or undoes the work of a dead holder first. The dataset is
    reloaded on entry, so checks in the block see other processes' runs.

    Example::

        with claim_run(dataset, "dequity") as claim:
            commit_run(claim, dataset, "dequity", config, results, ids, columns)
    """
    dataset = fc.root_dataset(samples)
    claim, previous = claims.acquire(
        run_claim_id(dataset, run_key),
        lambda doc: (
            f"run {run_key!r} of dataset {dataset.name!r} is being written by "
            f"{claims.describe(doc)}; wait for it to finish or choose another run_key"
        ),
        dataset_id=str(fc.dataset_id(dataset)),
        run_key=run_key,
        kind="run",
        phase="computing",
    )
    try:
        if previous is not None:
            _recover(dataset, claim.doc)
            claim.update(
                phase="computing",
                staging=None,
                run_doc_id=None,
                results_id=None,
                old_run_doc_id=None,
                fields=None,
                objects=None,
                index=None,
                rescaling=None,
                staged=None,
            )
        dataset.reload()
        yield claim
    finally:
        claim.release()


def commit_run(
    claim: claims.Claim,
    samples: Any,
    run_key: str,
    config: Any,
    results: Any,
    ids: Sequence[str],
    columns: list[Column],
    index: str | None = None,
    progress: Any = None,
    objects: ObjectColumns | None = None,
    rescaling: Rescaling | None = None,
    stage: Callable[[str], None] | None = None,
) -> None:
    """Write ``columns`` of samples ``ids`` and the run record of ``run_key``, all or nothing.

    Replaces an existing run ``run_key`` (its record, and its fields' values
    where ``columns`` give new ones) only once everything new is stored.
    ``objects`` adds attributes of the samples' Detections, merged in the
    same step as the sample fields; ``rescaling`` moves other samples'
    values in the database, in the same all-or-nothing step. ``stage``, if
    given, stages the values itself into the staging collection it is passed
    (other processes may do it, each with its own batch numbers,
    :func:`dequity.store.staging.stage`); ``ids`` and the columns' values are
    then not used, only the columns' names and kinds.

    Example::

        commit_run(claim, dataset, "dequity", config, results, ids,
                   [Column("dequity_weight", "float", "weight", weights)])
    """
    from bson import ObjectId

    dataset = fc.root_dataset(samples)
    claim.update(
        phase="staging",
        staging=f"{STAGING_PREFIX}{claim.token}",
        run_doc_id=ObjectId(),
        results_id=ObjectId(),
        fields=[[c.name, c.kind, c.description, c.owned] for c in columns],
        objects=None
        if objects is None
        else {"field": objects.field, "attributes": [list(a) for a in objects.attributes]},
        index=index,
        rescaling=None if rescaling is None else rescaling.to_journal(),
        staged=staging.COLUMNS,
    )
    journal = claim.doc
    try:
        if stage is None:
            staging.stage(journal["staging"], ids, columns, progress, objects)
        else:
            stage(journal["staging"])
        fault_point("staged")
        _save_run_doc(samples, run_key, config, results, journal)
        fault_point("run_saved")
        _link(claim, dataset, run_key, journal["run_doc_id"])
        fault_point("linked")
    except BaseException:
        logger.error("run %r failed; its staged writes are undone", run_key)
        _settle(claim, dataset)
        raise
    try:
        _finish(dataset, journal)
    except BaseException:
        _settle(claim, dataset)
        raise
    fc.results_cache(dataset)[run_key] = results
    fault_point("done")


def delete_run(claim: claims.Claim, samples: Any, run_key: str) -> None:
    """Delete run ``run_key``, its record and the fields it owns; resumable.

    Example::

        with claim_run(dataset, "dequity") as claim:
            delete_run(claim, dataset, "dequity")
    """
    dataset = fc.root_dataset(samples)
    config = dataset.get_run_info(run_key).config
    claim.update(
        phase="deleting", run_doc_id=_linked_run(dataset, run_key), fields=list(config.fields)
    )
    _settle(claim, dataset)


def rename_run(claim: claims.Claim, samples: Any, run_key: str, new_run_key: str) -> None:
    """Rename run ``run_key`` and its fields to ``new_run_key``; resumable.

    The caller holds the claims on both keys; ``claim`` is the one on ``run_key``.

    Example::

        with claim_run(dataset, "a") as claim, claim_run(dataset, "b"):
            rename_run(claim, dataset, "a", "b")
    """
    dataset = fc.root_dataset(samples)
    config = dataset.get_run_info(run_key).config
    claim.update(
        phase="renaming",
        run_doc_id=_linked_run(dataset, run_key),
        new_run_key=new_run_key,
        renames=config.field_renames(new_run_key),
    )
    _settle(claim, dataset)


def recover_dataset(samples: Any) -> list[str]:
    """Finish or undo the runs of ``samples``' dataset whose writers died.

    Returns the keys it recovered. Runs still being written by live processes
    are left alone; locks of dead processes are released.

    Example::

        recover_dataset(dataset)   # ['dequity'] after a killed compute_dequity
    """
    dataset = fc.root_dataset(samples)
    recovered = []
    for doc in claims.collection().find({"dataset_id": str(fc.dataset_id(dataset))}):
        claim = claims.take_over(doc)
        if claim is None:
            continue
        if doc.get("kind") != "run":  # a schema lock: nothing to undo
            claim.release()
            continue
        logger.warning(
            "run %r of dataset %r was left unfinished by %s; recovering it",
            doc["run_key"],
            dataset.name,
            claims.describe(doc),
        )
        try:
            _recover(dataset, claim.doc)
        except BaseException:
            claim.abandon()
            raise
        claim.release()
        recovered.append(doc["run_key"])
    _sync(dataset)
    return recovered


def writer_of(samples: Any, run_key: str) -> dict | None:
    """The claim document of the live process writing run ``run_key``, if any."""
    return claims.collection().find_one({"_id": run_claim_id(fc.root_dataset(samples), run_key)})


def _settle(claim: claims.Claim, dataset: Any) -> None:
    """After a failure: undo before the commit point, finish after it."""
    try:
        _recover(dataset, claim.doc)
    except BaseException:
        logger.error("could not settle run %r; the next call will", claim.doc.get("run_key"))
        claim.abandon()
        raise


def _recover(dataset: Any, journal: dict) -> None:
    run_doc_id = journal.get("run_doc_id")
    if journal.get("phase") == "deleting":
        _finish_delete(dataset, journal)
    elif journal.get("phase") == "renaming":
        _finish_rename(dataset, journal)
    elif run_doc_id is not None and _linked_run(dataset, journal["run_key"]) == run_doc_id:
        _finish(dataset, journal)
    else:
        _roll_back(journal)
    _sync(dataset)


def _save_run_doc(samples: Any, run_key: str, config: Any, results: Any, journal: dict) -> None:
    """Store the new run record under the ids the journal holds, not yet linked."""
    fc.save_run_document(
        samples, run_key, config, results, journal["run_doc_id"], journal["results_id"]
    )


def _linked_run(dataset: Any, run_key: str) -> Any:
    """The id of the run record that ``run_key`` points at in the database."""
    raw = fc.dataset_documents(dataset).find_one({"_id": fc.dataset_id(dataset)}, {"runs": 1}) or {}
    return (raw.get("runs") or {}).get(run_key)


def _link(claim: claims.Claim, dataset: Any, run_key: str, run_doc_id: Any) -> None:
    """The commit point: point ``run_key`` at the new record in one atomic update."""
    with claims.dataset_lock(dataset):
        old = _linked_run(dataset, run_key)
        claim.update(phase="committing", old_run_doc_id=old)
        expected = old if old is not None else {"$exists": False}
        updated = fc.dataset_documents(dataset).update_one(
            {"_id": fc.dataset_id(dataset), f"runs.{run_key}": expected},
            {"$set": {f"runs.{run_key}": run_doc_id}},
        )
        if not updated.modified_count:
            raise DequityError(f"run {run_key!r} changed while this run was computed; run again")
        dataset.reload()


def _finish(dataset: Any, journal: dict) -> None:
    """Everything after the commit point; each step can be repeated."""
    import fiftyone.core.odm as foo

    run_key = journal["run_key"]
    fields = journal.get("fields") or []
    objects = journal.get("objects")
    declared = list(fields)
    if objects:
        prefix = f"{objects['field']}.detections."
        declared += [[prefix + a[0], *a[1:]] for a in objects["attributes"]]
    with claims.dataset_lock(dataset):
        for name, kind, description, owned in declared:
            if not dataset.has_sample_field(name):
                dataset.add_sample_field(
                    name,
                    KINDS[kind],
                    description=description,
                    info={"run_key": run_key} if owned else None,
                )
    fault_point("fields_declared")
    if journal.get("rescaling"):
        _rescale(dataset, journal["rescaling"])
    db = foo.get_db_conn()
    staging.merge(db, journal, fc.sample_collection_name(dataset))
    fault_point("values_merged")
    if journal.get("index"):
        dataset.create_index(journal["index"])
    old = journal.get("old_run_doc_id")
    if old is not None and old != journal["run_doc_id"]:
        fc.delete_run_document(old)
    fault_point("old_run_deleted")
    db.drop_collection(journal["staging"])
    dataset.reload()
    fc.results_cache(dataset).pop(run_key, None)


def _rescale(dataset: Any, rescaling: dict[str, Any]) -> None:
    """Apply a journalled :class:`Rescaling`: one server-side update per group."""
    import fiftyone.core.odm as foo

    samples = foo.get_db_conn()[fc.sample_collection_name(dataset)]
    p, stamp = rescaling["likelihood_field"], rescaling["stamp"]
    eta, gamma = rescaling["eta"], rescaling["gamma"]
    weight = {
        "$divide": [
            {"$add": [eta, {"$pow": [{"$subtract": [1, f"${p}"]}, gamma]}]},
            eta + 1,
        ]
    }
    for number, (match, factor) in enumerate(rescaling["groups"]):
        samples.update_many(
            {**match, p: {"$type": "double"}, rescaling["stamp_field"]: {"$ne": stamp}},
            [
                {"$set": {p: {"$multiply": [f"${p}", factor]}}},
                {
                    "$set": {
                        rescaling["weight_field"]: weight,
                        rescaling["stamp_field"]: stamp,
                        "last_modified_at": "$$NOW",
                    }
                },
            ],
        )
        if number == 0:
            fault_point("rescaled_one")


def _finish_delete(dataset: Any, journal: dict) -> None:
    run_key, run_doc_id = journal["run_key"], journal.get("run_doc_id")
    with claims.dataset_lock(dataset):
        fc.dataset_documents(dataset).update_one(
            {"_id": fc.dataset_id(dataset), f"runs.{run_key}": run_doc_id},
            {"$unset": {f"runs.{run_key}": ""}},
        )
        dataset.reload()
        fault_point("run_unlinked")
        present = [f for f in journal["fields"] if dataset.has_sample_field(f)]
        if present:
            dataset.delete_sample_fields(present)
    if run_doc_id is not None:
        fc.delete_run_document(run_doc_id)
    fc.results_cache(dataset).pop(run_key, None)


def _finish_rename(dataset: Any, journal: dict) -> None:
    run_key, new_key = journal["run_key"], journal["new_run_key"]
    run_doc_id = journal["run_doc_id"]
    renames = journal["renames"]
    with claims.dataset_lock(dataset):
        for old, new in renames.items():
            if dataset.has_sample_field(old) and not dataset.has_sample_field(new):
                dataset.rename_sample_field(old, new)
        fault_point("fields_renamed")
        dataset.reload()
        for new in renames.values():
            field = dataset.get_field(new)
            if field is not None and (field.info or {}).get("run_key") == run_key:
                field.info = {**field.info, "run_key": new_key}
                field.save()
        stamp = stamp_field(new_key)
        stamped = {"config.updated_by_field": stamp} if stamp in renames.values() else {}
        fc.run_documents().update_one(
            {"_id": run_doc_id},
            {
                "$set": {
                    "key": new_key,
                    **{f"config.{s}_field": new for s, new in field_names(new_key).items()},
                    **stamped,
                }
            },
        )
        fc.dataset_documents(dataset).update_one(
            {"_id": fc.dataset_id(dataset), f"runs.{run_key}": run_doc_id},
            {"$set": {f"runs.{new_key}": run_doc_id}, "$unset": {f"runs.{run_key}": ""}},
        )
        dataset.reload()
    cache = fc.results_cache(dataset)
    cache.pop(run_key, None)
    cache.pop(new_key, None)


def _roll_back(journal: dict) -> None:
    """Undo everything before the commit point: nothing outside staging was touched."""
    import fiftyone.core.odm as foo
    import gridfs

    db = foo.get_db_conn()
    if journal.get("run_doc_id") is not None:
        fc.run_documents().delete_one({"_id": journal["run_doc_id"]})
    if journal.get("results_id") is not None:
        gridfs.GridFS(db).delete(journal["results_id"])
    if journal.get("staging"):
        db.drop_collection(journal["staging"])


def _sync(dataset: Any) -> None:
    """Reload ``dataset`` if another process changed its runs since it was loaded."""
    raw = fc.dataset_documents(dataset).find_one({"_id": fc.dataset_id(dataset)}, {"runs": 1}) or {}
    linked = raw.get("runs") or {}
    loaded = fc.loaded_run_ids(dataset)
    if linked != loaded:
        dataset.reload()
        cache = fc.results_cache(dataset)
        for key in list(cache):
            if linked.get(key) != loaded.get(key):
                cache.pop(key, None)
