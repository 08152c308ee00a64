"""Staged values reach the samples exactly as the columns say, in either staging layout."""

from __future__ import annotations

import fiftyone as fo
import fiftyone.core.odm as foo
import numpy as np
import pytest
from bson import ObjectId

from dequity.store import compat as fc
from dequity.store import staging
from dequity.store.staging import Column

N = 300


@pytest.fixture()
def dataset():
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=f"/none/{i}.jpg", kept=float(i)) for i in range(N)])
    ds.add_sample_field("score", fo.FloatField)
    ds.set_values("vec", [np.full(4, float(i)) for i in range(N)])
    yield ds
    ds.delete()
    foo.get_db_conn().drop_collection("dequity_staging_test")


def _journal(columns: list[Column], staged: str | None) -> dict:
    return {
        "staging": "dequity_staging_test",
        "fields": [[c.name, c.kind, c.description, c.owned] for c in columns],
        "staged": staged,
    }


def test_columns_merge_across_batches_and_short_columns_leave_the_rest(dataset):
    ids = dataset.values("id")
    vectors = np.random.default_rng(0).normal(size=(100, 8192)).astype(np.float32)
    columns = [
        Column("score", "float", "a score", [i / 2 for i in range(N - 1)] + [None]),
        Column("vec", "vector", "a vector", vectors),  # covers the first 100 ids only
        Column("kept", "float", "kept", []),  # covers none
    ]
    assert len(staging._batches(N, columns)) > 2  # the vectors force several documents
    journal = _journal(columns, staging.COLUMNS)
    staging.stage(journal["staging"], ids, columns, progress=False)
    staging.merge(foo.get_db_conn(), journal, fc.sample_collection_name(dataset), workers=3)
    dataset.reload()

    assert dataset.values("score") == [i / 2 for i in range(N - 1)] + [None]
    stored = dataset.values("vec")
    np.testing.assert_array_equal(np.stack(stored[:100]), vectors)
    assert [v.tolist() for v in stored[100:]] == [[float(i)] * 4 for i in range(100, N)]
    assert dataset.values("kept") == [float(i) for i in range(N)]


def test_per_sample_staging_of_an_older_writer_still_merges(dataset):
    ids = dataset.values("id")
    columns = [Column("score", "float", "a score", [])]
    journal = _journal(columns, None)
    foo.get_db_conn()[journal["staging"]].insert_many(
        [{"_id": ObjectId(i), "score": 2.0 * n} for n, i in enumerate(ids[:50])]
    )
    staging.merge(foo.get_db_conn(), journal, fc.sample_collection_name(dataset))
    dataset.reload()
    assert dataset.values("score") == [2.0 * n for n in range(50)] + [None] * (N - 50)


def test_samples_with_many_objects_are_staged_in_documents_below_the_limit(dataset):
    from dequity.store.staging import ObjectColumns

    boxes = {"ids": [str(ObjectId()) for _ in range(2000)], "score": [0.5] * 2000}
    objects = ObjectColumns("ground_truth", [("score", "float", "a score", True)], [boxes] * N)
    name = "dequity_staging_test"
    staging.stage(name, dataset.values("id"), [], progress=False, objects=objects)  # 18 MB in one
    staged = foo.get_db_conn()[name]
    assert staged.count_documents({}) > 1
    assert sum(len(doc["ids"]) for doc in staged.find({}, {"ids": 1})) == N
