"""Embeddings of a sample collection: from a field, an array or a model."""

from __future__ import annotations

import io
import logging
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from dequity.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, DEFAULT_PRECISION
from dequity.errors import DequityError
from dequity.sources.models import load_model
from dequity.store import compat as fc

logger = logging.getLogger(__name__)
_CHECK_ROWS = 65_536
_DECODE_CHUNK = 16_384


@dataclass
class Embeddings:
    """Embedding vectors and the ids of the samples they belong to.

    ``missing_ids`` are samples that have no embedding (an unreadable image
    skipped by the model, or an empty value in the embeddings field).
    """

    vectors: np.ndarray
    sample_ids: list[str]
    missing_ids: list[str]


def validate_vectors(vectors: Any, num_samples: int | None = None) -> np.ndarray:
    """Check that ``vectors`` is a finite ``(n, d)`` float array.

    Example::

        >>> validate_vectors([[0.0, 1.0], [1.0, 0.0]]).shape
        (2, 2)
    """
    kind = _NON_REAL.get(_dtype_kind(vectors))
    if kind is not None:
        raise DequityError(f"embeddings must be real numbers, got {kind} values")
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DequityError(
            "embeddings must be numeric vectors of one length; "
            f"got values that do not form an array ({e})"
        ) from e
    if array.ndim != 2 or array.shape[1] == 0:
        raise DequityError(f"embeddings must have shape (num_samples, dim), got {array.shape}")
    if num_samples is not None and array.shape[0] != num_samples:
        raise DequityError(
            f"got {array.shape[0]} embeddings for {num_samples} samples; pass "
            "one row per sample of the collection, in its order"
        )
    bad = np.concatenate(
        [
            ~np.isfinite(array[i : i + _CHECK_ROWS]).all(axis=1)
            for i in range(0, len(array), _CHECK_ROWS)
        ]
    )
    if bad.any():
        raise DequityError(
            f"{int(bad.sum())} embeddings contain NaN or inf (first at row "
            f"{int(np.argmax(bad))}); recompute them or drop those samples"
        )
    return array


_NON_REAL = {"b": "bool", "c": "complex", "U": "str", "S": "bytes"}


def _dtype_kind(vectors: Any) -> str:
    """The numpy kind of ``vectors`` (an array) or of its first row (a sequence)."""
    if isinstance(vectors, np.ndarray):
        return vectors.dtype.kind
    try:
        return np.asarray(vectors[0]).dtype.kind
    except (TypeError, IndexError, KeyError, ValueError):
        return "f"


def from_array(samples: Any, vectors: Any) -> Embeddings:
    """Embeddings given as an array aligned with ``samples``."""
    ids = samples.values("id")
    return Embeddings(validate_vectors(vectors, len(ids)), ids, [])


def validate_embeddings_field(samples: Any, field: str) -> None:
    """Raise unless ``field`` exists on ``samples`` and holds vectors."""
    import fiftyone.core.fields as fof

    schema = samples.get_field_schema()
    if field not in schema:
        raise DequityError(
            f"the collection has no field {field!r}; compute embeddings first "
            "(dataset.compute_embeddings(model, embeddings_field=...)) or "
            "pass model= to compute them"
        )
    kind = schema[field]
    is_list = isinstance(kind, fof.ListField) and isinstance(
        kind.field, (fof.FloatField, fof.IntField)
    )
    if not isinstance(kind, fof.VectorField) and not is_list:
        raise DequityError(
            f"field {field!r} is a {type(kind).__name__}, not a vector field; "
            "choose a field of embedding vectors"
        )


def from_field(samples: Any, field: str) -> Embeddings:
    """Embeddings read from a vector field; samples without one are missing.

    A ``VectorField`` whose vectors share one dtype and length is decoded in
    bulk from its stored bytes into one preallocated array while the cursor
    reads (:func:`decode_stored_vectors`); other fields go through
    FiftyOne's values.

    Example::

        emb = from_field(dataset, "embedding")
        emb.vectors.shape  # (number of samples with a vector, dim)
    """
    import fiftyone.core.fields as fof

    validate_embeddings_field(samples, field)
    why = f"have no value in field {field!r}"
    if isinstance(samples.get_field(field), fof.VectorField):
        decoded = decode_stored_vectors(fc.stored_rows(samples, field), len(samples))
        if decoded is not None:
            ids, vectors, present = decoded
            return _split_missing([str(i) for i in ids], vectors, why, present)
    ids, values = samples.values(["id", field])
    return _split_missing(ids, values, why)


