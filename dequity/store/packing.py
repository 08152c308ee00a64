"""Per-sample arrays of a run's results as compact binary, not JSON lists.

A run's results hold one value per sample (ids, labels, likelihoods, 2-D
points, each view's values). As JSON lists a million samples take hundreds of
megabytes and seconds to write; packed, each array is one base64 string of
its raw bytes, a few bytes per value, and the record is written and read in a
fraction of the time. Likelihoods stay float64, so that the record holds the
very values written to the samples' fields. Records stored as lists before
still load: :func:`unpack_array` and :func:`unpack_ids` take both forms.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

#: the key that marks a packed array (a list is an older record's plain form)
PACKED = "packed"
_ID_BYTES = 12


def pack_array(values: Sequence[Any] | np.ndarray, dtype: str) -> dict[str, Any]:
    """``values`` as ``dtype``'s raw bytes in base64, with its shape.

    Example::

        >>> unpack_array(pack_array([0.5, 0.25], "float64")).tolist()
        [0.5, 0.25]
    """
    a = np.ascontiguousarray(np.asarray(values, dtype=dtype))
    return {
        PACKED: dtype,
        "shape": list(a.shape),
        "data": base64.b64encode(a.tobytes()).decode("ascii"),
    }


def unpack_array(stored: dict[str, Any] | Sequence[Any] | None) -> np.ndarray | None:
    """The array :func:`pack_array` packed; an older record's list as an array; None as is.

    Example::

        >>> unpack_array([1, 2]).tolist()
        [1, 2]
    """
    if stored is None:
        return None
    if isinstance(stored, dict) and PACKED in stored:
        raw = base64.b64decode(stored["data"])
        return np.frombuffer(raw, dtype=stored[PACKED]).reshape(stored["shape"])
    return np.asarray(stored)


def pack_ids(ids: Sequence[str]) -> dict[str, Any]:
    """ObjectId strings as their 12 raw bytes each, in base64.

    Example::

        >>> unpack_ids(pack_ids(["5f2b3c4d5e6f708192a3b4c5"]))
        ['5f2b3c4d5e6f708192a3b4c5']
    """
    raw = bytes.fromhex("".join(ids))
    return {PACKED: "objectid", "data": base64.b64encode(raw).decode("ascii")}


def unpack_ids(stored: dict[str, Any] | Sequence[str] | None) -> list[str]:
    """The id strings :func:`pack_ids` packed; an older record's list as it is."""
    if stored is None:
        return []
    if isinstance(stored, dict) and PACKED in stored:
        text = base64.b64decode(stored["data"]).hex()
        step = 2 * _ID_BYTES
        return [text[i : i + step] for i in range(0, len(text), step)]
    return list(stored)
