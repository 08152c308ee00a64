"""Runs stored by an earlier release still load, list, reweight and delete.

``tests/data/release-0fd342c`` is a FiftyOne export written by release
0fd342c (``tests/data/make_release_dataset.py``): 90 samples with an image run
``dequity``, an object run ``objects`` on ``ground_truth`` and a training run
``baseline``. Its run documents name their classes by the import paths of that
release (``dequity.runs.DequityRunConfig``, ``training.records.TrainingRunConfig``,
...). Only the top-level names of ``dequity`` and ``training`` are used here,
so the test holds whatever module the classes move to.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest

import dequity
import training

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "release-0fd342c"

OLD_CONFIG = "dequity.runs.DequityRunConfig"
OLD_RESULTS = "dequity.runs.DequityResults"
OLD_TRAINING_CONFIG = "training.records.TrainingRunConfig"
OLD_TRAINING_RESULTS = "training.records.TrainingRunResults"

NUM_SAMPLES = 90
CLUSTER_SIZES = [52, 26, 12]
#: the GFL parameters each run was stored with
STORED_PARAMS = {"dequity": (1.0, 5.0), "objects": (0.5, 2.0)}
IMAGE_FIELDS = ["dequity_cluster", "dequity_likelihood", "dequity_weight"]
OBJECT_ATTRIBUTES = ["objects_cluster", "objects_likelihood", "objects_weight"]


def gfl(p, eta: float, gamma: float) -> np.ndarray:
    """The paper's weight, written out: ``(eta + (1 - p) ** gamma) / (eta + 1)``."""
    return (eta + (1.0 - np.asarray(p, dtype=float)) ** gamma) / (eta + 1.0)


def stored_run_file(key: str) -> dict:
    return json.loads((FIXTURE / "runs" / f"{key}.json").read_text())


@pytest.fixture()
def stored() -> fo.Dataset:
    """A fresh import of the fixture, deleted afterwards."""
    dataset = fo.Dataset.from_dir(
        dataset_dir=str(FIXTURE),
        dataset_type=fo.types.FiftyOneDataset,
        rel_dir=str(REPO),
        name=f"dequity-stored-runs-{uuid.uuid4().hex[:12]}",
        progress=False,
    )
    yield dataset
    dataset.delete()


def by_id(ids, values) -> dict:
    return dict(zip(ids, values))


def box_values(dataset: fo.Dataset, attribute: str) -> dict:
    """``{Detection id: value}`` of a ``ground_truth`` attribute over the dataset."""
    ids = dataset.values("ground_truth.detections.id", unwind=True)
    values = dataset.values(f"ground_truth.detections.{attribute}", unwind=True)
    return by_id(ids, values)


def test_fixture_stores_the_old_class_paths(stored):
    metadata = json.loads((FIXTURE / "metadata.json").read_text())
    stored_classes = {key: run["config"]["cls"] for key, run in metadata["runs"].items()}
    assert stored_classes == {
        "dequity": OLD_CONFIG,
        "objects": OLD_CONFIG,
        "baseline": OLD_TRAINING_CONFIG,
    }
    assert stored_run_file("dequity")["cls"] == OLD_RESULTS
    assert stored_run_file("objects")["cls"] == OLD_RESULTS
    assert stored_run_file("baseline")["cls"] == OLD_TRAINING_RESULTS

    # the imported run documents keep the old config paths as stored
    raw = {key: stored._doc.runs[key].config["cls"] for key in stored.list_runs()}
    assert raw == stored_classes
    # and the old paths resolve to the classes of today's public names
    assert type(stored.get_run_info("dequity").config) is dequity.DequityRunConfig
    assert type(stored.get_run_info("baseline").config) is training.TrainingRunConfig


def test_runs_list(stored):
    assert sorted(dequity.list_dequity_runs(stored)) == ["dequity", "objects"]
    assert sorted(stored.list_runs()) == ["baseline", "dequity", "objects"]
    assert stored.list_evaluations() == ["baseline_eval"]
    assert len(stored) == NUM_SAMPLES
    assert stored.first().filepath.startswith(str(REPO / "data" / "demo" / "data"))


