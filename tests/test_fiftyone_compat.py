"""Pins the FiftyOne internals of :mod:`dequity.store.compat` against the installed FiftyOne.

Each test checks what dequity relies on, through the public API where one
exists, so a FiftyOne release that changes an internal fails here first.
"""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo
import fiftyone.core.odm as foo
import pytest
from bson import ObjectId

from dequity.store import compat as fc
from dequity.store.runs import DequityRunConfig

DEMO_IMAGES = sorted((Path(__file__).resolve().parents[1] / "data" / "demo" / "data").glob("*.jpg"))


@pytest.fixture()
def dataset():
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=str(p)) for p in DEMO_IMAGES[:6]])
    yield ds
    ds.delete()


def register(ds: fo.Dataset, key: str, samples=None) -> None:
    """A run ``key`` registered through FiftyOne's public run API."""
    DequityRunConfig(key).build().register_run(samples or ds, key)


def test_root_dataset_of_views_and_datasets(dataset):
    assert fc.root_dataset(dataset) is dataset
    assert fc.root_dataset(dataset.limit(2).match({})) is dataset
    assert fc.root_dataset(dataset.select(dataset.first().id)) is dataset


def test_dataset_id_and_document_collection(dataset):
    doc = fc.dataset_documents(dataset).find_one({"name": dataset.name})
    assert isinstance(fc.dataset_id(dataset), ObjectId)
    assert doc["_id"] == fc.dataset_id(dataset)


def test_loaded_run_ids_match_the_links_in_the_database(dataset):
    register(dataset, "a")
    register(dataset, "b")
    raw = fc.dataset_documents(dataset).find_one({"_id": fc.dataset_id(dataset)}, {"runs": 1})
    assert fc.loaded_run_ids(dataset) == raw["runs"]
    assert set(raw["runs"]) == {"a", "b"} == set(dataset.list_runs())


def test_run_documents_hold_each_run_by_id(dataset):
    register(dataset, "a", dataset.limit(3))
    run_doc_id = fc.loaded_run_ids(dataset)["a"]
    doc = fc.run_documents().find_one({"_id": run_doc_id})
    assert doc["key"] == "a" and doc["_dataset_id"] == fc.dataset_id(dataset)
    assert doc["view_stages"] == fc.view_stages(dataset.limit(3))
    assert len(dataset.load_run_view("a")) == 3


def test_view_stages_are_none_for_a_dataset(dataset):
    assert fc.view_stages(dataset) is None
    stages = fc.view_stages(dataset.limit(3))
    assert len(stages) == 1 and "Limit" in stages[0]


def test_sample_collection_holds_the_samples(dataset):
    coll = foo.get_db_conn()[fc.sample_collection_name(dataset)]
    assert {str(d["_id"]) for d in coll.find({}, {"_id": 1})} == set(dataset.values("id"))


def test_results_cache_is_where_loaded_results_live(dataset):
    register(dataset, "a")
    config = dataset.get_run_info("a").config
    results = fo.core.runs.RunResults(dataset, config, "a")
    dataset.save_run_results("a", results)
    cache = fc.results_cache(dataset)
    cache.clear()
    loaded = dataset.load_run_results("a")
    assert cache["a"] is loaded
    cache.pop("a")
    assert dataset.load_run_results("a") is not loaded  # read again from the database


def test_wrap_get_item_changes_how_compute_embeddings_loads_images(dataset):
    from dequity.sources.models import load_model

    fo_model = load_model("efficientnet-lite0", device="cpu")
    model_class = type(fo_model)
    seen = []

    def wrap(get_item):
        def load(d):
            seen.append(d["filepath"])
            return get_item(d)

        load.field_mapping = get_item.field_mapping
        load.required_keys = get_item.required_keys
        return load

    fc.wrap_get_item(fo_model, wrap)
    embeddings = dataset.compute_embeddings(fo_model, batch_size=2, num_workers=0, progress=False)
    assert type(fo_model) is model_class
    assert embeddings.shape[0] == len(dataset)
    assert sorted(seen) == sorted(dataset.values("filepath"))


