"""The likelihood stage on Ray against the local stage, from vectors stored in a field.

For each size, one process builds a dataset of ``n`` samples whose
512-number vectors (the overlapping mixture, ``benchmarks.mixtures.HARD``)
sit in a ``VectorField`` (:func:`benchmarks.database.vector_dataset`); a
fresh process (so that its memory holds nothing of the build) starts a local
Ray instance on the machine's cores and runs
``compute_dequity(dataset, embeddings="vec", likelihood_backend="ray")``.
Up to :data:`LOCAL_UP_TO` samples it also runs the local stage on the same
data, for the time ratio and the agreement (Spearman of the likelihoods by
sample). Peak resident memory is sampled every 20 ms: this process (the
driver) and each Ray worker process. Raw values go to
``benchmarks/results-ray_stage.json``; ``docs/scale_out.md`` shows them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from benchmarks.common import save_raw
from dequity.pipeline.projection import PCA_FIT_SAMPLES
from reporting import md_table

NAME = "ray_stage"
#: the page whose generated block this benchmark fills
DOCUMENT = "docs/scale_out.md"
SIZES = (250_000, 1_000_000, 2_000_000)
#: the local stage runs too up to this size (it holds every vector)
LOCAL_UP_TO = 1_000_000
#: bytes of one stored 512-number float32 vector, and of one sample's staged values
VECTOR_BYTES, WRITTEN_BYTES = 4 * 512 + 100, 3 * 24 + 40


class _Peaks:
    """Peak RSS of this process and of every Ray worker process, sampled in a thread."""

    def __init__(self) -> None:
        self.driver = 0
        self.workers: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(0.02):
            self.driver = max(self.driver, me.memory_info().rss)
            for process in psutil.process_iter(["name", "cmdline"]):
                try:
                    if "ray::" in (process.info["name"] or "") + " ".join(
                        process.info["cmdline"] or []
                    ):
                        rss = process.memory_info().rss
                        self.workers[process.pid] = max(self.workers.get(process.pid, 0), rss)
                except Exception:  # the process ended between listing and reading
                    continue


def _build(n: int) -> str:
    """A persistent dataset of ``n`` samples with vectors; its name."""
    from benchmarks.database import vector_dataset

    dataset = vector_dataset(n)
    dataset.persistent = True
    return dataset.name


def _worker(name: str) -> dict:
    """Both stages on dataset ``name``, in a process that did not build it."""
    import fiftyone as fo
    import numpy as np
    import ray
    from scipy.stats import spearmanr

    import dequity

    dataset = fo.load_dataset(name)
    n, cores = len(dataset), len(os.sched_getaffinity(0))
    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    with _Peaks() as peaks:
        start = time.perf_counter()
        on_ray = dequity.compute_dequity(
            dataset, "ray", embeddings="vec", likelihood_backend="ray",
            ray_options={"num_workers": cores}, progress=False,
        )  # fmt: skip
        ray_seconds = time.perf_counter() - start
    ray.shutdown()
    out = {
        "n": n,
        "cores": cores,
        "ray_seconds": ray_seconds,
        "driver_peak_gb": peaks.driver / 1e9,
        "worker_peak_gb": [v / 1e9 for v in sorted(peaks.workers.values(), reverse=True)],
    }
    if n <= LOCAL_UP_TO:
        start = time.perf_counter()
        local = dequity.compute_dequity(dataset, "local", embeddings="vec", progress=False)
        out["local_seconds"] = time.perf_counter() - start
        got = dict(zip(on_ray.sample_ids, on_ray.likelihoods, strict=True))
        ids = local.sample_ids
        out["spearman"] = float(spearmanr(np.asarray(local.likelihoods), [got[i] for i in ids])[0])
    return out


def measure(n: int) -> dict:
    """One size: built in one process, measured in a fresh one; ``error`` if it failed."""
    name = None
    try:
        name = _run_module("build", str(n))
        return json.loads(_run_module("measure", name))
    except subprocess.CalledProcessError as e:
        lines = (e.stderr or "").strip().splitlines() or ["no output"]
        return {"n": n, "error": lines[-1][:300]}
    finally:
        if name is not None:
            _run_module("delete", name)


def _run_module(*args: str) -> str:
    """The last line that ``python -m benchmarks.ray_stage ARGS`` prints."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.ray_stage", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