def decode_stored_vectors(
    rows: Iterable[tuple[Any, Any]], expected: int = 0
) -> tuple[list, np.ndarray, np.ndarray] | None:
    """``(ids, vectors, present)`` from ``(id, stored value)`` rows, or None if they differ.

    Each stored value of a ``VectorField`` is a zlib-compressed ``.npy``
    file. When every one has the first's header (one dtype, one length),
    each is read straight from its bytes into one array, chunk by chunk in
    worker threads while ``rows`` is still being read (zlib releases the
    GIL). ``expected`` rows are preallocated. ``present`` marks the rows
    whose value was not None; ``vectors`` holds their vectors in order.

    Example::

        >>> import fiftyone.core.utils as fou
        >>> rows = [("a", fou.serialize_numpy_array(np.ones(3))), ("b", None)]
        >>> ids, v, ok = decode_stored_vectors(rows)
        >>> ids, v.tolist(), ok.tolist()
        (['a', 'b'], [[1.0, 1.0, 1.0]], [True, False])
    """
    ids: list = []
    present: list[bool] = []
    decoder: _Decoder | None = None
    chunk: list[bytes] = []
    workers = _usable_cores()
    with ThreadPoolExecutor(workers) as pool:
        for sample_id, value in rows:
            ids.append(sample_id)
            present.append(value is not None)
            if value is None:
                continue
            if decoder is None:
                decoder = _Decoder.of(value, expected, pool, workers)
                if decoder is None:
                    return None
            chunk.append(value)
            if len(chunk) == _DECODE_CHUNK:
                decoder.submit(chunk)
                chunk = []
        if decoder is None or not decoder.finish(chunk):
            return None
    return ids, decoder.vectors[: decoder.rows], np.array(present, dtype=bool)


class _Decoder:
    """Decodes stored vectors that share one ``.npy`` header into rows of one array.

    Chunks decode in ``pool`` of ``workers`` threads; at most two per worker
    wait, so the stored bytes held at once stay bounded. The array grows if
    more rows come than its capacity.
    """

    def __init__(
        self,
        header: bytes,
        dtype: np.dtype,
        dim: int,
        capacity: int,
        pool: ThreadPoolExecutor,
        workers: int,
    ) -> None:
        self.header, self.dtype, self.pool, self.workers = header, dtype, pool, workers
        self.size = len(header) + dtype.itemsize * dim
        self.vectors = np.empty((max(capacity, 1), dim), dtype=dtype)
        self.rows = 0
        self.pending: list[Future] = []
        self.ok = True

    @classmethod
    def of(
        cls, value: Any, capacity: int, pool: ThreadPoolExecutor, workers: int
    ) -> _Decoder | None:
        """A decoder for vectors stored like ``value``; None if it is no 1-d ``.npy``."""
        try:
            raw = zlib.decompress(value)
            template = np.load(io.BytesIO(raw))
        except (TypeError, ValueError, zlib.error):
            return None
        if template.ndim != 1 or not len(template):
            return None
        header = raw[: len(raw) - template.nbytes]
        return cls(header, template.dtype, len(template), capacity, pool, workers)

    def submit(self, chunk: list[bytes]) -> None:
        """Decode ``chunk`` into the next rows, in the pool."""
        start, self.rows = self.rows, self.rows + len(chunk)
        if self.rows > len(self.vectors):
            self._wait(0)  # no thread may write the old array once it is copied
            capacity = max(self.rows, 2 * len(self.vectors))
            grown = np.empty((capacity, self.vectors.shape[1]), dtype=self.dtype)
            grown[:start] = self.vectors[:start]
            self.vectors = grown
        self._wait(2 * self.workers)
        self.pending.append(self.pool.submit(self._decode, chunk, self.vectors[start : self.rows]))

    def finish(self, chunk: list[bytes]) -> bool:
        """Decode the last ``chunk`` and wait for all; whether every value matched."""
        self.submit(chunk)
        self._wait(0)
        return self.ok

    def _wait(self, most: int) -> None:
        while len(self.pending) > most:
            self.ok &= self.pending.pop(0).result()

    def _decode(self, chunk: list[bytes], out: np.ndarray) -> bool:
        try:
            raw = [zlib.decompress(value) for value in chunk]
        except (TypeError, zlib.error):
            return False
        if any(len(r) != self.size for r in raw):
            return False
        files = np.frombuffer(b"".join(raw), np.uint8).reshape(len(raw), self.size)
        start = len(self.header)
        if not (files[:, :start] == np.frombuffer(self.header, np.uint8)).all():
            return False
        out[:] = files[:, start:].view(self.dtype)
        return True


