"""Statistics over seeds: means with 95 % confidence intervals, paired tests with Holm correction.

Every experiment that compares methods over seeds reports through these:
:func:`mean_ci` for one method's values, :func:`paired_tests` for several
methods against one reference (a paired t-test per method on the per-seed
differences, then Holm's correction over all of them).

Example::

    summary = mean_ci([0.31, 0.29, 0.33, 0.30, 0.32])
    tests = paired_tests({"a": [...], "b": [...]}, reference=[...])
    tests["a"].p_holm, tests["a"].significant
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MeanCI", "PairedTest", "mean_ci", "paired_tests", "share_ci"]


@dataclass(frozen=True)
class MeanCI:
    """A mean and its two-sided confidence interval (Student's t over seeds)."""

    mean: float
    low: float
    high: float
    n: int

    def format(self, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
        """``"mean [low, high]"`` times ``scale``; ``signed`` shows the mean's sign.

        Example::

            >>> mean_ci([0.1, 0.2, 0.3]).format()
            '20.0 [-4.8, 44.8]'
        """
        sign = "+" if signed else ""
        return (
            f"{self.mean * scale:{sign}.{digits}f} "
            f"[{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"
        )


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of a method with the reference over the same seeds.

    ``diff`` is the mean and CI of the per-seed differences (method minus
    reference); ``p`` the paired t-test's two-sided p-value, ``p_holm`` that
    p-value after Holm's correction over the family of tests it was run in.
    """

    diff: MeanCI
    p: float
    p_holm: float
    significant: bool


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean and the t-based ``confidence`` interval of ``values`` (NaNs dropped).

    With one value the interval is that value; with none, all NaN.

    Example::

        >>> round(mean_ci([1.0, 2.0, 3.0]).high, 3)
        4.484
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    mean = float(v.mean())
    if len(v) == 1 or np.ptp(v) == 0:
        return MeanCI(mean, mean, mean, len(v))
    half = float(stats.t.ppf((1 + confidence) / 2, len(v) - 1) * stats.sem(v))
    return MeanCI(mean, mean - half, mean + half, len(v))


def paired_tests(
    methods: Mapping[str, Sequence[float]],
    reference: Sequence[float],
    alpha: float = 0.05,
) -> dict[str, PairedTest]:
    """Paired t-tests of every method against ``reference``, Holm-corrected together.

    Values are aligned by seed (index ``i`` of every sequence is seed ``i``);
    a seed where the method or the reference is NaN (a failed run) is left
    out of that method's test.
    A method whose differences are all equal gets p = 1 when they are zero,
    else p = 0 (the t statistic is infinite); with fewer than 2 seeds p = 1.

    Example::

        tests = paired_tests({"dequity": [0.31, 0.33, 0.30]}, reference=[0.30, 0.31, 0.30])
        tests["dequity"].significant
    """
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    ref = np.asarray(reference, dtype=float)
    names, pvalues, diffs = [], [], []
    for name, values in methods.items():
        v = np.asarray(values, dtype=float)
        if v.shape != ref.shape:
            raise ValueError(f"{name!r} has {len(v)} values, the reference {len(ref)}")
        kept = np.isfinite(v) & np.isfinite(ref)
        v, r = v[kept], ref[kept]
        d = v - r
        if len(d) < 2:
            p = 1.0  # one seed is no evidence either way
        elif np.ptp(d) == 0:
            p = 1.0 if d[0] == 0 else 0.0
        else:
            p = float(stats.ttest_rel(v, r).pvalue)
        names.append(name)
        pvalues.append(p)
        diffs.append(mean_ci(d))
    if not names:
        return {}
    reject, corrected, _, _ = multipletests(pvalues, alpha=alpha, method="holm")
    return {
        n: PairedTest(d, p, float(c), bool(r))
        for n, d, p, c, r in zip(names, diffs, pvalues, corrected, reject)
    }


def share_ci(
    gains: Sequence[float],
    full_gains: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 10_000,
) -> MeanCI:
    """The share ``mean(gains) / mean(full_gains)``, with a bootstrap interval over seeds.

    ``gains[i]`` and ``full_gains[i]`` come from seed ``i`` (e.g. a method's
    and the oracle's change from the reference); seeds are resampled in
    pairs (``scipy.stats.bootstrap``, percentile interval, fixed random state).
    Seeds with a NaN are dropped; with fewer than 2 the interval is NaN.

    Example::

        share_ci([0.01, 0.02, 0.015], [0.03, 0.04, 0.035]).format(digits=0)
    """
    from scipy import stats

    a, b = np.asarray(gains, dtype=float), np.asarray(full_gains, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) == 0 or b.mean() == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), len(a))
    share = float(a.mean() / b.mean())
    if len(a) < 2:
        return MeanCI(share, float("nan"), float("nan"), len(a))
    with np.errstate(divide="ignore", invalid="ignore"):
        result = stats.bootstrap(
            (a, b),
            lambda x, y, axis=-1: np.mean(x, axis=axis) / np.mean(y, axis=axis),
            paired=True,
            vectorized=True,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            random_state=0,
        )
    low, high = result.confidence_interval
    return MeanCI(share, float(low), float(high), len(a))
