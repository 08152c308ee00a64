"""What a run scores: every image of a collection, or every box of a ``Detections`` field.

:func:`dequity.compute_dequity` follows one sequence for both; a target
supplies the steps that differ: what it records in the config, how many items
it scores, how it embeds them, and what it writes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dequity.errors import DequityError
from dequity.pipeline.score import Scored, Settings, score
from dequity.sources import crops
from dequity.sources import embeddings as de
from dequity.sources.groups import check_group_field, sample_groups
from dequity.sources.parse import LOCAL, EmbeddingSource, parse_embeddings
from dequity.store.columns import embedding_column, object_columns, run_columns
from dequity.store.dataset import Store, Writer
from dequity.store.fields import check_attributes_free
from dequity.store.names import field_names
from dequity.store.runs import DequityResults

logger = logging.getLogger(__name__)


class Target:
    """The steps shared by image and object runs: embed, score, write, in that order."""

    store: Store

    def run(
        self, writer: Writer, run_key: str, config: Any, settings: Settings, progress: Any
    ) -> DequityResults:
        """Embed, score and write the run as ``config`` and ``settings`` say; its results.

        Example::

            with store.writing("dequity") as writer:
                results = target.run(writer, "dequity", config, settings, progress=True)
        """
        emb, groups = self.embed(progress)
        results = run_results(self, run_key, config, score(emb.vectors, settings, groups), emb)
        self.write(writer, results, emb, progress)
        logger.info("dequity run %r: %s", run_key, _short_summary(results))
        return results


@dataclass
class ImageTarget(Target):
    """An image run: one value per sample, written to the samples' fields."""

    store: Store
    source: EmbeddingSource
    group_field: str | None = None
    collapse_near_duplicates: float | None = None

    @property
    def recorded(self) -> dict[str, Any]:
        """What the run's config records about the input."""
        return {
            "embeddings_field": self.source.recorded_field,
            "model": self.source.model_name,
            "group_field": self.group_field,
            "collapse_near_duplicates": self.collapse_near_duplicates,
        }

    @property
    def size(self) -> int:
        """How many items the run scores."""
        return len(self.store.samples)

    def check(self, run_key: str) -> None:
        """Raise :class:`DequityError` if the samples cannot take the run."""
        check_group_field(self.store.samples, self.group_field)

    def embed(self, progress: Any) -> tuple[de.Embeddings, np.ndarray | None]:
        """The vectors to score, and one group id per vector (or None)."""
        emb = self.source.load(self.store.samples, progress)
        groups = sample_groups(
            self.store.samples, emb, self.group_field, self.collapse_near_duplicates
        )
        return emb, groups

    def write(
        self, writer: Writer, results: DequityResults, emb: de.Embeddings, progress: Any
    ) -> None:
        """Write fields, index and run record, all or nothing; clear samples the run lost."""
        config, ids = results.config, emb.sample_ids
        old = self.store.config(results.key)
        explained_before = old is not None and old.uses_views
        cleared = replaced_samples(self.store, results.key, ids) + emb.missing_ids
        values = {
            "cluster": results.labels or [None] * len(ids),  # "knn" forms no clusters
            "likelihood": results.likelihoods,
            "weight": results.weights.tolist(),
        }
        if config.uses_views or explained_before:  # an overwrite leaves no old reason
            values["rare_by"] = results.rare_by or [None] * len(ids)
        columns = run_columns(config, values, blanks=len(cleared))
        if self.source.store_field:  # the first len(ids) samples: those with an embedding
            columns.append(embedding_column(self.source.store_field, emb.vectors))
        writer.commit(
            config, results, ids + cleared, columns, index=config.weight_field, progress=progress
        )
        clear_left_fields(writer, self.store, old, config)


def replaced_samples(store: Store, run_key: str, ids: Sequence[str]) -> list[str]:
    """Samples that the existing run ``run_key`` covers and a new run on ``ids`` does not.

    Example::

        cleared = replaced_samples(store, "dequity", emb.sample_ids) + emb.missing_ids
    """
    if store.config(run_key) is None:
        return []
    before = store.samples.load_run_results(run_key)
    return list(set(before.sample_ids + before.missing_ids) - set(ids))


def clear_left_fields(writer: Writer, store: Store, old: Any, config: Any) -> None:
    """After an image run replaced run ``old``: delete the old fields the new run does not own.

    A ``rare_by`` field that the commit emptied (the new run scores no views),
    and the old run's update stamps, which mean nothing to the new run. A kill
    before this leaves only empty values.

    Example::

        writer.commit(config, results, ids, columns)
        clear_left_fields(writer, store, old_config, config)
    """
    if old is not None and old.uses_views and not config.uses_views:
        writer.delete_field(config.rare_by_field)
    stamped = getattr(old, "updated_by_field", None)
    if stamped and store.dataset.has_sample_field(stamped):
        writer.delete_field(stamped)