def readme_block(record: dict) -> str:
    """``docs/scale_out.md``'s table and sentence, from the saved record.

    Example::

        from benchmarks.common import load_raw

        print(readme_block(load_raw(NAME)))
    """
    sizes = [s for s in record["values"]["sizes"] if "error" not in s]
    rows = [
        [
            f"{s['n']:,}",
            f"{s['ray_seconds']:.0f}",
            f"{s['local_seconds']:.0f}" if "local_seconds" in s else "not run",
            f"{s['spearman']:.4f}" if "spearman" in s else "",
            f"{s['driver_peak_gb']:.2f}",
            f"{max(s['worker_peak_gb'], default=0):.2f}",
        ]
        for s in sizes
    ]
    failed = [f"{s['n']:,} ({s['error']})" for s in record["values"]["sizes"] if "error" in s]
    if len(sizes) < 2:
        return _table(record, sizes, rows, None, failed)
    small, large = sizes[-2], sizes[-1]
    slope = (large["driver_peak_gb"] - small["driver_peak_gb"]) * 1e9 / (large["n"] - small["n"])
    return _table(record, sizes, rows, slope, failed) + "\n\n" + _extrapolation(sizes, slope)


def _extrapolation(sizes: list[dict], driver_bytes: float) -> str:
    """100M and 1B samples from the marginal costs between the two largest sizes measured."""
    a, b = sizes[-2], sizes[-1]
    core_seconds = (b["ray_seconds"] - a["ray_seconds"]) * b["cores"] / (b["n"] - a["n"])
    worker_gb = max(b["worker_peak_gb"], default=0.0)
    lines = []
    for n, workers in ((100_000_000, 64), (1_000_000_000, 512)):
        hours = core_seconds * n / workers / 3600
        lines.append(
            f"- {n:,} samples on {workers} workers: about {hours:.1f} h of placing and "
            f"writing; {n * VECTOR_BYTES / 1e12:.1f} TB of vectors read from the database "
            f"and about {n * WRITTEN_BYTES / 1e9:.0f} GB of values staged and merged; "
            f"{driver_bytes * n / 1e9:.0f} GB on the driver for the run record; each "
            f"worker near {worker_gb:.1f} GB, as here, since a task holds one partition."
        )
    return (
        f"Extrapolated from the marginal cost between {a['n']:,} and {b['n']:,} samples "
        f"({core_seconds * 1e6:.0f} core-seconds per million samples; the database here "
        "shares the same cores, so this is pessimistic per core; it leaves out the network "
        "and the driver's one pass over every id, which does not spread over workers):\n\n"
        + "\n".join(lines)
    )


def _table(record: dict, sizes: list[dict], rows: list, slope: float | None, failed: list) -> str:
    growth = (
        ""
        if slope is None
        else f"\n\nBetween the two largest sizes the driver's peak grew by about {slope:.0f} "
        "bytes per sample (the run record's ids, clusters, likelihoods and points); a "
        f"vector alone is {4 * 512} bytes. Up to {PCA_FIT_SAMPLES:,} samples the fit reads "
        "every vector (PCA's draw), so the driver holds them all there."
    )
    return (
        f"Commit {record['commit'][:10]}, a local Ray instance on {sizes[-1]['cores']} cores, "
        "vectors read from a field of the dataset:\n\n"
        + md_table(
            [
                "samples",
                "on Ray, s",
                "local, s",
                "agreement (Spearman)",
                "driver peak GB",
                "largest worker peak GB",
            ],  # fmt: skip
            rows,
        )
        + growth
        + (f" Failed: {'; '.join(failed)}." if failed else "")
    )


def run(quick: bool) -> str:
    """Measure each size; save the raw values in full mode."""
    sizes = (20_000, 40_000) if quick else SIZES
    results = [measure(n) for n in sizes]
    record = {"commit": "quick", "values": {"sizes": results}}
    if not quick:
        record = save_raw(NAME, {"sizes": results}, {"dim": 512, "mixture": "HARD"},
                          block=readme_block, document=DOCUMENT)  # fmt: skip
    return "### The likelihood stage on Ray\n\n" + readme_block(record)


def _delete(name: str) -> str:
    import fiftyone as fo

    fo.load_dataset(name).delete()
    return "deleted"


if __name__ == "__main__":
    command, argument = sys.argv[1:3]
    if command == "build":
        print(_build(int(argument)))
    elif command == "measure":
        print(json.dumps(_worker(argument)))
    else:
        print(_delete(argument))
