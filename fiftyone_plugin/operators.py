"""Operators: thin shells over :mod:`dequity`, usable from the App and from Python.

Example::

    import fiftyone as fo
import fiftyone.operators as foo
    compute = foo.get_operator("@dequity/dequity/compute_dequity")
    compute(dataset, "dequity", embeddings="embedding")              # immediate
    compute(dataset, "dequity_clip", model="clip:ViT-B-32@laion2b_s34b_b79k",
            delegate=True)                                             # queued
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone.operators.constants import ViewTarget

import dequity
from dequity.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CLUSTERING,
    DEFAULT_ETA,
    DEFAULT_GAMMA,
    DEFAULT_MODEL,
    DEFAULT_NOISE,
    DEFAULT_PROJECTION,
    DEFAULT_RUN_KEY,
    DEFAULT_VIEWS,
)
from dequity.pipeline import clustering as dclustering
from dequity.pipeline import projection as dprojection
from dequity.pipeline.clustering import DBSCAN, HDBSCAN, HDBSCAN_KNN, KNN
from dequity.pipeline.likelihood import NOISE_CLUSTER, NOISE_NEAREST, NOISE_SINGLETON
from dequity.pipeline.projection import NO_PROJECTION, OPENTSNE, PCA, TSNE
from dequity.pipeline.views import CONTENT, RANKED
from dequity.sources.embeddings import validate_embeddings_field
from dequity.store import compat as fc
from fiftyone_plugin import plots
from fiftyone_plugin.common import (
    detections_fields,
    dropdown,
    existing_run_input,
    free_run_key,
    gfl_inputs,
    new_run_key_input,
    object_patches_view,
    report,
    run_key_problem,
    run_with_progress,
    vector_fields,
)
from fiftyone_plugin.viz import delete_visualization, rename_visualization, store_visualization

FIELD_SOURCE = "field"
#: field types a scene id can have (a grouped dataset's group field included)
GROUP_FIELD_TYPES = (fo.StringField, fo.IntField, fo.ObjectIdField, fo.EmbeddedDocumentField)
MODEL_SOURCE = "model"
MODELS = {
    "efficientnet-lite0-layers": "EfficientNet-Lite0, every stage pooled (offline, default)",
    "efficientnet-lite0": "EfficientNet-Lite0, final features (ImageNet, offline)",
    "efficientnet-lite1": "EfficientNet-Lite1 (ImageNet, offline)",
    "efficientnet-lite2": "EfficientNet-Lite2 (ImageNet, offline)",
    "clip:ViT-B-32@laion2b_s34b_b79k": "open_clip ViT-B-32 (the paper's CLIP; downloads weights)",
}
_PROJECTION_LABELS = {
    PCA: "PCA (default: fast, keeps cluster sizes)",
    TSNE: "t-SNE to 3-D (the paper)",
    OPENTSNE: "openTSNE (large datasets)",
    NO_PROJECTION: "None (cluster the raw embeddings)",
}
_CLUSTERING_LABELS = {
    HDBSCAN_KNN: "HDBSCAN + k-NN crowding (default: continuous, finds rare kinds and conditions)",
    HDBSCAN: "HDBSCAN cluster sizes only (no distance threshold to tune)",
    DBSCAN: "DBSCAN (the paper; eps depends on the projection's scale)",
    KNN: "None: k-NN neighbourhood-count likelihood, no clusters",
}
_NOISE_LABELS = {
    NOISE_NEAREST: "Nearest: each noise image joins its nearest image's cluster (default)",
    NOISE_SINGLETON: "Singleton: each noise image is a cluster of one (rarest)",
    NOISE_CLUSTER: "Cluster: all noise images form one more cluster (authors' code)",
}
#: how the form names ``views=None``
NO_VIEWS = "none"
_VIEWS_LABELS = {
    mode: label + (" (default)" if mode == DEFAULT_VIEWS else "")
    for mode, label in {
        RANKED: "Ranked: rare in appearance, content or off-domain (default model's vectors)",
        CONTENT: "Content: rare in appearance or content (default model's vectors)",
        NO_VIEWS: "None: the whole vector only",
    }.items()
}


def _execute(
    operator: foo.Operator,
    samples: Any,
    params: dict,
    delegate: bool,
    delegation_target: str | None,
    target: bool = True,
) -> Any:
    """Run ``operator`` on ``samples``; ``target``: the operator asks for a view target."""
    dataset = fc.root_dataset(samples)
    view = samples.view()
    ctx = {"dataset": dataset, "view": view, "params": dict(params)}
    if target:  # the choices the App offers: "current view" only for a narrower view
        whole = view == dataset.view()
        ctx["params"]["view_target"] = ViewTarget.DATASET if whole else ViewTarget.CURRENT_VIEW
    return foo.execute_operator(
        operator.uri, ctx, request_delegation=delegate, delegation_target=delegation_target
    )


def _drain(gen: Generator[Any, None, Any]) -> Any:
    """Run a generator to its end; return its return value."""
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def _method_params(method: str | None, kind: str) -> dict:
    if kind == "projection":
        return dprojection.projection_params(None if method == NO_PROJECTION else method)
    return dclustering.clustering_params(method)


def _method_inputs(ctx: Any, inputs: types.Object, kind: str, method: str) -> dict:
    """One input per scalar parameter of a projection/clustering method.

    Inputs are named ``<method>__<parameter>`` so values typed for one method
    are not carried over to another. Returns the parameter values.
    """
    values = {}
    for key, default in _method_params(method, kind).items():
        name = f"{method}__{key}"
        label = f"{method} {key}"
        if isinstance(default, bool):
            inputs.bool(name, default=default, label=label)
        elif isinstance(default, int):
            inputs.int(name, default=default, label=label)
        elif isinstance(default, float):
            inputs.float(name, default=default, label=label)
        elif isinstance(default, str):
            inputs.str(name, default=default, label=label)
        else:
            continue
        values[key] = ctx.params.get(name, default)
    return values


def _method_kwargs(params: dict, kind: str, method: str) -> dict:
    """The method's kwargs from form values, updated by a ``<kind>_kwargs`` dict."""
    kwargs = {}
    for key in _method_params(method, kind):
        value = params.get(f"{method}__{key}")
        if value is not None:
            kwargs[key] = value
    kwargs.update(params.get(f"{kind}_kwargs") or {})
    return kwargs


