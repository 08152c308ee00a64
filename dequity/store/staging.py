"""A run's new values in a staging collection, and their merge into the samples.

Values are staged by column: each staging document holds one batch of
sample ids and, for each field, the batch's values as one array. A million
samples are then a few dozen documents to encode and insert, not a million.
The merge unwinds the batches on the server, one row per sample, and writes
them into the samples with ``$merge``; two disjoint sets of batches merge at
once. Measured at 200k samples holding 512-number vectors, writing three new
fields this way took as long as unordered bulk updates from two threads
(about 11 s either way, most of it the database's own work), with the client
idle.

Staging documents written before this layout (one document per sample) are
still merged, for a run whose writer died before an upgrade.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fiftyone.core.fields as fof

logger = logging.getLogger(__name__)

KINDS = {
    "int": fof.IntField,
    "float": fof.FloatField,
    "vector": fof.VectorField,
    "str": fof.StringField,
}
#: the journal's ``staged`` value for staging by column
COLUMNS = "columns"
#: a staging document's target size; MongoDB's limit is 16 MB
_DOC_BYTES = 4_000_000
_MAX_ROWS = 50_000
#: batch numbers that one stager may use: stagers of one run start this far apart
BATCH_SPAN = 1_000_000
_IDS_KEY = "ids"
_OBJECTS_KEY = "_dequity_objects"


@dataclass
class Column:
    """New values of one field: ``values[i]`` for the ``i``-th id of the commit.

    ``values`` may be shorter than the ids: it covers their first
    ``len(values)``. None clears a value. ``owned``: the field belongs to the
    run (deleted with it).
    """

    name: str
    kind: str
    description: str
    values: Sequence[Any]
    owned: bool = True


@dataclass
class ObjectColumns:
    """New values of attributes of the ``Detection`` objects in field ``field``.

    ``values[i]`` belongs to the ``i``-th id of the commit: a dict with the
    Detection ids under ``"ids"`` and, for each attribute name, the values in
    the same order. Detections of that sample not listed (or a None entry)
    lose the attributes. ``attributes``: ``(name, kind, description, owned)``.
    """

    field: str
    attributes: list[tuple[str, str, str, bool]]
    values: Sequence[dict | None]

    def paths(self) -> list[str]:
        """The attributes as field paths, e.g. ``ground_truth.detections.dequity_weight``."""
        return [f"{self.field}.detections.{a[0]}" for a in self.attributes]


def stage(
    name: str,
    ids: Sequence[str],
    columns: list[Column],
    progress: Any,
    objects: ObjectColumns | None = None,
    first_batch: int = 0,
) -> None:
    """Insert ``columns`` of samples ``ids`` into staging collection ``name``, by batch.

    Batches are numbered from ``first_batch``, so that several processes can
    stage disjoint ids into one collection (:data:`BATCH_SPAN` numbers each).
    Staging a batch again replaces it: a retried task writes the same values.

    Example::

        stage("dequity_staging_x", ids, [Column("w", "float", "weight", [0.5, 1.0])], False)
    """
    import fiftyone.core.odm as foo
    import fiftyone.core.utils as fou

    names = [c.name for c in columns] + (objects.paths() if objects else [])
    logger.info("Writing fields %s...", ", ".join(names))
    coll = foo.get_db_conn()[name]
    batches = _batches(len(ids), columns, objects)
    with (
        fou.ProgressBar(total=len(ids), progress=progress) as pb,
        ThreadPoolExecutor(2) as pool,  # encode one batch while the database stores another
    ):

        def insert(number: int) -> int:
            start, stop = batches[number]
            doc = _batch_doc(first_batch + number, ids, columns, objects, start, stop)
            coll.replace_one({"_id": doc["_id"]}, doc, upsert=True)
            return stop - start

        for rows in pool.map(insert, range(len(batches))):
            pb.update(rows)


def unstaged(name: str, collection: str, field: str, chunk: int = _MAX_ROWS) -> Iterator[list[str]]:
    """Ids of samples in ``collection`` with a value in ``field`` that ``name`` stages nothing for.

    Found on the server (an anti-join of the samples against the staged ids)
    and streamed in lists of at most ``chunk`` ids, so that clearing what an
    earlier run left never holds every id in this process.

    Example::

        for ids in unstaged(name, fc.sample_collection_name(dataset), "dequity_likelihood"):
            stage(name, ids, blank_columns(len(ids)), False, first_batch=...)
    """
    import fiftyone.core.odm as foo

    db = foo.get_db_conn()
    db[name].create_index(_IDS_KEY)
    cursor = db[collection].aggregate(
        [
            {"$match": {field: {"$ne": None}}},
            {"$project": {"_id": 1}},
            {
                "$lookup": {
                    "from": name,
                    "localField": "_id",
                    "foreignField": _IDS_KEY,
                    "pipeline": [{"$project": {"_id": 1}}, {"$limit": 1}],
                    "as": "_staged",
                }
            },
            {"$match": {"_staged": {"$size": 0}}},
            {"$project": {"_id": 1}},
        ],
        allowDiskUse=True,
    )
    ids: list[str] = []
    for doc in cursor:
        ids.append(str(doc["_id"]))
        if len(ids) == chunk:
            yield ids
            ids = []
    if ids:
        yield ids


def merge(db: Any, journal: dict, into: str, workers: int = 2) -> None:
    """Merge the staging collection that ``journal`` names into collection ``into``.

    Each staged value replaces the sample's; ``last_modified_at`` is set.
    ``workers`` disjoint sets of batches merge at once. Repeatable: a second
    merge writes the same values.

    Example::

        merge(foo.get_db_conn(), claim.doc, fc.sample_collection_name(dataset))
    """
    staging = db[journal["staging"]]
    fields = [f[0] for f in journal.get("fields") or []]
    keys = fields + ([_OBJECTS_KEY] if journal.get("objects") else [])
    target = {
        "$merge": {
            "into": into,
            "on": "_id",
            "whenMatched": _when_matched(journal),
            "whenNotMatched": "discard",
        }
    }
    if journal.get("staged") != COLUMNS:  # one staged document per sample
        project = {**{k: 1 for k in keys}, "last_modified_at": "$$NOW"}
        staging.aggregate([{"$project": project}, target])
        return
    rows = [
        {"$unwind": {"path": f"${_IDS_KEY}", "includeArrayIndex": "_row"}},
        {
            "$project": {  # past a column's end the value is missing: the field is left as is
                "_id": f"${_IDS_KEY}",
                **{k: {"$arrayElemAt": [f"${k}", "$_row"]} for k in keys},
                "last_modified_at": "$$NOW",
            }
        },
        target,
    ]
    parts = [{"_id": {"$mod": [workers, part]}} for part in range(workers)]  # batch numbers
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda part: staging.aggregate([{"$match": part}, *rows]), parts))


def _batches(
    n: int, columns: list[Column], objects: ObjectColumns | None = None
) -> list[tuple[int, int]]:
    """``(start, stop)`` of each staging document, sized to stay far below 16 MB."""
    row_bytes = 40 + sum(_value_bytes(c) for c in columns)
    if objects is not None:  # sized for the sample with the most objects
        most = max((len(v.get("ids", [])) for v in objects.values if v), default=0)
        row_bytes += 64 + most * (24 + 24 * len(objects.attributes))
    rows = max(1, min(_MAX_ROWS, _DOC_BYTES // row_bytes))
    return [(start, min(start + rows, n)) for start in range(0, n, rows)]


def _value_bytes(column: Column) -> int:
    """A generous size of one stored value of ``column``."""
    if column.kind == "vector" and len(column.values):
        return 64 + 4 * len(column.values[0]) * 2  # compressed .npy bytes, float64 at worst
    return 24


def _batch_doc(
    number: int,
    ids: Sequence[str],
    columns: list[Column],
    objects: ObjectColumns | None,
    start: int,
    stop: int,
) -> dict:
    """Staging document ``number``: the ids and each column's values of rows ``start:stop``."""
    from bson import ObjectId

    doc: dict[str, Any] = {"_id": number, _IDS_KEY: [ObjectId(i) for i in ids[start:stop]]}
    for column in columns:
        field = KINDS[column.kind]()
        values = column.values[start:stop]  # shorter than the ids where the column ends
        doc[column.name] = [None if v is None else field.to_mongo(v) for v in values]
    if objects is not None:
        doc[_OBJECTS_KEY] = [_object_doc(objects, v) for v in objects.values[start:stop]]
    return doc


