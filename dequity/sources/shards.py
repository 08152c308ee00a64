"""Vectors in Parquet shards beside the database, so that no process holds them all.

The Ray embedding path writes them (:func:`dequity.sources.ray.embed_to_shards`)
and the likelihood stage on Ray reads them, one group of files per task
(``compute_dequity(..., embeddings=Shards.open(path), likelihood_backend="ray")``).

A shard is a Parquet file with one row per sample: ``id`` (the sample id),
``vector`` (its embedding, float32) and ``error`` (empty, or why its image
could not be embedded; its vector is then NaN). A directory of shards is read
in file-name order; rows with an error are the run's missing samples.

Example::

    write_shard("/data/shards/part-00000.parquet", ids, vectors)
    shards = Shards.open("/data/shards")
    shards.num_vectors, shards.dim
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dequity.errors import DequityError

SUFFIX = ".parquet"
ID, VECTOR, ERROR = "id", "vector", "error"
#: rows per shard that :func:`dequity.sources.ray.embed_to_shards` aims at
SHARD_ROWS = 100_000


@dataclass(frozen=True)
class Shards:
    """A directory of vector shards: its files, the vectors in each, and the ids that have none.

    Example::

        shards = Shards.open("/data/shards")
        ids, vectors, missing = shards.read(shards.files[:2])
    """

    path: str
    files: tuple[str, ...]
    #: rows with a vector, per file
    counts: tuple[int, ...]
    dim: int
    #: ids whose row holds an error instead of a vector
    missing_ids: tuple[str, ...]

    @classmethod
    def open(cls, path: str | os.PathLike) -> Shards:
        """The shards in directory ``path``; reads their ids and errors, not their vectors."""
        import pyarrow.parquet as pq

        path = os.fspath(path)
        if not os.path.isdir(path):
            raise DequityError(f"no directory of vector shards at {path!r}")
        files = tuple(os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(SUFFIX))
        if not files:
            raise DequityError(
                f"{path!r} holds no {SUFFIX} shards; write them with embed_to_shards"
            )
        counts, missing, dims = [], [], set()
        for file in files:
            _, file_missing, failed = _split(_read(file, [ID, ERROR]))
            missing += file_missing
            counts.append(int(len(failed) - failed.sum()))
            if len(failed):
                rows = pq.ParquetFile(file).iter_batches(batch_size=1, columns=[VECTOR])
                dims.add(matrix(next(rows).column(VECTOR)).shape[1])  # one row, not a row group
        if len(dims) != 1:
            raise DequityError(
                f"the shards in {path!r} hold vectors of lengths {sorted(dims)}; "
                "all must have one length"
            )
        return cls(path, files, tuple(counts), dims.pop(), tuple(missing))

    @property
    def num_vectors(self) -> int:
        """How many samples have a vector."""
        return sum(self.counts)

    def groups(self, rows: int) -> list[tuple[str, ...]]:
        """Consecutive files of about ``rows`` vectors each (one group per task)."""
        groups: list[tuple[str, ...]] = []
        current: list[str] = []
        held = 0
        for file, count in zip(self.files, self.counts, strict=True):
            current.append(file)
            held += count
            if held >= rows:
                groups.append(tuple(current))
                current, held = [], 0
        if current:
            groups.append(tuple(current))
        return groups

    def read(self, files: Sequence[str]) -> tuple[list[str], np.ndarray, list[str]]:
        """``(ids, vectors, missing ids)`` of ``files``: rows with a vector, then those without.

        The vectors go straight into one array sized from the counts that
        :meth:`open` found, so no more than one file is held twice.
        """
        count = dict(zip(self.files, self.counts, strict=True))
        vectors = np.empty((sum(count[f] for f in files), self.dim), np.float32)
        ids: list[str] = []
        missing: list[str] = []
        for file in files:
            table = _read(file, [ID, VECTOR, ERROR])
            file_ids, file_missing, failed = _split(table)
            if len(file_ids) != count[file]:
                raise DequityError(
                    f"vector shard {file} changed since its directory was opened "
                    f"({len(file_ids)} vectors, {count[file]} before); open it again"
                )
            if file_ids:
                block = matrix(table.column(VECTOR))
                block = block[~failed] if failed.any() else block
                vectors[len(ids) : len(ids) + len(file_ids)] = block
            ids += file_ids
            missing += file_missing
            del table
        return ids, vectors, missing

    def take(self, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Ids and vectors at sorted positions ``rows`` among the vectors, file by file."""
        rows = np.asarray(rows, np.int64)
        ends = np.cumsum(self.counts)
        ids: list[str] = []
        blocks = []
        start = 0
        for file, end in zip(self.files, ends.tolist(), strict=True):
            wanted = rows[(rows >= start) & (rows < end)] - start
            if len(wanted):
                file_ids, vectors, _ = self.read([file])
                ids += [file_ids[i] for i in wanted.tolist()]
                blocks.append(vectors[wanted])
            start = end
        vectors = np.concatenate(blocks) if blocks else np.empty((0, self.dim), np.float32)
        return ids, vectors


