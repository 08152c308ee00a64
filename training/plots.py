"""PNG charts of training runs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["plot_ap_comparison", "plot_loss_curve"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curve(
    steps: Sequence[int], losses: Sequence[float], path: str | Path, title: str = "training loss"
) -> Path:
    """Writes the per-step loss and its running mean to ``path``.

    Example::

        plot_loss_curve([1, 2, 3], [1.2, 1.0, 0.9], "runs/demo/loss_curve.png")
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss")
    window = max(1, len(losses) // 20)
    smooth = [
        sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
        for i in range(len(losses))
    ]
    ax.plot(steps, smooth, lw=1.5, label=f"running mean ({window} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_ap_comparison(
    classes: Sequence[str],
    ap_a: Sequence[float | None],
    ap_b: Sequence[float | None],
    labels: tuple[str, str],
    path: str | Path,
) -> Path:
    """Writes a grouped bar chart of per-class AP for two runs to ``path``.

    Example::

        plot_ap_comparison(["car"], [0.4], [0.5], ("baseline", "dequity"), "compare.png")
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(classes) + 2), 4))
    xs = range(len(classes))
    width = 0.4
    for offset, values, label in ((-width / 2, ap_a, labels[0]), (width / 2, ap_b, labels[1])):
        ax.bar([x + offset for x in xs], [v or 0.0 for v in values], width, label=label)
    ax.set_xticks(list(xs), list(classes))
    ax.set_ylabel("AP (COCO, IoU 0.50:0.95)")
    ax.set_title("per-class AP")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
