"""``update_dequity``: give new samples a run's values without refitting.

Datasets grow; re-clustering a million images for a day's new logs is
wasteful. A run stores its fit (:mod:`dequity.pipeline.fit`): the projection, a
reference subsample with cluster labels, the crowding radius and the cluster
sizes. An update embeds only the samples of the run's view that have no value
yet, places them with the fit, adds them to the cluster sizes, and rescales
every old sample's likelihood and weight to the new sizes, all in one commit.
When the new samples drift from the fit it warns and says to refit.

Old samples are not read or rewritten one by one. Their likelihoods move by
one factor per cluster (and per view that made them rare), so the database
rescales each such group in one server-side update
(:class:`dequity.store.commit.Rescaling`); only the new samples, and the few
old ones whose rarest view changes, are written by id. The run record is
stored packed (:mod:`dequity.store.packing`).
"""

from __future__ import annotations

import logging
import uuid
import warnings
from collections import Counter
from typing import Any

import numpy as np

from dequity.defaults import DEFAULT_RUN_KEY
from dequity.errors import DequityError
from dequity.pipeline import views as dv
from dequity.pipeline.fit import LikelihoodFit, check_updatable
from dequity.pipeline.score import points_2d
from dequity.sources.parse import parse_embeddings
from dequity.store.columns import embedding_column, run_columns
from dequity.store.commit import Rescaling
from dequity.store.dataset import Store, Writer, rerun_if_disconnected
from dequity.store.field_results import FieldBackedResults
from dequity.store.names import stamp_field
from dequity.store.runs import DequityResults

logger = logging.getLogger(__name__)


class DriftWarning(UserWarning):
    """New samples differ from the data a run was fitted on: recompute it."""


@rerun_if_disconnected
def update_dequity(
    samples: Any,
    run_key: str = DEFAULT_RUN_KEY,
    *,
    embeddings: str | np.ndarray | None = None,
    progress: Any = None,
    **embedding_options: Any,
) -> DequityResults:
    """Add the run's new samples to run ``run_key`` without refitting it.

    New samples are those of the run's view (the dataset, or the view the run
    was computed on, evaluated now) without a value in the run's likelihood
    field. Each gets the cluster of its nearest fitted sample, and its
    likelihood and weight from the run's method; the cluster sizes grow, and
    every old sample's likelihood and weight move with them. With no new
    samples nothing is written, and a message says so.

    Embeddings of new samples come from ``embeddings`` (a field, or an array
    aligned with the new samples in the dataset's order), else from the
    run's embeddings field or model, as the run recorded them.

    Raises :class:`DequityError` for a run that cannot place new samples:
    t-SNE projections, ``group_field`` runs, and runs computed before runs
    stored their fit (recompute those with ``overwrite=True``). Warns with
    :class:`DriftWarning` when many new samples lie far from every fitted
    sample or their cluster proportions differ from the fit's.

    Example::

        dataset.add_samples(todays_frames)
        dequity.update_dequity(dataset, "dequity")
        dataset.sort_by("dequity_weight", reverse=True)
    """
    store = Store.open(samples)
    results = _updatable_results(store, samples, run_key)
    dataset = store.dataset
    new = _new_samples(dataset, run_key, results)
    if len(new) == 0:
        logger.warning("run %r has no new samples: nothing to update", run_key)
        return results
    source = parse_embeddings(
        new,
        run_key,
        **_embeddings_request(results.config, embeddings),
        options=embedding_options,
    )
    with store.writing(run_key) as writer:
        emb = source.load(new, progress)
        fit = LikelihoodFit.from_dict(results.fit)
        points = fit.projection(emb.vectors)
        extension = fit.extend(
            np.asarray(results.labels, dtype=np.int64),
            np.asarray(results.views["image"] if results.views else results.likelihoods),
            points,
        )
        updated, factors = _extended_results(results, emb, extension, points, fit)
        _write(writer, results, updated, factors, emb, source.store_field, progress)
    for reason in extension.drift_warnings():
        warnings.warn(
            f"run {run_key!r}: {reason}; the fit may no longer describe the data: "
            "recompute it with compute_dequity(..., overwrite=True)",
            DriftWarning,
            stacklevel=2,
        )
    logger.info("dequity run %r: added %d samples", run_key, len(emb.sample_ids))
    return updated


def _updatable_results(store: Store, samples: Any, run_key: str) -> DequityResults:
    """Run ``run_key``'s results, or a :class:`DequityError` saying why it cannot be updated."""
    dataset = store.dataset
    if samples is not dataset:
        raise DequityError(
            "update_dequity takes the dataset, not a view: the run's own view decides "
            f"which samples are new; pass {dataset.name!r}'s dataset object"
        )
    results = store.results(run_key)
    check_config_updatable(run_key, results.config)
    if results.fit is None:
        raise DequityError(
            f"run {run_key!r} has no stored fit (it was computed before runs stored one); "
            "recompute it once with compute_dequity(..., overwrite=True), then update"
        )
    return results


