"""Database writes: the three dequity fields on many samples."""

from __future__ import annotations

import numpy as np

from benchmarks.common import save_raw, timed
from reporting import md_table

NAME = "writes"
#: the page whose generated block this benchmark fills
DOCUMENT = "README.md"
#: seconds for the three fields of 100,000 samples
TARGET_S = 10.0


def _declare(dataset, name: str, kind: type) -> None:
    if not dataset.has_sample_field(name):
        dataset.add_sample_field(name, kind)


def _write_scalars(dataset, ids: list[str], columns: dict[str, list]) -> None:
    """One unordered bulk write through FiftyOne's own batching, every field per sample."""
    import datetime

    from bson import ObjectId
    from pymongo import UpdateOne

    names = list(columns)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    ops = [
        UpdateOne(
            {"_id": ObjectId(i)}, {"$set": {**dict(zip(names, values)), "last_modified_at": now}}
        )
        for i, *values in zip(ids, *columns.values())
    ]
    dataset._bulk_write(ops, ids=ids, progress=False)


def _bulk_write(dataset, ids: list[str], fields: dict[str, list]) -> None:
    """One unordered bulk_write of UpdateOne by _id setting every field at once."""
    from bson import ObjectId
    from pymongo import UpdateOne

    names = list(fields)
    ops = [
        UpdateOne({"_id": ObjectId(i)}, {"$set": dict(zip(names, values))})
        for i, *values in zip(ids, *fields.values())
    ]
    dataset._sample_collection.bulk_write(ops, ordered=False)


def readme_block(record: dict) -> str:
    """The README's sentence from the saved record.

    Example::

        from benchmarks.common import load_raw

        print(readme_block(load_raw(NAME)))
    """
    v, n = record["values"], record["config"]["n"]
    ref, scalars = v["values_read"], v["write_scalars"]
    return (
        f"Writing a run's three fields on {n:,} samples (embedded MongoDB): "
        f"one bulk write of every field per sample takes {scalars:.1f} s, {scalars / ref:.1f}x "
        f"one `values()` read of a field ({ref:.2f} s), against {v['set_values']:.1f} s for "
        f"one `set_values` per field (target: at most {TARGET_S:.0f} s)."
    )


def run(quick: bool) -> str:
    """Time set_values (dequity's path) and a single bulk_write of 3 fields."""
    import fiftyone as fo

    INT, FLOAT = fo.IntField, fo.FloatField
    n = 5_000 if quick else 100_000
    ds = fo.Dataset("dequity-bench-writes", overwrite=True)
    ds.add_samples(
        [fo.Sample(filepath=f"/tmp/dequity-bench-img/{i}.jpg") for i in range(n)], progress=False
    )
    rng = np.random.default_rng(0)
    ids = ds.values("id")
    labels = rng.integers(-1, 50, n).tolist()
    p = rng.random(n).tolist()
    w = rng.random(n).tolist()
    ref, _ = timed(ds.values, "filepath")

    def set_values(run_key: str) -> None:
        for name, kind, vals in (
            ("cluster", INT, labels),
            ("likelihood", FLOAT, p),
            ("weight", FLOAT, w),
        ):
            _declare(ds, f"{run_key}_{name}", kind)
            ds.set_values(f"{run_key}_{name}", dict(zip(ids, vals)), key_field="id", progress=False)

    def bulk(run_key: str) -> None:
        for name, kind in (("cluster", INT), ("likelihood", FLOAT), ("weight", FLOAT)):
            _declare(ds, f"{run_key}_{name}", kind)
        _bulk_write(
            ds,
            ids,
            {f"{run_key}_cluster": labels, f"{run_key}_likelihood": p, f"{run_key}_weight": w},
        )
        ds.reload()

    def scalars(run_key: str) -> None:
        for name, kind in (("cluster", INT), ("likelihood", FLOAT), ("weight", FLOAT)):
            _declare(ds, f"{run_key}_{name}", kind)
        _write_scalars(
            ds,
            ids,
            {f"{run_key}_cluster": labels, f"{run_key}_likelihood": p, f"{run_key}_weight": w},
        )

    t_set, _ = timed(set_values, "a")
    t_bulk, _ = timed(bulk, "b")
    t_scalars, _ = timed(scalars, "c")
    rows = [
        ["values() read of one field (reference)", ref, 1.0],
        ["set_values x 3 fields", t_set, t_set / ref],
        ["one unordered bulk_write, 3 fields per sample", t_bulk, t_bulk / ref],
        ["one bulk write through FiftyOne's batching, 3 fields", t_scalars, t_scalars / ref],
    ]
    same = ds.values("a_weight") == ds.values("b_weight") == ds.values("c_weight") == w
    ds.delete()
    if not quick:
        seconds = {"values_read": ref, "set_values": t_set, "bulk_write": t_bulk}
        values = {**seconds, "write_scalars": t_scalars, "identical": same}
        save_raw(NAME, values, {"n": n}, block=readme_block, document=DOCUMENT)
    return (
        f"### Database writes, 3 fields on {n:,} samples (embedded MongoDB)\n\n"
        f"Target: <= {TARGET_S:.0f} s at 100k. All writers stored identical values: {same}.\n\n"
        + md_table(["writer", "seconds", "time / reference"], rows)
    )
