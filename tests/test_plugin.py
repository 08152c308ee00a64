"""The FiftyOne plugin: registration, operators (immediate and delegated), forms, panel."""

from __future__ import annotations

import asyncio
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
import yaml
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import (
    ExecutionContext,
    ExecutionError,
    execute_or_delegate_operator,
)

import dequity

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "@dequity/dequity"
MANIFEST = yaml.safe_load((REPO / "fiftyone.yml").read_text())
OPERATOR_NAMES = MANIFEST["operators"]
PANEL_NAMES = MANIFEST["panels"]
FAST_KW = {"min_cluster_size": 5}


def uri(name: str) -> str:
    return f"{PLUGIN}/{name}"


def op(name: str) -> foo.Operator:
    return foo.get_operator(uri(name))


def run_delegated(dataset: fo.Dataset) -> list:
    """Execute the dataset's queued operations in this process; fail on errors."""
    done = DelegatedOperationService().execute_queued_operations(dataset_name=dataset.name)
    assert done, "nothing was queued"
    for result in done:
        assert result.error is None, result.error_message
    return done


@pytest.fixture(autouse=True)
def _quiet():
    fo.config.show_progress_bars = False


@pytest.fixture
def clean(demo):
    """A private copy of the demo set (``embedding`` field, no run, no queued work)."""
    yield demo
    DelegatedOperationService().delete_for_dataset(demo._doc.id)


def check_run(ds: fo.Dataset, run_key: str, num: int | None = None) -> dequity.DequityResults:
    """The run record, its three fields and its visualization agree."""
    assert run_key in dequity.list_dequity_runs(ds)
    res = dequity.load_dequity_results(ds, run_key)
    cfg = res.config
    for field in cfg.fields:
        assert ds.has_sample_field(field), field
    ids = res.sample_ids
    assert len(ids) == (num if num is not None else len(ds))
    view = ds.select(ids, ordered=True)
    assert view.values(cfg.cluster_field) == res.labels
    np.testing.assert_allclose(view.values(cfg.weight_field), res.weights)
    viz = f"{run_key}_viz"
    assert viz in ds.list_brain_runs()
    points = ds.load_brain_results(viz).points
    np.testing.assert_allclose(points, np.asarray(res.points))
    return res


def test_every_operator_and_panel_is_registered():
    operators = {o.uri for o in foo.list_operators(builtin=False, type="operator")}
    panels = {o.uri for o in foo.list_operators(builtin=False, type="panel")}
    assert {uri(n) for n in OPERATOR_NAMES} <= operators
    assert {uri(n) for n in PANEL_NAMES} <= panels
    mine = {u for u in operators | panels if u.startswith(PLUGIN + "/")}
    assert mine == {uri(n) for n in OPERATOR_NAMES + PANEL_NAMES}, "manifest out of date"


def test_compute_immediate_on_embeddings_field(clean):
    ds = clean
    result = op("compute_dequity")(ds, "dequity", embeddings="embedding", eta=0.5, gamma=2.0)
    assert result.error is None
    res = check_run(ds, "dequity")
    assert (res.config.eta, res.config.gamma) == (0.5, 2.0)
    assert res.config.embeddings_field == "embedding"
    weights = np.asarray(ds.values("dequity_weight"))
    assert weights.min() >= 0.5 / 1.5 - 1e-9 and weights.max() <= 1.0
    assert res.num_clusters >= 2


def test_compute_immediate_streams_progress_summary_and_reload(clean):
    """What the App receives from an immediate run: progress, a summary, a reload."""
    ds = clean
    request = {
        "dataset_name": ds.name,
        "view": ds.view()._serialize(),
        "params": {"run_key": "streamed", "embeddings_source": "field", "embeddings": "embedding"},
    }

    async def collect():
        result = await execute_or_delegate_operator(uri("compute_dequity"), request)
        assert result.error is None, result.error_message
        assert result.is_generator
        return [m.body.to_json() for m in result.result if m is not None]

    messages = asyncio.run(collect())
    names = [m["operator_uri"] for m in messages]
    assert names.count("set_progress") >= 2
    assert names[-2:] == ["show_output", "reload_dataset"]
    summary = messages[-2]["params"]["results"]
    assert summary["run_key"] == "streamed"
    assert summary["num_clusters"] == dequity.load_dequity_results(ds, "streamed").num_clusters
    assert summary["visualization"] == "streamed_viz"
    check_run(ds, "streamed")


