"""The likelihood stage on Ray: the local run's likelihoods, written all or nothing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

import benchmarks  # noqa: F401  (FiftyOne's environment, as the benchmarks set it)
import dequity
from benchmarks.database import vector_dataset
from dequity import DequityError
from dequity.sources.shards import Shards, write_shard
from dequity.store.field_results import FieldBackedResults

N = 12_000  # above the default fit_samples: both paths fit on subsamples
RAY = {"likelihood_backend": "ray", "ray_options": {"num_workers": 2}, "progress": False}


@pytest.fixture(scope="module")
def vectors_dataset():
    dataset = vector_dataset(N)
    yield dataset
    dataset.delete()


def by_id(results) -> dict[str, float]:
    return dict(zip(results.sample_ids, results.likelihoods, strict=True))


def test_a_run_on_ray_matches_the_local_run_and_can_grow(vectors_dataset, local_ray):
    dataset = vectors_dataset.clone()
    local = dequity.compute_dequity(dataset, "local", embeddings="vec", progress=False)
    on_ray = dequity.compute_dequity(dataset, "ray", embeddings="vec", **RAY)
    want, got = by_id(local), by_id(on_ray)
    assert sorted(got) == sorted(want)
    ids = list(want)
    assert spearmanr([want[i] for i in ids], [got[i] for i in ids])[0] >= 0.99
    stored = dict(zip(*dataset.values(["id", "ray_weight"])))
    expected = dequity.gfl_weight(np.array([got[i] for i in ids]))
    assert np.allclose([stored[i] for i in ids], expected)
    assert dataset.count("ray_cluster") == N
    results = dequity.load_dequity_results(dataset, "ray")
    assert results.fit is not None and results.config.views is None

    new = dataset.limit(50).clone()  # 50 more samples, vectors and all
    dataset.add_samples(list(new), progress=False)
    dequity.update_dequity(dataset, "ray", embeddings="vec", progress=False)
    assert dataset.count("ray_weight") == N + 50
    new.delete()
    dataset.delete()


def test_an_overwrite_on_ray_clears_what_it_no_longer_scores(vectors_dataset, local_ray):
    dataset = vectors_dataset.clone()
    dequity.compute_dequity(dataset, "ray", embeddings="vec", **RAY)
    left_out = dataset.take(100, seed=1)
    left_out.set_field("vec", None).save()  # these samples lose their vectors
    dequity.compute_dequity(dataset, "ray", embeddings="vec", overwrite=True, **RAY)
    assert dataset.count("ray_weight") == N - 100
    assert left_out.count("ray_weight") == 0
    assert len(dequity.load_dequity_results(dataset, "ray").missing_ids) == 100
    dataset.delete()


def write_shards_of(dataset, directory, files: int = 3, without: tuple = ()) -> Shards:
    """Shards of ``dataset``'s ``vec`` in ``files`` files; ``without``'s rows hold an error."""
    ids, vectors = dataset.values(["id", "vec"])
    vectors = np.stack(vectors)
    errors = ["unreadable" if i in without else "" for i in ids]
    vectors[[i in without for i in ids]] = np.nan
    for k, rows in enumerate(np.array_split(np.arange(len(ids)), files)):
        write_shard(
            directory / f"part-{k}.parquet",
            [ids[r] for r in rows],
            vectors[rows],
            [errors[r] for r in rows],
        )
    return Shards.open(directory)


def test_a_run_from_shards_matches_the_local_run_and_keeps_no_per_sample_record(
    vectors_dataset, local_ray, tmp_path
):
    dataset = vectors_dataset.clone()
    without = tuple(dataset.take(20, seed=2).values("id"))
    kept = dataset.exclude(without)  # the same vectors in the same order: the same draws
    local = dequity.compute_dequity(kept, "local", embeddings="vec", progress=False)
    shards = write_shards_of(dataset, tmp_path, without=without)
    on_ray = dequity.compute_dequity(
        dataset, "sh", embeddings=shards, embeddings_field="copied", **RAY
    )
    want, got = by_id(local), by_id(on_ray)
    assert sorted(got) == sorted(set(want) - set(without))
    ids = list(got)
    assert spearmanr([want[i] for i in ids], [got[i] for i in ids])[0] >= 0.99
    assert sorted(on_ray.missing_ids) == sorted(without)
    assert dataset.select(without).count("sh_weight") == 0
    assert dataset.count("sh_weight") == N - 20
    assert np.allclose(np.stack(kept.values("copied")), np.stack(kept.values("vec")))

    stored = dequity.load_dequity_results(dataset, "sh")
    assert isinstance(stored, FieldBackedResults)
    record = stored.serialize()
    assert not {"sample_ids", "labels", "likelihoods", "points"} & set(record)
    assert stored.likelihoods == dataset.exists("sh_likelihood").values("sh_likelihood")
    assert sum(stored.cluster_sizes().values()) == N - 20
    summary = stored.summary()
    assert summary["num_samples"] == N - 20 and summary["num_missing"] == 20
    assert summary["max_weight"] == max(dataset.values("sh_weight", missing_value=0))
    stored.reweight(eta=0.5, gamma=2.0)
    weights = dict(zip(*dataset.values(["id", "sh_weight"])))
    expected = dequity.gfl_weight(np.array(stored.likelihoods), 0.5, 2.0)
    assert np.allclose([weights[i] for i in stored.sample_ids], expected)
    assert isinstance(dequity.load_dequity_results(dataset, "sh"), FieldBackedResults)
    dataset.delete()


def test_shards_of_samples_outside_the_collection_are_refused(vectors_dataset, local_ray, tmp_path):
    shards = write_shards_of(vectors_dataset, tmp_path)
    view = vectors_dataset.limit(1_000)
    with pytest.raises(DequityError, match="not in the collection"):
        dequity.compute_dequity(view, "outside", embeddings=shards, **RAY)
    assert "outside" not in vectors_dataset.list_runs()
    assert not vectors_dataset.has_sample_field("outside_weight") or not vectors_dataset.count(
        "outside_weight"
    )


def test_a_failing_task_writes_nothing(vectors_dataset, local_ray):
    dataset = vectors_dataset.clone()
    dequity.compute_dequity(dataset, "ray", embeddings="vec", eta=0.3, **RAY)
    before = dataset.values("ray_weight")
    sample = dataset.last()
    sample["vec"] = np.full(512, np.nan, np.float32)
    sample.save()
    with pytest.raises(DequityError, match="NaN"):
        dequity.compute_dequity(dataset, "ray", embeddings="vec", overwrite=True, eta=2.0, **RAY)
    assert dataset.values("ray_weight") == before
    assert dequity.load_dequity_results(dataset, "ray").config.eta == 0.3
    assert not [c for c in dataset._dataset._sample_collection.database.list_collection_names()
                if c.startswith("dequity_staging")]  # fmt: skip
    dataset.delete()


def test_the_default_models_vectors_need_views_off(demo):
    with pytest.raises(DequityError, match="pass views=None"):
        dequity.compute_dequity(demo, embeddings="embedding", likelihood_backend="ray")
    assert not dequity.list_dequity_runs(demo)


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "pass embeddings='<vector field>'"),
        ({"embeddings": "vec", "group_field": "filepath"}, "does not support group_field"),
        ({"embeddings": "vec", "projection": "tsne"}, "projection='tsne' has no map"),
        ({"embeddings": "vec", "ray_options": {"gpus": 1}}, "unknown ray_options"),
        ({"embeddings": "vec", "ray_options": {"num_workers": 0}}, "num_workers"),
        ({"embeddings": "vec", "ray_options": {"num_cpus_per_worker": -1}}, "num_cpus_per_worker"),
        ({"embeddings": "vec", "likelihood_backend": "spark"}, "likelihood_backend must be one"),
    ],
)
def test_what_the_stage_on_ray_cannot_do_is_refused_before_any_work(
    vectors_dataset, options, message
):
    options = {"likelihood_backend": "ray", **options}
    with pytest.raises(DequityError, match=message):
        dequity.compute_dequity(vectors_dataset, "refused", progress=False, **options)
    assert "refused" not in vectors_dataset.list_runs()


def test_the_command_line_runs_the_stage_on_ray(vectors_dataset, local_ray, capsys, tmp_path):
    from dequity.cli import main

    dataset = vectors_dataset.clone()
    args = ["compute", "--dataset", dataset.name, "--run-key", "cli", "--embeddings", "vec"]
    assert main([*args, "--likelihood-backend", "ray", "--ray-workers", "2"]) == 0
    assert "clusters" in capsys.readouterr().out
    assert dataset.count("cli_weight") == N
    write_shards_of(dataset, tmp_path)
    shards = ["compute", "--dataset", dataset.name, "--run-key", "sh", "--shards", str(tmp_path)]
    assert main([*shards, "--likelihood-backend", "ray"]) == 0
    assert f"run 'sh': {N} samples" in capsys.readouterr().out
    assert main([*shards[:-1], str(tmp_path / "none"), "--likelihood-backend", "ray"]) == 2
    assert "no directory of vector shards" in capsys.readouterr().err
    dataset.delete()


_KILLED_RUN = """
import sys, ray, fiftyone as fo, dequity
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
dequity.compute_dequity(fo.load_dataset(sys.argv[1]), "k", embeddings="vec", eta=2.0,
                        overwrite=True, likelihood_backend="ray", progress=False)
