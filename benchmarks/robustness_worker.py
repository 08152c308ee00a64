"""What the robustness trials run in their own processes (see :mod:`benchmarks.robustness`).

``python -m benchmarks.robustness_worker fault NAME SCENARIO POINT``
    computes a run on a fresh dataset and dies at fault point ``POINT``;
``python -m benchmarks.robustness_worker failover NAME SCENARIO POINT DIR``
    computes, updates or reweights a run and pauses at ``POINT`` until the
    database has failed over; prints ``result: ...``;
``python -m benchmarks.robustness_worker kill NAME``
    overwrites a run in a loop until it is killed;
``python -m benchmarks.robustness_worker race ROLE MODES TRIALS DIR``
    races the other role's process on ``TRIALS`` datasets per mode;
``python -m benchmarks.robustness_worker check SPEC.json OUT.json``
    inspects the datasets, lets dequity recover them and checks every invariant.

The database comes from ``FIFTYONE_DATABASE_URI`` (a private ``mongod``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

NUM_SAMPLES = 200
RUN_KEY = "k"
OLD_ETA, NEW_ETA = 0.3, 2.0


def embeddings(n: int = NUM_SAMPLES) -> np.ndarray:
    """Four well-separated blobs of unequal size: a stable clustering."""
    rng = np.random.default_rng(0)
    sizes = [n // 2, n // 4, n // 8, n - n // 2 - n // 4 - n // 8]
    return np.concatenate([rng.normal(3 * c, 0.1, (s, 8)) for c, s in enumerate(sizes)])


def dataset_vectors(n: int) -> np.ndarray:
    """The vectors of a dataset's first ``n`` samples: the fixed blobs, then samples added later."""
    extra = n - NUM_SAMPLES
    return embeddings() if extra <= 0 else np.concatenate([embeddings(), embeddings(extra)])


def make_dataset(name: str) -> Any:
    """A fresh dataset of :data:`NUM_SAMPLES` bare samples."""
    import fiftyone as fo

    dataset = fo.Dataset(name, overwrite=True, persistent=True)
    dataset.add_samples(
        [fo.Sample(filepath=f"/nonexistent/{name}/{i}.jpg") for i in range(NUM_SAMPLES)],
        progress=False,
    )
    return dataset


def compute(samples: Any, run_key: str, eta: float, overwrite: bool) -> Any:
    """A small run from the fixed embeddings of ``samples``' samples."""
    import dequity

    ids = samples._root_dataset.values("id")
    vectors = dataset_vectors(len(ids))[[ids.index(i) for i in samples.values("id")]]
    return dequity.compute_dequity(
        samples, run_key, embeddings=vectors, eta=eta, overwrite=overwrite, progress=False
    )


def fault(name: str, scenario: str, point: str) -> None:
    """Set up dataset ``name`` for ``scenario``, then work until ``point`` kills us.

    Scenarios: ``new`` and ``overwrite`` (compute), ``delete``, ``rename`` (to ``k2``).
    """
    import dequity
    from dequity.faults import ENV

    dataset = make_dataset(name)
    if scenario != "new":
        compute(dataset, RUN_KEY, OLD_ETA, overwrite=False)
    os.environ[ENV] = point
    if scenario == "delete":
        dequity.delete_dequity_run(dataset, RUN_KEY)
    elif scenario == "rename":
        dequity.rename_dequity_run(dataset, RUN_KEY, f"{RUN_KEY}2")
    else:
        compute(dataset.take(150, seed=1), RUN_KEY, NEW_ETA, overwrite=scenario == "overwrite")


#: samples added before an update, in the failover trials
NEW_SAMPLES = 20


