"""Shared form inputs, validation and progress plumbing of the dequity operators."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from typing import Any

import fiftyone as fo
import fiftyone.operators.types as types

import dequity
from dequity.pipeline.weights import DEFAULT_ETA, DEFAULT_GAMMA, validate_gfl_params
from dequity.sources.embeddings import validate_embeddings_field
from dequity.store import compat as fc

PLUGIN_NAME = "@dequity/dequity"
VIZ_SUFFIX = "_viz"


def uri(name: str) -> str:
    """Full URI of one of this plugin's operators or panels."""
    return f"{PLUGIN_NAME}/{name}"


def viz_key(run_key: str) -> str:
    """Brain key of the visualization stored alongside dequity run ``run_key``."""
    return f"{run_key}{VIZ_SUFFIX}"


def vector_fields(samples: Any) -> list[str]:
    """Top-level fields of ``samples`` that hold embedding vectors."""
    names = []
    for name in samples.get_field_schema():
        try:
            validate_embeddings_field(samples, name)
        except dequity.DequityError:
            continue
        names.append(name)
    return sorted(names)


def run_key_problem(samples: Any, run_key: Any, overwrite: bool = False) -> str | None:
    """Why ``run_key`` cannot name a new dequity run on ``samples``, or None."""
    try:
        dequity.validate_run_key(fc.root_dataset(samples), run_key, overwrite=overwrite)
    except dequity.DequityError as e:
        return str(e)
    return None


def free_run_key(samples: Any, base: str = "dequity") -> str:
    """``base``, or ``base_2``, ``base_3``... : the first key no run or field uses."""
    key, i = base, 1
    while run_key_problem(samples, key) is not None:
        i += 1
        key = f"{base}_{i}"
    return key


def new_run_key_input(
    ctx: Any,
    inputs: types.Object,
    samples: Any,
    name: str = "run_key",
    label: str = "Run key",
    overwrite: bool = False,
    default: str | None = None,
) -> str | None:
    """A run-key text input validated in the form; returns the key if usable."""
    prop = inputs.str(
        name,
        required=True,
        default=default,
        label=label,
        description=(
            "Name of the run (a Python identifier); the fields written are "
            "<key>_cluster, <key>_likelihood and <key>_weight"
        ),
    )
    run_key = ctx.params.get(name, default)
    problem = run_key_problem(samples, run_key, overwrite=overwrite)
    if problem is not None:
        prop.invalid = True
        prop.error_message = problem
        return None
    return run_key


def existing_run_input(
    ctx: Any,
    inputs: types.Object,
    name: str = "run_key",
    label: str = "Dequity run",
    updatable: bool = False,
) -> str | None:
    """A dropdown of the dataset's dequity runs; returns the chosen key if valid.

    ``updatable``: only the runs that ``update_dequity`` can extend, the
    default run first.
    """
    if updatable:
        runs = dequity.list_updatable_runs(ctx.dataset)
        missing = "This dataset has no dequity run that can be updated"
        hint = (
            "Object runs, t-SNE runs and grouped runs cannot place new samples; "
            "run 'Compute dequity' with PCA or no projection first"
        )
    else:
        runs = dequity.list_dequity_runs(ctx.dataset)
        missing, hint = "This dataset has no dequity runs", "Run 'Compute dequity' first"
    if not runs:
        prop = inputs.view("no_runs", types.Warning(label=missing, description=hint))
        prop.invalid = True
        return None
    prop = dropdown(inputs, name, runs, required=True, default=runs[0], label=label)
    run_key = ctx.params.get(name, runs[0])
    if run_key not in runs:
        prop.invalid = True
        prop.error_message = f"no dequity run {run_key!r} on this dataset; runs: {runs}"
        return None
    return run_key


def gfl_inputs(
    ctx: Any,
    inputs: types.Object,
    eta: float = DEFAULT_ETA,
    gamma: float = DEFAULT_GAMMA,
) -> tuple[float, float] | None:
    """eta and gamma inputs checked by the library; returns them if valid."""
    eta_prop = inputs.float(
        "eta",
        default=eta,
        label="eta",
        description="Weight floor: the most common images get eta / (eta + 1). Paper: 0.3-3",
    )
    gamma_prop = inputs.float(
        "gamma",
        default=gamma,
        label="gamma",
        description="Focusing: higher gamma lowers the weight of common images faster",
    )
    eta = ctx.params.get("eta", eta)
    gamma = ctx.params.get("gamma", gamma)
    ok = True
    for prop, args in ((eta_prop, (eta, 0.0)), (gamma_prop, (0.0, gamma))):
        try:
            validate_gfl_params(float(args[0]), float(args[1]))
        except (TypeError, ValueError) as e:
            prop.invalid = True
            prop.error_message = str(e)
            ok = False
    return (float(eta), float(gamma)) if ok else None


