"""A million samples through the database: ``compute_dequity`` end to end, phase by phase.

The dataset holds ``n`` samples whose 512-number vectors (the overlapping
mixture, ``benchmarks.mixtures.HARD``) are stored in a ``VectorField``.
``compute_dequity(dataset, embeddings="vec")`` then reads them, runs the
likelihood stage, stages its values, saves the run record and writes three
fields into the samples. Each phase's wall time and the process's peak
resident memory during it are recorded; the call runs three times (the run
deleted in between) and the median is reported.

Each size runs in its own process (``python -m benchmarks.database N``), so
memory figures start from a clean interpreter. The dataset is built by
cloning one document that FiftyOne wrote, as ``add_samples`` would store it,
because ``add_samples`` and ``set_values`` of a million vectors take longer
than the run being measured. Raw values go to ``benchmarks/results-database.json``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.common import pca_reference_seconds, save_raw
from reporting import md_table

NAME = "database"
#: the page whose generated block this benchmark fills
DOCUMENT = "README.md"
#: issue targets at 1M x 512 on 2 cores, end to end
TARGET_SECONDS, TARGET_GB = 120.0, 6.0
DIM = 512
REPEATS = 3
#: phase name -> (module, attribute) of the function that does it
PHASES = {
    "read vectors": ("dequity.api.targets", "ImageTarget.embed"),
    "likelihood stage": ("dequity.api.targets", "score"),
    "staging writes": ("dequity.store.staging", "stage"),
    "run record": ("dequity.store.commit", "_save_run_doc"),
    "write into samples": ("dequity.store.staging", "merge"),
    "index": ("fiftyone.core.collections", "SampleCollection.create_index"),
}


def vector_dataset(n: int, dim: int = DIM) -> Any:
    """A new dataset of ``n`` samples with mixture vectors in field ``vec``.

    Example::

        dataset = vector_dataset(10_000)
        dataset.count("vec")   # 10000
    """
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    import fiftyone as fo
    import fiftyone.core.utils as fou
    from bson import ObjectId

    from benchmarks.mixtures import HARD, make_mixture

    x, _ = make_mixture(replace(HARD, n=n, dim=dim))
    dataset = fo.Dataset()
    dataset.add_sample(fo.Sample(filepath="/none/0.jpg", vec=x[0]))
    samples = dataset._sample_collection
    template = samples.find_one()
    samples.delete_many({})

    def insert(start: int) -> None:
        docs = []
        for i in range(start, min(start + 10_000, n)):
            doc = dict(template, _id=ObjectId(), filepath=f"/none/{i}.jpg")
            doc["vec"] = fou.serialize_numpy_array(x[i])
            docs.append(doc)
        samples.insert_many(docs, ordered=False)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(insert, range(0, n, 10_000)))
    return dataset


class _Phases:
    """Wall time and peak RSS of named phases, from wrapped functions and an RSS sampler.

    :meth:`instrument` wraps each function of :data:`PHASES` once; each call
    to be measured runs inside :meth:`measuring`.
    """

    def __init__(self) -> None:
        self.open: list[str] = []
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, int] = {}
        self.call_peak = 0

    def instrument(self) -> None:
        import importlib

        for name, (module, attribute) in PHASES.items():
            owner: Any = importlib.import_module(module)
            *path, function = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, function, self._wrap(name, getattr(owner, function)))

    def _wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.open.append(name)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.open.remove(name)

        return timed

    @contextmanager
    def measuring(self) -> Iterator[None]:
        """Reset the figures, and sample the RSS every 10 ms while the block runs."""
        self.seconds, self.peak, self.call_peak = {}, {}, 0
        stop = threading.Event()
        thread = threading.Thread(target=self._sample, args=(stop,), daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _sample(self, stop: threading.Event) -> None:
        import os

        page = os.sysconf("SC_PAGE_SIZE")
        while not stop.wait(0.01):
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * page
            self.call_peak = max(self.call_peak, rss)
            for name in list(self.open):
                self.peak[name] = max(self.peak.get(name, 0), rss)


def _worker(n: int) -> dict:
    import dequity

    dataset = vector_dataset(n)
    phases = _Phases()
    phases.instrument()
    runs = []
    try:
        for _ in range(REPEATS):
            with phases.measuring():
                start = time.perf_counter()
                dequity.compute_dequity(dataset, "dq", embeddings="vec", progress=False)
                total = time.perf_counter() - start
            runs.append(
                {
                    "seconds": total,
                    "peak_gb": phases.call_peak / 1e9,
                    "phases": {
                        name: {
                            "seconds": phases.seconds.get(name, 0.0),
                            "peak_gb": phases.peak.get(name, 0) / 1e9,
                        }
                        for name in PHASES
                    },
                }
            )
            dequity.delete_dequity_run(dataset, "dq")
    finally:
        dataset.delete()
    return {"n": n, "dim": DIM, "runs": runs}


def measure(n: int) -> dict:
    """One size in a fresh process; ``error`` if it failed."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.database", str(n)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except subprocess.CalledProcessError as e:
        lines = (e.stderr or "").strip().splitlines() or ["no output"]
        return {"n": n, "error": lines[-1][:200]}
    return json.loads(out.strip().splitlines()[-1])


