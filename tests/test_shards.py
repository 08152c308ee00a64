"""Vector shards: what the Ray embedding path writes and the likelihood stage on Ray reads."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dequity import DequityError
from dequity.sources.shards import Shards, matrix, write_shard


@pytest.fixture
def shards(tmp_path) -> Shards:
    rng = np.random.default_rng(0)
    write_shard(
        tmp_path / "part-0.parquet", ["a", "b", "c"], rng.normal(size=(3, 4)), ["", "bad", ""]
    )
    write_shard(tmp_path / "part-1.parquet", ["d", "e"], rng.normal(size=(2, 4)))
    write_shard(tmp_path / "part-2.parquet", ["f"], rng.normal(size=(1, 4)))
    (tmp_path / "notes.txt").write_text("not a shard")
    return Shards.open(tmp_path)


def test_shards_count_their_vectors_and_list_the_ids_without_one(shards):
    assert shards.counts == (2, 2, 1) and shards.num_vectors == 5
    assert shards.dim == 4 and shards.missing_ids == ("b",)
    ids, vectors, missing = shards.read(shards.files)
    assert ids == ["a", "c", "d", "e", "f"] and missing == ["b"]
    assert vectors.shape == (5, 4) and vectors.dtype == np.float32


def test_read_returns_the_written_vectors_and_refuses_a_file_changed_since_open(tmp_path):
    rng = np.random.default_rng(1)
    first, second = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    write_shard(tmp_path / "part-0.parquet", ["a", "b", "c"], first, ["", "bad", ""])
    write_shard(tmp_path / "part-1.parquet", ["d", "e"], second)
    shards = Shards.open(tmp_path)
    _, vectors, _ = shards.read(shards.files)
    expected = np.concatenate([first[[0, 2]], second]).astype(np.float32)
    assert np.array_equal(vectors, expected)
    write_shard(tmp_path / "part-1.parquet", ["d"], second[:1])
    with pytest.raises(DequityError, match="changed since its directory was opened"):
        shards.read(shards.files)


def test_take_reads_rows_by_position_among_the_vectors(shards):
    _, every, _ = shards.read(shards.files)
    ids, vectors = shards.take(np.array([1, 2, 4]))
    assert ids == ["c", "d", "f"]
    assert np.array_equal(vectors, every[[1, 2, 4]])


def test_groups_hold_whole_files_of_about_the_asked_rows(shards):
    assert [len(g) for g in shards.groups(2)] == [1, 1, 1]
    assert [len(g) for g in shards.groups(4)] == [2, 1]
    assert sum(shards.groups(100), ()) == shards.files


def test_ray_tensor_and_list_columns_read_as_matrices():
    rows = np.arange(6, dtype=np.float32).reshape(3, 2)
    listed = pa.array(rows.tolist(), pa.list_(pa.float32()))
    assert np.array_equal(matrix(listed), rows)
    from ray.data.extensions import ArrowTensorArray

    assert np.array_equal(matrix(pa.chunked_array([ArrowTensorArray.from_numpy(rows)])), rows)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "holds no .parquet shards"),
        (lambda d: (d / "x.parquet").write_bytes(b"junk"), "cannot read vector shard"),
        (
            lambda d: pq.write_table(pa.table({"id": ["a"]}), d / "x.parquet"),
            "shards need columns",
        ),
        (
            lambda d: [
                write_shard(d / "a.parquet", ["a"], np.ones((1, 3))),
                write_shard(d / "b.parquet", ["b"], np.ones((1, 4))),
            ],
            "lengths \\[3, 4\\]",
        ),
    ],
)
def test_bad_shards_are_refused_with_what_is_wrong(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DequityError, match=message):
        Shards.open(tmp_path)


def test_a_missing_directory_or_mismatched_rows_are_refused(tmp_path):
    with pytest.raises(DequityError, match="no directory of vector shards"):
        Shards.open(tmp_path / "nowhere")
    with pytest.raises(DequityError, match="one row of vectors per id"):
        write_shard(tmp_path / "a.parquet", ["a", "b"], np.ones((3, 2)))
