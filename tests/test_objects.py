"""Object runs: one likelihood and weight per box of a Detections field.

Where the meaning of the embeddings does not matter, each box's vector is
its image's stored embedding followed by its box coordinates; the crop
embedding's meaning is checked with the real offline model.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys

import fiftyone as fo
import fiftyone.core.labels as fol
import numpy as np
import pytest

import dequity
from dequity.errors import DequityError
from dequity.faults import ENV as FAULT_ENV
from dequity.faults import EXIT_CODE

FIELD = "ground_truth"


def box_vectors(dataset: fo.Dataset) -> np.ndarray:
    """One row per box in collection order: the image's embedding, then the box x 10."""
    rows = []
    for emb, boxes in zip(*dataset.values(["embedding", f"{FIELD}.detections.bounding_box"])):
        for box in boxes or []:
            rows.append(np.concatenate([np.asarray(emb), 10 * np.asarray(box)]))
    return np.asarray(rows, dtype=np.float32)


def attributes(dataset: fo.Dataset, run_key: str) -> dict[str, dict[str, list]]:
    """``{suffix: per-sample lists}`` of a run's Detection attributes."""
    return {
        s: dataset.values(f"{FIELD}.detections.{run_key}_{s}")
        for s in ("cluster", "likelihood", "weight")
    }


def test_an_object_run_writes_every_box_and_the_sample_max(demo):
    results = dequity.compute_dequity(
        demo, "obj", patches_field=FIELD, embeddings=box_vectors(demo), progress=False
    )
    det_ids = demo.values(f"{FIELD}.detections.id")
    flat = [i for ids in det_ids for i in ids]
    assert results.object_ids == flat  # every demo box is usable, in collection order
    assert len(results.sample_ids) == len(flat) == len(results.likelihoods)
    assert results.config.patches_field == FIELD
    values = attributes(demo, "obj")
    weights = results.weights
    by_id = dict(zip(results.object_ids, weights))
    for ids, w, p, c in zip(det_ids, values["weight"], values["likelihood"], values["cluster"]):
        assert w == pytest.approx([by_id[i] for i in ids])
        assert all(0 < v <= 1 for v in p) and all(isinstance(v, int) for v in c)
    assert demo.values("obj_weight") == pytest.approx([max(w) for w in values["weight"]])
    assert len(set(np.round(weights, 6))) > 10  # boxes differ within and across images
    # declared with descriptions, owned by the run; an ordinary run
    field = demo.get_field(f"{FIELD}.detections.obj_weight")
    assert field.info == {"run_key": "obj"} and "object" in field.description
    assert dequity.list_dequity_runs(demo) == ["obj"]
    loaded = dequity.load_dequity_results(demo, "obj")
    assert loaded.object_ids == results.object_ids and loaded.is_object_run
    summary = loaded.summary()
    assert summary["num_objects"] == len(flat) and summary["num_samples"] == len(demo)
    # the patches view sorts boxes rarest first
    patches = demo.to_patches(FIELD).sort_by(f"{FIELD}.obj_weight", reverse=True)
    assert patches.first()[FIELD]["obj_weight"] == pytest.approx(weights.max())
    # an object run cannot be updated, nor overwritten by an image run
    with pytest.raises(DequityError, match="object runs cannot be updated: recompute"):
        dequity.update_dequity(demo, "obj")
    with pytest.raises(DequityError, match="is an object run on 'ground_truth'"):
        dequity.compute_dequity(demo, "obj", embeddings="embedding", overwrite=True)


