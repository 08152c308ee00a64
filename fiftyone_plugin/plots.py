"""Plotly figures (traces + layouts as plain dicts) for the dequity forms and panel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import dequity

NOISE_LABEL = "noise"
_CURVE_POINTS = 101
_COLOR = "#ff6d04"
_NOISE_COLOR = "#999999"


def _layout(title: str, xtitle: str, ytitle: str, **extra: Any) -> dict:
    return {
        "title": {"text": title, "font": {"size": 14}},
        "xaxis": {"title": {"text": xtitle}},
        "yaxis": {"title": {"text": ytitle}},
        "margin": {"l": 50, "r": 20, "t": 40, "b": 45},
        "height": 280,
        "showlegend": False,
        **extra,
    }


def cluster_label(cluster_id: int) -> str:
    """The bar label of a cluster id (``-1`` is noise)."""
    return NOISE_LABEL if cluster_id < 0 else f"#{cluster_id}"


def parse_cluster_label(label: Any) -> int | None:
    """Inverse of :func:`cluster_label`; None if ``label`` names no cluster."""
    if label is None:
        return None
    text = str(label)
    if text == NOISE_LABEL:
        return -1
    try:
        return int(text.lstrip("#"))
    except ValueError:
        return None


def cluster_size_bars(sizes: dict[int, int]) -> tuple[list[dict], dict]:
    """Bar chart of cluster sizes, most common first and noise last (paper, Fig. 2).

    ``sizes`` is :meth:`dequity.DequityResults.cluster_sizes`.
    """
    clusters = [(c, n) for c, n in sizes.items() if c >= 0]
    clusters.sort(key=lambda item: (-item[1], item[0]))
    if -1 in sizes:
        clusters.append((-1, sizes[-1]))
    labels = [cluster_label(c) for c, _ in clusters]
    trace = {
        "type": "bar",
        "x": labels,
        "y": [n for _, n in clusters],
        "ids": labels,
        "marker": {"color": [_NOISE_COLOR if c < 0 else _COLOR for c, _ in clusters]},
        "hovertemplate": "cluster %{x}: %{y} samples<extra></extra>",
    }
    layout = _layout(
        "Cluster sizes, common to rare (click a bar to show its samples)",
        "cluster",
        "samples",
        xaxis={"title": {"text": "cluster"}, "type": "category"},
    )
    return [trace], layout


def weight_curve(
    eta: float, gamma: float, likelihoods: Sequence[float] | None = None
) -> tuple[list[dict], dict]:
    """The GFL weight ``W(p)`` on ``[0, 1]``; markers at the run's likelihoods."""
    p = np.linspace(0.0, 1.0, _CURVE_POINTS)
    w = dequity.gfl_weight(p, eta, gamma)
    traces = [
        {
            "type": "scatter",
            "mode": "lines",
            "x": p.round(4).tolist(),
            "y": np.asarray(w).round(5).tolist(),
            "line": {"color": _COLOR},
            "name": "W(p)",
        }
    ]
    if likelihoods is not None and len(likelihoods):
        ps = np.unique(np.asarray(likelihoods, dtype=float))
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": ps.round(4).tolist(),
                "y": np.asarray(dequity.gfl_weight(ps, eta, gamma)).round(5).tolist(),
                "marker": {"color": "#1f77b4", "size": 6},
                "name": "clusters",
            }
        )
    layout = _layout(
        f"W(p) = (eta + (1 - p)^gamma) / (eta + 1), eta={eta:g}, gamma={gamma:g}",
        "likelihood p",
        "weight W",
        yaxis={"title": {"text": "weight W"}, "range": [0, 1.05]},
    )
    return traces, layout


def histogram(
    values: Sequence[float], title: str = "Weights", xtitle: str = "weight W"
) -> tuple[list[dict], dict]:
    """Histogram of one value per sample (weights, likelihoods)."""
    trace = {
        "type": "histogram",
        "x": np.asarray(values, dtype=float).round(5).tolist(),
        "nbinsx": 40,
        "marker": {"color": _COLOR},
    }
    return [trace], _layout(title, xtitle, "samples")