def _default_source(params: dict, fields: list[str]) -> str:
    """Embeddings come from a field if one is named, or else if the target has one."""
    if params.get("embeddings"):
        return FIELD_SOURCE
    if params.get("model"):
        return MODEL_SOURCE
    return FIELD_SOURCE if fields else MODEL_SOURCE


def _summary(results: dequity.DequityResults, viz: str | None) -> dict:
    s = results.summary()
    config = results.config
    return {
        "run_key": s["run_key"],
        "num_samples": s["num_samples"],
        "num_missing": s["num_missing"],
        "num_clusters": s["num_clusters"],
        "noise_share": f"{s['noise_fraction']:.1%}",
        "weight_range": f"{s['min_weight']:.3f} to {s['max_weight']:.3f}",
        "num_objects": s.get("num_objects"),
        "fields": ", ".join(config.fields),
        "visualization": viz or "",
    }


def _operator_config(name: str, label: str, icon: str, **options: Any) -> foo.OperatorConfig:
    """An operator that runs now or delegated, with inputs that react to choices."""
    return foo.OperatorConfig(
        name=name,
        label=label,
        icon=icon,
        dynamic=True,
        allow_immediate_execution=True,
        allow_delegated_execution=True,
        **options,
    )


def _output_table(title: str, rows: list[tuple[str, str, str]]) -> types.Property:
    """A summary view of ``(kind, name, label)`` rows; ``obj`` rows show as JSON."""
    outputs = types.Object()
    for kind, name, label in rows:
        view = {"view": types.JSONView()} if kind == "obj" else {}
        getattr(outputs, kind)(name, label=label, **view)
    return types.Property(outputs, view=types.View(label=title))