def test_compute_delegated_with_model(clean):
    """The model path, queued then run, on a view: default model, stored embeddings."""
    ds = clean
    view = ds.limit(40)  # consecutive frames: a fixed view that forms clusters
    queued = op("compute_dequity")(
        view, "dq_model", embeddings_field="emb_lite0", clustering_kwargs=FAST_KW, delegate=True
    )
    assert queued.delegated
    assert "dq_model" not in dequity.list_dequity_runs(ds)
    [done] = run_delegated(ds)
    assert done.result["num_samples"] == 40
    res = check_run(ds, "dq_model", num=40)
    assert set(res.sample_ids) == set(view.values("id"))
    assert res.config.model == "efficientnet-lite0-layers"
    assert res.config.clustering_kwargs["min_cluster_size"] == 5
    assert ds.exists("emb_lite0").count() == 40
    [doc] = DelegatedOperationService().list_operations(dataset_name=ds.name)
    assert doc.run_state == "completed"
    assert doc.status is not None and doc.status.label, "no progress was reported"


def test_compute_on_selected_samples_with_paper_settings(clean):
    ds = clean
    ids = ds.limit(80).values("id")  # 80 consecutive frames: 5 t-SNE/DBSCAN clusters
    ctx = {
        "dataset": ds,
        "view": ds.view(),
        "selected": ids,
        "params": {
            "view_target": "SELECTED_SAMPLES",
            "run_key": "sel",
            "embeddings_source": "field",
            "embeddings": "embedding",
            "projection": "tsne",
            "clustering": "dbscan",
            "dbscan__eps": 50.0,  # t-SNE spreads 80 points over hundreds of units
            "dbscan__min_samples": 3,
            "noise": "cluster",
        },
    }
    foo.execute_operator(uri("compute_dequity"), ctx)
    res = check_run(ds, "sel", num=80)
    assert set(res.sample_ids) == set(ids)
    assert (res.config.projection, res.config.clustering, res.config.noise) == (
        "tsne",
        "dbscan",
        "cluster",
    )
    assert res.config.clustering_kwargs == {"eps": 50.0, "min_samples": 3}
    assert res.num_clusters >= 2
    assert ds.exists("sel_weight").count() == 80


def test_overwrite(clean):
    ds = clean
    compute = op("compute_dequity")
    compute(ds, "dq", embeddings="embedding", clustering_kwargs=FAST_KW)
    with pytest.raises(ExecutionError, match="already exists"):
        compute(ds, "dq", embeddings="embedding")
    compute(ds, "dq", embeddings="embedding", gamma=1.0, overwrite=True)
    assert check_run(ds, "dq").config.gamma == 1.0


@pytest.mark.parametrize("delegate", [False, True], ids=["immediate", "delegated"])
def test_reweight_writes_only_the_weight_field(clean, delegate):
    ds = clean
    op("compute_dequity")(ds, "dq", embeddings="embedding", clustering_kwargs=FAST_KW)
    before = {f: ds.values(f) for f in ("dq_cluster", "dq_likelihood", "dq_weight")}
    op("reweight_dequity")(ds, "dq", eta=0.25, gamma=2.0, delegate=delegate)
    if delegate:
        assert dequity.load_dequity_results(ds, "dq").config.eta == 1.0
        run_delegated(ds)
    res = dequity.load_dequity_results(ds, "dq")
    assert (res.config.eta, res.config.gamma) == (0.25, 2.0)
    assert ds.values("dq_cluster") == before["dq_cluster"]
    assert ds.values("dq_likelihood") == before["dq_likelihood"]
    expected = dequity.gfl_weight(np.asarray(before["dq_likelihood"]), 0.25, 2.0)
    np.testing.assert_allclose(ds.values("dq_weight"), expected)


@pytest.mark.parametrize("delegate", [False, True], ids=["immediate", "delegated"])
def test_update_adds_new_samples_to_the_run_and_its_visualization(clean, delegate):
    ids = clean.values("id")
    ds = clean.exclude(ids[::10]).clone()
    op("compute_dequity")(ds, "dq", embeddings="embedding")
    check_run(ds, "dq")
    ds.add_samples(clean.select(ids[::10]))
    assert op("update_dequity")(ds, "dq", delegate=delegate).error is None
    if delegate:
        run_delegated(ds)
    check_run(ds, "dq", num=len(ds))
    ds.delete()


