"""Per-class AP of two training runs side by side, with the change in percent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dequity.errors import DequityError
from training.config import TrainingResult
from training.plots import plot_ap_comparison
from training.records import load_training_run
from training.samples import load_samples

__all__ = ["Comparison", "compare_runs", "load_evaluation"]


@dataclass
class Comparison:
    """Rows ``(class, AP of A, AP of B, change in percent)``; the last row is the mAP."""

    run_a: str
    run_b: str
    rows: list[tuple[str, float | None, float | None, float | None]]
    chart: Path | None = None

    def table(self) -> str:
        """The comparison as aligned text, like the paper's per-class table."""
        width = max([len("class"), *(len(r[0]) for r in self.rows)])
        head = f"{'class':<{width}}  {self.run_a:>12}  {self.run_b:>12}  {'change':>9}"
        lines = [head, "-" * len(head)]
        for name, a, b, change in self.rows:
            lines.append(
                f"{name:<{width}}  {_fmt(a):>12}  {_fmt(b):>12}  "
                f"{'n/a' if change is None else f'{change:+.1f} %':>9}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "rows": [
                {"class": n, "ap_a": a, "ap_b": b, "change_percent": c} for n, a, b, c in self.rows
            ],
            "chart": str(self.chart) if self.chart else None,
        }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def load_evaluation(run: Any, dataset: Any = None) -> tuple[str, dict[str, Any]]:
    """``(name, evaluation)`` of a run given as a result, a run folder or a train key.

    A train key needs ``dataset`` (object or name).

    Example::

        name, evaluation = load_evaluation("runs/baseline")
        name, evaluation = load_evaluation("baseline", dataset="demo")
    """
    if isinstance(run, TrainingResult):
        evaluation, name = run.evaluation, run.train_key
    elif Path(str(run)).is_dir():
        path = Path(str(run)) / "evaluation.json"
        if not path.exists():
            raise DequityError(f"{path} is missing; the run was trained without a validation view")
        evaluation, name = json.loads(path.read_text()), Path(str(run)).name
    elif dataset is not None:
        evaluation, name = load_training_run(load_samples(dataset), str(run)).evaluation, str(run)
    else:
        raise DequityError(
            f"{run!r} is not a run folder; pass --dataset to look the train key up on a dataset"
        )
    if not evaluation:
        raise DequityError(f"run {name!r} has no evaluation; train it with a validation view")
    return name, evaluation


def compare_runs(
    run_a: Any, run_b: Any, *, dataset: Any = None, output: str | Path | None = None
) -> Comparison:
    """Compares the per-class AP of two runs (B against A) and draws a bar chart.

    Runs are :class:`TrainingResult` objects, run folders, or train keys on
    ``dataset``. The change is ``100 * (AP_B - AP_A) / AP_A``. The chart is
    written to ``output`` when given.

    Example::

        cmp = compare_runs("baseline", "dequity_train", dataset="demo", output="compare.png")
        print(cmp.table())
    """
    name_a, eval_a = load_evaluation(run_a, dataset)
    name_b, eval_b = load_evaluation(run_b, dataset)
    if name_a == name_b:
        name_a, name_b = f"A:{name_a}", f"B:{name_b}"
    ap_a, ap_b = eval_a["per_class_ap"], eval_b["per_class_ap"]
    classes = list(ap_a) + [c for c in ap_b if c not in ap_a]
    rows = []
    for name, a, b in [
        *((c, ap_a.get(c), ap_b.get(c)) for c in classes),
        ("mAP", eval_a.get("mAP"), eval_b.get("mAP")),
    ]:
        change = 100 * (b - a) / a if a and b is not None else None
        rows.append((name, a, b, change))
    chart = None
    if output is not None:
        chart = plot_ap_comparison(
            classes,
            [ap_a.get(c) for c in classes],
            [ap_b.get(c) for c in classes],
            (name_a, name_b),
            output,
        )
    return Comparison(name_a, name_b, rows, chart)