def _summary_property() -> types.Property:
    return _output_table(
        "Dequity computed",
        [
            ("str", "run_key", "Run key"),
            ("int", "num_samples", "Samples scored"),
            ("int", "num_objects", "Objects scored (object runs)"),
            ("int", "num_missing", "Samples without an embedding"),
            ("int", "num_clusters", "Clusters"),
            ("str", "noise_share", "Noise share"),
            ("str", "weight_range", "Weight range"),
            ("str", "fields", "Fields written"),
            ("str", "visualization", "Embeddings panel brain key"),
        ],
    )


class ComputeDequity(foo.Operator):
    """Cluster images by appearance and store likelihoods and GFL weights."""

    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "compute_dequity",
            "Compute dequity",
            "balance",
            description="Find visually rare images and weight them up",
            execute_as_generator=True,
            default_choice_to_delegated=True,
        )

    def __call__(
        self,
        samples: Any,
        run_key: str = DEFAULT_RUN_KEY,
        *,
        embeddings: str | None = None,
        model: str | None = None,
        projection: str | None = DEFAULT_PROJECTION,
        projection_kwargs: dict | None = None,
        clustering: str = DEFAULT_CLUSTERING,
        clustering_kwargs: dict | None = None,
        noise: str = DEFAULT_NOISE,
        views: str | None = DEFAULT_VIEWS,
        eta: float = DEFAULT_ETA,
        gamma: float = DEFAULT_GAMMA,
        overwrite: bool = False,
        embeddings_field: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        group_field: str | None = None,
        collapse_near_duplicates: float | None = None,
        patches_field: str | None = None,
        delegate: bool = False,
        delegation_target: str | None = None,
    ) -> Any:
        """Run on ``samples`` (a dataset or view); see :func:`dequity.compute_dequity`.

        ``embeddings`` names a vector field; otherwise ``model`` (default
        :data:`dequity.defaults.DEFAULT_MODEL`) embeds the images, and ``embeddings_field``
        optionally stores them. ``patches_field`` scores each box of that
        ``Detections`` field instead of each image (the model embeds the
        crops). Returns the ``ExecutionResult``.
        """
        params = {
            "run_key": run_key,
            "overwrite": overwrite,
            "embeddings_source": FIELD_SOURCE if embeddings else MODEL_SOURCE,
            "embeddings": embeddings,
            "model": model or DEFAULT_MODEL,
            "embeddings_field": embeddings_field,
            "batch_size": batch_size,
            "projection": projection or NO_PROJECTION,
            "projection_kwargs": projection_kwargs or {},
            "clustering": clustering,
            "clustering_kwargs": clustering_kwargs or {},
            "noise": noise,
            "views": views or NO_VIEWS,
            "eta": eta,
            "gamma": gamma,
            "group_field": group_field,
            "collapse_near_duplicates": collapse_near_duplicates,
            "patches_field": patches_field,
        }
        return _execute(self, samples, params, delegate, delegation_target)

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Compute dequity on")
        target = ctx.target_view()

        overwrite = bool(ctx.params.get("overwrite", False))
        new_run_key_input(ctx, inputs, target, overwrite=overwrite, default=free_run_key(target))
        inputs.bool(
            "overwrite",
            default=False,
            label="Overwrite",
            description="Replace an existing dequity run with this key",
        )

        patches_field = _patches_inputs(ctx, inputs, target)
        if patches_field:
            _model_inputs(inputs)
        else:
            self._embeddings_inputs(ctx, inputs, target)

        inputs.view("method_header", types.Header(label="Projection and clustering", divider=True))
        projection = ctx.params.get("projection", DEFAULT_PROJECTION)
        proj_prop = dropdown(
            inputs, "projection", _PROJECTION_LABELS, default=DEFAULT_PROJECTION, label="Projection"
        )
        if projection in _PROJECTION_LABELS:
            _method_inputs(ctx, inputs, "projection", projection)
            self._check_kwargs(ctx, proj_prop, "projection", projection)
        clustering = ctx.params.get("clustering", DEFAULT_CLUSTERING)
        clus_prop = dropdown(
            inputs, "clustering", _CLUSTERING_LABELS, default=DEFAULT_CLUSTERING, label="Clustering"
        )
        if clustering in _CLUSTERING_LABELS:
            _method_inputs(ctx, inputs, "clustering", clustering)
            self._check_kwargs(ctx, clus_prop, "clustering", clustering)
        dropdown(
            inputs,
            "noise",
            _NOISE_LABELS,
            default=DEFAULT_NOISE,
            label="Noise policy",
            description="How images the clustering calls noise count in the likelihood",
        )
        dropdown(
            inputs,
            "views",
            _VIEWS_LABELS,
            default=DEFAULT_VIEWS,
            label="Views",
            description="Rare in any view: with the default model, score what an image shows "
            "and how it looks, and keep the rarer",
        )

        if not patches_field:
            _grouping_inputs(inputs, target)

        inputs.view("gfl_header", types.Header(label="Generalized Focal Loss", divider=True))
        weights = gfl_inputs(ctx, inputs)
        if weights is not None:
            traces, layout = plots.weight_curve(*weights)
            inputs.plot(
                "weight_curve",
                label="W(p)",
                data=traces,
                layout=layout,
                config={"displayModeBar": False},
            )
        return types.Property(inputs, view=types.View(label="Compute dequity"))

    def _embeddings_inputs(self, ctx: Any, inputs: types.Object, target: Any) -> None:
        inputs.view("emb_header", types.Header(label="Embeddings", divider=True))
        fields = vector_fields(target)
        default_source = _default_source(ctx.params, fields)
        source_view = types.RadioGroup(orientation="horizontal")
        source_view.add_choice(FIELD_SOURCE, label="Existing vector field")
        source_view.add_choice(MODEL_SOURCE, label="Compute with a model")
        inputs.enum(
            "embeddings_source",
            source_view.values(),
            default=default_source,
            label="Embeddings source",
            view=source_view,
        )
        source = ctx.params.get("embeddings_source", default_source)

        if source == FIELD_SOURCE:
            prop = dropdown(
                inputs,
                "embeddings",
                fields,
                default=fields[0] if fields else None,
                label="Vector field",
                description="Field of embedding vectors, e.g. from compute_embeddings",
            )
            field = ctx.params.get("embeddings", fields[0] if fields else None)
            problem = None
            if not fields and field is None:
                problem = "this collection has no vector field; choose 'Compute with a model'"
            elif field is not None:
                try:
                    validate_embeddings_field(target, field)
                except dequity.DequityError as e:
                    problem = str(e)
            if problem:
                prop.invalid = True
                prop.error_message = problem
            return

        _model_inputs(inputs, with_batch_size=False)
        store = inputs.str(
            "embeddings_field",
            label="Store embeddings in field",
            description="Optional: keep the computed embeddings for later runs",
        )
        name = ctx.params.get("embeddings_field")
        if name:
            if not str(name).isidentifier():
                store.invalid = True
                store.error_message = f"field name must be an identifier, got {name!r}"
            elif fc.root_dataset(target).has_sample_field(name):
                try:
                    validate_embeddings_field(target, name)
                except dequity.DequityError as e:
                    store.invalid = True
                    store.error_message = str(e)
        inputs.int("batch_size", default=DEFAULT_BATCH_SIZE, min=1, label="Batch size")

    @staticmethod
    def _check_kwargs(ctx: Any, prop: Any, kind: str, method: str) -> None:
        kwargs = _method_kwargs(ctx.params, kind, method)
        try:
            if kind == "projection":
                dprojection.projection_params(None if method == NO_PROJECTION else method, kwargs)
            else:
                dclustering.clustering_params(method, kwargs)
        except (dequity.DequityError, TypeError) as e:
            prop.invalid = True
            prop.error_message = str(e)

    def execute(self, ctx: Any) -> Any:
        gen = self._run(ctx)
        return _drain(gen) if ctx.delegated else gen

    def _run(self, ctx: Any) -> Generator[Any, None, dict]:
        p = ctx.params
        target = ctx.target_view()
        projection = p.get("projection", DEFAULT_PROJECTION)
        clustering = p.get("clustering", DEFAULT_CLUSTERING)
        kwargs: dict[str, Any] = {
            "projection": None if projection == NO_PROJECTION else projection,
            "projection_kwargs": _method_kwargs(p, "projection", projection),
            "clustering": clustering,
            "clustering_kwargs": _method_kwargs(p, "clustering", clustering),
            "noise": p.get("noise", DEFAULT_NOISE),
            "views": None if p.get("views") == NO_VIEWS else p.get("views", DEFAULT_VIEWS),
            "eta": float(p.get("eta", DEFAULT_ETA)),
            "gamma": float(p.get("gamma", DEFAULT_GAMMA)),
            "overwrite": bool(p.get("overwrite", False)),
            "group_field": p.get("group_field") or None,
            "collapse_near_duplicates": p.get("collapse_near_duplicates") or None,
        }
        labels = ["Writing fields"]
        source = p.get("embeddings_source") or _default_source(p, vector_fields(target))
        if p.get("patches_field"):
            kwargs["patches_field"] = p["patches_field"]
            kwargs["group_field"] = kwargs["collapse_near_duplicates"] = None
            source = MODEL_SOURCE
        if source == FIELD_SOURCE:
            kwargs["embeddings"] = p.get("embeddings") or vector_fields(target)[0]
        else:
            kwargs["model"] = p.get("model") or DEFAULT_MODEL
            if not p.get("patches_field"):
                kwargs["embeddings_field"] = p.get("embeddings_field") or None
            kwargs["batch_size"] = int(p.get("batch_size") or DEFAULT_BATCH_SIZE)
            kwargs["num_workers"] = None if ctx.delegated else 0
            labels = ["Embedding images", "Writing fields"]

        run_key = p["run_key"]
        results = yield from run_with_progress(
            ctx,
            lambda progress: dequity.compute_dequity(target, run_key, progress=progress, **kwargs),
            labels,
        )
        msg = report(ctx, "Storing the 2-D visualization")
        if msg is not None:
            yield msg
        viz = store_visualization(results)
        summary = _summary(results, viz)
        if not ctx.delegated:
            yield ctx.ops.show_output(_summary_property().to_json(), summary)
            yield ctx.trigger("reload_dataset")
        return summary

    def resolve_output(self, ctx: Any) -> types.Property | None:
        return _summary_property() if ctx.results else None


