"""Label-free discovery: does the likelihood find the rare classes without labels?

On the long-tailed Fashion-MNIST sets of the classification experiment,
each configuration computes likelihoods from the embeddings alone; we then
ask how well the mean likelihood of each class tracks the class's frequency
(Spearman over the 10 classes), and what share of the 10 % highest-weighted
images belongs to the 3 rarest classes (against their share of the set).

Per-seed raw values go to ``docs/results/discovery_runs.json`` with the
configurations and commit; :func:`section_from_json` turns that file into the report.

Run: ``python -m experiments.discovery [--quick] [--seeds 0 1 2 3 4]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dequity.defaults import DEFAULT_MODEL
from dequity.errors import DequityError
from experiments.fashion_mnist import load_split, long_tail_set
from experiments.pool import brain_likelihoods, dequity_fields, prepare_pool, training_dataset
from experiments.report import Section, script_main, table
from experiments.stats import mean_ci, paired_tests
from reporting import git_commit, spearman

NAME = "discovery"
RAW_FILE = "discovery_runs.json"
TOP_SHARE = 0.1
RARE_CLASSES = 3

#: the whole vector only: every configuration but the default, as its name says
_WHOLE = {"views": None}
#: name -> keyword arguments of compute_dequity, or a FiftyOne Brain peer (``"brain"``)
CONFIGS: dict[str, dict] = {
    "default: rare in any view (whole vector, ranked content and off-domain views)": {},
    "previous default: rare in any view, content view as a likelihood": {"views": "content"},
    "earlier default: PCA-50 + HDBSCAN(10) x sqrt k-NN crowding, whole vector": {
        "clustering_kwargs": {"density_power": 0.5},
        **_WHOLE,
    },
    "default before the every-stage model: final features, PCA-50 + HDBSCAN(10), "
    "noise as singletons": {
        "model": "efficientnet-lite0",
        "clustering": "hdbscan",
        "noise": "singleton",
        **_WHOLE,
    },
    "previous clustering on the default's features": {
        "clustering": "hdbscan",
        "noise": "singleton",
        **_WHOLE,
    },
    "paper: t-SNE 3-D + DBSCAN(eps 2, min_samples 10), noise as one cluster": {
        "projection": "tsne",
        "clustering": "dbscan",
        "noise": "cluster",
        **_WHOLE,
    },
    "openTSNE 2-D + HDBSCAN(10)": {"projection": "opentsne", "clustering": "hdbscan", **_WHOLE},
    "PCA-50 + HDBSCAN(25)": {
        "clustering": "hdbscan",
        "clustering_kwargs": {"min_cluster_size": 25},
        **_WHOLE,
    },
    "PCA-50 + HDBSCAN(10), noise joins the nearest cluster": {"clustering": "hdbscan", **_WHOLE},
    "k-NN density (k 10) on PCA-50, no clusters": {
        "clustering": "knn",
        "clustering_kwargs": {"k": 10},
        **_WHOLE,
    },
    "k-NN density (k 30) on PCA-50, no clusters": {"clustering": "knn", **_WHOLE},
    "FiftyOne Brain uniqueness, final features": {
        "brain": "uniqueness",
        "model": "efficientnet-lite0",
    },
    "FiftyOne Brain uniqueness, every-stage features": {"brain": "uniqueness"},
}


def likelihoods(dataset, train_set, config: dict) -> np.ndarray:
    """Likelihood of each image of ``train_set`` under ``config`` (no labels used)."""
    if "brain" in config:
        return brain_likelihoods(dataset, train_set, config.get("model", DEFAULT_MODEL))
    return dequity_fields(dataset, train_set, ("likelihood",), **config)[0]


def scores(p: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(Spearman of class mean likelihood vs frequency, rare share of the top 10 %, base rate)."""
    classes, counts = np.unique(y, return_counts=True)
    per_class = np.array([p[y == c].mean() for c in classes])
    rare = classes[np.argsort(counts)[:RARE_CLASSES]]
    top = np.argsort(p, kind="stable")[: max(1, round(TOP_SHARE * len(p)))]
    return (
        spearman(per_class, counts),
        float(np.isin(y[top], rare).mean()),
        float(np.isin(y, rare).mean()),
    )


def run(quick: bool, seeds: Sequence[int], output: Path) -> Section:
    """Every configuration on the long-tailed set of every seed; raw values to ``RAW_FILE``."""
    images, labels = load_split("train")
    largest = 60 if quick else 1000
    configs = {k: v for k, v in CONFIGS.items() if not (quick and "tsne" in str(v))}
    runs: dict[str, dict[str, list[float | None]]] = {}
    sets = [long_tail_set(labels, largest, seed=seed) for seed in seeds]
    models = tuple(sorted({c.get("model", DEFAULT_MODEL) for c in configs.values()}))
    prepare_pool(sets, images, labels, models)
    for seed, train_set in zip(seeds, sets):
        dataset = training_dataset(train_set, images, labels)
        y = labels[train_set.rows]
        runs[str(seed)] = {}
        for name, config in configs.items():
            try:
                values = list(scores(likelihoods(dataset, train_set, config), y))
            except DequityError as e:  # e.g. every sample noise on a small set
                print(f"{name}: {e}")
                values = [None, None, None]
            runs[str(seed)][name] = values
    data = {
        "experiment": NAME,
        "mode": "quick" if quick else "full",
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "config": {"largest": largest, "imbalance": 100, "top_share": TOP_SHARE},
        "configurations": configs,
        "seeds": list(seeds),
        "values": ["spearman", "rare share of top", "rare share of set"],
        "runs": runs,
    }
    path = output / RAW_FILE
    path.write_text(json.dumps(data, indent=1))
    return section_from_json(path)


