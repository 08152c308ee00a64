"""``python -m benchmarks [--quick] [--only NAME]``: run and tabulate benchmarks."""

from __future__ import annotations

import argparse
import importlib
import platform
import time
from pathlib import Path
from types import ModuleType

import benchmarks  # noqa: F401  (sets FiftyOne's environment first)
from benchmarks.common import load_raw
from reporting import add_only_option, update_readme

MODULES = {
    "likelihood": "benchmarks.likelihood_stage",
    "scale": "benchmarks.scale",
    "writes": "benchmarks.db_writes",
    "embedding": "benchmarks.embedding",
    "fidelity": "benchmarks.fidelity",
    "startup": "benchmarks.startup",
    "robustness": "benchmarks.robustness",
    "update": "benchmarks.update",
    "database": "benchmarks.database",
    "agreement": "benchmarks.agreement",
    "objects": "benchmarks.objects",
    "ray": "benchmarks.ray_scale_out",
    "fuzz": "benchmarks.fuzz",
    "failover": "benchmarks.failover",
    "load": "benchmarks.load",
    "ray_stage": "benchmarks.ray_stage",
}
RESULTS = Path(__file__).resolve().parent / "results.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (about 3 min)")
    add_only_option(parser, MODULES, "benchmark")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="run nothing; regenerate the README's blocks from the saved results-*.json",
    )
    args = parser.parse_args(argv)
    if args.rebuild:
        for module in block_modules(args.only or list(MODULES)):
            update_readme(
                module.NAME, module.readme_block(load_raw(module.NAME)), document=module.DOCUMENT
            )
        return
    names = args.only or list(MODULES)
    mode = "quick" if args.quick else "full"
    sections = [
        f"## dequity benchmarks ({mode} mode)\n\n{platform.machine()}, "
        f"{_cores()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Each speed figure is a ratio against a "
        "reference measured in the same run."
    ]
    for name in names:
        start = time.perf_counter()
        section = importlib.import_module(MODULES[name]).run(args.quick)
        section += f"\n\n_{name}: {time.perf_counter() - start:.0f} s_"
        print(section + "\n", flush=True)
        sections.append(section)
    if not args.quick:
        target = (
            RESULTS
            if args.only is None
            else RESULTS.with_name("results-" + "-".join(names) + ".md")
        )
        target.write_text("\n\n".join(sections) + "\n")
        print(f"written to {target}")


def block_modules(names: list[str]) -> list[ModuleType]:
    """The benchmarks among ``names`` that fill a generated block of the README or ``docs/``.

    Example::

        [m.NAME for m in block_modules(list(MODULES))]   # ['scale', 'writes', ...]
    """
    modules = [importlib.import_module(MODULES[name]) for name in names]
    return [m for m in modules if hasattr(m, "readme_block")]


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