def _model_inputs(inputs: types.Object, with_batch_size: bool = True) -> None:
    """The embedding model (and batch size) inputs."""
    choices = types.AutocompleteView(allow_user_input=True, allow_duplicates=False)
    for name, label in MODELS.items():
        choices.add_choice(name, label=label)
    inputs.str(
        "model",
        default=DEFAULT_MODEL,
        label="Model",
        description=(
            "efficientnet-lite0 works offline; 'clip:<arch>@<tag or checkpoint>' "
            "loads an open_clip image encoder"
        ),
        view=choices,
    )
    if with_batch_size:
        inputs.int("batch_size", default=DEFAULT_BATCH_SIZE, min=1, label="Batch size")


def _patches_inputs(ctx: Any, inputs: types.Object, target: Any) -> str | None:
    """Images or the objects of a Detections field; returns the chosen field, if any."""
    fields = detections_fields(target)
    if not fields:
        return None
    inputs.view("scope_header", types.Header(label="Images or objects", divider=True))
    dropdown(
        inputs,
        "patches_field",
        fields,
        required=False,
        label="Score the objects of",
        description="Leave empty to score images; pick a Detections field to give every box "
        "its own likelihood and weight (the model embeds each box's crop)",
    )
    field = ctx.params.get("patches_field")
    return field if field in fields else None


