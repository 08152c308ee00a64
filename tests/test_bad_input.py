"""Bad input gets a clear error, and no run ever half-writes a dataset."""

import hashlib
import warnings

import fiftyone as fo
import numpy as np
import pytest

import dequity
from dequity import DequityError, compute_dequity
from tests.conftest import EMBEDDINGS_FIELD

RUN_FIELDS = ("dequity_cluster", "dequity_likelihood", "dequity_weight")


def snapshot(dataset: fo.Dataset) -> tuple:
    """Everything a failed run must leave as it was: the schema, every field's values, the runs."""
    schema = {name: str(field) for name, field in dataset.get_field_schema().items()}
    digest = hashlib.sha256()
    for name in sorted(schema):
        digest.update(repr((name, dataset.values(name))).encode())
    runs = {k: dataset.get_run_info(k).timestamp for k in dataset.list_runs()}
    return schema, digest.hexdigest(), runs


def test_run_on_a_view_touches_only_its_samples(demo):
    view = demo.take(120, seed=1)
    compute_dequity(view, embeddings=EMBEDDINGS_FIELD, progress=False)
    assert demo.count("dequity_weight") == 120
    assert view.count("dequity_weight") == 120
    outside = demo.exclude(view.values("id"))
    assert outside.count("dequity_weight") == 0
    assert len(dequity.load_dequity_results(demo, "dequity").sample_ids) == 120


def test_overwrite_on_another_view_clears_samples_left_out(demo):
    compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, progress=False)
    view = demo.take(100, seed=2)
    with pytest.raises(DequityError, match="overwrite=True"):
        compute_dequity(view, embeddings=EMBEDDINGS_FIELD, progress=False)
    compute_dequity(view, embeddings=EMBEDDINGS_FIELD, overwrite=True, progress=False)
    assert demo.count("dequity_weight") == 100
    assert demo.list_runs() == ["dequity"]


@pytest.mark.parametrize(
    "target",
    [
        (dequity.store.staging, "stage"),
        (dequity.store.commit, "_save_run_doc"),
        (dequity.store.commit, "_link"),
    ],
    ids=["field-write", "run-record", "commit"],
)
def test_failure_mid_run_leaves_the_dataset_as_it_was(demo, monkeypatch, target):
    compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, eta=0.3, progress=False)
    before = snapshot(demo)

    real = getattr(*target)
    calls = []

    def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(*target, fail_once)
    with pytest.raises(OSError, match="disk full"):
        compute_dequity(
            demo.take(150, seed=3),
            embeddings=EMBEDDINGS_FIELD,
            eta=2.0,
            clustering_kwargs={"min_cluster_size": 5},
            overwrite=True,
            progress=False,
        )
    monkeypatch.undo()
    assert snapshot(demo) == before
    results = dequity.load_dequity_results(demo, "dequity")
    assert results.config.eta == 0.3 and len(results.sample_ids) == 199


def test_failure_of_a_first_run_leaves_no_fields(demo, monkeypatch):
    before = snapshot(demo)

    def fail(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(dequity.store.commit, "_link", fail)
    with pytest.raises(RuntimeError):
        compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, progress=False)
    monkeypatch.undo()
    assert snapshot(demo) == before
    assert not any(demo.has_sample_field(f) for f in RUN_FIELDS)


def test_failure_after_the_commit_point_finishes_the_run(demo, monkeypatch):
    compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, eta=0.3, progress=False)
    real = dequity.store.commit._finish
    calls = []

    def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("connection reset")
        return real(*args, **kwargs)

    monkeypatch.setattr(dequity.store.commit, "_finish", fail_once)
    with pytest.raises(OSError, match="connection reset"):
        compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, eta=2.0, overwrite=True, progress=False)
    monkeypatch.undo()
    results = dequity.load_dequity_results(demo, "dequity")
    assert results.config.eta == 2.0
    weights = dict(zip(demo.values("id"), demo.values("dequity_weight")))
    assert [weights[i] for i in results.sample_ids] == pytest.approx(results.weights.tolist())


def test_empty_view(demo):
    with pytest.raises(DequityError, match="empty"):
        compute_dequity(demo.limit(0), embeddings=EMBEDDINGS_FIELD)