def test_tiny_and_degenerate_boxes_are_skipped_with_one_counted_warning(demo, caplog):
    samples = list(demo.limit(4))
    # 384 x 288 frames: 0.005 * 384 = 1.9 px wide
    samples[0][FIELD].detections[0].bounding_box = [0.1, 0.1, 0.005, 0.2]
    samples[0][FIELD].detections[1].bounding_box = [0.1, 0.1, 0.0, 0.2]
    samples[1][FIELD].detections = [fol.Detection(label="car", bounding_box=[0.2, 0.2, 0.3, 0.01])]
    samples[2][FIELD].detections = []
    for sample in samples:
        sample.save()
    tiny_id, flat_id = (d.id for d in samples[0][FIELD].detections[:2])
    with caplog.at_level(logging.WARNING, logger="dequity"):
        results = dequity.compute_dequity(
            demo, "obj", patches_field=FIELD, embeddings=box_vectors(demo), progress=False
        )
    skipped = [r.message for r in caplog.records if "skipped" in r.message]
    assert len(skipped) == 1
    assert "skipped 3 of the" in skipped[0]
    assert "1 empty or degenerate" in skipped[0] and "2 under 4 px" in skipped[0]
    assert tiny_id not in results.object_ids and flat_id not in results.object_ids
    total = demo.count(f"{FIELD}.detections")
    assert demo.count(f"{FIELD}.detections.obj_weight") == total - 3 == len(results.object_ids)
    first = demo[samples[0].id][FIELD].detections
    assert first[0].has_attribute("obj_weight") is False and first[2].obj_weight > 0
    # samples without a scored box get no value
    assert demo[samples[1].id].obj_weight is None and demo[samples[2].id].obj_weight is None
    assert demo[samples[0].id].obj_weight == pytest.approx(max(d.obj_weight for d in first[2:]))


def test_bad_fields_and_boxes_raise_and_write_nothing(demo):
    demo.add_sample_field("kind", fo.EmbeddedDocumentField, embedded_doc_type=fol.Classification)
    schema = dict(demo.get_field_schema(flat=True))
    cases = {
        "missing": "no field 'missing'; its label fields: ground_truth (Detections)",
        "kind": "'kind' holds Classification, not Detections",
        "filepath": "holds StringField, not Detections",
    }
    for field, message in cases.items():
        with pytest.raises(DequityError, match=message.replace("(", r"\(").replace(")", r"\)")):
            dequity.compute_dequity(demo, "obj", patches_field=field, embeddings="embedding")
    with pytest.raises(DequityError, match="one row per box in collection order"):
        dequity.compute_dequity(demo, "obj", patches_field=FIELD, embeddings=np.ones((3, 4)))
    with pytest.raises(DequityError, match="group_field and collapse_near_duplicates"):
        dequity.compute_dequity(demo, "obj", patches_field=FIELD, group_field="filepath")
    small = demo.limit(3)
    for sample in small:
        for det in sample[FIELD].detections:
            det.bounding_box = [0.5, 0.5, 0.004, 0.004]
        sample.save()
    with pytest.raises(DequityError, match="no usable box in field 'ground_truth'"):
        dequity.compute_dequity(small, "obj", patches_field=FIELD, embeddings=np.ones((30, 4)))
    assert dict(demo.get_field_schema(flat=True)).keys() == schema.keys()
    assert demo.list_runs() == []


def test_reweight_rename_and_delete_carry_the_attributes(demo):
    results = dequity.compute_dequity(
        demo, "obj", patches_field=FIELD, embeddings=box_vectors(demo), progress=False
    )
    likelihoods = demo.values(f"{FIELD}.detections.obj_likelihood")
    new = results.reweight(eta=0.5, gamma=2.0)
    by_id = dict(zip(results.object_ids, new))
    weights = demo.values(f"{FIELD}.detections.obj_weight")
    for ids, w in zip(demo.values(f"{FIELD}.detections.id"), weights):
        assert w == pytest.approx([by_id[i] for i in ids])
    assert demo.values("obj_weight") == pytest.approx([max(w) for w in weights])
    assert demo.values(f"{FIELD}.detections.obj_likelihood") == likelihoods
    assert dequity.load_dequity_results(demo, "obj").config.eta == 0.5

    dequity.rename_dequity_run(demo, "obj", "boxes")
    assert not demo.has_sample_field(f"{FIELD}.detections.obj_weight")
    assert not demo.has_sample_field("obj_weight")
    assert demo.values(f"{FIELD}.detections.boxes_weight") == weights
    assert demo.values(f"{FIELD}.detections.boxes_likelihood") == likelihoods
    config = dequity.load_dequity_results(demo, "boxes").config
    assert config.weight_field == "boxes_weight" and config.patches_field == FIELD
    assert demo.get_field(f"{FIELD}.detections.boxes_cluster").info == {"run_key": "boxes"}

    dequity.delete_dequity_run(demo, "boxes")
    assert demo.list_runs() == []
    for suffix in ("cluster", "likelihood", "weight"):
        assert not demo.has_sample_field(f"{FIELD}.detections.boxes_{suffix}")
        assert demo.count(f"{FIELD}.detections.boxes_{suffix}") == 0
    assert not demo.has_sample_field("boxes_weight")
    assert demo.count(f"{FIELD}.detections") == len(results.object_ids)  # boxes stay