def medians(result: dict) -> dict:
    """The median over repeats of the total and of each phase's time and peak.

    Example::

        medians({"runs": [{"seconds": 2.0, "peak_gb": 1.0, "phases": {}}]})["seconds"]   # 2.0
    """
    runs = result["runs"]
    phases = runs[0]["phases"] if runs else {}
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_gb": statistics.median(r["peak_gb"] for r in runs),
        "phases": {
            name: {
                key: statistics.median(r["phases"][name][key] for r in runs)
                for key in ("seconds", "peak_gb")
            }
            for name in phases
        },
    }


def summary(values: dict) -> str:
    """The README's sentence on the largest size, from saved ``values``.

    Example::

        summary({"unit_seconds": 0.1, "sizes": [{"n": 1000000, "runs": [
            {"seconds": 100.0, "peak_gb": 4.0, "phases": {}}]}]})
    """
    result = max((r for r in values["sizes"] if "runs" in r), key=lambda r: r["n"])
    m = medians(result)
    met = m["seconds"] <= TARGET_SECONDS and m["peak_gb"] <= TARGET_GB
    slowest = max(m["phases"].items(), key=lambda item: item[1]["seconds"], default=None)
    most = f"; the slowest phase is {slowest[0]} ({slowest[1]['seconds']:.0f} s)" if slowest else ""
    return (
        f"`compute_dequity` on {result['n']:,} samples with {result['dim']}-number vectors "
        f"stored in a field took **{m['seconds']:.0f} s** and **{m['peak_gb']:.1f} GB** peak "
        f"end to end, the median of {len(result['runs'])} runs on 2 cores (targets: <= "
        f"{TARGET_SECONDS:.0f} s and <= {TARGET_GB:.0f} GB: {'met' if met else 'missed'}){most}. "
        f"This machine's speed unit, a PCA-50 of 10k x 512, took {values['unit_seconds']:.2f} s "
        "in the same run."
    )


def readme_block(record: dict) -> str:
    """The README's sentence on the run through the database, from the saved record.

    Example::

        from benchmarks.common import load_raw

        print(readme_block(load_raw(NAME)))
    """
    return summary(record["values"])


def run(quick: bool) -> str:
    """Measure each size; save the raw runs in full mode."""
    sizes = [20_000] if quick else [100_000, 1_000_000]
    unit = pca_reference_seconds()
    results = [measure(n) for n in sizes]
    rows = []
    for result in results:
        if "error" in result:
            rows.append([f"{result['n']:,}", "all", f"failed: {result['error']}", ""])
            continue
        m = medians(result)
        for name, phase in m["phases"].items():
            rows.append([f"{result['n']:,}", name, f"{phase['seconds']:.1f}", phase["peak_gb"]])
        rows.append([f"{result['n']:,}", "**whole call**", f"{m['seconds']:.1f}", m["peak_gb"]])
    if not quick:
        save_raw(
            NAME,
            {"unit_seconds": unit, "sizes": results},
            {"dim": DIM, "mixture": "HARD", "repeats": REPEATS, "phases": PHASES},
            block=readme_block,
            document=DOCUMENT,
        )
    header = (
        f"### {max(sizes):,} samples through the database\n\n"
        f'`compute_dequity(dataset, embeddings="vec")` with {DIM}-number vectors stored in a '
        f"field; median of {REPEATS} runs. Targets at 1M: <= {TARGET_SECONDS:.0f} s and "
        f"<= {TARGET_GB:.0f} GB. Peak: the process's resident memory during the phase. "
        f"Speed unit (PCA-50 of 10k x 512): {unit:.2f} s.\n\n"
    )
    return header + md_table(["n", "phase", "seconds", "peak RSS GB"], rows)


if __name__ == "__main__":
    print(json.dumps(_worker(int(sys.argv[1]))))
