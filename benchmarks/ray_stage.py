"""The likelihood stage on Ray against the local stage, from a field and from shards.

For each size, one process builds a dataset of ``n`` samples whose
512-number vectors (the overlapping mixture, ``benchmarks.mixtures.HARD``)
sit in a ``VectorField`` (:func:`benchmarks.database.vector_dataset`), and
writes the same vectors, in the same order, to Parquet shards of 100k rows
(:func:`dequity.sources.shards.write_shard`). A fresh process (so that its
memory holds nothing of the build) starts a local Ray instance on the
machine's cores and runs ``compute_dequity(..., likelihood_backend="ray")``
with ``embeddings="vec"`` and then with ``embeddings=Shards.open(...)``. Up
to :data:`LOCAL_UP_TO` samples it also runs the local stage on the same
data, for the time ratio and the agreement (Spearman of the likelihoods by
sample). Peak resident memory is sampled every 20 ms: this process (the
driver) and each Ray worker process. Raw values go to
``benchmarks/results-ray_stage.json``; ``docs/scale_out.md`` shows them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
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


def _shards_dir(name: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"dequity-bench-shards-{name}")


def _build(n: int) -> str:
    """A persistent dataset of ``n`` samples with vectors, and their shards; its name."""
    from dataclasses import replace

    import fiftyone as fo

    from benchmarks.database import vector_dataset
    from benchmarks.mixtures import HARD, make_mixture
    from dequity.sources.shards import SHARD_ROWS, write_shard

    dataset = vector_dataset(n)
    dataset.persistent = True
    x, _ = make_mixture(replace(HARD, n=n, dim=512))  # the vectors the dataset holds
    ids, paths = fo.load_dataset(dataset.name).values(["id", "filepath"])
    rows = [int(os.path.basename(p).split(".")[0]) for p in paths]
    directory = _shards_dir(dataset.name)
    os.makedirs(directory)
    for number, start in enumerate(range(0, n, SHARD_ROWS)):
        at = rows[start : start + SHARD_ROWS]
        write_shard(
            f"{directory}/part-{number:05d}.parquet", ids[start : start + SHARD_ROWS], x[at]
        )
    return dataset.name


def _on_ray(dataset: Any, run_key: str, embeddings: Any, cores: int) -> tuple[Any, dict]:
    """One run of the stage on Ray; its results, and its time and peak memory."""
    import dequity

    with _Peaks() as peaks:
        start = time.perf_counter()
        results = dequity.compute_dequity(
            dataset, run_key, embeddings=embeddings, likelihood_backend="ray",
            ray_options={"num_workers": cores}, progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    return results, {
        "seconds": seconds,
        "driver_peak_gb": peaks.driver / 1e9,
        "worker_peak_gb": [v / 1e9 for v in sorted(peaks.workers.values(), reverse=True)],
    }


def _worker(name: str) -> dict:
    """The stage on Ray from the field and from the shards, then locally, on dataset ``name``."""
    import fiftyone as fo
    import numpy as np
    import ray
    from scipy.stats import spearmanr

    import dequity
    from dequity.sources.shards import Shards

    dataset = fo.load_dataset(name)
    n, cores = len(dataset), len(os.sched_getaffinity(0))
    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    field_run, field = _on_ray(dataset, "field", "vec", cores)
    del field_run
    shards_run, shards = _on_ray(dataset, "shards", Shards.open(_shards_dir(name)), cores)
    del shards_run
    ray.shutdown()
    out = {"n": n, "cores": cores, "field": field, "shards": shards}
    if n <= LOCAL_UP_TO:
        start = time.perf_counter()
        local = dequity.compute_dequity(dataset, "local", embeddings="vec", progress=False)
        out["local_seconds"] = time.perf_counter() - start
        want = np.asarray(local.likelihoods)
        for key in ("field", "shards"):
            got = dict(zip(*dataset.values(["id", f"{key}_likelihood"])))
            out[key]["spearman"] = float(spearmanr(want, [got[i] for i in local.sample_ids])[0])
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
    """``docs/scale_out.md``'s table and sentences, from the saved record.

    Example::

        from benchmarks.common import load_raw

        print(readme_block(load_raw(NAME)))
    """
    sizes = [s for s in record["values"]["sizes"] if "error" not in s]
    rows = []
    for s in sizes:
        for key, source in (("field", "a field"), ("shards", "shards")):
            run = s[key]
            rows.append(
                [
                    f"{s['n']:,}",
                    source,
                    f"{run['seconds']:.0f}",
                    f"{s['local_seconds']:.0f}" if "local_seconds" in s else "not run",
                    f"{run['spearman']:.4f}" if "spearman" in run else "",
                    f"{run['driver_peak_gb']:.2f}",
                    f"{max(run['worker_peak_gb'], default=0):.2f}",
                ]
            )
    failed = [f"{s['n']:,} ({s['error']})" for s in record["values"]["sizes"] if "error" in s]
    text = (
        f"Commit {record['commit'][:10]}, a local Ray instance on "
        f"{sizes[-1]['cores'] if sizes else '?'} cores:\n\n"
        + md_table(
            [
                "samples",
                "vectors from",
                "on Ray, s",
                "local, s",
                "agreement (Spearman)",
                "driver peak GB",
                "largest worker peak GB",
            ],  # fmt: skip
            rows,
        )
        + (f" Failed: {'; '.join(failed)}." if failed else "")
    )
    if len(sizes) < 2:
        return text
    a, b = sizes[-2], sizes[-1]
    growth = {
        key: (b[key]["driver_peak_gb"] - a[key]["driver_peak_gb"]) * 1e9 / (b["n"] - a["n"])
        for key in ("field", "shards")
    }
    return (
        text + f"\n\nFrom {a['n']:,} to {b['n']:,} samples the driver's peak changed by "
        f"{growth['field']:.0f} bytes per added sample reading a field and "
        f"{growth['shards']:.0f} reading shards; a vector alone is {4 * 512} bytes. Up to "
        f"{PCA_FIT_SAMPLES:,} samples the fit reads every vector (PCA's draw), so the driver "
        "holds them all there; above, it holds the fit's draws and one shard at a time.\n\n"
        + _extrapolation(sizes)
    )


def _extrapolation(sizes: list[dict]) -> str:
    """100M and 1B samples from the marginal costs between the two largest sizes measured."""
    a, b = sizes[-2], sizes[-1]
    lines = []
    for key, read in (("shards", "from shards"), ("field", "from the database")):
        seconds = b[key]["seconds"] - a[key]["seconds"]
        core_seconds = seconds * b["cores"] / (b["n"] - a["n"])
        worker_gb = max(b[key]["worker_peak_gb"], default=0.0)
        for n, workers in ((100_000_000, 64), (1_000_000_000, 512)):
            hours = core_seconds * n / workers / 3600
            lines.append(
                f"- {n:,} samples {read} on {workers} workers: about {hours:.1f} h of "
                f"placing and writing ({core_seconds * 1e6:.0f} core-seconds per million); "
                f"{n * VECTOR_BYTES / 1e12:.1f} TB of vectors read and about "
                f"{n * WRITTEN_BYTES / 1e9:.0f} GB of values staged and merged into the "
                f"database; each worker near {worker_gb:.1f} GB, as here, since a task "
                "holds one partition."
            )
    return (
        f"Extrapolated from the marginal cost between {a['n']:,} and {b['n']:,} samples (the "
        "database here shares the same cores, so this is pessimistic per core; it leaves "
        "out the network). The driver's fit and record stay the size measured here; reading "
        "a field, it also streams every id once, which does not spread over workers:\n\n"
        + "\n".join(lines)
    )


def run(quick: bool) -> str:
    """Measure each size; save the raw values in full mode."""
    sizes = (20_000, 40_000) if quick else SIZES
    results = [measure(n) for n in sizes]
    record = {"commit": "quick", "values": {"sizes": results}}
    if not quick:
        config = {"dim": 512, "mixture": "HARD", "shard_rows": 100_000}
        record = save_raw(NAME, {"sizes": results}, config, block=readme_block, document=DOCUMENT)
    return "### The likelihood stage on Ray\n\n" + readme_block(record)


def _delete(name: str) -> str:
    import fiftyone as fo

    fo.load_dataset(name).delete()
    shutil.rmtree(_shards_dir(name), ignore_errors=True)
    return "deleted"


if __name__ == "__main__":
    command, argument = sys.argv[1:3]
    if command == "build":
        print(_build(int(argument)))
    elif command == "measure":
        print(json.dumps(_worker(argument)))
    else:
        print(_delete(argument))