def test_image_results_load_with_the_stored_values(stored):
    res = dequity.load_dequity_results(stored, "dequity")
    assert isinstance(res, dequity.DequityResults)
    assert not res.is_object_run
    assert (res.config.eta, res.config.gamma) == STORED_PARAMS["dequity"]
    stored_file = stored_run_file("dequity")
    assert res.sample_ids == stored_file["sample_ids"]
    assert res.likelihoods == stored_file["likelihoods"]
    assert res.labels == stored_file["labels"]
    assert sorted(res.cluster_sizes().values(), reverse=True) == CLUSTER_SIZES
    assert res.summary()["num_samples"] == NUM_SAMPLES

    ids = stored.values("id")
    assert sorted(res.sample_ids) == sorted(ids)
    fields = {name: by_id(ids, stored.values(name)) for name in IMAGE_FIELDS}
    order = res.sample_ids
    np.testing.assert_array_equal([fields["dequity_cluster"][i] for i in order], res.labels)
    np.testing.assert_allclose([fields["dequity_likelihood"][i] for i in order], res.likelihoods)
    weights = [fields["dequity_weight"][i] for i in order]
    np.testing.assert_allclose(weights, res.weights)
    np.testing.assert_allclose(weights, gfl(res.likelihoods, *STORED_PARAMS["dequity"]))


def test_object_results_load_with_the_stored_values(stored):
    res = dequity.load_dequity_results(stored, "objects")
    assert res.is_object_run
    assert res.config.patches_field == "ground_truth"
    assert (res.config.eta, res.config.gamma) == STORED_PARAMS["objects"]
    stored_file = stored_run_file("objects")
    assert res.object_ids == stored_file["object_ids"]
    assert res.likelihoods == stored_file["likelihoods"]

    boxes = {name: box_values(stored, name) for name in OBJECT_ATTRIBUTES}
    assert sorted(res.object_ids) == sorted(boxes["objects_weight"])
    order = res.object_ids
    np.testing.assert_array_equal([boxes["objects_cluster"][i] for i in order], res.labels)
    np.testing.assert_allclose([boxes["objects_likelihood"][i] for i in order], res.likelihoods)
    weights = [boxes["objects_weight"][i] for i in order]
    np.testing.assert_allclose(weights, res.weights)
    np.testing.assert_allclose(weights, gfl(res.likelihoods, *STORED_PARAMS["objects"]))
    # each sample's weight is the largest of its boxes'
    per_sample = stored.values("ground_truth.detections.objects_weight")
    np.testing.assert_allclose(stored.values("objects_weight"), [max(w) for w in per_sample])


def test_reweight_image_run(stored):
    res = dequity.load_dequity_results(stored, "dequity")
    ids = stored.values("id")
    before = {name: stored.values(name) for name in ["dequity_cluster", "dequity_likelihood"]}
    objects_before = stored.values("objects_weight")

    new = res.reweight(eta=0.3, gamma=2.0)

    likelihoods = stored.values("dequity_likelihood")
    expected = gfl(likelihoods, 0.3, 2.0)
    np.testing.assert_allclose(stored.values("dequity_weight"), expected)
    np.testing.assert_allclose(new, [by_id(ids, expected)[i] for i in res.sample_ids])
    assert not np.allclose(expected, gfl(likelihoods, *STORED_PARAMS["dequity"]))
    # only the weights change, and only this run's
    assert {name: stored.values(name) for name in before} == before
    assert stored.values("objects_weight") == objects_before
    again = dequity.load_dequity_results(stored, "dequity")
    assert (again.config.eta, again.config.gamma) == (0.3, 2.0)
    np.testing.assert_allclose(again.weights, new)


def test_a_record_without_per_sample_arrays_stores_and_reads_its_fields(stored):
    """A run on Ray's record (``FieldBackedResults``) round-trips on every supported FiftyOne."""
    from dequity.store.field_results import FieldBackedResults

    res = dequity.load_dequity_results(stored, "dequity")
    record = FieldBackedResults(
        stored, res.config, "dequity", fit=res.fit, sizes=res.cluster_sizes()
    )
    record.reweight(eta=0.3, gamma=2.0)  # commits the record in its stored form
    stored.reload()
    again = dequity.load_dequity_results(stored, "dequity")
    assert isinstance(again, FieldBackedResults)
    assert again.cluster_sizes() == res.cluster_sizes()
    assert sorted(again.sample_ids) == sorted(res.sample_ids)
    assert again.likelihoods == stored.exists("dequity_likelihood").values("dequity_likelihood")
    np.testing.assert_allclose(stored.values("dequity_weight"), gfl(again.likelihoods, 0.3, 2.0))
    assert again.summary()["num_samples"] == NUM_SAMPLES