def _object_doc(objects: ObjectColumns, value: dict | None) -> dict:
    """The staged form of one sample's object values: ids and one list per attribute."""
    from bson import ObjectId

    value = value or {}
    doc: dict[str, Any] = {"ids": [ObjectId(i) for i in value.get("ids", [])]}
    for attr, kind, _, _ in objects.attributes:
        field = KINDS[kind]()
        doc[attr] = [None if v is None else field.to_mongo(v) for v in value.get(attr, [])]
    return doc


def _when_matched(journal: dict) -> str | list:
    """The merge's ``whenMatched``: plain, or a pipeline also setting Detection attributes."""
    fields = [f[0] for f in journal.get("fields") or []]
    objects = journal.get("objects")
    if not objects:
        return "merge"
    path, attrs = objects["field"], [a[0] for a in objects["attributes"]]
    staged = f"$$new.{_OBJECTS_KEY}"
    scored = {
        "$mergeObjects": [
            "$$d",
            {a: {"$arrayElemAt": [f"{staged}.{a}", "$$i"]} for a in attrs},
        ]
    }
    cleared = {
        "$arrayToObject": {
            "$filter": {
                "input": {"$objectToArray": "$$d"},
                "cond": {"$not": [{"$in": ["$$this.k", attrs]}]},
            }
        }
    }
    detections = {
        "$map": {
            "input": f"${path}.detections",
            "as": "d",
            "in": {
                "$let": {
                    "vars": {"i": {"$indexOfArray": [f"{staged}.ids", "$$d._id"]}},
                    "in": {"$cond": [{"$gte": ["$$i", 0]}, scored, cleared]},
                }
            },
        }
    }
    label = {
        "$cond": [
            {"$isArray": f"${path}.detections"},
            {"$mergeObjects": [f"${path}", {"detections": detections}]},
            f"${path}",
        ]
    }
    update = {f: f"$$new.{f}" for f in fields}
    return [{"$set": {**update, path: label, "last_modified_at": "$$NOW"}}]