def _grouping_inputs(inputs: types.Object, target: Any) -> None:
    """Optional scene field, or near-duplicate collapsing, for video-shaped data."""
    inputs.view("group_header", types.Header(label="Scenes and video", divider=True))
    fields = [
        name
        for name, field in target.get_field_schema().items()
        if isinstance(field, GROUP_FIELD_TYPES) and name not in ("id", "filepath")
    ]
    dropdown(
        inputs,
        "group_field",
        fields,
        required=False,
        label="Group field",
        description="Count each scene / sequence / drive once (e.g. scene_id)",
    )
    inputs.float(
        "collapse_near_duplicates",
        required=False,
        min=0.01,
        max=1.0,
        label="Collapse near-duplicate frames",
        description="Without a group field: count runs of consecutive frames at least this "
        "similar (cosine, e.g. 0.8) once",
    )


class UpdateDequity(foo.Operator):
    """Give a run's new samples values from its stored fit, without refitting."""

    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="update_dequity",
            label="Update dequity run with new samples",
            description="New samples get clusters, likelihoods and weights without a refit",
            icon="add_circle",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def __call__(
        self,
        samples: Any,
        run_key: str = DEFAULT_RUN_KEY,
        *,
        delegate: bool = False,
        delegation_target: str | None = None,
    ) -> Any:
        """Update run ``run_key`` of ``samples``' dataset; see :func:`dequity.update_dequity`."""
        params = {"run_key": run_key}
        return _execute(self, samples, params, delegate, delegation_target, target=None)

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        run_key = existing_run_input(ctx, inputs, updatable=True)
        if run_key is not None:
            results = dequity.load_dequity_results(ctx.dataset, run_key)
            field = results.config.likelihood_field
            pending = len(ctx.dataset.load_run_view(run_key).exists(field, False))
            inputs.view(
                "pending",
                types.Notice(label=f"{pending} samples of the run's view have no value yet"),
            )
        return types.Property(inputs, view=types.View(label="Update dequity run"))

    def execute(self, ctx: Any) -> Any:
        gen = self._run(ctx)
        return _drain(gen) if ctx.delegated else gen

    def _run(self, ctx: Any) -> Generator[Any, None, dict]:
        run_key = ctx.params["run_key"]
        before = len(dequity.load_dequity_results(ctx.dataset, run_key).sample_ids)
        results = yield from run_with_progress(
            ctx,
            lambda progress: dequity.update_dequity(
                ctx.dataset, run_key, progress=progress, num_workers=None if ctx.delegated else 0
            ),
            ["Embedding images", "Writing fields"],
        )
        added = len(results.sample_ids) - before
        out = {"run_key": run_key, "added": added, "num_samples": len(results.sample_ids)}
        if added:
            msg = report(ctx, "Storing the 2-D visualization")
            if msg is not None:
                yield msg
            store_visualization(results)
        if not ctx.delegated:
            yield ctx.ops.show_output(self._output().to_json(), out)
            yield ctx.trigger("reload_dataset")
        return out

    def resolve_output(self, ctx: Any) -> types.Property | None:
        return self._output() if ctx.results else None

    @staticmethod
    def _output() -> types.Property:
        outputs = types.Object()
        outputs.str("run_key", label="Run key")
        outputs.int("added", label="New samples added")
        outputs.int("num_samples", label="Samples in the run")
        return types.Property(outputs, view=types.View(label="Run updated"))