def test_reweight_object_run(stored):
    res = dequity.load_dequity_results(stored, "objects")
    image_weights = stored.values("dequity_weight")

    res.reweight(eta=2.0, gamma=3.0)

    likelihoods = box_values(stored, "objects_likelihood")
    weights = box_values(stored, "objects_weight")
    ids = list(likelihoods)
    np.testing.assert_allclose(
        [weights[i] for i in ids], gfl([likelihoods[i] for i in ids], 2.0, 3.0)
    )
    per_sample = stored.values("ground_truth.detections.objects_weight")
    np.testing.assert_allclose(stored.values("objects_weight"), [max(w) for w in per_sample])
    assert stored.values("dequity_weight") == image_weights
    again = dequity.load_dequity_results(stored, "objects")
    assert (again.config.eta, again.config.gamma) == (2.0, 3.0)


def test_delete_runs_and_their_fields(stored):
    dequity.delete_dequity_run(stored, "dequity")
    assert dequity.list_dequity_runs(stored) == ["objects"]
    assert not any(stored.has_sample_field(name) for name in IMAGE_FIELDS)
    with pytest.raises(dequity.DequityError):
        dequity.load_dequity_results(stored, "dequity")
    assert stored.has_sample_field("ground_truth.detections.objects_weight")

    dequity.delete_dequity_run(stored, "objects")
    assert dequity.list_dequity_runs(stored) == []
    schema = stored.get_field_schema(flat=True)
    assert not [path for path in schema if path.split(".")[-1].startswith(("dequity_", "objects_"))]
    detection = stored.first().ground_truth.detections[0].to_dict()
    assert not set(OBJECT_ATTRIBUTES) & set(detection)
    # the boxes themselves stay, and so does the training run
    num_boxes = len(stored_run_file("objects")["object_ids"])
    assert stored.count("ground_truth.detections") == num_boxes
    assert stored.list_runs() == ["baseline"]


def test_training_run_loads_and_deletes(stored):
    res = training.load_training_run(stored, "baseline")
    assert isinstance(res, training.TrainingRunResults)
    assert isinstance(res.config, training.TrainingRunConfig)
    assert res.config.classes == ["car", "person", "truck"]
    assert res.config.weight_field is None
    assert res.metrics[-1]["step"] == 2
    assert res.evaluation["eval_key"] == "baseline_eval"
    assert set(res.evaluation["per_class_ap"]) <= {"car", "person", "truck"}
    predictions = res.config.predictions_field
    assert stored.has_sample_field(predictions)

    stored.delete_run("baseline")  # the run's cleanup deletes its predictions and evaluation
    assert not stored.has_sample_field(predictions)
    assert stored.list_evaluations() == []
    assert sorted(dequity.list_dequity_runs(stored)) == ["dequity", "objects"]


def test_a_run_record_is_stored_packed_and_loads_the_same(demo_run):
    from bson import json_util

    dataset, results = demo_run
    stored = json_util.dumps(results.serialize())
    packed = json_util.loads(stored)
    assert packed["likelihoods"]["packed"] == "float64"
    assert packed["sample_ids"]["packed"] == "objectid"
    loaded = dequity.DequityResults._from_dict(packed, dataset, results.config, results.key)
    assert loaded.sample_ids == results.sample_ids
    assert loaded.labels == results.labels
    assert loaded.likelihoods == results.likelihoods  # float64: the very values of the fields
    assert loaded.views == results.views
    np.testing.assert_allclose(loaded.points, results.points, rtol=1e-6)
    as_lists = json.dumps({"likelihoods": results.likelihoods, "points": results.points})
    arrays = json.dumps({"likelihoods": packed["likelihoods"], "points": packed["points"]})
    assert len(arrays) < len(as_lists) / 2, "packed arrays take less room than JSON lists"