def test_update_form_offers_only_runs_that_can_be_updated_default_first(clean):
    ds = clean
    num_boxes = len(ds.values("ground_truth.detections.id", unwind=True))
    boxes = np.random.default_rng(0).normal(size=(num_boxes, 8))
    dequity.compute_dequity(ds, "boxes", embeddings=boxes, patches_field="ground_truth")
    dequity.compute_dequity(ds, "aaa_tsne", embeddings="embedding", projection="tsne")
    for key in ("zzz", "dequity"):
        dequity.compute_dequity(ds, key, embeddings="embedding", clustering_kwargs=FAST_KW)
    ctx = ExecutionContext({"dataset_name": ds.name, "params": {}})
    form = op("update_dequity").resolve_input(ctx).type.properties
    assert [c.value for c in form["run_key"].view.choices] == ["dequity", "zzz"]
    assert form["run_key"].default == "dequity"


def test_compute_form_offers_scene_grouping(clean):
    clean.set_values("scene_id", [i // 20 for i in range(len(clean))])
    ctx = ExecutionContext(
        request_params={
            "dataset_name": clean.name,
            "params": {"run_key": "dq", "embeddings_source": "field"},
        }
    )
    form = op("compute_dequity").resolve_input(ctx).type.properties
    assert "scene_id" in form["group_field"].type.values
    assert "collapse_near_duplicates" in form
    op("compute_dequity")(clean, "dq", embeddings="embedding", group_field="scene_id")
    assert dequity.load_dequity_results(clean, "dq").config.group_field == "scene_id"


@pytest.mark.parametrize("delegate", [False, True], ids=["immediate", "delegated"])
def test_info_rename_delete(clean, delegate):
    ds = clean
    op("compute_dequity")(ds, "dq", embeddings="embedding", clustering_kwargs=FAST_KW)

    info = op("get_dequity_info")(ds, "dq", delegate=delegate)
    if delegate:
        [info] = run_delegated(ds)
    assert info.result["run_key"] == "dq"
    assert info.result["config"]["method"] == "dequity"
    assert info.result["summary"]["num_samples"] == len(ds)

    op("rename_dequity_run")(ds, "dq", "renamed", delegate=delegate)
    if delegate:
        run_delegated(ds)
    assert dequity.list_dequity_runs(ds) == ["renamed"]
    assert not ds.has_sample_field("dq_weight")
    check_run(ds, "renamed")
    assert "dq_viz" not in ds.list_brain_runs()

    op("delete_dequity_run")(ds, "renamed", delegate=delegate)
    if delegate:
        run_delegated(ds)
    assert dequity.list_dequity_runs(ds) == []
    for field in ("renamed_cluster", "renamed_likelihood", "renamed_weight"):
        assert not ds.has_sample_field(field)
    assert ds.list_brain_runs() == []
    assert ds.has_sample_field("embedding")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"run_key": "1bad"}, "Python identifier"),
        ({"run_key": "dq"}, "already exists"),
        ({"run_key": "x", "embeddings": "nope"}, "no field 'nope'"),
        ({"run_key": "x", "embeddings": "ground_truth"}, "not a vector field"),
        ({"run_key": "x", "embeddings": "filepath"}, "not a vector field"),
        ({"run_key": "x", "eta": -0.5}, "eta must be a finite number >= 0"),
        ({"run_key": "x", "gamma": -1.0}, "gamma must be"),
        ({"run_key": "x", "hdbscan_knn__min_cluster_size": 1}, "min_cluster_size must be"),
        ({"run_key": "x", "hdbscan_knn__density_power": 2.0}, "density_power must be"),
        (
            {"run_key": "x", "embeddings_source": "model", "embeddings_field": "ground_truth"},
            "not a vector field",
        ),
    ],
    ids=[
        "bad-key",
        "taken-key",
        "missing-field",
        "label-field",
        "string-field",
        "eta",
        "gamma",
        "cluster-size",
        "density-power",
        "store-field",
    ],
)
def test_compute_form_rejects_bad_parameters(clean, params, reason):
    ds = clean
    op("compute_dequity")(ds, "dq", embeddings="embedding", clustering_kwargs=FAST_KW)
    params = {"embeddings_source": "field", "embeddings": "embedding", **params}
    with pytest.raises(ExecutionError, match="Validation error") as err:
        foo.execute_operator(uri("compute_dequity"), {"dataset": ds, "params": params})
    assert reason in str(err.value)
    # the message is on the form property, where the App shows it
    ctx = ExecutionContext({"dataset_name": ds.name, "params": params})
    form = op("compute_dequity").resolve_input(ctx)
    messages = [p.error_message for p in form.type.properties.values() if p.invalid]
    assert any(reason in (m or "") for m in messages), messages
    assert dequity.list_dequity_runs(ds) == ["dq"]