def section_from_json(path: Path) -> Section:
    """The report of a saved run (``discovery_runs.json``): means with CIs, paired tests.

    Every configuration's Spearman is compared with the paper's over the same
    seeds (paired t-test, Holm-corrected over the configurations).

    Example::

        print(section_from_json(Path("docs/results/discovery_runs.json")).markdown())
    """
    data = json.loads(Path(path).read_text())
    seeds, names = data["seeds"], list(data["configurations"])

    def values(name: str, i: int) -> list[float]:
        v = [data["runs"][str(s)][name][i] for s in seeds]
        return [np.nan if x is None else x for x in v]

    failed = [n for n in names if np.isnan(values(n, 0)).any()]
    paper = next((n for n in names if n.startswith("paper") and n not in failed), None)
    compared = {n: values(n, 0) for n in names if n not in [*failed, paper]}
    tests = paired_tests(compared, values(paper, 0)) if paper else {}
    rows = []
    for n in names:
        if n in failed:
            rows.append([n, "failed on some seed (every sample noise)", "", "", "", ""])
            continue
        t, mark = tests.get(n), "(reference)" if n == paper else ""
        rows.append(
            [
                n,
                mean_ci(values(n, 0)).format(scale=1.0, digits=2),
                mean_ci(values(n, 1)).format(),
                mean_ci(values(n, 2)).format(),
                t.diff.format(scale=1.0, digits=2, signed=True) if t else mark,
                f"{t.p_holm:.3f}" if t else "",
            ]
        )
    ok = [n for n in names if n not in failed]
    best = max(ok, key=lambda n: np.mean(values(n, 0)))
    default = names[0]
    rho = mean_ci(values(default, 0)).format(scale=1.0, digits=2)
    lift = np.mean(values(default, 1)) / np.mean(values(default, 2))
    verdicts = [
        f"Label-free discovery: the default's class mean likelihood tracks class frequency "
        f"with Spearman {rho} (95 % CI); best: {best}."
    ]
    peers = [n for n in names if "brain" in data["configurations"][n]]
    peer_tests = paired_tests(
        {n: np.subtract(values(default, 0), values(n, 0)) for n in peers if n not in failed},
        np.zeros(len(seeds)),
    )
    against = "; ".join(
        f"{n}: {t.diff.format(scale=1.0, digits=2, signed=True)} (Holm p {t.p_holm:.3f})"
        for n, t in peer_tests.items()
    )
    if against:
        verdicts.append(
            f"Label-free discovery, the default's Spearman minus FiftyOne Brain's: {against}."
        )
    body = f"""Generated from `results/{RAW_FILE}` ({data["mode"]} mode, commit
`{data["commit"][:12]}`, {data["date"]}). Long-tailed Fashion-MNIST (largest class
{data["config"]["largest"]}, imbalance 100), embedded with dequity's default model
({DEFAULT_MODEL}); seeds {seeds} (each its own subsample and class order). No labels are
used to compute the likelihoods; labels only score them. Means with 95 % t intervals;
each configuration's Spearman is compared with the paper's by a paired t-test over
seeds, Holm-corrected over the {len(tests)} comparisons.

{
        table(
            [
                "configuration",
                "Spearman: class mean likelihood vs class frequency",
                f"rare-class share of the top {TOP_SHARE:.0%} weighted %",
                "rare-class share of the set %",
                "Spearman − paper's",
                "p (Holm)",
            ],
            rows,
        )
    }

- Best rank correlation: {best}.
- The default's correlation is {rho}; a value of 1 would mean the classes' mean
  likelihoods are ordered exactly as their sizes.
- The top-weighted images hold the rare classes at {lift:.1f}x their share of the set
  with the default configuration.
{_peer_line(against)}"""
    return Section("3. Label-free discovery: do likelihoods find the rare classes?", body, verdicts)


def _peer_line(against: str) -> str:
    """The bullet on the default against FiftyOne Brain, when the run scored the peer."""
    if not against:
        return ""
    return (
        "- The default's Spearman minus that of FiftyOne Brain's uniqueness (`1 - uniqueness` "
        f"as the likelihood), paired over seeds and Holm-corrected over the peer's rows: "
        f"{against}.\n"
    )


if __name__ == "__main__":
    script_main(run, __doc__, NAME)