"""


@pytest.mark.slow
@pytest.mark.parametrize("point, finished", [("staged", False), ("linked", True)])
def test_a_driver_killed_mid_write_leaves_the_old_run_or_a_finished_one(
    vectors_dataset, point, finished
):
    import os
    import subprocess
    import sys

    from dequity.faults import ENV, EXIT_CODE

    dataset = vectors_dataset.clone(persistent=True)
    dequity.compute_dequity(dataset, "k", embeddings="vec", eta=0.3, progress=False)
    before = dataset.values("k_weight")
    env = {**os.environ, ENV: point}
    killed = subprocess.run([sys.executable, "-c", _KILLED_RUN, dataset.name], env=env)
    assert killed.returncode == EXIT_CODE
    assert dequity.list_dequity_runs(dataset) == ["k"]  # recovers what the driver left
    dataset.reload()
    results = dequity.load_dequity_results(dataset, "k")
    assert results.config.eta == (2.0 if finished else 0.3)
    stored = dict(zip(*dataset.values(["id", "k_weight"])))
    assert np.allclose([stored[i] for i in results.sample_ids], results.weights)
    assert (dataset.values("k_weight") == before) != finished
    database = dataset._sample_collection.database
    assert not [c for c in database.list_collection_names() if c.startswith("dequity_staging")]
    dataset.delete()