def test_other_forms_reject_bad_parameters(clean):
    ds = clean
    with pytest.raises(ExecutionError, match="Validation error"):
        op("reweight_dequity")(ds, "dq", eta=1.0, gamma=1.0)  # no runs yet
    op("compute_dequity")(ds, "dq", embeddings="embedding", clustering_kwargs=FAST_KW)
    op("compute_dequity")(ds, "dq2", embeddings="embedding", clustering_kwargs=FAST_KW)
    with pytest.raises(ExecutionError, match="eta must be"):
        op("reweight_dequity")(ds, "dq", eta=-1.0, gamma=1.0)
    with pytest.raises(ExecutionError, match="no dequity run 'nope'"):
        op("delete_dequity_run")(ds, "nope")
    with pytest.raises(ExecutionError, match="already exists"):
        op("rename_dequity_run")(ds, "dq", "dq2")
    with pytest.raises(ExecutionError, match="identifier"):
        op("rename_dequity_run")(ds, "dq", "not a key")
    assert sorted(dequity.list_dequity_runs(ds)) == ["dq", "dq2"]


def test_reweight_form_previews_curve_and_histogram(clean):
    ds = clean
    op("compute_dequity")(ds, "dq", embeddings="embedding", clustering_kwargs=FAST_KW)
    ctx = ExecutionContext(
        {"dataset_name": ds.name, "params": {"run_key": "dq", "eta": 0.5, "gamma": 3.0}}
    )
    form = op("reweight_dequity").resolve_input(ctx).to_json()
    props = form["type"]["properties"]
    curve = props["weight_curve"]["view"]
    hist = props["weight_histogram"]["view"]
    w = dequity.gfl_weight(np.asarray(curve["data"][0]["x"]), 0.5, 3.0)
    np.testing.assert_allclose(curve["data"][0]["y"], w, atol=1e-4)
    assert len(hist["data"][0]["x"]) == len(ds)
    res = dequity.load_dequity_results(ds, "dq")
    expected = dequity.gfl_weight(np.asarray(res.likelihoods), 0.5, 3.0)
    np.testing.assert_allclose(sorted(hist["data"][0]["x"]), sorted(expected), atol=1e-4)


def _panel_event(ds: fo.Dataset, method: str, state: dict, **event) -> dict:
    """Run a panel event as the App does; return the triggered operations by name."""
    ctx = {
        "dataset": ds,
        "params": {"__method__": method, "panel_id": "p1", "panel_state": state, **event},
    }
    result = foo.execute_operator(uri("dequity"), ctx)
    return {r["operator_uri"]: r.get("params") for r in result.executor.to_json()["requests"]}


def test_panel_renders_plots_and_drives_the_grid(clean):
    ds = clean
    op("compute_dequity")(ds, "dq", embeddings="embedding", clustering_kwargs=FAST_KW)
    res = dequity.load_dequity_results(ds, "dq")
    state = {"run_key": "dq"}

    out = _panel_event(ds, "on_load", state)
    props = out["show_panel_output"]["output"]["type"]["properties"]
    bars = props["cluster_sizes"]["view"]["data"][0]
    sizes = bars["y"]
    assert sizes[: res.num_clusters] == sorted(sizes[: res.num_clusters], reverse=True)
    assert sum(sizes) == len(ds)
    assert props["weight_curve"]["view"]["data"][0]["type"] == "scatter"
    assert len(props["weight_histogram"]["view"]["data"][0]["x"]) == len(ds)
    likelihoods = props["likelihood_histogram"]["view"]["data"][0]["x"]
    np.testing.assert_allclose(sorted(likelihoods), sorted(res.likelihoods), atol=1e-4)

    largest = bars["x"][0]
    out = _panel_event(ds, "on_click_cluster", state, id=largest, x=largest)
    stages = out["set_view"]["view"]
    view = fo.DatasetView._build(ds, stages)
    cluster = int(largest.lstrip("#"))
    assert len(view) == res.cluster_sizes()[cluster]
    assert set(view.values("dq_cluster")) == {cluster}

    out = _panel_event(ds, "on_sort_rarest", state)
    view = fo.DatasetView._build(ds, out["set_view"]["view"])
    weights = view.values("dq_weight")
    assert weights == sorted(weights, reverse=True)