class ReweightDequity(foo.Operator):
    """Recompute a run's weights for new eta and gamma (clusters are kept)."""

    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "reweight_dequity",
            "Reweight dequity run",
            "tune",
            description="Change eta and gamma of a dequity run; only the weight field changes",
        )

    def __call__(
        self,
        samples: Any,
        run_key: str,
        eta: float,
        gamma: float,
        *,
        delegate: bool = False,
        delegation_target: str | None = None,
    ) -> Any:
        """Reweight run ``run_key`` of ``samples``' dataset; see ``DequityResults.reweight``."""
        params = {"run_key": run_key, "eta": eta, "gamma": gamma}
        return _execute(self, samples, params, delegate, delegation_target, target=False)

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        run_key = existing_run_input(ctx, inputs, updatable=True)
        if run_key is not None:
            results = dequity.load_dequity_results(ctx.dataset, run_key)
            cfg = results.config
            inputs.view(
                "current",
                types.Notice(label=f"Current: eta={cfg.eta:g}, gamma={cfg.gamma:g}"),
            )
            weights = gfl_inputs(ctx, inputs, cfg.eta, cfg.gamma)
            if weights is not None:
                curve, curve_layout = plots.weight_curve(*weights, results.likelihoods)
                inputs.plot(
                    "weight_curve",
                    label="W(p)",
                    data=curve,
                    layout=curve_layout,
                    config={"displayModeBar": False},
                )
                new = dequity.gfl_weight(results.likelihoods, *weights)
                hist, hist_layout = plots.histogram(new, "Resulting weights")
                inputs.plot(
                    "weight_histogram",
                    label="Weights",
                    data=hist,
                    layout=hist_layout,
                    config={"displayModeBar": False},
                )
        return types.Property(inputs, view=types.View(label="Reweight dequity run"))

    def execute(self, ctx: Any) -> dict:
        run_key = ctx.params["run_key"]
        eta, gamma = float(ctx.params["eta"]), float(ctx.params["gamma"])
        results = dequity.load_dequity_results(ctx.dataset, run_key)
        progress = None
        if ctx.delegated:
            progress = lambda pb: ctx.set_progress(  # noqa: E731
                progress=pb.progress, label="Writing weights"
            )
        weights = results.reweight(eta, gamma, progress=progress)
        if not ctx.delegated:
            ctx.trigger("reload_dataset")
        return {
            "run_key": run_key,
            "weight_field": results.config.weight_field,
            "eta": eta,
            "gamma": gamma,
            "weight_range": f"{weights.min():.3f} to {weights.max():.3f}",
        }

    def resolve_output(self, ctx: Any) -> types.Property:
        return _output_table(
            "Weights updated",
            [
                ("str", "run_key", "Run key"),
                ("str", "weight_field", "Weight field"),
                ("float", "eta", "eta"),
                ("float", "gamma", "gamma"),
                ("str", "weight_range", "Weight range"),
            ],
        )