def failover(name: str, scenario: str, point: str, pause: str) -> None:
    """Set up dataset ``name``, then run ``scenario`` and pause at ``point`` (folder ``pause``).

    Scenarios: ``new`` and ``overwrite`` (compute), ``update`` (of
    :data:`NEW_SAMPLES` added samples) and ``reweight`` (to :data:`NEW_ETA`).
    Prints ``result: ok`` or ``result: DequityError: ...``; any other error
    escapes (a non-zero exit).
    """
    import fiftyone as fo

    import dequity
    from dequity.faults import ENV, PAUSE_ENV

    dataset = make_dataset(name)
    if scenario != "new":
        compute(dataset, RUN_KEY, OLD_ETA, overwrite=False)
    if scenario == "update":
        new = [fo.Sample(filepath=f"/nonexistent/{name}/new-{i}.jpg") for i in range(NEW_SAMPLES)]
        dataset.add_samples(new, progress=False)
        vectors = dataset_vectors(NUM_SAMPLES + NEW_SAMPLES)[NUM_SAMPLES:]
    os.environ.update({ENV: point, PAUSE_ENV: pause})
    try:
        if scenario == "update":
            dequity.update_dequity(dataset, RUN_KEY, embeddings=vectors, progress=False)
        elif scenario == "reweight":
            dequity.load_dequity_results(dataset, RUN_KEY).reweight(NEW_ETA, 5.0)
        else:
            compute(dataset.take(150, seed=1), RUN_KEY, NEW_ETA, overwrite=scenario == "overwrite")
        print("result: ok", flush=True)
    except dequity.DequityError as e:
        print(f"result: DequityError: {e}", flush=True)


def kill(name: str) -> None:
    """Overwrite run ``RUN_KEY`` of a fresh dataset in a loop until killed."""
    dataset = make_dataset(name)
    compute(dataset, RUN_KEY, OLD_ETA, overwrite=False)
    print("ready", flush=True)
    for i in range(10**6):
        compute(dataset.take(150, seed=i), RUN_KEY, (1.0, 3.0)[i % 2], overwrite=True)


def race(role: str, modes: str, trials: int, folder: str) -> None:
    """For each of the comma-separated ``modes``: compute at the same moment as the other role."""
    import fiftyone as fo

    other = "b" if role == "a" else "a"
    for mode in modes.split(","):
        out = Path(folder) / f"outcomes-{mode}-{role}.jsonl"
        for trial in range(trials):
            name = f"race-{mode}-{trial}"
            if role == "a":
                dataset = make_dataset(name)
                if mode == "same-overwrite":
                    compute(dataset, RUN_KEY, OLD_ETA, overwrite=False)
            _barrier(Path(folder), f"{mode}-{trial}", role, other)
            dataset = fo.load_dataset(name)
            key = f"{RUN_KEY}{role}" if mode == "different" else RUN_KEY
            eta = {"a": 1.0, "b": 3.0}[role]
            result = outcome(
                partial(compute, dataset, key, eta, overwrite=mode == "same-overwrite")
            )
            with out.open("a") as f:
                f.write(json.dumps({"trial": trial, "role": role, "result": result}) + "\n")


def outcome(call: Any) -> str:
    """``"ok"``, ``"DequityError: ..."`` or any other error with its traceback, of ``call()``.

    Example::

        outcome(lambda: compute(dataset, "k", 1.0, overwrite=True))   # "ok"
    """
    import dequity

    try:
        call()
        return "ok"
    except dequity.DequityError as e:
        return f"DequityError: {e}"
    except Exception as e:  # recorded: any other error fails the trial
        return f"{type(e).__name__}: {e}\n{traceback.format_exc()}"


def _barrier(folder: Path, name: str, role: str, other: str) -> None:
    (folder / f"ready-{name}-{role}").touch()
    deadline = time.monotonic() + 300
    while not (folder / f"ready-{name}-{other}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other process never reached {name}")
        time.sleep(0.0005)


def check(spec_path: str, out_path: str) -> None:
    """Check each dataset named in the spec; write ``{name: {observed, problems}}``."""
    spec = json.loads(Path(spec_path).read_text())
    report = {}
    for name, expected in spec.items():
        try:
            report[name] = _check_dataset(name, expected)
        except Exception:
            report[name] = {"observed": None, "problems": [traceback.format_exc()]}
    report["_database"] = {"observed": None, "problems": _leftovers()}
    Path(out_path).write_text(json.dumps(report, indent=1))