def test_panel_splits_a_run_by_view_and_opens_the_rarest_of_each(clean):
    ds = clean
    op("compute_dequity")(ds, "dq", embeddings="embedding", clustering_kwargs=FAST_KW)
    reasons = dequity.load_dequity_results(ds, "dq").rare_by
    state = {"run_key": "dq"}
    props = _panel_event(ds, "on_load", state)["show_panel_output"]["output"]["type"]
    split = props["properties"]["views_split"]["default"]
    assert f"{reasons.count('content')} by content (what they show)" in split
    assert f"{reasons.count('appearance')} by appearance (how they look)" in split
    assert f"{reasons.count('off-domain')} off-domain (unlike the set's kinds)" in split
    handlers = {
        "content": "on_rarest_by_content",
        "appearance": "on_rarest_by_appearance",
        "off-domain": "on_rarest_off_domain",
    }
    for reason, handler in handlers.items():
        assert reasons.count(reason), reason  # every view decides some demo frames
        out = _panel_event(ds, handler, state)
        view = fo.DatasetView._build(ds, out["set_view"]["view"])
        assert set(view.values("dq_rare_by")) == {reason}
        assert len(view) == reasons.count(reason)
        weights = view.values("dq_weight")
        assert weights == sorted(weights, reverse=True)


def test_panel_without_runs_offers_compute(clean):
    out = _panel_event(clean, "on_load", {})
    props = out["show_panel_output"]["output"]["type"]["properties"]
    assert "compute" in props and "cluster_sizes" not in props


def test_a_users_brain_run_named_like_the_visualization_is_left_alone(clean):
    import fiftyone.brain as fob

    ds = clean
    points = np.random.default_rng(0).normal(size=(len(ds), 2))
    fob.compute_visualization(ds, points=points, brain_key="dq_viz")

    op("compute_dequity")(ds, "dq", embeddings="embedding", clustering_kwargs=FAST_KW)
    op("rename_dequity_run")(ds, "dq", "dq2")
    op("delete_dequity_run")(ds, "dq2")
    assert ds.list_brain_runs() == ["dq_viz"]
    assert not hasattr(ds.get_brain_info("dq_viz").config, "dequity_run")
    np.testing.assert_allclose(ds.load_brain_results("dq_viz").points, points)


def test_object_runs_in_the_form_the_panel_and_one_click_patches(clean):
    ds = clean
    ctx = ExecutionContext(
        request_params={
            "dataset_name": ds.name,
            "params": {"run_key": "boxes", "patches_field": "ground_truth"},
        }
    )
    form = op("compute_dequity").resolve_input(ctx).type.properties
    assert form["patches_field"].type.values == ["ground_truth"]
    assert "model" in form and "embeddings_source" not in form and "group_field" not in form
    view = ds.limit(8)
    result = op("compute_dequity")(
        view,
        "boxes",
        patches_field="ground_truth",
        model="efficientnet-lite0",
        clustering_kwargs=FAST_KW,
    )
    assert result.error is None, result.error_message
    res = dequity.load_dequity_results(ds, "boxes")
    num = view.count("ground_truth.detections")
    assert len(res.object_ids) == num
    assert ds.count("ground_truth.detections.boxes_weight") == num
    # the visualization holds one point per box
    viz = ds.load_brain_results("boxes_viz")
    assert len(viz.points) == num and viz.config.patches_field == "ground_truth"

    state = {"run_key": "boxes"}
    out = _panel_event(ds, "on_load", state)
    props = out["show_panel_output"]["output"]["type"]["properties"]
    assert sum(props["cluster_sizes"]["view"]["data"][0]["y"]) == num
    assert "object_patches" in props["buttons"]["type"]["properties"]
    largest = props["cluster_sizes"]["view"]["data"][0]["x"][0]
    out = _panel_event(ds, "on_click_cluster", state, id=largest, x=largest)
    patches = fo.DatasetView._build(ds, out["set_view"]["view"])
    cluster = int(largest.lstrip("#"))
    assert len(patches) == res.cluster_sizes()[cluster]
    assert set(patches.values("ground_truth.boxes_cluster")) == {cluster}
    for out in (
        _panel_event(ds, "on_object_patches", state),
        {
            "set_view": foo.execute_operator(
                uri("open_object_patches"), {"dataset": ds, "params": {"run_key": "boxes"}}
            ).executor.to_json()["requests"][0]["params"]
        },
    ):
        patches = fo.DatasetView._build(ds, out["set_view"]["view"])
        weights = patches.values("ground_truth.boxes_weight")
        assert len(weights) == num and weights == sorted(weights, reverse=True)


def test_a_run_without_2d_points_stores_no_visualization(demo):
    from dequity.runs import DequityRunConfig
    from dequity.store.field_results import FieldBackedResults
    from fiftyone_plugin.viz import store_visualization

    results = FieldBackedResults(demo, DequityRunConfig("on_ray"), "on_ray")
    assert store_visualization(results) is None
    assert not demo.list_brain_runs()
