"""The fidelity benchmark chooses the default in code, and the README shows its saved figures."""

import json

import numpy as np

from benchmarks import fidelity
from benchmarks.real_sets import load_source
from dequity import defaults
from dequity.pipeline import clustering as dc
from dequity.pipeline import projection as dp
from reporting import REPO

SAVED = REPO / "benchmarks" / "results-fidelity.json"


def saved_values() -> dict:
    return json.loads(SAVED.read_text())["values"]


def test_selection_counts_targets_met_before_margins():
    real = {
        "many met": {"5 % night": {"auc": [0.91, 0.92]}, "Fashion 300->8": {"rho": [0.71]}},
        "one far ahead": {"5 % night": {"auc": [0.99, 0.99]}, "Fashion 300->8": {"rho": [0.2]}},
    }
    mixtures = {"many met": {"spearman": [0.96, 0.95]}, "one far ahead": {"spearman": [1.0, 1.0]}}
    chosen = fidelity.select(real, mixtures)
    assert chosen["chosen"] == "many met"
    assert chosen["scores"]["many met"]["targets_met"] == 4
    assert chosen["scores"]["one far ahead"]["targets_met"] == 3


def test_odd_kinds_are_held_to_their_own_auc_target():
    margins = fidelity.target_margins(
        {"3% animals": {"auc": [0.93]}, "5 % fog": {"auc": [0.93]}}, {"spearman": [1.0]}
    )
    assert margins["3% animals: auc"] < 0 < margins["5 % fog: auc"]


def test_the_library_default_is_the_candidate_chosen_on_validation():
    """The saved choice is a library run whose settings are the defaults, not a typed claim."""
    values = saved_values()
    config = fidelity.chosen_config(values)
    assert config is not None, values["selection"]["chosen"]
    assert config.get("clustering", defaults.DEFAULT_CLUSTERING) == defaults.DEFAULT_CLUSTERING
    assert config["views"] == defaults.DEFAULT_VIEWS
    resolved = dc.clustering_params(defaults.DEFAULT_CLUSTERING, config.get("clustering_kwargs"))
    assert resolved == dc.clustering_params(defaults.DEFAULT_CLUSTERING)
    projected = dp.projection_params(defaults.DEFAULT_PROJECTION, config.get("projection_kwargs"))
    assert projected == dp.projection_params(defaults.DEFAULT_PROJECTION)
    seeds = json.loads(SAVED.read_text())["config"]
    assert not set(seeds["validation_seeds"]) & set(seeds["test_seeds"])


def test_the_readme_block_is_generated_from_the_saved_values():
    block = (REPO / "README.md").read_text().split("<!-- results:fidelity -->")[1]
    block = block.split("<!-- /results:fidelity -->")[0]
    assert fidelity.report(saved_values()).strip() in block


def test_the_saved_figures_come_from_committed_code():
    assert not json.loads(SAVED.read_text())["commit"].endswith("+dirty")


def test_animal_mnist_is_a_second_real_source_of_ten_kinds():
    images, labels = load_source("animal")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1_000] * 10
    assert images.std() > 20  # real silhouettes, not a blank array


def test_directions_are_measured_on_validation_but_never_chosen():
    selection = saved_values()["selection"]
    directions = selection["validation"]["directions"]
    assert set(directions) == {row.name for row in fidelity.DIRECTIONS}
    assert set(selection["scores"]) == {row.name for row in fidelity.CANDIDATES}
    assert selection["chosen"] not in directions


def test_split_table_counts_targets_on_both_splits_and_skips_rows_seen_once():
    both = {"5 % night": {"auc": [0.95], "ratio": [1.35], "top": [0.0]}}
    one = {"5 % night": {"auc": [0.80], "ratio": [1.4], "top": [0.0]}}
    none = {"5 % night": {"auc": [0.80], "ratio": [1.1], "top": [1.0]}}
    values = {
        "selection": {
            "chosen": "default",
            "validation": {"real": {"default": one}, "directions": {"direction: x": both}},
        },
        "test": {"real": {"default": both, "direction: x": none, "peer": both}},
    }
    lines = fidelity.split_table(values).splitlines()[2:]
    assert lines == [
        "| default (chosen) | 1 of 2 | 2 of 2 | +1 |",
        "| direction: x | 2 of 2 | 0 of 2 | -2 |",
    ]


def test_soft_membership_share_ranks_a_large_cluster_above_a_small_one():
    from benchmarks.methods import soft_share

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (300, 8)), rng.normal(20, 1, (30, 8))])
    p, _ = soft_share(x)
    assert p.shape == (330,) and np.all((p > 0) & (p <= 1))
    assert np.median(p[:300]) > 3 * np.median(p[300:])