@pytest.mark.slow
def test_a_run_killed_while_writing_leaves_old_or_new_values_never_a_mix(demo, tmp_path):
    demo.persistent = True
    first = dequity.compute_dequity(
        demo, "obj", patches_field=FIELD, embeddings=box_vectors(demo), progress=False
    )
    before = attributes(demo, "obj"), demo.values("obj_weight")
    np.save(tmp_path / "x.npy", box_vectors(demo)[:, ::-1].copy())
    script = (
        "import numpy as np, fiftyone as fo, dequity\n"
        f"ds = fo.load_dataset({demo.name!r})\n"
        f"dequity.compute_dequity(ds, 'obj', patches_field={FIELD!r}, gamma=2.0,\n"
        f"    embeddings=np.load({str(tmp_path / 'x.npy')!r}), overwrite=True, progress=False)\n"
    )
    for point, committed in (("staged", False), ("values_merged", True)):
        done = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, FAULT_ENV: point},
            capture_output=True,
            text=True,
        )
        assert done.returncode == EXIT_CODE, done.stderr[-2000:]
        assert dequity.list_dequity_runs(demo) == ["obj"]  # recovers the dead writer's run
        demo.reload()
        results = dequity.load_dequity_results(demo, "obj")
        values = attributes(demo, "obj")
        if not committed:
            assert (values, demo.values("obj_weight")) == before
            assert results.config.gamma == first.config.gamma
        else:
            assert results.config.gamma == 2.0
            by_id = dict(zip(results.object_ids, results.weights))
            ids = demo.values(f"{FIELD}.detections.id")
            for sample_ids, w in zip(ids, values["weight"]):
                assert w == pytest.approx([by_id[i] for i in sample_ids])
            assert demo.values("obj_weight") == pytest.approx([max(w) for w in values["weight"]])
            assert values != before[0]


def test_export_writes_one_row_per_object(demo, tmp_path):
    results = dequity.compute_dequity(
        demo, "obj", patches_field=FIELD, embeddings=box_vectors(demo), progress=False
    )
    doc = json.loads(dequity.export_weights(demo, "obj", tmp_path / "o.json").read_text())
    rows = doc["objects"]
    assert len(rows) == len(results.object_ids) and doc["config"]["patches_field"] == FIELD
    first = demo.first()[FIELD].detections[0]
    assert rows[0] == {
        "sample_id": demo.first().id,
        "detection_id": first.id,
        "label": first.label,
        "box": pytest.approx(first.bounding_box),
        "cluster": first.obj_cluster,
        "likelihood": pytest.approx(first.obj_likelihood),
        "weight": pytest.approx(first.obj_weight),
    }
    with (dequity.export_weights(demo, "obj", tmp_path / "o.csv")).open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert list(table[0]) == [
        "sample_id",
        "detection_id",
        "label",
        "box_x",
        "box_y",
        "box_w",
        "box_h",
        "cluster",
        "likelihood",
        "weight",
    ]
    assert float(table[0]["box_w"]) == pytest.approx(first.bounding_box[2])
    assert float(table[0]["weight"]) == pytest.approx(first.obj_weight)
    with pytest.raises(DequityError, match="object run.*'json' or 'csv'"):
        dequity.export_weights(demo, "obj", tmp_path / "o.pkl")