def test_a_saved_run_document_loads_once_linked_and_deletes_with_its_results(dataset):
    import gridfs

    from dequity.store.runs import DequityResults

    view = dataset.limit(4)
    config = DequityRunConfig("a")
    results = DequityResults(view, config, "a", sample_ids=view.values("id"), labels=[0] * 4)
    run_doc_id, results_id = ObjectId(), ObjectId()
    fc.save_run_document(view, "a", config, results, run_doc_id, results_id)
    assert dataset.list_runs() == []  # stored, not linked
    fc.dataset_documents(dataset).update_one(
        {"_id": fc.dataset_id(dataset)}, {"$set": {"runs.a": run_doc_id}}
    )
    dataset.reload()
    loaded = dataset.load_run_results("a")
    assert loaded.labels == [0] * 4 and loaded.sample_ids == view.values("id")
    assert len(dataset.load_run_view("a")) == 4

    fc.delete_run_document(run_doc_id)
    assert fc.run_documents().find_one({"_id": run_doc_id}) is None
    assert not gridfs.GridFS(foo.get_db_conn()).exists(results_id)


def test_stored_vectors_decode_to_the_values_fiftyone_reads(dataset, monkeypatch):
    import numpy as np

    from dequity.sources import embeddings
    from dequity.sources.embeddings import decode_stored_vectors, from_field

    monkeypatch.setattr(embeddings, "_DECODE_CHUNK", 2)  # several chunks, in threads

    rng = np.random.default_rng(0)
    dataset.set_values("vec", list(rng.standard_normal((len(dataset), 7))))  # float64
    dataset.select(dataset.values("id")[2]).set_values("vec", [None])
    ids, vectors, present = decode_stored_vectors(fc.stored_rows(dataset.skip(1), "vec"), 2)
    assert [str(i) for i in ids] == dataset.skip(1).values("id")  # grown past 2 rows
    expected = [v for v in dataset.skip(1).values("vec") if v is not None]
    assert present.tolist() == [v is not None for v in dataset.skip(1).values("vec")]
    np.testing.assert_array_equal(vectors, np.array(expected))
    emb = from_field(dataset, "vec")
    assert len(emb.missing_ids) == 1 and emb.vectors.shape == (len(dataset) - 1, 7)
    # a vector of the same byte size but another dtype (its header differs) is not either
    last = dataset.last()
    last["vec"] = np.arange(7)  # int64
    last.save()
    assert decode_stored_vectors(fc.stored_rows(dataset, "vec")) is None
    # vectors of different lengths are not decoded in bulk; FiftyOne's values say why
    first = dataset.first()
    first["vec"] = np.ones(3)
    first.save()
    assert decode_stored_vectors(fc.stored_rows(dataset, "vec")) is None


def test_presence_rows_say_which_samples_have_a_value(dataset):
    dataset.add_sample_field("vec", fo.VectorField)
    ids = dataset.values("id")
    dataset.select(ids[:2]).set_values("vec", [[1.0, 2.0], [3.0, 4.0]])
    rows = list(fc.presence_rows(dataset, "vec"))
    assert [str(i) for i, _ in rows] == ids
    assert [present for _, present in rows] == [True, True, False, False, False, False]


def test_a_view_rebuilt_from_its_spec_holds_the_same_samples(dataset):
    view = dataset.skip(1).limit(3).sort_by("filepath", reverse=True)
    rebuilt = fc.load_view(*fc.view_spec(view))
    assert rebuilt.values("id") == view.values("id")
    assert fc.load_view(*fc.view_spec(dataset)).values("id") == dataset.values("id")


def test_the_database_env_connects_another_process(dataset):
    import os
    import subprocess
    import sys

    env = {**os.environ, **fc.database_env()}
    code = f"import fiftyone as fo; print(len(fo.load_dataset({dataset.name!r})))"
    dataset.persistent = True  # a starting FiftyOne may delete non-persistent datasets
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == str(len(dataset)), out.stderr[-2000:]