def test_fewer_samples_than_the_clustering_needs(demo):
    with pytest.raises(DequityError, match="fewer than the 10"):
        compute_dequity(demo.limit(6), embeddings=EMBEDDINGS_FIELD)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda n: np.full((n, 8), np.nan), "NaN or inf"),
        (lambda n: np.vstack([np.ones((n - 1, 8)), [[np.inf] * 8]]), "NaN or inf"),
        (lambda n: np.ones((n - 3, 8)), "got 196 embeddings for 199 samples"),
        (lambda n: np.ones(n), r"shape \(num_samples, dim\)"),
    ],
)
def test_bad_embedding_arrays(demo, make, message):
    before = snapshot(demo)
    with pytest.raises(DequityError, match=message):
        compute_dequity(demo, embeddings=make(len(demo)))
    assert snapshot(demo) == before


def test_embeddings_field_missing_or_not_a_vector(demo):
    with pytest.raises(DequityError, match="no field 'nope'"):
        compute_dequity(demo, embeddings="nope")
    with pytest.raises(DequityError, match="not a vector field"):
        compute_dequity(demo, embeddings="filepath")


@pytest.mark.slow
def test_missing_images_are_skipped_with_a_warning_or_fail(demo, caplog):
    # every 3rd frame, so the subset (and its clusters) is the same in every session
    in_time_order = demo.sort_by("filepath").values("id")
    broken_ids = in_time_order[10::60][:3]
    for sample in demo.select(broken_ids):
        sample.filepath = sample.filepath.replace(".jpg", "_missing.jpg")
        sample.save()
    small_ids = set(in_time_order[::3]) | set(broken_ids)
    view = demo.select(list(small_ids))

    with pytest.raises(DequityError, match="skip_failures=True"):
        compute_dequity(view, model="efficientnet-lite0", skip_failures=False, progress=False)
    assert not demo.has_sample_field("dequity_weight")

    results = compute_dequity(
        view,
        model="efficientnet-lite0",
        clustering_kwargs={"min_cluster_size": 5},
        num_workers=0,
        progress=False,
    )
    assert sorted(results.missing_ids) == sorted(broken_ids)
    assert "could not be embedded" in caplog.text
    assert view.count("dequity_weight") == len(small_ids) - 3
    assert demo.select(broken_ids).count("dequity_weight") == 0


def test_existing_run_key_without_overwrite(demo):
    compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, progress=False)
    with pytest.raises(DequityError, match="already exists; pass overwrite=True"):
        compute_dequity(demo, embeddings=EMBEDDINGS_FIELD)


def test_run_key_of_another_kind_of_run(demo):
    demo.register_run("other", fo.RunConfig(foo="bar"))
    with pytest.raises(DequityError, match="another kind of run"):
        compute_dequity(demo, "other", embeddings=EMBEDDINGS_FIELD, overwrite=True)


def test_field_already_holding_other_data(demo):
    demo.set_values("dequity_weight", ["mine"] * len(demo))
    before = snapshot(demo)
    with pytest.raises(DequityError, match="'dequity_weight' already exists"):
        compute_dequity(demo, embeddings=EMBEDDINGS_FIELD)
    assert snapshot(demo) == before


@pytest.mark.parametrize("run_key", ["", "has space", "1abc", None])
def test_invalid_run_key(demo, run_key):
    with pytest.raises(DequityError, match="run_key must be a Python identifier"):
        compute_dequity(demo, run_key, embeddings=EMBEDDINGS_FIELD)


@pytest.mark.slow
def test_every_point_noise_is_an_error_that_names_the_fix(demo):
    before = snapshot(demo)
    with pytest.raises(DequityError, match=r"every sample noise.*raise eps \(now 2.0\)"):
        compute_dequity(
            demo,
            embeddings=EMBEDDINGS_FIELD,
            projection="tsne",
            clustering="dbscan",
            noise="cluster",
            progress=False,
        )
    assert snapshot(demo) == before


def test_single_cluster_is_a_documented_warning(demo):
    # two tight groups of 100 and 99 identical vectors, DBSCAN with a huge eps
    vectors = np.repeat([[0.0, 0.0], [0.1, 0.0]], [100, 99], axis=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = compute_dequity(
            demo,
            embeddings=vectors,
            projection=None,
            clustering="dbscan",
            clustering_kwargs={"eps": 10.0},
            eta=1.0,
            progress=False,
        )
    assert any("single cluster" in str(w.message) for w in caught)
    assert set(demo.values("dequity_weight")) == {0.5}
    assert results.num_clusters == 1


def test_noise_joining_a_single_cluster_warns_too(demo):
    # one group of 190 identical vectors and 9 scattered points that DBSCAN calls noise
    vectors = np.concatenate([np.zeros((190, 2)), np.c_[10.0 * np.arange(1, 10), np.ones(9)]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compute_dequity(
            demo,
            embeddings=vectors,
            projection=None,
            clustering="dbscan",
            clustering_kwargs={"eps": 1.0},
            noise="nearest",
            progress=False,
        )
    assert any("single cluster" in str(w.message) for w in caught)
    assert set(demo.values("dequity_cluster")) == {0}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eta": -0.5}, "eta must be"),
        ({"gamma": float("nan")}, "gamma must be"),
        ({"noise": "drop"}, "noise must be one of"),
        ({"projection": "umap"}, "projection must be one of"),
        ({"clustering": "kmeans"}, "clustering must be one of"),
        ({"clustering_kwargs": {"eps": 1.0}}, "unknown clustering_kwargs"),
        ({"batchsize": 8}, "unknown arguments"),
        ({"model": "efficientnet-lite0"}, "either embeddings or model"),
    ],
)
def test_bad_parameters_fail_before_any_work(demo, kwargs, message):
    with pytest.raises(DequityError, match=message):
        compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, **kwargs)
    assert not demo.has_sample_field("dequity_weight")