class _Done:
    pass


class Progress:
    """Turns FiftyOne progress bars into ``(fraction, label)`` updates.

    Each new progress bar is a new phase, named by ``labels`` (the last one
    repeats).
    """

    def __init__(self, labels: list[str], emit: Callable[[float | None, str], None]) -> None:
        self._labels = labels
        self._emit = emit
        self._bar_id: int | None = None
        self._phase = -1

    def label(self) -> str:
        return self._labels[min(max(self._phase, 0), len(self._labels) - 1)]

    def __call__(self, pb: Any) -> None:
        if id(pb) != self._bar_id:
            self._bar_id = id(pb)
            self._phase += 1
        fraction = getattr(pb, "progress", None)
        self._emit(None if fraction is None else float(fraction), self.label())

    def callback(self) -> Any:
        """The FiftyOne ``progress=`` argument: calls this at most every 0.5 s."""
        return fo.report_progress(self, dt=0.5)


def run_with_progress(
    ctx: Any, work: Callable[[Any], Any], labels: list[str]
) -> Generator[Any, None, Any]:
    """Run ``work(progress)`` and report its progress to the App.

    Delegated: progress goes to ``ctx.set_progress`` and nothing is yielded.
    Immediate: ``work`` runs in a thread while this generator yields
    ``ctx.ops.set_progress`` messages. Use as ``result = yield from ...``.
    """
    if ctx.delegated:
        tracker = Progress(labels, lambda f, label: ctx.set_progress(progress=f, label=label))
        return work(tracker.callback())

    updates: queue.Queue = queue.Queue()
    tracker = Progress(labels, lambda f, label: updates.put((f, label)))
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work(tracker.callback())
        except BaseException as e:  # re-raised in the caller's thread
            outcome["error"] = e
        finally:
            updates.put(_Done)

    worker = threading.Thread(target=target, name="dequity-operator", daemon=True)
    worker.start()
    yield ctx.ops.set_progress(label=labels[0], progress=None)
    while (item := updates.get()) is not _Done:
        fraction, label = item
        yield ctx.ops.set_progress(label=label, progress=fraction)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def report(ctx: Any, label: str) -> Any:
    """A progress label between phases: set directly (delegated) or as a message."""
    if ctx.delegated:
        ctx.set_progress(label=label)
        return None
    return ctx.ops.set_progress(label=label)


def dropdown(
    inputs: types.Object, name: str, choices: dict[str, str] | list[str], **kwargs: Any
) -> Any:
    """``inputs.enum`` shown as a dropdown; ``choices`` maps values to labels (or lists values).

    Example::

        dropdown(inputs, "run_key", dequity.list_dequity_runs(dataset), label="Run")
    """
    labels = choices if isinstance(choices, dict) else {c: c for c in choices}
    view = types.DropdownView()
    for value, label in labels.items():
        view.add_choice(value, label=label)
    return inputs.enum(name, view.values(), view=view, **kwargs)


def detections_fields(samples: Any) -> list[str]:
    """The ``Detections`` fields of ``samples``: what an object run can score.

    Example::

        detections_fields(dataset)   # ['ground_truth']
    """
    import fiftyone.core.labels as fol

    return [
        name
        for name, field in samples.get_field_schema().items()
        if getattr(field, "document_type", None) is fol.Detections
    ]


def object_patches_view(dataset: Any, run_key: str, cluster: int | None = None) -> Any:
    """The scored boxes of object run ``run_key`` as patches, rarest (highest weight) first.

    With ``cluster``, only that cluster's boxes. Raises
    :class:`dequity.DequityError` for an image run.

    Example::

        session.view = object_patches_view(dataset, "objects")
    """
    from fiftyone import ViewField as F

    import dequity

    config = dequity.load_dequity_results(dataset, run_key).config
    field = getattr(config, "patches_field", None)
    if field is None:
        raise dequity.DequityError(
            f"run {run_key!r} scores images, not objects; compute an object run with "
            "patches_field=<a Detections field> first"
        )
    patches = dataset.to_patches(field).exists(f"{field}.{config.weight_field}")
    if cluster is not None:
        patches = patches.match(F(f"{field}.{config.cluster_field}") == cluster)
    return patches.sort_by(f"{field}.{config.weight_field}", reverse=True)
