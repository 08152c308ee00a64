"""Markdown and plots for the results: mean and spread over seeds, verdicts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from experiments.stats import mean_ci
from reporting import md_table

DOCS = Path(__file__).resolve().parent.parent / "docs"
FULL_SEEDS = (0, 1, 2, 3, 4)


@dataclass
class Section:
    """One experiment's part of ``docs/results.md``."""

    title: str
    body: str
    verdicts: list[str] = field(default_factory=list)
    #: the answer that opens ``docs/results.md`` (empty: the section has none)
    lead: str = ""
    #: SHA-256 of the raw per-seed file the section was built from (empty: none)
    source_sha256: str = ""

    def markdown(self) -> str:
        return f"## {self.title}\n\n{self.body}\n"

    def save(self, folder: Path, name: str) -> Path:
        """Writes ``<name>.md`` and ``<name>.json`` (read back by :meth:`load`)."""
        (folder / f"{name}.md").write_text(self.markdown())
        path = folder / f"{name}.json"
        path.write_text(json.dumps(asdict(self), indent=1, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, folder: Path, name: str) -> Section | None:
        """The section saved under ``name`` in ``folder``, or None."""
        path = folder / f"{name}.json"
        return cls(**json.loads(path.read_text())) if path.exists() else None


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table (see :func:`reporting.md_table`)."""
    return md_table(headers, rows)


def bar_chart(
    path: Path,
    groups: Sequence[str],
    series: dict[str, Sequence[Sequence[float]]],
    ylabel: str,
    title: str,
) -> Path:
    """Grouped bars: mean and 95 % interval; ``series[name][g]`` holds one value per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(groups)), 4.0))
    width = 0.8 / len(series)
    for i, (name, per_group) in enumerate(series.items()):
        cis = [mean_ci(v) for v in per_group]
        means = [100 * c.mean for c in cis]
        half = [100 * (c.high - c.mean) for c in cis]
        xs = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        ax.bar(xs, means, width, yerr=half, capsize=3, label=name)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(series))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def script_main(
    run: Callable[[bool, Sequence[int], Path], Section], doc: str | None, name: str
) -> None:
    """Command line of one experiment: ``--quick``, ``--seeds``, ``--output``.

    Writes ``<output>/<name>.md`` (default output: ``docs/results`` in full
    mode, ``/tmp/dequity-experiments/quick`` with ``--quick``).
    """
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=doc)
    add_arguments(parser)
    args = parser.parse_args()
    output = output_dir(args)
    section = run(args.quick, seeds_of(args), output)
    section.save(output, name)
    print(section.markdown())
    print(f"written to {output / name}.md; python -m experiments --only ... assembles them")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every experiment takes."""
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one seed")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (quick: 0)")
    parser.add_argument("--output", type=Path, help="folder for the markdown and plots")


def seeds_of(args: argparse.Namespace) -> tuple[int, ...]:
    """The seeds asked for, or the mode's default."""
    return tuple(args.seeds) if args.seeds else ((0,) if args.quick else FULL_SEEDS)


def output_dir(args: argparse.Namespace) -> Path:
    """The output folder asked for, or the mode's default; created."""
    default = Path("/tmp/dequity-experiments/quick") if args.quick else DOCS / "results"
    folder = args.output or default
    folder.mkdir(parents=True, exist_ok=True)
    return folder