def write_shard(
    path: str | os.PathLike,
    ids: Sequence[str],
    vectors: np.ndarray,
    errors: Sequence[str] | None = None,
) -> None:
    """Write one shard: ``vectors[i]`` is the embedding of sample ``ids[i]``.

    ``errors[i]``, if not empty, says why sample ``ids[i]`` has no vector.

    Example::

        write_shard("/data/shards/part-00000.parquet", ["64f0..."], np.zeros((1, 512)))
    """
    import pyarrow.parquet as pq

    pq.write_table(shard_table(ids, vectors, errors), os.fspath(path))


def shard_table(
    ids: Sequence[str], vectors: np.ndarray, errors: Sequence[str] | None = None
) -> Any:
    """The rows of one shard as a ``pyarrow.Table`` (see :func:`write_shard`).

    Example::

        shard_table(["64f0..."], np.zeros((1, 512))).column_names   # ['id', 'vector', 'error']
    """
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise DequityError(
            f"a shard needs one row of vectors per id: {len(ids)} ids, "
            f"vectors of shape {vectors.shape}"
        )
    flat = pa.array(vectors.reshape(-1), pa.float32())
    return pa.table(
        {
            ID: pa.array([str(i) for i in ids], pa.string()),
            VECTOR: pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            ERROR: pa.array(list(errors) if errors is not None else [""] * len(ids), pa.string()),
        }
    )


def matrix(column: Any) -> np.ndarray:
    """A column of vectors (fixed-size lists, lists or Ray's tensors) as a float32 matrix."""
    import pyarrow as pa

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    rows = []
    for chunk in chunks:
        if isinstance(chunk, pa.ExtensionArray):
            chunk = chunk.storage
        if len(chunk):
            width = len(chunk[0])
            flat = chunk.flatten().to_numpy(zero_copy_only=False)
            rows.append(flat.astype(np.float32, copy=False).reshape(len(chunk), width))
    if not rows:
        return np.empty((0, 0), np.float32)
    return rows[0] if len(rows) == 1 else np.concatenate(rows)


def _split(table: Any) -> tuple[list[str], list[str], np.ndarray]:
    """``(ids with a vector, ids without, failed mask)`` of one shard's rows."""
    failed = np.asarray(table.column(ERROR).to_numpy(zero_copy_only=False), object).astype(bool)
    ids = table.column(ID).to_pylist()
    kept = [i for i, bad in zip(ids, failed, strict=True) if not bad]
    return kept, [i for i, bad in zip(ids, failed, strict=True) if bad], failed


def _read(file: str, columns: list[str]) -> Any:
    """Columns ``columns`` of shard ``file``, or a :class:`DequityError` naming what is wrong."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(file, columns=columns)
    except Exception as e:  # ArrowInvalid, OSError, KeyError...
        raise DequityError(
            f"cannot read vector shard {file}: {e}; shards need columns {[ID, VECTOR, ERROR]}"
        ) from e