def from_model(
    samples: Any,
    model: Any = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    skip_failures: bool = True,
    device: str | None = None,
    progress: Any = None,
    chunk_size: int = 50_000,
    precision: str = DEFAULT_PRECISION,
) -> Embeddings:
    """Embed every image of ``samples`` with ``model`` (see :func:`load_model`).

    Batches are decoded by ``num_workers`` DataLoader workers while the model
    runs; the default (:func:`default_num_workers`) is 0 for a CPU model on up
    to 4 cores, where workers would only take cores from the forward pass.
    ``precision`` is :func:`load_model`'s (``"auto"``: float16 autocast on
    CUDA). With ``skip_failures=True`` an unreadable image is logged and left
    out; with ``False`` it raises :class:`DequityError`. Collections larger
    than ``chunk_size`` are embedded chunk by chunk into a temporary
    memory-mapped file, so the vectors never sit in RAM twice.

    Example::

        emb = from_model(dataset, "efficientnet-lite0-layers", batch_size=16)
        emb.vectors.shape  # (len(dataset), 1776)
    """
    fo_model = load_model(
        model if model is not None else DEFAULT_MODEL, device=device, precision=precision
    )
    if num_workers is None:
        num_workers = default_num_workers(fo_model)
    ids = samples.values("id")
    store: np.ndarray | None = None
    kept: list[str] = []
    missing: list[str] = []
    for start in range(0, len(ids), chunk_size):
        chunk_ids = ids[start : start + chunk_size]
        chunk = samples if len(ids) <= chunk_size else samples.select(chunk_ids, ordered=True)
        values = _embed(chunk, fo_model, batch_size, num_workers, skip_failures, progress)
        values = _retry_failed_batches(chunk, fo_model, chunk_ids, values)
        present = [i for i, v in enumerate(values) if v is not None]
        missing += [chunk_ids[i] for i, v in enumerate(values) if v is None]
        if not present:
            continue
        vectors = validate_vectors([values[i] for i in present])
        if len(ids) <= chunk_size:
            store = vectors
        elif store is None:
            store = np.memmap(
                tempfile.TemporaryFile(), np.float32, "w+", shape=(len(ids), vectors.shape[1])
            )
        if store is not vectors:
            store[len(kept) : len(kept) + len(present)] = vectors
        kept += [chunk_ids[i] for i in present]
    why = "could not be embedded (unreadable image?)"
    if missing:
        logger.warning(
            "%d samples %s; they get no likelihood or weight: %s",
            len(missing),
            why,
            _unreadable_images(samples, missing),
        )
    if store is None:
        raise DequityError(f"all {len(ids)} samples {why}; nothing to cluster")
    return Embeddings(store[: len(kept)], kept, missing)


