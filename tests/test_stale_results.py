"""Results meet a changed dataset: deleted samples, shared pkl keys."""

from __future__ import annotations

import json
import pickle

import pytest

import dequity
from dequity import DequityError, compute_dequity
from tests.conftest import EMBEDDINGS_FIELD


def test_after_delete_samples_summary_and_export_count_what_exists(demo, tmp_path):
    results = compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, progress=False)
    deleted = results.sample_ids[:20]
    demo.delete_samples(deleted)
    results = dequity.load_dequity_results(demo, "dequity")
    s = results.summary()
    assert s["num_samples"] == len(demo) and s["num_deleted"] == 20
    assert sum(s["cluster_sizes"].values()) == len(demo)

    with pytest.warns(UserWarning, match="20 samples of run 'dequity' no longer exist"):
        dequity.export_weights(demo, "dequity", tmp_path / "w.json")
    rows = json.loads((tmp_path / "w.json").read_text())["samples"]
    assert sorted(r["id"] for r in rows) == sorted(demo.values("id"))
    with pytest.warns(UserWarning, match="no longer exist"):
        dequity.export_weights(demo, "dequity", tmp_path / "w.pkl")
    info = pickle.loads((tmp_path / "w.pkl").read_bytes())
    assert len(info) == len(demo)

    results.reweight(0.5, 2.0)
    assert demo.count("dequity_weight") == len(demo)


def test_pkl_keys_shared_by_several_samples_are_refused(demo, tmp_path):
    compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, progress=False)
    ids = demo.values("id")
    paths = demo.values("filepath")
    demo.set_values(
        "filepath",
        {ids[0]: paths[0].rsplit("/", 1)[0] + "/x/" + paths[1].rsplit("/", 1)[1]},
        key_field="id",
    )
    with pytest.raises(DequityError, match="token_field") as e:
        dequity.export_weights(demo, "dequity", tmp_path / "w.pkl")
    assert paths[1].rsplit("/", 1)[1].split(".")[0] in str(e.value)
    assert not (tmp_path / "w.pkl").exists()

    demo.set_values("token", [f"t{i % 3}" for i in range(len(demo))])
    with pytest.raises(DequityError, match="field 'token'.*'t0'"):
        dequity.export_weights(demo, "dequity", tmp_path / "w.pkl", token_field="token")
    demo.set_values("token", [f"t{i}" for i in range(len(demo))])
    dequity.export_weights(demo, "dequity", tmp_path / "w.pkl", token_field="token")
    assert len(pickle.loads((tmp_path / "w.pkl").read_bytes())) == len(demo)
