"""Scale: wall time and peak RSS of the likelihood stage at 10k .. 1M x 512.

Each measurement runs in its own process (``python -m benchmarks.scale N
METHOD``), which prints JSON with its time and peak RSS; a measurement past
its time limit is reported as such.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
from dataclasses import replace

from benchmarks.common import pca_reference_seconds, save_raw
from reporting import md_table

NAME = "scale"
#: the page whose generated block this benchmark fills
DOCUMENT = "README.md"
#: path -> (name of its estimator in :mod:`benchmarks.methods`, time limit in s, largest n)
METHODS = {
    "default": ("default", 600.0, None),
    "fit_samples=2000": ("subsampled_default", 600.0, None),
    "previous default": ("previous_default", 600.0, None),
    "noise=nearest, cluster sizes only": ("nearest", 600.0, None),
    # brute-force neighbour search grows as n^2 (62 s at 100k): not run at 1M
    "clustering=knn": ("knn_density", 300.0, 100_000),
}


def _worker(n: int, method: str) -> dict:
    from benchmarks import methods as bm
    from benchmarks.common import timed
    from benchmarks.mixtures import HARD, make_mixture, true_frequency
    from dequity.pipeline.weights import gfl_weight
    from reporting import spearman

    x, comp = make_mixture(replace(HARD, n=n))
    data_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    seconds, (p, labels) = timed(getattr(bm, METHODS[method][0]), x)
    gfl_weight(p)
    return {
        "seconds": seconds,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "data_gb": data_rss,
        "spearman": spearman(p, true_frequency(comp)),
        "noise": bm.noise_share(labels),
    }


def measure(n: int, method: str, limit: float) -> dict | None:
    """Run one measurement in a subprocess; None past ``limit`` s, ``error`` if it failed."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.scale", str(n), method],
            capture_output=True,
            text=True,
            timeout=limit,
            check=True,
        ).stdout
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as e:
        lines = (e.stderr or "").strip().splitlines() or ["no output"]
        return {"error": lines[-1][:120]}
    return json.loads(out.strip().splitlines()[-1])


#: the default's targets at 1M x 512 on 2 cores
TARGET_SECONDS, TARGET_GB = 60.0, 4.0


def summary(values: dict) -> str:
    """The README's sentence on the default at its largest n, from saved ``values``.

    Example::

        summary({"unit_seconds": 0.1, "paths": {"default": {"1000000": {
            "seconds": 50.0, "peak_gb": 3.0, "spearman": 0.8}}}})
    """
    n, r = max(
        ((int(k), v) for k, v in values["paths"]["default"].items() if v and "seconds" in v),
        key=lambda item: item[0],
    )
    met = r["seconds"] <= TARGET_SECONDS and r["peak_gb"] <= TARGET_GB
    return (
        f"The default's stage on {n:,} x 512 took **{r['seconds']:.1f} s** and "
        f"**{r['peak_gb']:.2f} GB** peak on 2 cores (targets: <= {TARGET_SECONDS:.0f} s and "
        f"<= {TARGET_GB:.0f} GB: {'met' if met else 'missed'}); this machine's speed unit, "
        f"a PCA-50 of 10k x 512, took {values['unit_seconds']:.2f} s in the same run."
    )


def readme_block(record: dict) -> str:
    """The README's scale sentence from the saved record.

    Example::

        from benchmarks.common import load_raw

        print(readme_block(load_raw(NAME)))
    """
    return summary(record["values"])


def run(quick: bool) -> str:
    """Measure every path at growing n; stop a path once it exceeds its limit."""
    sizes = (2_000, 5_000) if quick else (10_000, 30_000, 100_000, 1_000_000)
    limits = {method: 120.0 if quick else limit for method, (_, limit, _) in METHODS.items()}
    unit = pca_reference_seconds()
    rows, values = [], {}
    for method, (_, _, largest) in METHODS.items():
        first: tuple[int, float] | None = None
        for n in sizes:
            if largest is not None and n > largest:
                rows.append([method, f"{n:,}", "not run (see the limit above)", "", "", "", "", ""])
                break
            limit = limits[method]
            r = measure(n, method, limit)
            values.setdefault(method, {})[str(n)] = r
            if r is None:
                rows.append([method, f"{n:,}", f"> {limit:.0f} s (stopped)", "", "", "", "", ""])
                break
            if "error" in r:
                rows.append([method, f"{n:,}", f"failed: {r['error']}", "", "", "", "", ""])
                break
            first = first or (n, r["seconds"])
            growth = (
                math.log(r["seconds"] / first[1]) / math.log(n / first[0]) if n != first[0] else ""
            )
            rows.append(
                [
                    method,
                    f"{n:,}",
                    f"{r['seconds']:.1f}",
                    r["seconds"] / unit,
                    growth,
                    f"{r['peak_gb']:.2f} ({r['data_gb']:.2f} with data only)",
                    r["spearman"],
                    r["noise"],
                ]
            )
    if not quick:
        save_raw(
            NAME,
            {"unit_seconds": unit, "paths": values},
            {"sizes": list(sizes), "mixture": "GUIDE's harder mixture, d 512, 30 components"},
            block=readme_block,
            document=DOCUMENT,
        )
    header = (
        "### Scale, GUIDE's harder mixture (d 512, 30 components)\n\n"
        f"Speed unit: sklearn PCA-50 of 10k x 512 took {unit:.2f} s in this run; "
        "growth exponent b in time ~ n^b from the smallest n. "
        f"Targets: the default takes <= {TARGET_SECONDS:.0f} s and <= {TARGET_GB:.0f} GB "
        "at 1M.\n\n"
    )
    table = md_table(
        ["path", "n", "wall s", "wall / unit", "growth b", "peak RSS GB", "Spearman", "noise"],
        rows,
    )
    return header + table


if __name__ == "__main__":
    print(json.dumps(_worker(int(sys.argv[1]), sys.argv[2])))
