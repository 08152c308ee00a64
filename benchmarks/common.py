"""Shared helpers: timing, markdown tables, a machine-speed reference."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def add_only_option(parser: argparse.ArgumentParser, names: Sequence[str], what: str) -> None:
    """``--only NAME`` (repeatable), shared by ``python -m benchmarks`` and ``experiments``."""
    parser.add_argument(
        "--only",
        choices=sorted(names),
        action="append",
        help=f"run only this {what} (repeatable)",
    )


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; floats are printed with 3 significant digits."""

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pca_reference_seconds(repeats: int = 3) -> float:
    """Median time of sklearn PCA-50 on a fixed 10k x 512 array: the speed unit.

    Dividing a time by this unit gives a figure that does not depend on how
    fast or how loaded the machine is (to first order).
    """
    from sklearn.decomposition import PCA

    x = np.random.default_rng(123).standard_normal((10_000, 512), dtype=np.float32)
    times = [timed(PCA(50, random_state=0).fit_transform, x)[0] for _ in range(repeats)]
    return float(np.median(times))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (0 when either side is constant)."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b)[0])
