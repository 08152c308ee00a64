"""The FiftyOne internals dequity relies on, one function each.

FiftyOne has no public API for these; each function names what is missing.
``tests/test_fiftyone_compat.py`` pins their behaviour against the installed
FiftyOne, so a release that changes one fails there first; CI runs it on the
newest and the oldest release that ``pyproject.toml`` allows
(``scripts/test-oldest-fiftyone.sh``).

Example::

    from dequity.store.compat import root_dataset
    root_dataset(dataset.limit(10)) is dataset   # True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any


def root_dataset(samples: Any) -> Any:
    """The dataset that ``samples`` (a dataset or a view) belongs to.

    Missing API: a view exposes its dataset's name (``dataset_name``) but no
    handle on the dataset object itself.

    Example::

        root_dataset(dataset.take(5)) is dataset   # True
    """
    return samples._root_dataset


def dataset_id(dataset: Any) -> Any:
    """The ``ObjectId`` of ``dataset``'s document in the database.

    Missing API: datasets have no public id; runs and claims are keyed by it.

    Example::

        dataset_id(dataset)   # ObjectId('...')
    """
    return dataset._doc.id


def dataset_documents(dataset: Any) -> Any:
    """The pymongo collection that holds dataset documents (including ``runs``).

    Missing API: there is no atomic, conditional update of a dataset's run
    links; ``dequity.store.commit`` links a run with one ``update_one`` on it.

    Example::

        dataset_documents(dataset).find_one({"_id": dataset_id(dataset)}, {"runs": 1})
    """
    return type(dataset._doc)._get_collection()


def loaded_run_ids(dataset: Any) -> dict[str, Any]:
    """Run key -> run-document id, as this process last loaded them.

    Missing API: ``list_runs()`` gives keys only; comparing ids tells whether
    another process replaced a run since the dataset was loaded.

    Example::

        loaded_run_ids(dataset)   # {'dequity': ObjectId('...')}
    """
    return {key: getattr(doc, "id", doc) for key, doc in dataset._doc.runs.items()}


def sample_collection_name(dataset: Any) -> str:
    """The name of the MongoDB collection that holds ``dataset``'s samples.

    Missing API: staged values are merged into the samples with one
    server-side ``$merge``, which needs the collection's name.

    Example::

        fiftyone.core.odm.get_db_conn()[sample_collection_name(dataset)].count_documents({})
    """
    return dataset._sample_collection_name


def run_documents() -> Any:
    """The pymongo collection of run documents (``fiftyone.core.odm.runs.RunDocument``).

    Missing API: a run document can only be written together with its link
    from the dataset (``register_run``); dequity writes it first and links it
    in one atomic step later, and deletes or renames it by id.

    Example::

        run_documents().find_one({"_id": run_doc_id})
    """
    from fiftyone.core.odm.runs import RunDocument

    return RunDocument._get_collection()


def save_run_document(
    samples: Any, key: str, config: Any, results: Any, run_doc_id: Any, results_id: Any
) -> None:
    """Store run ``key``'s record (config and results) as ``run_doc_id``, unlinked.

    Missing API: ``register_run`` and ``save_run_results`` link the record
    to the dataset as they write it; dequity writes it first and links it in
    one atomic step later (see :mod:`dequity.store.commit`). ``results_meta`` is
    stored where this FiftyOne's run records have it.

    Example::

        save_run_document(dataset, "dequity", config, results, ObjectId(), ObjectId())
    """
    import datetime
    from copy import deepcopy

    import fiftyone.constants as foc
    from bson import json_util
    from fiftyone.core.odm.runs import RunDocument

    run_doc = RunDocument(
        id=run_doc_id,
        dataset_id=dataset_id(root_dataset(samples)),
        key=key,
        version=foc.VERSION,
        timestamp=datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None),
        config=deepcopy(config.serialize()),
        view_stages=view_stages(samples),
        results=None,
    )
    run_doc.results.put(
        json_util.dumps(results.serialize()).encode(),
        content_type="application/json",
        _id=results_id,
    )
    if hasattr(results, "get_meta"):
        run_doc.results_meta = dict(results.get_meta() or {})
    run_doc.save(upsert=True)


def delete_run_document(run_doc_id: Any) -> None:
    """Delete the run record ``run_doc_id`` and its stored results, if they exist.

    Missing API: ``delete_run`` works by key on a linked run; dequity deletes
    records it has already unlinked, or replaced.

    Example::

        delete_run_document(old_run_doc_id)
    """
    from fiftyone.core.odm.runs import RunDocument

    run_doc = RunDocument.objects(id=run_doc_id).first()
    if run_doc is not None:
        if run_doc.results:
            run_doc.results.delete()
        run_doc.delete()


def view_stages(samples: Any) -> list[str] | None:
    """The serialized stages of a view as a run document stores them; None for a dataset.

    Missing API: ``register_run`` serializes them itself, but dequity writes
    the run document on its own (see :func:`run_documents`).

    Example::

        view_stages(dataset.limit(3))   # ['{"_cls": "fiftyone.core.stages.Limit", ...}']
    """
    import fiftyone.core.view as fov
    from bson import json_util

    if not isinstance(samples, fov.DatasetView):
        return None
    return [json_util.dumps(s) for s in samples._serialize(include_uuids=False)]


def results_cache(dataset: Any) -> MutableMapping[str, Any]:
    """The in-memory cache of loaded run results of ``dataset``: run key -> results.

    Missing API: there is no call to drop or set one cached result; a run
    written or replaced outside ``save_run_results`` must update it.

    Example::

        results_cache(dataset).pop("dequity", None)
    """
    import fiftyone.core.runs as focr

    return getattr(dataset, focr.Run._results_cache_field())


def wrap_get_item(fo_model: Any, wrap: Callable[[Any], Any]) -> None:
    """Make ``fo_model`` (a ``TorchImageModel``) load images through ``wrap(get_item)``.

    Missing API: the ``GetItem`` that ``apply_model`` and ``compute_embeddings``
    build is not configurable. The override is on the instance, so the
    model's class stays FiftyOne's own.

    Example::

        wrap_get_item(fo_model, lambda get_item: Resized(get_item, 224))
    """
    build = fo_model.build_get_item
    fo_model.build_get_item = lambda field_mapping=None: wrap(build(field_mapping=field_mapping))


def is_generated_view(samples: Any) -> bool:
    """Whether ``samples`` is a patches, frames or clips view, whose samples live apart.

    Missing API: such views are told apart only by private flags; their
    samples are not the dataset's samples, so writes by id must not go to the
    dataset.

    Example::

        is_generated_view(video_dataset.to_frames())   # True
    """
    return bool(getattr(samples, "_is_generated", False))


def stored_rows(samples: Any, field: str) -> Iterator[tuple[Any, Any]]:
    """``(sample _id, stored value or None)`` of ``field`` for each sample, in order, streamed.

    Missing API: ``values`` decodes every vector of a ``VectorField`` through
    ``np.load`` one by one and holds them all before returning, which
    dominates reading a million embeddings. The stored form (zlib-compressed
    ``.npy`` bytes, see ``fiftyone.core.utils.serialize_numpy_array``) can be
    decoded in bulk while the cursor is still reading.

    Example::

        for sample_id, raw in stored_rows(dataset, "embedding"):   # raw: bytes or None
            ...
    """
    cursor = samples._aggregate(pipeline=[{"$project": {"value": f"${field}"}}])
    for doc in cursor:
        yield doc["_id"], doc.get("value")


def presence_rows(samples: Any, field: str) -> Iterator[tuple[Any, bool]]:
    """``(sample _id, whether field has a value)`` for each sample, in order, streamed.

    Missing API: ``values`` holds every value; this sends one boolean per sample.

    Example::

        with_vector = sum(present for _, present in presence_rows(dataset, "embedding"))
    """
    cursor = samples._aggregate(pipeline=[{"$project": {"p": {"$gt": [f"${field}", None]}}}])
    for doc in cursor:
        yield doc["_id"], bool(doc["p"])


def view_spec(samples: Any) -> tuple[str, list[dict]]:
    """``(dataset name, stage dicts)``: what :func:`load_view` rebuilds in another process.

    Example::

        name, stages = view_spec(dataset.match(F("label") == "night"))
    """
    return root_dataset(samples).name, samples.view()._serialize()


def load_view(name: str, stages: list[dict]) -> Any:
    """The view that :func:`view_spec` described, loaded in this process.

    Missing API: FiftyOne rebuilds views from stage dicts (``DatasetView._build``)
    but exposes it only for saved views.

    Example::

        view = load_view(*view_spec(view))
    """
    import fiftyone as fo
    import fiftyone.core.view as fov

    return fov.DatasetView._build(fo.load_dataset(name), stages)


def database_env() -> dict[str, str]:
    """Environment variables that connect another process to this one's FiftyOne database.

    The configured URI if there is one; else the address of the database
    service this process started (reachable from the same machine only).

    Example::

        ray_task.options(runtime_env={"env_vars": database_env()})
    """
    import fiftyone as fo
    import fiftyone.core.odm as foo

    uri = fo.config.database_uri
    if not uri:
        host, port = foo.get_db_client().address
        uri = f"mongodb://{host}:{port}"
    return {
        "FIFTYONE_DATABASE_URI": uri,
        "FIFTYONE_DATABASE_NAME": fo.config.database_name,
    }