def test_training_reads_the_box_weights_the_object_run_wrote(demo):
    from training.datasets import detection_dataset

    dequity.compute_dequity(
        demo, "dequity", patches_field=FIELD, embeddings=box_vectors(demo), progress=False
    )
    view = demo.limit(6)
    ds = detection_dataset(view, FIELD, ["person", "car", "truck"], weight_level="object")
    for (_, target), weights in zip(ds, view.values(f"{FIELD}.detections.dequity_weight")):
        assert target["box_weights"].tolist() == pytest.approx(weights, rel=1e-6)
        assert target["box_weights"].shape[0] == target["boxes"].shape[0] == len(weights)


@pytest.mark.slow
def test_crop_embeddings_of_the_real_model_group_people_apart_from_cars(demo):
    from fiftyone import ViewField as F

    has_car = F(f"{FIELD}.detections").filter(F("label") == "car").length() > 0
    view = demo.match(has_car).limit(12)  # frames with cars and people
    results = dequity.compute_dequity(
        view,
        "crops",
        patches_field=FIELD,
        model="efficientnet-lite0",
        clustering="knn",
        clustering_kwargs={"k": 5},
        device="cpu",
        progress=False,
    )
    assert results.config.model == "efficientnet-lite0"
    assert view.count(f"{FIELD}.detections.crops_weight") == len(results.object_ids)
    # the crops themselves, as the run embedded them
    from dequity.sources import crops as dobj

    objs = dobj.usable_objects(view, FIELD)
    vectors = dobj.crop_embeddings(view, FIELD, objs, "efficientnet-lite0", device="cpu")
    labels = dict(
        zip(
            (i for ids in view.values(f"{FIELD}.detections.id") for i in ids),
            (lab for labs in view.values(f"{FIELD}.detections.label") for lab in labs),
        )
    )
    people = np.array([vectors[i] for i in objs.object_ids if labels[i] == "person"])
    cars = np.array([vectors[i] for i in objs.object_ids if labels[i] == "car"])
    assert len(people) >= 5 and len(cars) >= 3

    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return a @ b.T

    within = cosine(people, people)[np.triu_indices(len(people), 1)].mean()
    across = cosine(people, cars).mean()
    assert within > across + 0.05, (within, across)


def test_cli_computes_an_object_run(demo, capsys):
    from dequity.cli import main

    demo.persistent = True
    rc = main(
        [
            "compute",
            "--dataset",
            demo.name,
            "--run-key",
            "boxes",
            "--patches-field",
            FIELD,
            "--embeddings",
            "embedding",
            "--clustering",
            "knn",
        ]
    )
    out = capsys.readouterr()
    assert rc == 2 and "no Detection of 'ground_truth' has an attribute 'embedding'" in out.err
    demo.set_values(f"{FIELD}.detections.vec", _per_box(demo, box_vectors(demo)))
    argv = ["compute", "--dataset", demo.name, "--run-key", "boxes", "--patches-field", FIELD]
    assert main([*argv, "--embeddings", "vec"]) == 0
    out = capsys.readouterr().out
    assert f"run 'boxes': {demo.count(f'{FIELD}.detections')} objects of 'ground_truth'" in out
    assert demo.count(f"{FIELD}.detections.boxes_weight") == demo.count(f"{FIELD}.detections")


def _per_box(dataset: fo.Dataset, rows: np.ndarray) -> list[list[np.ndarray]]:
    """Split collection-order rows into per-sample lists of boxes."""
    out, start = [], 0
    for ids in dataset.values(f"{FIELD}.detections.id"):
        out.append([rows[start + k] for k in range(len(ids))])
        start += len(ids)
    return out


def test_crops_cut_in_decoding_workers_match_the_main_process(demo):
    from dequity.sources import crops as dobj

    view = demo.limit(3)
    objs = dobj.usable_objects(view, FIELD)
    kwargs = {"device": "cpu", "progress": False}
    here = dobj.crop_embeddings(view, FIELD, objs, "efficientnet-lite0", num_workers=0, **kwargs)
    workers = dobj.crop_embeddings(view, FIELD, objs, "efficientnet-lite0", num_workers=2, **kwargs)
    assert list(here) == list(workers) == objs.object_ids
    for i in objs.object_ids:
        np.testing.assert_allclose(here[i], workers[i], atol=1e-5)
