"""Bad input, fuzzed at length: how many cases of each kind were tried, and whether all held.

Runs ``tests/test_fuzz.py`` with many examples per property (``hypothesis``)
and saves, per parameter, how many bad values were tried against
``compute_dequity``, the command line and the App's operators. Every case
must be refused with one ``DequityError`` that names it, before any
embedding, leaving the dataset as it was; the record says whether all did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import save_raw, timed
from reporting import REPO, md_table

NAME = "fuzz"
#: the page whose generated block this benchmark fills
DOCUMENT = "README.md"
#: examples per property in the full run (the test suite runs 60)
EXAMPLES = 1_000


def _run_properties(examples: int) -> tuple[dict[str, int], bool, str]:
    """``(cases tried per parameter, whether every property held, pytest's last line)``."""
    with tempfile.TemporaryDirectory() as folder:
        record = Path(folder) / "tried.json"
        env = {
            **os.environ,
            "DEQUITY_FUZZ_EXAMPLES": str(examples),
            "DEQUITY_FUZZ_RECORD": str(record),
        }
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        tried = json.loads(record.read_text()) if record.exists() else {}
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
    return dict(sorted(tried.items())), done.returncode == 0, last


def readme_block(record: dict) -> str:
    """The README's sentence from the saved record.

    Example::

        from benchmarks.common import load_raw

        print(readme_block(load_raw(NAME)))
    """
    tried = record["values"]["tried"]

    def total(prefix: str) -> int:
        return sum(n for what, n in tried.items() if what.startswith(prefix))

    verdict = "every one was" if record["values"]["all_held"] else "NOT every one was"
    return (
        f"Fuzzed with `hypothesis` ({record['config']['examples']:,} examples per property): "
        f"{total('compute_dequity'):,} bad values passed to `compute_dequity`, "
        f"{total('dequity compute'):,} to the command line and {total('operator'):,} to the "
        f"App's operators; {verdict} refused with one clear error before any embedding, "
        "the dataset left as it was."
    )


def run(quick: bool) -> str:
    """Every property with :data:`EXAMPLES` examples (10 in quick mode)."""
    examples = 10 if quick else EXAMPLES
    seconds, (tried, held, last) = timed(_run_properties, examples)
    if not quick:
        values = {"tried": tried, "all_held": held, "pytest": last}
        save_raw(NAME, values, {"examples": examples}, block=readme_block, document=DOCUMENT)
    rows = [[what, count] for what, count in tried.items()]
    return (
        f"### Bad input, fuzzed ({examples} examples per property)\n\n"
        f"{sum(tried.values()):,} bad values tried in {seconds:.0f} s; every one refused "
        f"with one clear error and the dataset unchanged: {held} ({last}).\n\n"
        + md_table(["bad value in", "cases tried"], rows)
    )


if __name__ == "__main__":
    print(run(quick=False))