def _check_dataset(name: str, expected: dict) -> dict:
    """``expected``: ``{"runs": {key: eta or None for either}, "num_ids": {key: n}}``."""
    import fiftyone as fo

    import dequity
    from dequity.store import claims

    dataset = fo.load_dataset(name)
    observed = {
        "runs": dataset.list_runs(),
        "fields": sorted(f for f in dataset.get_field_schema() if f.startswith(RUN_KEY)),
    }
    problems: list[str] = []
    keys = dequity.list_dequity_runs(dataset)  # recovers what dead processes left
    if claims.collection().count_documents({"dataset_id": str(dataset._doc.id)}):
        problems.append("claims left after recovery")
    if sorted(keys) != sorted(expected["runs"]):
        problems.append(f"runs {keys}, expected {sorted(expected['runs'])}")
    schema = dataset.get_field_schema()
    run_fields = {f for f in schema if f.startswith(RUN_KEY)}
    wanted = {f for k in keys for f in dataset.get_run_info(k).config.fields}  # the runs' own
    if run_fields != wanted:
        problems.append(f"fields {sorted(run_fields)}, expected {sorted(wanted)}")
    for key in keys:
        problems += _check_run(dataset, key, expected["runs"][key], expected["num_ids"].get(key))
    from fiftyone.core.odm.runs import RunDocument

    if RunDocument.objects(dataset_id=dataset._doc.id).count() != len(dataset.list_runs()):
        problems.append("run records not linked to the dataset")
    if not problems:
        problems += _exercise(dataset, keys)
    return {"observed": observed, "problems": problems}


def _check_run(dataset: Any, key: str, eta: float | None, num_ids: int | None) -> list[str]:
    import dequity

    results = dequity.load_dequity_results(dataset, key)
    problems = []
    if eta is not None and results.config.eta != eta:
        problems.append(f"run {key!r} has eta {results.config.eta}, expected {eta}")
    if num_ids is not None and len(results.sample_ids) != num_ids:
        problems.append(f"run {key!r} covers {len(results.sample_ids)} samples, not {num_ids}")
    stored = dict(zip(*dataset.values(["id", f"{key}_weight"])))
    want = dict(zip(results.sample_ids, results.weights.tolist()))
    if any(abs(stored[i] - w) > 1e-9 if stored[i] is not None else True for i, w in want.items()):
        problems.append(f"run {key!r}: stored weights differ from its results")
    if sum(v is not None for v in stored.values()) != len(want):
        problems.append(f"run {key!r}: weights on samples outside the run")
    return problems


def _exercise(dataset: Any, keys: list[str]) -> list[str]:
    """Export, reweight and rerun: everything a user does next must work."""
    import tempfile

    import dequity

    problems = []
    try:
        for key in keys:
            with tempfile.TemporaryDirectory() as tmp:
                dequity.export_weights(dataset, key, Path(tmp) / "w.json")
            dequity.load_dequity_results(dataset, key).reweight(0.5, 2.0)
            problems += _check_run(dataset, key, 0.5, None)
        compute(dataset, RUN_KEY, NEW_ETA, overwrite=RUN_KEY in keys)
        problems += _check_run(dataset, RUN_KEY, NEW_ETA, len(dataset))
    except Exception:
        problems.append(traceback.format_exc())
    return problems


def _leftovers() -> list[str]:
    """Staging collections, claims or results files that no run owns."""
    import fiftyone.core.odm as foo
    from fiftyone.core.odm.runs import RunDocument

    from dequity.store import claims
    from dequity.store.commit import STAGING_PREFIX

    db = foo.get_db_conn()
    problems = []
    staging = [c for c in db.list_collection_names() if c.startswith(STAGING_PREFIX)]
    if staging:
        problems.append(f"staging collections left: {staging}")
    if claims.collection().count_documents({}):
        problems.append(f"claims left: {list(claims.collection().find())}")
    owned = {d["results"] for d in RunDocument._get_collection().find({}, {"results": 1})}
    orphans = [f["_id"] for f in db["fs.files"].find({}, {"_id": 1}) if f["_id"] not in owned]
    if orphans:
        problems.append(f"{len(orphans)} results files without a run")
    return problems


def main(argv: list[str]) -> None:
    """Dispatch ``fault``, ``race`` or ``check``."""
    command, *args = argv
    if command == "fault":
        fault(*args)
    elif command == "failover":
        failover(*args)
    elif command == "kill":
        kill(*args)
    elif command == "race":
        race(args[0], args[1], int(args[2]), args[3])
    elif command == "check":
        check(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
