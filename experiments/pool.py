"""Fashion-MNIST training sets as FiftyOne datasets, embedded once and cached.

Every image a training set uses (a row of the training split, in its
style) is written once as a PNG and embedded once with dequity's default
model into one persistent pool dataset. A training set is then a clone of
its samples from the pool, on which :func:`dequity.compute_dequity` runs
as a user would run it: from the stored embeddings, without labels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dequity.defaults import DEFAULT_MODEL
from experiments.fashion_mnist import CLASSES, TrainingSet

POOL_NAME = "dequity-exp-fashion-mnist-pool"


def embedding_field(model: str = DEFAULT_MODEL) -> str:
    """The pool's field of embeddings by ``model`` (a new default embeds anew).

    Example::

        >>> embedding_field("efficientnet-lite0")
        'embedding_efficientnet_lite0'
    """
    return "embedding_" + model.replace("-", "_")


#: the pool's embeddings by dequity's default model
EMBEDDING_FIELD = embedding_field()


def cache_dir() -> Path:
    """Where images are cached (``$DEQUITY_EXPERIMENTS_CACHE`` overrides it)."""
    return Path(os.environ.get("DEQUITY_EXPERIMENTS_CACHE", "/tmp/dequity-experiments"))


def _pool() -> Any:
    import fiftyone as fo

    if fo.dataset_exists(POOL_NAME):
        return fo.load_dataset(POOL_NAME)
    pool = fo.Dataset(POOL_NAME, persistent=True)
    pool.add_sample_field("row", fo.IntField)
    pool.add_sample_field("inverted", fo.BooleanField)
    return pool


def _add_missing(pool: Any, keys: list[tuple[int, bool]], images: np.ndarray, labels: np.ndarray):
    """Writes the PNGs of images the pool lacks and adds them as samples."""
    import fiftyone as fo
    from PIL import Image

    have = set(zip(*pool.values(["row", "inverted"]))) if len(pool) else set()
    new = sorted(set(keys) - have)
    if not new:
        return
    folder = cache_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for row, inverted in new:
        path = folder / f"{row:05d}{'-inverted' if inverted else ''}.png"
        pixels = 255 - images[row] if inverted else images[row]
        Image.fromarray(pixels).convert("RGB").save(path)
        samples.append(
            fo.Sample(
                filepath=str(path),
                row=int(row),
                inverted=bool(inverted),
                style="inverted" if inverted else "normal",
                ground_truth=fo.Classification(label=CLASSES[int(labels[row])]),
            )
        )
    pool.add_samples(samples, progress=False)


def _embed_missing(pool: Any, model: str) -> None:
    """Embeds, with ``model``, the pool samples without its embeddings."""
    from dequity.sources.embeddings import from_model

    field = embedding_field(model)
    todo = pool.exists(field, False) if pool.has_sample_field(field) else pool
    if len(todo) == 0:
        return
    print(f"embedding {len(todo)} images with {model} (cached afterwards)")
    emb = from_model(todo, model=model, batch_size=64, progress=True)
    pool.set_values(field, dict(zip(emb.sample_ids, list(emb.vectors))), key_field="id")


def _keys(train_set: TrainingSet) -> list[tuple[int, bool]]:
    return [(int(r), bool(i)) for r, i in zip(train_set.rows, train_set.inverted)]


def prepare_pool(
    train_sets: list[TrainingSet],
    images: np.ndarray,
    labels: np.ndarray,
    models: tuple[str, ...] = (DEFAULT_MODEL,),
) -> None:
    """Adds and embeds with ``models``, in one pass each, every image of ``train_sets``
    that the pool lacks.

    Example::

        prepare_pool([long_tail_set(labels, 1000, seed=s) for s in range(5)], images, labels)
    """
    pool = _pool()
    _add_missing(pool, sorted({k for t in train_sets for k in _keys(t)}), images, labels)
    for model in models:
        _embed_missing(pool, model)


def training_dataset(train_set: TrainingSet, images: np.ndarray, labels: np.ndarray) -> Any:
    """A FiftyOne dataset of ``train_set``'s images, in its order, with embeddings.

    Fields: ``ground_truth`` (Classification), ``style``, ``row``,
    ``inverted`` and :data:`EMBEDDING_FIELD`. Replaces an earlier dataset of that name.

    Example::

        ds = training_dataset(long_tail_set(labels, 1000), images, labels)
        dequity.compute_dequity(ds, embeddings=EMBEDDING_FIELD)
    """
    import fiftyone as fo

    prepare_pool([train_set], images, labels)
    keys, pool = _keys(train_set), _pool()
    id_of = dict(zip(zip(*pool.values(["row", "inverted"])), pool.values("id")))
    name = f"dequity-exp-{train_set.name}"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    return pool.select([id_of[k] for k in keys], ordered=True).clone(name)


def values_in_order(dataset: Any, train_set: TrainingSet, field: str) -> np.ndarray:
    """``field`` of every image of ``train_set``, aligned with its rows."""
    rows, inverted, values = dataset.values(["row", "inverted", field])
    by_key = dict(zip(zip(rows, inverted), values))
    return np.array([by_key[(int(r), bool(i))] for r, i in zip(train_set.rows, train_set.inverted)])


def dequity_fields(
    dataset: Any, train_set: TrainingSet, fields: tuple[str, ...], **kwargs: Any
) -> tuple[np.ndarray, ...]:
    """Runs ``compute_dequity`` (key ``"dequity"``) and returns ``fields``, in set order.

    ``kwargs`` go to :func:`dequity.compute_dequity`; ``embeddings`` defaults
    to the stored embeddings of ``kwargs["model"]`` (default: dequity's
    default). ``fields`` are suffixes: ``"weight"``, ``"likelihood"``, ``"cluster"``.
    """
    import dequity

    kwargs.setdefault("embeddings", embedding_field(kwargs.pop("model", DEFAULT_MODEL)))
    dequity.compute_dequity(dataset, "dequity", overwrite=True, progress=False, **kwargs)
    return tuple(values_in_order(dataset, train_set, f"dequity_{f}") for f in fields)


def brain_likelihoods(
    dataset: Any, train_set: TrainingSet, model: str = "efficientnet-lite0"
) -> np.ndarray:
    """FiftyOne Brain's ``compute_uniqueness`` on ``model``'s embeddings, as ``1 - uniqueness``.

    The peer's scores in set order, read as likelihoods (a unique image is a
    rare one); the final features (``efficientnet-lite0``) serve it best on the
    fidelity benchmark's long tails.

    Example::

        p = brain_likelihoods(training_dataset(train_set, images, labels), train_set)
    """
    import fiftyone.brain as fob

    fob.compute_uniqueness(
        dataset, "brain_uniqueness", embeddings=embedding_field(model), progress=False
    )
    return 1.0 - values_in_order(dataset, train_set, "brain_uniqueness").astype(float)
