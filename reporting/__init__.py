"""Helpers shared by ``benchmarks`` and ``experiments``: tables, ranks, options, provenance.

Development tooling beside the library; the installed ``dequity`` package
does not import it.

Example::

    from reporting import md_table
    print(md_table(["method", "AP"], [["gfl", 0.512]]))
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def add_only_option(parser: argparse.ArgumentParser, names: Sequence[str], what: str) -> None:
    """``--only NAME`` (repeatable), shared by ``python -m benchmarks`` and ``experiments``.

    Example::

        add_only_option(parser, ["fidelity", "scale"], "benchmark")
    """
    parser.add_argument(
        "--only",
        choices=sorted(names),
        action="append",
        help=f"run only this {what} (repeatable)",
    )


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; floats are printed with 3 significant digits.

    Example::

        >>> print(md_table(["a", "b"], [[1, 0.12345]]))
        | a | b |
        | --- | --- |
        | 1 | 0.123 |
    """

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (0 when either side is constant).

    Example::

        >>> spearman(np.array([1, 2, 3]), np.array([10, 30, 20]))
        0.5
    """
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b)[0])


def git_commit(repo: Path = REPO) -> str:
    """The repository's commit (``+dirty`` when tracked code changed), or ``unknown``.

    ``$DEQUITY_COMMIT`` names it for a copy of the tree without its ``.git``.

    Example::

        record = {"commit": git_commit(), "values": values}
    """
    import subprocess

    if os.environ.get("DEQUITY_COMMIT"):
        return os.environ["DEQUITY_COMMIT"]

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:  # no git on this machine
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    # results and prose written by an earlier run in the same checkout are not code
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *_NOT_CODE)
    return commit + ("+dirty" if changed else "")


#: paths whose changes do not make a checkout's code dirty (git pathspecs)
_NOT_CODE = (":(exclude)*.md", ":(exclude)benchmarks/results-*", ":(exclude)docs/results/*")


def update_readme(
    name: str, text: str, source: str | None = None, document: str = "README.md"
) -> bool:
    """Replace the generated block ``<!-- results:NAME -->`` of ``document`` with ``text``.

    The block runs from ``<!-- results:NAME -->`` to ``<!-- /results:NAME -->``
    and names ``source`` (default ``benchmarks/results-NAME.json``) as its origin;
    ``document`` is a path from the repository root (the README, or a page of
    ``docs/``). Returns False (and changes nothing) when it has no such block.

    Example::

        update_readme("fidelity", "| set | AUC |\n| --- | --- |\n| night | 0.95 |")
    """
    path = REPO / document
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    content = path.read_text()
    if begin not in content or end not in content:
        return False
    head, rest = content.split(begin, 1)
    tail = rest.split(end, 1)[1]
    source = source or f"benchmarks/results-{name}.json"
    path.write_text(f"{head}{begin}\n_Generated from `{source}`._\n\n{text}\n{end}{tail}")
    return True