class GetDequityInfo(foo.Operator):
    """Show a dequity run's configuration and summary."""

    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config("get_dequity_info", "Get dequity run info", "info")

    def __call__(self, samples: Any, run_key: str, *, delegate: bool = False) -> Any:
        """Info about run ``run_key``; the dict is in the result's ``.result``."""
        return _execute(self, samples, {"run_key": run_key}, delegate, None, target=False)

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        existing_run_input(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Get dequity run info"))

    def execute(self, ctx: Any) -> dict:
        run_key = ctx.params["run_key"]
        info = ctx.dataset.get_run_info(run_key)
        results = dequity.load_dequity_results(ctx.dataset, run_key)
        summary = results.summary()
        summary["cluster_sizes"] = {str(k): v for k, v in summary["cluster_sizes"].items()}
        config = {k: v for k, v in info.config.serialize().items() if v is not None}
        return {
            "run_key": run_key,
            "timestamp": info.timestamp.isoformat(sep=" ", timespec="seconds"),
            "version": info.version,
            "config": config,
            "summary": summary,
        }

    def resolve_output(self, ctx: Any) -> types.Property:
        return _output_table(
            "Dequity run info",
            [
                ("str", "run_key", "Run key"),
                ("str", "timestamp", "Created"),
                ("str", "version", "FiftyOne version"),
                ("obj", "config", "Config"),
                ("obj", "summary", "Summary"),
            ],
        )


class RenameDequityRun(foo.Operator):
    """Rename a dequity run, its fields and its visualization."""

    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config("rename_dequity_run", "Rename dequity run", "edit")

    def __call__(
        self, samples: Any, run_key: str, new_run_key: str, *, delegate: bool = False
    ) -> Any:
        """Rename ``run_key`` to ``new_run_key``; see :func:`dequity.rename_dequity_run`."""
        params = {"run_key": run_key, "new_run_key": new_run_key}
        return _execute(self, samples, params, delegate, None, target=False)

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        if existing_run_input(ctx, inputs) is not None:
            new_run_key_input(ctx, inputs, ctx.dataset, name="new_run_key", label="New run key")
        return types.Property(inputs, view=types.View(label="Rename dequity run"))

    def execute(self, ctx: Any) -> dict:
        old, new = ctx.params["run_key"], ctx.params["new_run_key"]
        problem = run_key_problem(ctx.dataset, new)
        if problem:
            raise dequity.DequityError(problem)
        dequity.rename_dequity_run(ctx.dataset, old, new)
        rename_visualization(ctx.dataset, old, new)
        if not ctx.delegated:
            ctx.trigger("reload_dataset")
        return {"run_key": new}


class DeleteDequityRun(foo.Operator):
    """Delete a dequity run, the fields it wrote and its visualization."""

    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config("delete_dequity_run", "Delete dequity run", "delete")

    def __call__(self, samples: Any, run_key: str, *, delegate: bool = False) -> Any:
        """Delete ``run_key`` and its fields; see :func:`dequity.delete_dequity_run`."""
        return _execute(self, samples, {"run_key": run_key}, delegate, None, target=False)

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        run_key = existing_run_input(ctx, inputs)
        if run_key is not None:
            fields = dequity.load_dequity_results(ctx.dataset, run_key).config.fields
            inputs.view(
                "warning",
                types.Warning(
                    label=f"This deletes run '{run_key}' and the fields {', '.join(fields)}"
                ),
            )
        return types.Property(inputs, view=types.View(label="Delete dequity run"))

    def execute(self, ctx: Any) -> dict:
        run_key = ctx.params["run_key"]
        dequity.delete_dequity_run(ctx.dataset, run_key)
        delete_visualization(ctx.dataset, run_key)
        if not ctx.delegated:
            ctx.trigger("reload_dataset")
        return {"deleted": run_key}


class OpenObjectPatches(foo.Operator):
    """Show an object run's boxes as patches, rarest first."""

    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="open_object_patches",
            label="Show dequity object patches, rarest first",
            icon="crop",
            dynamic=True,
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        run_key = existing_run_input(ctx, inputs)
        if run_key is not None:
            config = dequity.load_dequity_results(ctx.dataset, run_key).config
            if getattr(config, "patches_field", None) is None:
                inputs.view(
                    "not_objects",
                    types.Error(label=f"Run '{run_key}' scores images; choose an object run"),
                )
        return types.Property(inputs, view=types.View(label="Object patches, rarest first"))

    def execute(self, ctx: Any) -> dict:
        view = object_patches_view(ctx.dataset, ctx.params["run_key"])
        ctx.ops.set_view(view=view)
        return {"num_patches": len(view)}


OPERATORS = (
    ComputeDequity,
    UpdateDequity,
    ReweightDequity,
    GetDequityInfo,
    RenameDequityRun,
    DeleteDequityRun,
    OpenObjectPatches,
)