def default_num_workers(fo_model: Any, cores: int | None = None) -> int | None:
    """DataLoader workers for ``fo_model`` on this machine; None: FiftyOne's default.

    On CPU the forward pass already uses every core (torch's intra-op
    threads) and decoding plus resizing a JPEG costs ~2-5 ms against tens of
    ms for the forward, so workers only move that work onto cores the forward
    needs, and each adds a process with its own database connection and copy
    of the dataset's ids (measured on 2 cores: the same throughput with 0 or
    2 workers). So: no workers on up to 4 cores, one per 4 cores above. On a
    GPU, or for a model without a torch device, FiftyOne's default.

    Example::

        >>> import types, torch
        >>> default_num_workers(types.SimpleNamespace(device=torch.device("cpu")), cores=2)
        0
        >>> default_num_workers(types.SimpleNamespace(device=torch.device("cpu")), cores=16)
        4
    """
    if getattr(getattr(fo_model, "device", None), "type", None) != "cpu":
        return None
    if cores is None:
        cores = _usable_cores()
    return 0 if cores <= 4 else cores // 4


def _usable_cores() -> int:
    """The cores this process may run on (all of them where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def embedding_errors(skip_failures: bool) -> Iterator[None]:
    """Turn an image that FiftyOne cannot embed into a ``DequityError`` naming the fix.

    With ``skip_failures`` the error passes through unchanged (FiftyOne already
    skipped what it could).

    Example::

        with embedding_errors(skip_failures=False):
            vectors = view.compute_embeddings(fo_model)
    """
    try:
        yield
    except Exception as e:
        if skip_failures:
            raise
        raise DequityError(
            f"embedding failed: {e}; fix or remove the image, or pass "
            "skip_failures=True to leave unreadable images out"
        ) from e


def _embed(
    samples: Any,
    fo_model: Any,
    batch_size: int,
    num_workers: int | None,
    skip_failures: bool,
    progress: Any,
) -> list:
    """One vector (or None for a failure) per sample, via FiftyOne's batching."""
    logger.info("Embedding images...")
    with embedding_errors(skip_failures):
        vectors = samples.compute_embeddings(
            fo_model,
            batch_size=batch_size,
            num_workers=num_workers,
            skip_failures=skip_failures,
            progress=progress,
        )
    return list(vectors)


def _retry_failed_batches(samples: Any, fo_model: Any, ids: list[str], vectors: list) -> list:
    """Embed one by one the samples of failed batches, so only bad images are lost.

    FiftyOne skips a whole batch when one of its images fails to load.
    """
    failed = [i for i, v in enumerate(vectors) if v is None]
    if not failed:
        return vectors
    retry = samples.select([ids[i] for i in failed], ordered=True).compute_embeddings(
        fo_model, batch_size=1, num_workers=0, skip_failures=True, progress=False
    )
    for i, vector in zip(failed, retry):
        vectors[i] = vector
    return vectors


def _unreadable_images(samples: Any, ids: list[str], named: int = 5) -> str:
    """The first ``named`` samples' files, each with the reason it cannot be read."""
    from dequity.sources.models import load_image

    parts = []
    for path in samples.select(ids[:named], ordered=True).values("filepath"):
        try:
            if os.path.getsize(path) == 0:
                reason = "an empty file"
            else:
                load_image(path)
                reason = "read, but the model failed on it"
        except Exception as e:  # any decoding error: it is only reported
            reason = f"{type(e).__name__}: {e}"
        parts.append(f"{path} ({reason})")
    more = f" and {len(ids) - named} more" if len(ids) > named else ""
    return "; ".join(parts) + more


def _split_missing(
    ids: list[str], values: Any, why: str, present: np.ndarray | None = None
) -> Embeddings:
    """The samples with a vector, and those without.

    With ``present`` (which samples have one), ``values`` holds only theirs;
    without, ``values`` has a None for each sample that has none.
    """
    if present is None:
        present = np.array([v is not None for v in values], dtype=bool)
        values = [v for v in values if v is not None]
    missing = [i for i, has in zip(ids, present.tolist()) if not has]
    if missing:
        logger.warning("%d samples %s; they get no likelihood or weight", len(missing), why)
    if not len(values):
        raise DequityError(f"all {len(ids)} samples {why}; nothing to cluster")
    vectors = validate_vectors(values)
    return Embeddings(vectors, [i for i, has in zip(ids, present.tolist()) if has], missing)
