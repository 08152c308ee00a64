"""Embeddings on a Ray cluster, for datasets too large for one machine.

:func:`embed_with_ray` embeds every image of a FiftyOne collection with Ray
Data: the sample ids and filepaths go to a pool of model actors (one per
worker, each loading the model once and decoding its own images), and the
vectors come back to the caller in the collection's order. The result is an
:class:`dequity.sources.embeddings.Embeddings`, so the rest of the pipeline (projection,
clustering, the bulk write of the fields) runs as usual on the driver.

Requires the ``ray`` extra: ``pip install 'dequity[ray]'``. Every worker needs
dequity installed and must be able to read the images at their filepaths
(a shared filesystem or the same paths on every node).

Example::

    import fiftyone as fo, dequity
    from dequity.sources.ray import embed_with_ray

    ds = fo.load_dataset("kitti")
    emb = embed_with_ray(ds, "efficientnet-lite0", num_workers=8, address="auto")
    view = ds.exclude(emb.missing_ids)       # unreadable images get no weight
    dequity.compute_dequity(view, embeddings=emb.vectors)
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np

from dequity.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL
from dequity.errors import DequityError
from dequity.pipeline.params import Integer
from dequity.sources.embeddings import Embeddings, validate_vectors
from dequity.sources.shards import SHARD_ROWS, SUFFIX, Shards, shard_table

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'dequity[ray]'"
_MAX_BATCHES_PER_BLOCK = 8
_KNOWN_NAMES = tuple(
    f"efficientnet-lite{v}{suffix}" for v in range(3) for suffix in ("", "-layers")
)


def embed_with_ray(
    samples: Any,
    model: Any = DEFAULT_MODEL,
    *,
    num_workers: int = 2,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_cpus_per_worker: float = 1,
    num_gpus_per_worker: float = 0,
    address: str | None = None,
    skip_failures: bool = True,
) -> Embeddings:
    """Embed the images of ``samples`` in parallel on a Ray cluster.

    Args:
        samples: a FiftyOne dataset or view.
        model: any model :func:`dequity.load_model` accepts: a name
            (``"efficientnet-lite0"``, ``"clip:ViT-B-32@laion2b_s34b_b79k"``),
            a ``torch.nn.Module`` or a FiftyOne model (both must pickle).
        num_workers: model actors, each holding one copy of the model.
        batch_size: images per forward pass.
        num_cpus_per_worker: CPUs reserved per actor (also its torch threads).
        num_gpus_per_worker: GPUs per actor; above 0 the model runs on CUDA.
        address: None starts a local Ray instance, or reuses the connection
            of an initialised Ray (and ``RAY_ADDRESS`` if set); ``"auto"``
            joins the cluster this machine belongs to; ``"ray://host:10001"``
            connects through Ray Client.
        skip_failures: True leaves unreadable images out (listed in
            ``missing_ids``, with a warning); False raises
            :class:`DequityError` at the first one.

    Returns:
        :class:`~dequity.sources.embeddings.Embeddings`: float32 ``vectors`` whose rows
        follow ``sample_ids`` (the collection's order, minus ``missing_ids``).

    Example::

        emb = embed_with_ray(dataset, num_workers=4, num_gpus_per_worker=0.5,
                             address="auto")
        emb.vectors.shape   # (len(dataset) - len(emb.missing_ids), 1280)
    """
    ids, filepaths, embedded = _embedded(
        samples,
        model,
        num_workers=num_workers,
        batch_size=batch_size,
        num_cpus_per_worker=num_cpus_per_worker,
        num_gpus_per_worker=num_gpus_per_worker,
        address=address,
        skip_failures=skip_failures,
    )
    vectors, errors = _gather(embedded, len(ids), skip_failures)
    return _to_embeddings(ids, filepaths, vectors, errors)


def embed_to_shards(
    samples: Any,
    path: str | os.PathLike,
    model: Any = DEFAULT_MODEL,
    *,
    rows_per_shard: int = SHARD_ROWS,
    num_workers: int = 2,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_cpus_per_worker: float = 1,
    num_gpus_per_worker: float = 0,
    address: str | None = None,
    skip_failures: bool = True,
) -> Shards:
    """Embed the images of ``samples`` on Ray into Parquet shards in directory ``path``.

    The workers write the shards themselves (:mod:`dequity.sources.shards`), so
    the vectors never pass through this process; the likelihood stage on Ray
    reads them back (``compute_dequity(..., embeddings=shards,
    likelihood_backend="ray")``). On a cluster ``path`` must be storage every
    node sees (a shared filesystem, or ``s3://...``). Options as in
    :func:`embed_with_ray`.

    Example::

        shards = embed_to_shards(dataset, "/shared/kitti-shards", num_workers=8,
                                 address="auto")
        dequity.compute_dequity(dataset, embeddings=shards, likelihood_backend="ray")
    """
    Integer(1)("rows_per_shard", rows_per_shard)
    path = os.fspath(path)
    if os.path.isdir(path) and any(f.endswith(SUFFIX) for f in os.listdir(path)):
        raise DequityError(f"{path!r} already holds vector shards; pass an empty or new directory")
    ids, _, embedded = _embedded(
        samples,
        model,
        num_workers=num_workers,
        batch_size=batch_size,
        num_cpus_per_worker=num_cpus_per_worker,
        num_gpus_per_worker=num_gpus_per_worker,
        address=address,
        skip_failures=skip_failures,
    )
    rows = embedded.map_batches(_shard_rows, batch_format="numpy")
    try:
        rows.write_parquet(path, min_rows_per_file=rows_per_shard)
    except Exception as e:
        raise _as_dequity_error(e, skip_failures) from e
    shards = Shards.open(path)
    if shards.missing_ids:
        logger.warning(
            "%d samples could not be embedded (unreadable image?); they get no likelihood "
            "or weight; the shards' 'error' column says why",
            len(shards.missing_ids),
        )
    if shards.num_vectors == 0:
        raise DequityError(f"all {len(ids)} images are unreadable; nothing to cluster")
    return shards


def _embedded(
    samples: Any,
    model: Any,
    *,
    num_workers: int,
    batch_size: int,
    num_cpus_per_worker: float,
    num_gpus_per_worker: float,
    address: str | None,
    skip_failures: bool,
) -> tuple[list[str], list[str], Any]:
    """``(ids, filepaths, Ray dataset of the actors' output)`` for the images of ``samples``."""
    model = DEFAULT_MODEL if model is None else model
    _validate_args(model, num_workers, batch_size, num_cpus_per_worker, num_gpus_per_worker)
    ray = import_ray()
    ids, filepaths = samples.values(["id", "filepath"])
    if not ids:
        raise DequityError("the collection is empty; pass a dataset or view with samples")

    connect(ray, address)
    dataset = ray.data.from_items(
        [{"index": i, "id": s, "filepath": fp} for i, (s, fp) in enumerate(zip(ids, filepaths))],
        override_num_blocks=_num_blocks(len(ids), batch_size, num_workers),
    )
    actor = _actor_class(
        model=model,
        device="cuda" if num_gpus_per_worker > 0 else "cpu",
        num_threads=max(1, math.floor(num_cpus_per_worker)),
        skip_failures=skip_failures,
    )
    embedded = dataset.map_batches(
        actor,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=num_cpus_per_worker,
        num_gpus=num_gpus_per_worker,
    )
    return ids, filepaths, embedded


def _shard_rows(batch: dict[str, np.ndarray]) -> Any:
    """The actors' output as shard rows (:func:`dequity.sources.shards.shard_table`)."""
    return shard_table(batch["id"].tolist(), batch["embedding"], batch["error"].tolist())


def _actor_class(**options: Any) -> type:
    """An :class:`_EmbedActor` subclass carrying ``options``, shipped with the class."""
    return type("DequityEmbedActor", (_EmbedActor,), {"options": options})


class _EmbedActor:
    """A Ray Data actor: loads the model once, embeds batches of filepaths.

    ``options`` (set by :func:`_actor_class`): model, device, num_threads,
    skip_failures.
    """

    options: dict[str, Any] = {}

    def __init__(self) -> None:
        import torch

        from dequity.sources.models import load_model

        torch.set_num_threads(self.options["num_threads"])
        self.model = load_model(self.options["model"], device=self.options["device"])
        self.transforms = getattr(self.model, "transforms", None)
        self.ragged = bool(getattr(self.model, "ragged_batches", True))
        if self.transforms is not None:
            self.model.preprocess = False  # decoding and transforms happen here
        self.skip_failures = self.options["skip_failures"]
        self.dim: int | None = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs, ok, errors = [], [], []
        for path in batch["filepath"]:
            try:
                inputs.append(self._load(str(path)))
                ok.append(True)
                errors.append("")
            except Exception as e:  # any decoding error
                if not self.skip_failures:
                    raise DequityError(
                        f"could not read image {path}: {e}; fix or remove the image, "
                        "or pass skip_failures=True to leave unreadable images out"
                    ) from e
                ok.append(False)
                errors.append(f"{type(e).__name__}: {e}")
        good = self._embed(inputs) if inputs else None
        if good is not None:
            self.dim = good.shape[1]
        dim = self.dim if self.dim is not None else self._probe_dim()
        out = np.full((len(ok), dim), np.nan, dtype=np.float32)
        if good is not None:
            out[np.asarray(ok)] = good
        errors = np.asarray(errors, dtype=object)
        return {"index": batch["index"], "id": batch["id"], "embedding": out, "error": errors}

    def _load(self, path: str) -> Any:
        from dequity.sources.models import load_image

        img = load_image(path)
        return self.transforms(img) if self.transforms is not None else np.asarray(img)

    def _embed(self, inputs: list) -> np.ndarray:
        import torch

        if self.transforms is not None and not self.ragged:
            inputs = torch.stack(inputs)
        with self.model:
            vectors = self.model.embed_all(inputs)
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().cpu().numpy()
        return np.asarray(vectors, dtype=np.float32).reshape(len(inputs), -1)

    def _probe_dim(self) -> int:
        """Embedding size, from a blank image, for a batch without readable images."""
        from PIL import Image

        blank = Image.new("RGB", (64, 64), (128, 128, 128))
        item = self.transforms(blank) if self.transforms is not None else np.asarray(blank)
        self.dim = self._embed([item]).shape[1]
        return self.dim


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`DequityError` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise DequityError(
            f"running on Ray needs Ray Data, which is not installed ({e}); {INSTALL_HINT}"
        ) from e
    return ray


def _validate_args(
    model: Any, num_workers: int, batch_size: int, num_cpus: float, num_gpus: float
) -> None:
    if isinstance(model, str) and model not in _KNOWN_NAMES and not model.startswith("clip:"):
        raise DequityError(
            f"unknown model {model!r}; use 'efficientnet-lite0' (offline), "
            "'clip:ViT-B-32@laion2b_s34b_b79k' (open_clip), a torch module or a FiftyOne model"
        )
    Integer(1)("batch_size", batch_size)
    check_resources(num_workers, num_cpus, num_gpus)


def check_resources(num_workers: Any, num_cpus: Any, num_gpus: Any = 0) -> None:
    """Raise :class:`DequityError` unless the Ray workers' counts and shares are valid.

    Example::

        check_resources(num_workers=4, num_cpus=1, num_gpus=0.5)
    """
    Integer(1)("num_workers", num_workers)
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, int | float) or num_cpus <= 0:
        raise DequityError(f"num_cpus_per_worker must be > 0, got {num_cpus!r}")
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int | float) or num_gpus < 0:
        raise DequityError(f"num_gpus_per_worker must be >= 0, got {num_gpus!r}")


def connect(ray: Any, address: str | None) -> None:
    """Start or join Ray, unless this process is already connected.

    Example::

        connect(import_ray(), "auto")
    """
    if ray.is_initialized():
        if address is not None:
            logger.info("Ray is already initialised; ignoring address=%r", address)
        return
    try:
        ray.init(address=address)
    except Exception as e:  # ConnectionError, ValueError, RuntimeError...
        raise DequityError(
            f"could not start or join Ray at address={address!r}: {e}; start the cluster "
            "(`ray start --head`), pass address='auto' on one of its nodes, "
            "'ray://<head>:10001' from outside, or None for a local instance"
        ) from e


def _num_blocks(n: int, batch_size: int, num_workers: int) -> int:
    """Blocks of up to a few batches each, and enough to keep every worker busy."""
    batches = math.ceil(n / batch_size)
    return max(1, min(batches, max(2 * num_workers, math.ceil(batches / _MAX_BATCHES_PER_BLOCK))))


def _gather(embedded: Any, n: int, skip_failures: bool) -> tuple[np.ndarray, list[str]]:
    """Stream the actors' output back into one array in sample order."""
    vectors: np.ndarray | None = None
    errors = [""] * n
    try:
        for batch in embedded.iter_batches(batch_format="numpy", batch_size=None):
            index = batch["index"].astype(np.int64)
            rows = np.asarray(batch["embedding"], dtype=np.float32)
            if vectors is None:
                vectors = np.full((n, rows.shape[1]), np.nan, dtype=np.float32)
            vectors[index] = rows
            for i, error in zip(index.tolist(), batch["error"].tolist()):
                errors[i] = error
    except Exception as e:
        raise _as_dequity_error(e, skip_failures) from e
    if vectors is None:
        raise DequityError("Ray returned no embeddings; check the cluster's logs")
    return vectors, errors


def _as_dequity_error(error: Exception, skip_failures: bool) -> DequityError:
    """The DequityError raised in an actor, or a readable wrapper of a Ray failure."""
    raised = dequity_error_in(error)
    if raised is not None:
        return raised
    text = str(error).strip().splitlines()
    hint = "" if skip_failures else "; or pass skip_failures=True to leave unreadable images out"
    return DequityError(
        f"embedding on Ray failed: {text[-1] if text else type(error).__name__}; check that "
        f"every worker has dequity installed and can read the images{hint}"
    )


def dequity_error_in(error: Exception) -> DequityError | None:
    """The :class:`DequityError` that a Ray task raised, found in Ray's wrapping of it.

    Example::

        try:
            ray.get(refs)
        except Exception as e:
            raise dequity_error_in(e) or DequityError(f"Ray failed: {e}") from e
    """
    seen: BaseException | None = error
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, DequityError):
            message = str(seen).strip().splitlines()
            return DequityError(message[-1] if message else str(seen))
        cause = getattr(seen, "cause", None)
        seen = cause if isinstance(cause, BaseException) else seen.__cause__
    for line in reversed(str(error).strip().splitlines()):
        if "DequityError" in line:
            return DequityError(line.split("DequityError:", 1)[-1].strip())
    return None


def _to_embeddings(
    ids: list[str], filepaths: list[str], vectors: np.ndarray, errors: list[str]
) -> Embeddings:
    failed = [i for i, error in enumerate(errors) if error]
    for i in failed[:5]:
        logger.warning("could not embed %s: %s", filepaths[i], errors[i])
    if failed:
        logger.warning(
            "%d samples could not be embedded (unreadable image?); "
            "they get no likelihood or weight",
            len(failed),
        )
    if len(failed) == len(ids):
        raise DequityError(f"all {len(ids)} images are unreadable; nothing to cluster")
    present = np.ones(len(ids), dtype=bool)
    present[failed] = False
    return Embeddings(
        validate_vectors(vectors[present]),
        [ids[i] for i in np.flatnonzero(present)],
        [ids[i] for i in failed],
    )
