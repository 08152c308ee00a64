"""Shared helpers of the benchmarks: timing, a machine-speed reference, raw records."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from reporting import REPO, git_commit, update_readme


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def pca_reference_seconds(repeats: int = 3) -> float:
    """Median time of sklearn PCA-50 on a fixed 10k x 512 array: the speed unit.

    Dividing a time by this unit gives a figure that does not depend on how
    fast or how loaded the machine is (to first order).
    """
    from sklearn.decomposition import PCA

    x = np.random.default_rng(123).standard_normal((10_000, 512), dtype=np.float32)
    times = [timed(PCA(50, random_state=0).fit_transform, x)[0] for _ in range(repeats)]
    return float(np.median(times))


def mean_ci(
    values: Sequence[float], level: float = 0.95
) -> tuple[float, float | None, float | None]:
    """Mean and the two-sided t interval of the mean (None, None for one value).

    Example::

        >>> mean_ci([1.0, 2.0, 3.0])[0]
        2.0
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), None, None
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


#: the commit the benchmarks run from, read once at start
COMMIT = git_commit()


def save_raw(
    name: str,
    values: Any,
    config: dict,
    block: Callable[[dict], str] | None = None,
    document: str = "README.md",
) -> dict:
    """Write ``results-<name>.json``: the raw values with their config, commit and date.

    The commit is the one checked out when the benchmarks started. With
    ``block`` (a benchmark's ``readme_block``), the generated block ``name`` of
    ``document`` is rebuilt from the record as written. Returns the record
    (what :func:`load_raw` reads back).

    Example::

        save_raw("fuzz", {"tried": 6000}, {"examples": 60}, block=readme_block)
    """
    import json
    import platform

    path = REPO / "benchmarks" / f"results-{name}.json"
    record = {
        "benchmark": name,
        "commit": COMMIT,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "config": config,
        "values": values,
    }
    path.write_text(json.dumps(record, indent=1) + "\n")
    record = json.loads(path.read_text())
    if block is not None:
        update_readme(name, block(record), document=document)
    return record


def load_raw(name: str) -> dict:
    """The saved record of benchmark ``name`` (``benchmarks/results-<name>.json``).

    Example::

        record = load_raw("scale")
        record["commit"], record["values"]["unit_seconds"]
    """
    import json

    return json.loads((REPO / "benchmarks" / f"results-{name}.json").read_text())