def check_config_updatable(run_key: str, config: Any) -> None:
    """Raise :class:`DequityError` if the run that ``config`` describes cannot place new samples.

    Object runs, t-SNE projections and grouped runs cannot.

    Example::

        check_config_updatable("dequity", dataset.get_run_info("dequity").config)
    """
    if getattr(config, "patches_field", None) is not None:
        raise DequityError(
            f"run {run_key!r} scores the objects of {config.patches_field!r}; object runs "
            "cannot be updated: recompute it with compute_dequity(..., "
            f"patches_field={config.patches_field!r}, overwrite=True)"
        )
    check_updatable(config.projection)
    if config.group_field is not None or config.collapse_near_duplicates is not None:
        raise DequityError(
            f"run {run_key!r} counts groups; grouped runs cannot be updated yet. Recompute "
            f"it with compute_dequity(..., group_field=..., overwrite=True)"
        )


def list_updatable_runs(samples: Any) -> list[str]:
    """Keys of the dequity runs of ``samples``' dataset that :func:`update_dequity` can extend.

    The default run key comes first. Object runs, t-SNE projections and
    grouped runs are left out.

    Example::

        dequity.list_updatable_runs(dataset)   # ['dequity', 'clip']
    """
    store = Store.open(samples)
    updatable = []
    for run_key in store.runs():
        try:
            check_config_updatable(run_key, store.config(run_key))
        except DequityError:
            continue
        updatable.append(run_key)
    return sorted(updatable, key=lambda key: key != DEFAULT_RUN_KEY)


def _new_samples(dataset: Any, run_key: str, results: DequityResults) -> Any:
    """The samples of the run's view that the run has no record of (nor failed on)."""
    view = dataset.load_run_view(run_key)
    known = set(results.sample_ids) | set(results.missing_ids)
    candidates = view.exists(results.config.likelihood_field, False).values("id")
    return dataset.select([i for i in candidates if i not in known], ordered=True)


def _embeddings_request(config: Any, embeddings: str | np.ndarray | None) -> dict[str, Any]:
    """How to embed the new samples: as given, else as the run recorded it."""
    if embeddings is not None:
        return {"embeddings": embeddings}
    if config.model is not None:
        return {"model": config.model, "embeddings_field": config.embeddings_field}
    if config.embeddings_field is not None:
        return {"embeddings": config.embeddings_field}
    raise DequityError(
        "the run's embeddings were passed as an array, so new samples cannot be embedded "
        "the same way; pass embeddings= (a field or an array for the new samples)"
    )


def _extended_results(
    results: DequityResults, emb: Any, extension: Any, points: np.ndarray, fit: LikelihoodFit
) -> tuple[DequityResults, dict[str, np.ndarray]]:
    """The run's results with the new samples appended and the old likelihoods rescaled.

    A run with views (:mod:`dequity.pipeline.views`) extends them too, and each
    sample's likelihood is again the smallest of its views'. Also returns
    what each view's old values were multiplied by (views not listed kept them).
    """
    labels = results.labels + extension.labels.tolist() if results.labels else []
    xy = points_2d(points)
    likelihoods = np.concatenate([extension.old_likelihoods, extension.new_likelihoods])
    stored, views = fit.to_dict(), None
    factors = {dv.IMAGE: extension.old_factors}
    if results.views:
        extended = dv.extend_views(results.views, results.fit, likelihoods, emb.vectors)
        views = {name: v.tolist() for name, v in extended.values.items()}
        likelihoods = extended.likelihoods
        stored.update(extended.fits)
        factors.update(extended.old_factors)
    sample_ids = results.sample_ids + list(emb.sample_ids)
    if isinstance(results, FieldBackedResults):  # a run on Ray keeps its values in its fields
        sizes = Counter(labels) if labels else {}
        updated = FieldBackedResults(
            results.samples,
            results.config,
            results.key,
            fit=stored,
            sizes=dict(sizes),
            missing_ids=results.missing_ids + list(emb.missing_ids),
            backend=results.backend,
            values=(sample_ids, labels, likelihoods.tolist()),
        )
        return updated, factors
    updated = DequityResults(
        results.samples,
        results.config,
        results.key,
        sample_ids=sample_ids,
        labels=labels,
        likelihoods=likelihoods.tolist(),
        points=results.points + xy.tolist(),
        missing_ids=results.missing_ids + list(emb.missing_ids),
        fit=stored,
        views=views,
        backend=results.backend,
    )
    return updated, factors