@dataclass
class ObjectTarget(Target):
    """An object run: one value per box, written as attributes of its ``Detection``."""

    store: Store
    patches_field: str
    embeddings: str | np.ndarray | None
    model: Any
    model_name: str | None
    options: dict
    objects: crops.Objects
    object_ids: list[str] = field(default_factory=list)

    @property
    def recorded(self) -> dict[str, Any]:
        """What the run's config records about the input."""
        given = self.embeddings if isinstance(self.embeddings, str) else None
        return {
            "embeddings_field": given,
            "model": self.model_name if self.embeddings is None else None,
            "patches_field": self.patches_field,
        }

    @property
    def size(self) -> int:
        """How many items the run scores."""
        return len(self.objects.object_ids)

    def check(self, run_key: str) -> None:
        """Raise :class:`DequityError` if a run attribute holds other data."""
        names = [field_names(run_key)[role] for role in ("cluster", "likelihood", "weight")]
        check_attributes_free(self.store.samples, self.patches_field, run_key, names)

    def embed(self, progress: Any) -> tuple[de.Embeddings, None]:
        """One vector per usable box, with ``sample_ids`` naming the boxes' samples."""
        objs = self.objects
        emb = crops.object_embeddings(
            self.store.samples,
            self.patches_field,
            objs,
            self.embeddings,
            self.model if self.embeddings is None else None,
            progress=progress,
            **self.options,
        )
        sample_of = dict(zip(objs.object_ids, objs.sample_ids))
        self.object_ids = list(emb.sample_ids)
        return de.Embeddings(emb.vectors, [sample_of[i] for i in emb.sample_ids], []), None

    def write(
        self, writer: Writer, results: DequityResults, emb: de.Embeddings, progress: Any
    ) -> None:
        """Write the boxes' attributes, the samples' weights and the run record."""
        results.object_ids = self.object_ids
        results.fit = None  # update_dequity places images, not objects
        scope = list(self.objects.all_sample_ids)
        if self.store.config(results.key) is not None:
            scope += self.store.samples.load_run_results(results.key).sample_ids
        ids, columns, objects = object_columns(results.config, results, scope)
        writer.commit(
            results.config,
            results,
            ids,
            columns,
            index=results.config.weight_field,
            progress=progress,
            objects=objects,
        )


def _image_target(
    store: Store,
    run_key: str,
    embeddings: str | np.ndarray | None,
    model: Any,
    embeddings_field: str | None,
    backend: str,
    ray_options: dict | None,
    group_field: str | None,
    collapse_near_duplicates: float | None,
    options: dict,
) -> ImageTarget:
    """The target of an image run, its embeddings arguments checked."""
    source = parse_embeddings(
        store.samples,
        run_key,
        embeddings,
        model,
        embeddings_field=embeddings_field,
        backend=backend,
        ray_options=ray_options,
        options=options,
    )
    return ImageTarget(store, source, group_field, collapse_near_duplicates)


def _object_target(
    store: Store,
    run_key: str,
    patches_field: str,
    embeddings: str | np.ndarray | None,
    model: Any,
    embeddings_field: str | None,
    backend: str,
    ray_options: dict | None,
    group_field: str | None,
    collapse_near_duplicates: float | None,
    options: dict,
) -> ObjectTarget:
    """The target of an object run on ``patches_field``, its arguments checked."""
    samples = store.samples
    crops.check_patches_field(samples, patches_field)
    if group_field is not None or collapse_near_duplicates is not None:
        raise DequityError(
            "group_field and collapse_near_duplicates count samples, not objects; "
            "object runs (patches_field=...) do not support them: leave them unset"
        )
    if embeddings_field is not None:
        raise DequityError(
            "embeddings_field stores image embeddings; an object run does not store its "
            "crop embeddings: leave it unset (or pass embeddings= naming a Detection attribute)"
        )
    if backend != LOCAL or ray_options:
        raise DequityError("object runs embed crops locally; leave embedding_backend='local'")
    if embeddings is not None and model is not None:
        raise DequityError("pass either embeddings or model, not both")
    if (
        isinstance(embeddings, str)
        and samples.count(f"{patches_field}.detections.{embeddings}") == 0
    ):
        raise DequityError(
            f"no Detection of {patches_field!r} has an attribute {embeddings!r}; name a vector "
            "attribute of the boxes, pass an (n_boxes, d) array, or omit embeddings to "
            "embed the crops with model"
        )
    source = parse_embeddings(samples, run_key, None, model, options=options)
    objects = crops.usable_objects(samples, patches_field)
    return ObjectTarget(
        store,
        patches_field,
        embeddings,
        source.model,
        source.model_name,
        dict(source.options),
        objects,
    )


def target_for(
    store: Store, run_key: str, patches_field: str | None, **inputs: Any
) -> ImageTarget | ObjectTarget:
    """The target of a run: the images, or the boxes of ``patches_field``; ``inputs`` checked.

    Example::

        target = target_for(Store(dataset), "objects", "ground_truth", embeddings=None,
                            model=None, embeddings_field=None, backend="local",
                            ray_options=None, group_field=None,
                            collapse_near_duplicates=None, options={})
    """
    if patches_field is None:
        return _image_target(store, run_key, **inputs)
    return _object_target(store, run_key, patches_field, **inputs)


def run_results(
    target: ImageTarget | ObjectTarget,
    run_key: str,
    config: Any,
    scored: Scored,
    emb: de.Embeddings,
) -> DequityResults:
    """The run's results from what the stages scored; records the views' mode, if they were scored.

    Example::

        results = run_results(target, "dequity", config, score(emb.vectors, settings), emb)
    """
    config.views = scored.views_mode
    return DequityResults(
        target.store.samples,
        config,
        run_key,
        sample_ids=emb.sample_ids,
        labels=scored.labels.tolist(),
        likelihoods=scored.likelihoods.tolist(),
        points=scored.points.tolist(),
        missing_ids=emb.missing_ids,
        fit=scored.fit,
        views=scored.views,
        backend=config.build(),
    )


def _short_summary(results: DequityResults) -> str:
    """One log line from the results alone: right after a run, all its samples exist."""
    weights = results.weights
    count = f"{len(results.sample_ids)} samples"
    if results.is_object_run:
        count = f"{len(results.sample_ids)} objects of {len(set(results.sample_ids))} samples"
    return (
        f"{count}, {results.num_clusters} clusters, {results.noise_fraction:.1%} noise, "
        f"weights {weights.min():.3f}..{weights.max():.3f}"
    )
