"""What the load trial runs in its own processes (see :mod:`benchmarks.load`).

``python -m benchmarks.load_worker setup N``
    builds dataset :data:`DATASET` of ``N`` samples with vectors, and the runs
    that the updaters and the reweighter work on;
``python -m benchmarks.load_worker ROLE KEY UNTIL CALLS.jsonl``
    with ``ROLE`` one of ``compute``, ``update`` or ``reweight``: works on run
    ``KEY`` in a loop, starting calls until the Unix time ``UNTIL``;
``python -m benchmarks.load_worker app PORT STOP REQUESTS.jsonl``
    serves the App and requests it until file ``STOP`` exists.

Every call or request is one JSON line: what, when, how long, and its
outcome (``"ok"`` or the error). dequity's log goes to stdout, so a wait for
another process's claim shows in the worker's output.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.robustness_worker import outcome

DATASET = "load"
#: runs made at setup: two that are updated, one that is reweighted
UPDATED_KEYS, REWEIGHTED_KEY = ("ku0", "ku1"), "kr0"
#: samples added before each update: 1 % of the 100k-sample dataset
NEW_PER_UPDATE = 1_000
SAMPLES_QUERY = """query Samples($dataset: String!, $view: BSONArray!, $first: Int) {
  samples(dataset: $dataset, view: $view, first: $first) {
    ... on SampleItemStrConnection { edges { node { ... on ImageSample { id sample } } } }
  }
}"""
AGGREGATIONS_QUERY = """query Aggregations($form: AggregationForm!) {
  aggregations(form: $form) {
    ... on FloatAggregation { path min max count }
    ... on RootAggregation { path count }
  }
}"""


def setup(n: int) -> None:
    """Dataset :data:`DATASET` with ``n`` samples, and the updated and reweighted runs."""
    import dequity
    from benchmarks.database import vector_dataset

    dataset = vector_dataset(n)
    dataset.name, dataset.persistent = DATASET, True
    for key in (*UPDATED_KEYS, REWEIGHTED_KEY):
        dequity.compute_dequity(dataset, key, embeddings="vec", progress=False)


def work(role: str, key: str, until: float, calls: str) -> None:
    """Call ``role``'s operation on run ``key`` until ``until``; one line per call in ``calls``."""
    import fiftyone as fo

    import dequity

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("dequity").addHandler(handler)
    logging.getLogger("dequity").setLevel(logging.INFO)
    dataset = fo.load_dataset(DATASET)
    steps: dict[str, Callable[[int], list[tuple[str, Callable[[], Any]]]]] = {
        "compute": lambda i: [
            (
                "compute",
                lambda: dequity.compute_dequity(
                    dataset, key, embeddings="vec", overwrite=True, progress=False
                ),
            )
        ],
        "update": lambda i: [
            (
                "add samples",
                lambda: _add_samples(dataset, seed=(UPDATED_KEYS.index(key) << 20) + i),
            ),
            (
                "update",
                lambda: dequity.update_dequity(dataset, key, embeddings="vec", progress=False),
            ),
        ],
        "reweight": lambda i: [
            (
                "reweight",
                lambda: dequity.load_dequity_results(dataset, key).reweight(
                    (0.5, 2.0)[i % 2], (2.0, 5.0)[i % 2]
                ),
            )
        ],
    }
    with Path(calls).open("a") as out:
        i = 0
        while time.time() < until:
            for op, call in steps[role](i):
                _record(out, {"role": role, "key": key, "op": op, "samples": len(dataset)}, call)
            i += 1


def _add_samples(dataset: Any, seed: int) -> None:
    from dataclasses import replace

    import fiftyone as fo

    from benchmarks.mixtures import HARD, make_mixture

    x, _ = make_mixture(replace(HARD, n=NEW_PER_UPDATE, seed=seed))
    stamp = f"{seed}-{time.time_ns()}"
    samples = [fo.Sample(filepath=f"/none/new/{stamp}/{j}.jpg", vec=v) for j, v in enumerate(x)]
    dataset.add_samples(samples, progress=False)


def _record(out: Any, row: dict, call: Callable[[], Any]) -> None:
    start = time.time()
    result = outcome(call)
    row.update(start=start, seconds=time.time() - start, result=result)
    out.write(json.dumps(row) + "\n")
    out.flush()


def app(port: int, stop: str, requests: str) -> None:
    """Serve the App on ``port`` and request the grid and the sidebar until ``stop`` exists.

    Each round asks for the first page of samples sorted by the rarest first
    (an updated run's weight) and for the sidebar's counts and ranges of every
    run's fields, as the App does when a user opens the dataset.
    """
    import fiftyone as fo

    dataset = fo.load_dataset(DATASET)
    session = fo.launch_app(dataset, address="127.0.0.1", port=port, remote=True)
    url = f"http://127.0.0.1:{port}/graphql"
    grid = dataset.sort_by(f"{UPDATED_KEYS[0]}_weight", reverse=True)._serialize()
    paths = [""] + sorted(f for f in dataset.get_field_schema() if f.startswith("k"))
    form = {
        "dataset": DATASET,
        "view": [],
        "paths": paths,
        "extendedStages": [],
        "filters": None,
        "groupId": None,
        "hiddenLabels": [],
        "index": None,
        "mixed": False,
        "sampleIds": [],
        "slice": None,
        "slices": None,
    }
    queries = {
        "grid": (SAMPLES_QUERY, {"dataset": DATASET, "view": grid, "first": 20}),
        "sidebar": (AGGREGATIONS_QUERY, {"form": form}),
    }
    with Path(requests).open("a") as out:
        print("ready", flush=True)
        while not Path(stop).exists():
            for name, (query, variables) in queries.items():
                _record(out, {"role": "app", "op": name}, partial(_ask, url, query, variables))
            time.sleep(0.25)
    session.close()


def _ask(url: str, query: str, variables: dict) -> None:
    """POST one GraphQL request; raise on an HTTP error or a GraphQL error."""
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())
    if answer.get("errors") or not answer.get("data"):
        raise RuntimeError(f"the App answered {str(answer)[:500]}")


def main(argv: list[str]) -> None:
    """Dispatch ``setup``, ``app`` or a worker role."""
    command, *args = argv
    if command == "setup":
        setup(int(args[0]))
    elif command == "app":
        app(int(args[0]), args[1], args[2])
    elif command in ("compute", "update", "reweight"):
        work(command, args[0], float(args[1]), args[2])
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