def _write(
    writer: Writer,
    before: DequityResults,
    results: DequityResults,
    factors: dict[str, np.ndarray],
    emb: Any,
    store_field: str | None,
    progress: Any,
) -> None:
    """Write the new samples, rescale the old ones in the database, and save the run.

    The commit's ids are the new samples, then the old samples that the
    rescaling cannot move (:func:`rescaled_groups`), then the new samples that
    could not be embedded; the columns only new samples get (cluster, stored
    embedding) cover the first ids.
    """
    config = results.config
    config.updated_by_field = stamp_field(results.key)
    num_old = len(before.sample_ids)
    groups, by_id = rescaled_groups(before, results, factors)
    rows = np.concatenate([np.arange(num_old, len(results.sample_ids)), np.flatnonzero(by_id)])
    ids = [results.sample_ids[i] for i in rows] + list(emb.missing_ids)
    stamp = uuid.uuid4().hex
    values = {
        "likelihood": np.asarray(results.likelihoods)[rows].tolist(),
        "weight": results.weights[rows].tolist(),
        # written by id with the stamp, so that a repeated rescaling passes them by
        "updated_by": [stamp] * len(rows),
    }
    if config.uses_views:
        values["rare_by"] = np.asarray(results.rare_by)[rows].tolist()
    columns = run_columns(config, values, blanks=len(emb.missing_ids))
    if results.labels:
        columns += run_columns(config, {"cluster": results.labels[num_old:]})
    if store_field:
        columns.append(embedding_column(store_field, emb.vectors))
    rescaling = Rescaling(
        config.likelihood_field,
        config.weight_field,
        config.updated_by_field,
        stamp,
        config.eta,
        config.gamma,
        [(_match(config, label, view), factor) for (label, view), factor in groups.items()],
    )
    writer.commit(
        config,
        results,
        ids,
        columns,
        index=config.weight_field,
        progress=progress,
        rescaling=rescaling,
    )


def rescaled_groups(
    before: DequityResults, after: DequityResults, factors: dict[str, np.ndarray]
) -> tuple[dict[tuple[int | None, str | None], float], np.ndarray]:
    """How an update moves the old samples: ``(groups, by_id)``.

    ``groups`` maps ``(cluster, rare_by)`` (None where the run has no
    clusters or no views) to the factor that moves every old likelihood of
    the group, leaving out groups that do not move; ``by_id`` marks the old
    samples that no factor moves (their rarest view changed), to be written
    one by one. ``factors`` holds what each view's old values were multiplied
    by (views not listed are unchanged).

    Example::

        groups, by_id = rescaled_groups(results, updated, {"image": image_factors})
        groups   # {(3, 'appearance'): 0.98, ...}
    """
    num_old = len(before.sample_ids)
    old_p = np.asarray(before.likelihoods, np.float64)
    new_p = np.asarray(after.likelihoods, np.float64)[:num_old]
    factor = np.ones(num_old)
    if before.views:
        old_by = np.asarray(before.rare_by, dtype=object)
        same_view = old_by == np.asarray(after.rare_by, dtype=object)[:num_old]
        for value, view in dv.VIEW_OF.items():
            if view in factors:
                rows = old_by == value
                factor[rows] = factors[view][rows]
    else:
        old_by = np.full(num_old, None, dtype=object)
        same_view = np.ones(num_old, bool)
        factor = factors[dv.IMAGE].astype(np.float64)
    moved = same_view & (new_p == old_p * factor)
    labels = np.asarray(before.labels, np.int64) if before.labels else np.zeros(num_old, np.int64)
    views, view_codes = np.unique(old_by.astype(str), return_inverse=True)
    smallest = labels.min(initial=0)
    combined = (labels - smallest) * len(views) + view_codes.ravel()
    keys, group = np.unique(combined[moved], return_inverse=True)
    low = np.full(len(keys), np.inf)
    high = np.full(len(keys), -np.inf)
    np.minimum.at(low, group, factor[moved])
    np.maximum.at(high, group, factor[moved])
    by_id = ~moved
    uneven = np.flatnonzero(low != high)  # one factor per group, or each sample by id
    if len(uneven):
        by_id[np.flatnonzero(moved)[np.isin(group, uneven)]] = True
    groups: dict[tuple[int | None, str | None], float] = {}
    for key, f_low, f_high in zip(keys.tolist(), low.tolist(), high.tolist()):
        if f_low == f_high != 1.0:
            label, code = divmod(key, len(views))
            cluster = label + int(smallest) if before.labels else None
            groups[(cluster, None if views[code] == "None" else str(views[code]))] = f_low
    return groups, by_id


def _match(config: Any, label: int | None, rare_by: str | None) -> dict[str, Any]:
    """The database filter of one group of :func:`rescaled_groups`."""
    match: dict[str, Any] = {}
    if label is not None:
        match[config.cluster_field] = label
    if rare_by is not None:
        match[config.rare_by_field] = rare_by
    return match
