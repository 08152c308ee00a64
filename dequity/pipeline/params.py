"""Checks at the door: numbers, names and each stage's declared parameters.

Each projection and clustering declares its parameters once, as a table of
:class:`Param`; :func:`resolve_params` checks given values against it and
fills in the defaults. :func:`dequity.config.resolve` does this once per call.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dequity.errors import DequityError

#: the default of a parameter that the estimator itself defaults
UNSET: Any = object()


@dataclass(frozen=True)
class Param:
    """One parameter of a projection or clustering, declared once.

    ``default``: the value dequity uses when none is given (:data:`UNSET`: the
    estimator's own). ``check(name, value)`` raises :class:`DequityError` for
    a value it rejects (None: the estimator checks it). ``estimator``: passed
    to the scikit-learn estimator (False: dequity's own). ``flag``: True and
    False are values, not numbers. ``cpu_only``: an option of the CPU
    implementation that cuML's lacks.

    Example::

        >>> table = {"k": Param(30, check=Integer(1)), "metric": Param()}
        >>> resolve_params(table, {"k": 5}, "clustering_kwargs", "knn")
        {'k': 5}
    """

    default: Any = UNSET
    check: Callable[[str, Any], None] | None = None
    estimator: bool = True
    flag: bool = False
    cpu_only: bool = False


# Hand-written rather than wrapping sklearn.utils.check_scalar: it accepts True as an
# int and NaN (and inf with no upper bound) as a float (scikit-learn 1.9), so the bool
# and finiteness checks and our messages would stay and it would replace one isinstance.
@dataclass(frozen=True)
class Integer:
    """Accepts integers >= ``minimum`` (and None if ``optional``)."""

    minimum: int
    optional: bool = False

    def __call__(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if (
            isinstance(value, (bool, np.bool_))
            or not isinstance(value, numbers.Integral)
            or value < self.minimum
        ):
            none = "None or " if self.optional else ""
            raise DequityError(f"{name} must be {none}an integer >= {self.minimum}, got {value!r}")


@dataclass(frozen=True)
class Real:
    """Accepts real numbers above ``low`` (or at it, if ``closed``) and up to ``high``."""

    low: float
    high: float | None = None
    closed: bool = True
    note: str = ""

    def __call__(self, name: str, value: Any) -> None:
        ok = (
            not isinstance(value, (bool, np.bool_))
            and isinstance(value, numbers.Real)
            and bool(np.isfinite(value))
            and (value >= self.low if self.closed else value > self.low)
            and (self.high is None or value <= self.high)
        )
        if not ok:
            if self.high is not None:
                bounds = f"in [{self.low}, {self.high}]"
            else:
                bounds = f"{'>=' if self.closed else '>'} {self.low}"
            note = f" ({self.note})" if self.note else ""
            raise DequityError(f"{name} must be a number {bounds}{note}, got {value!r}")


def resolve_params(
    table: Mapping[str, Param], kwargs: Mapping[str, Any] | None, what: str, method: Any
) -> dict:
    """The full parameters of ``method``: ``table``'s defaults updated by checked ``kwargs``.

    Raises :class:`DequityError` for a parameter ``table`` does not declare,
    a value its check rejects, or a bool where a number belongs.

    Example::

        >>> resolve_params({"eps": Param(2.0, check=Real(0, closed=False))},
        ...                {"eps": 0}, "clustering_kwargs", "dbscan")
        Traceback (most recent call last):
        ...
        dequity.errors.DequityError: eps must be a number > 0, got 0
    """
    kwargs = dict(kwargs or {})
    unknown = set(kwargs) - set(table)
    if unknown:
        kind = what.removesuffix("_kwargs")
        raise DequityError(
            f"unknown {what} {sorted(unknown)} for {kind} {method!r}; accepted: {sorted(table)}"
        )
    params = {name: p.default for name, p in table.items() if p.default is not UNSET}
    params.update(kwargs)
    for name, value in params.items():
        param = table[name]
        if param.check is not None:
            param.check(name, value)
        elif not param.flag and isinstance(value, (bool, np.bool_)):
            raise DequityError(f"{what} for {method!r}: {name} must not be a bool, got {value}")
    return params


def check_number(
    name: str, value: Any, *, minimum: float | None = None, integer: bool = False
) -> None:
    """Raise :class:`DequityError` unless ``value`` is a real (or integer) number >= ``minimum``.

    Rejects bool, str, None, complex and arrays, which numpy would otherwise
    accept or turn into confusing errors later.

    Example::

        >>> check_number("batch_size", 32, minimum=1, integer=True)
        >>> check_number("eta", True)
        Traceback (most recent call last):
        ...
        dequity.errors.DequityError: eta must be a number, got True (bool)
    """
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kind):
        what = "an integer" if integer else "a number"
        raise DequityError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if not np.isfinite(float(value)) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise DequityError(f"{name} must be a finite number{bound}, got {value!r}")


def check_field_name(name: str, value: Any) -> None:
    """Raise unless ``value`` can name a top-level FiftyOne field.

    Example::

        >>> check_field_name("embeddings_field", "a.b")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dequity.errors.DequityError: embeddings_field must be a Python identifier ...
    """
    if not isinstance(value, str) or not value.isidentifier() or value.startswith("_"):
        raise DequityError(
            f"{name} must be a Python identifier not starting with '_' (a top-level "
            f"field name), got {value!r}"
        )
