"""The door to the database: one :class:`Store` per dataset, one :class:`Writer` per run key.

Every call of the API goes through a store: it recovers what dead writers
left once, at the start of the call (:meth:`Store.recover`), reads runs, and
writes only inside :meth:`Store.writing`, which claims the run key (see
:mod:`dequity.store.claims`) and hands out a writer whose every write is
crash-safe (see :mod:`dequity.store.commit`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, ParamSpec, TypeVar

import fiftyone.core.validation as fov

from dequity.errors import DequityError
from dequity.store import claims, commit
from dequity.store import compat as fc
from dequity.store.fields import check_fields_free
from dequity.store.names import METHOD

P = ParamSpec("P")
R = TypeVar("R")


class Store:
    """The database side of the dataset that ``samples`` (a dataset or view) belongs to.

    Example::

        store = Store(dataset)
        store.recover()
        with store.writing("dequity") as writer:
            writer.commit(config, results, ids, columns)
    """

    def __init__(self, samples: Any) -> None:
        fov.validate_collection(samples)
        if fc.is_generated_view(samples):
            raise DequityError(
                "dequity runs on a dataset or a view of its samples, not on frames, patches "
                "or clips views; clone the view into a dataset first (view.clone()). For "
                "video frames, count each video once: compute_dequity(dataset.to_frames("
                "sample_frames=True).clone(), group_field='sample_id')"
            )
        self.samples = samples
        self.dataset = fc.root_dataset(samples)

    @classmethod
    def open(cls, samples: Any) -> Store:
        """The store of ``samples``' dataset, with what dead writers left recovered.

        Example::

            store = Store.open(dataset.match(F("label") == "car"))
        """
        store = cls(samples)
        store.recover()
        return store

    def recover(self) -> list[str]:
        """Finish or undo the runs whose writers died; the keys it recovered."""
        return commit.recover_dataset(self.dataset)

    def runs(self) -> list[str]:
        """The keys of the dataset's dequity runs."""
        return self.dataset.list_runs(method=METHOD)

    def has_run(self, run_key: str) -> bool:
        """Whether any run (dequity's or another kind) is called ``run_key``."""
        return self.dataset.has_run(run_key)

    def config(self, run_key: str) -> Any:
        """The stored config of dequity run ``run_key``, or None if there is none."""
        return self.dataset.get_run_info(run_key).config if run_key in self.runs() else None

    def results(self, run_key: str) -> Any:
        """The stored results of dequity run ``run_key``, on the store's samples.

        Raises :class:`DequityError` if there is no such run, or if another
        process is committing it right now.
        """
        writer = commit.writer_of(self.dataset, run_key)
        if run_key not in self.runs():
            busy = f" (it is being computed by {claims.describe(writer)})" if writer else ""
            raise DequityError(
                f"no dequity run {run_key!r} on this dataset{busy}; runs: "
                f"{self.runs()}. Compute one with dequity.compute_dequity"
            )
        if writer is not None and writer.get("phase") == "committing":
            raise DequityError(
                f"run {run_key!r} is being written by {claims.describe(writer)}; "
                "try again in a moment"
            )
        return self.samples.load_run_results(run_key)

    def check_fields_free(self, fields: dict[str, type], run_key: str) -> None:
        """Raise unless each of ``fields`` is absent or owned by run ``run_key``."""
        check_fields_free(self.dataset, fields, run_key)

    @contextmanager
    def writing(self, run_key: str, *also: str) -> Iterator[Writer]:
        """Hold run key ``run_key`` (and the keys ``also``) for the block; yield its writer.

        Raises :class:`DequityError` at once if another live process holds a
        key. The dataset is reloaded on entry, so checks in the block see
        other processes' runs.
        """
        with ExitStack() as stack:
            claim = stack.enter_context(commit.claim_run(self.dataset, run_key))
            for key in also:
                stack.enter_context(commit.claim_run(self.dataset, key))
            yield Writer(self, claim, run_key)


class Writer:
    """The writes of one claimed run key, each all or nothing.

    Get one from :meth:`Store.writing`.
    """

    def __init__(self, store: Store, claim: claims.Claim, run_key: str) -> None:
        self.store = store
        self.claim = claim
        self.run_key = run_key

    def commit(
        self,
        config: Any,
        results: Any,
        ids: Sequence[str],
        columns: list[commit.Column],
        *,
        index: str | None = None,
        progress: Any = None,
        objects: commit.ObjectColumns | None = None,
        rescaling: commit.Rescaling | None = None,
        stage: Callable[[str], None] | None = None,
    ) -> None:
        """Write ``columns`` of samples ``ids`` and the run's record, replacing the old.

        ``rescaling`` moves other samples' values in the database, in the same
        step (see :class:`dequity.store.commit.Rescaling`); ``stage`` stages
        the values itself (see :func:`dequity.store.commit.commit_run`).

        Example::

            writer.commit(config, results, ids, run_columns(config, {"weight": w}))
        """
        commit.commit_run(
            self.claim,
            self.store.samples,
            self.run_key,
            config,
            results,
            ids,
            columns,
            index=index,
            progress=progress,
            objects=objects,
            rescaling=rescaling,
            stage=stage,
        )

    def delete_field(self, name: str) -> None:
        """Delete sample field ``name`` (one the run's commit emptied)."""
        self.store.dataset.delete_sample_field(name)

    def delete(self) -> None:
        """Delete the run, its record and the fields it owns."""
        commit.delete_run(self.claim, self.store.dataset, self.run_key)

    def rename(self, new_run_key: str) -> None:
        """Rename the run and its fields; the writer must hold ``new_run_key`` too."""
        commit.rename_run(self.claim, self.store.dataset, self.run_key, new_run_key)


def rerun_if_disconnected(function: Callable[P, R]) -> Callable[P, R]:
    """Decorate a call that writes a run: a lost database becomes a ``DequityError``.

    When the database stays out of reach longer than the driver retries (a
    replica set without a primary, a server gone), the run's writes stop where
    they were; the claim and journal let the next call roll them back or finish
    them. The caller gets one error that says so instead of the driver's.

    Example::

        @rerun_if_disconnected
        def compute_dequity(samples, run_key="dequity", **kwargs): ...
    """

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        from pymongo.errors import ConnectionFailure

        try:
            return function(*args, **kwargs)
        except ConnectionFailure as e:
            raise DequityError(
                f"the database could not be reached mid-run ({type(e).__name__}: "
                f"{_first_clause(e)}); nothing half-written is kept: rerun "
                "once the database is back, and the next call finishes or rolls back "
                "this one"
            ) from e

    return call


def _first_clause(error: Exception) -> str:
    """The driver's message without its topology dump."""
    return str(error).split(", Topology Description")[0].splitlines()[0][:200]