def test_unknown_model_name(demo):
    with pytest.raises(DequityError, match="unknown model 'resnet9000'"):
        compute_dequity(demo, model="resnet9000")


def test_precision_the_device_cannot_run_fails_before_any_work(demo):
    before = snapshot(demo)
    with pytest.raises(DequityError, match="fp16"):
        compute_dequity(demo, model="efficientnet-lite0", device="cpu", precision="fp16")
    with pytest.raises(DequityError, match="precision must be one of"):
        compute_dequity(demo, model="efficientnet-lite0", precision="half")
    assert snapshot(demo) == before


@pytest.fixture(scope="module")
def unreadable() -> fo.Dataset:
    """Samples whose images do not exist: any embedding attempt fails differently."""
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg") for i in range(40)])
    yield dataset
    dataset.delete()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"projection_kwargs": {"n_components": -1}}, "n_components must be an integer >= 1"),
        ({"projection_kwargs": {"n_components": 0}}, "n_components must be an integer >= 1"),
        ({"projection_kwargs": {"n_components": True}}, "n_components must be an integer"),
        ({"projection": "tsne", "projection_kwargs": {"metric": "nope"}}, "'metric'.*TSNE"),
        ({"projection": "opentsne", "projection_kwargs": {"n_components": 0}}, "n_components"),
        ({"clustering_kwargs": {"min_samples": 0}}, "'min_samples' parameter of HDBSCAN"),
        ({"clustering_kwargs": {"metric": "nope"}}, "'metric' parameter of HDBSCAN"),
        ({"clustering": "dbscan", "clustering_kwargs": {"metric": "nope"}}, "of DBSCAN"),
        ({"clustering_kwargs": [("min_cluster_size", 5)]}, "clustering_kwargs must be a dict"),
        ({"batch_size": 0}, "batch_size must be a finite number >= 1"),
        ({"batch_size": 8.5}, "batch_size must be an integer"),
        ({"num_workers": -1}, "num_workers must be"),
        ({"skip_failures": "yes"}, "skip_failures must be True or False"),
        ({"embeddings_field": "a.b"}, "embeddings_field must be a Python identifier"),
        ({"embeddings_field": "_emb"}, "embeddings_field must be a Python identifier"),
        ({"eta": "1"}, r"eta must be a number, got '1' \(str\)"),
        ({"eta": None}, r"eta must be a number, got None"),
        ({"eta": True}, r"eta must be a number, got True \(bool\)"),
        ({"eta": np.array([1.0, 2.0])}, r"eta must be a number"),
        ({"gamma": 1 + 2j}, r"gamma must be a number"),
    ],
)
def test_every_parameter_is_checked_before_any_embedding(unreadable, kwargs, message):
    kwargs = {"skip_failures": False, **kwargs}
    with pytest.raises(DequityError, match=message):
        compute_dequity(unreadable, model="efficientnet-lite0", progress=False, **kwargs)
    assert not unreadable.has_sample_field("dequity_weight")


@pytest.mark.parametrize("run_key", ["_", "_x"])
def test_run_keys_must_make_valid_field_names(unreadable, run_key):
    with pytest.raises(DequityError, match="not starting with '_'"):
        compute_dequity(unreadable, run_key, model="efficientnet-lite0", progress=False)


def test_complex_and_bool_embeddings_are_refused(demo):
    n = len(demo)
    with pytest.raises(DequityError, match="real numbers, got complex"):
        compute_dequity(demo, embeddings=np.ones((n, 8)) * (1 + 1j), progress=False)
    with pytest.raises(DequityError, match="real numbers, got bool"):
        compute_dequity(demo, embeddings=np.ones((n, 8), dtype=bool), progress=False)
    assert not demo.has_sample_field("dequity_weight")
