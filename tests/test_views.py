"""Rare in any view: the content and off-domain views of the default model's vectors, and why."""

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

import dequity
from dequity import defaults
from dequity.errors import DequityError
from dequity.pipeline import views as dv
from dequity.pipeline.estimate import estimate_likelihood
from dequity.pipeline.subsample import FIT_SAMPLES
from tests.conftest import EMBEDDINGS_FIELD


def test_the_default_models_vectors_have_the_content_layout(demo_run):
    dataset, results = demo_run
    vectors = np.array(dataset.values(EMBEDDINGS_FIELD))
    assert dv.content_columns(vectors) == slice(-1280, None)
    assert dv.content_columns(vectors[:, -1280:]) is None  # final features alone
    assert dv.content_columns(np.random.default_rng(0).normal(size=(50, 1776))) is None
    assert results.config.views == defaults.DEFAULT_VIEWS == dv.RANKED


def test_a_default_run_keeps_each_samples_rarest_view_and_says_which(demo_run):
    dataset, results = demo_run
    views = {name: np.array(v) for name, v in results.views.items()}
    assert list(views) == ["image", "content", "off_domain"]
    np.testing.assert_allclose(results.likelihoods, np.minimum.reduce(list(views.values())))
    stored = dict(zip(dataset.values("id"), dataset.values("dequity_rare_by")))
    names = np.array(["appearance", "content", "off-domain"])
    expected = names[np.argmin(np.array(list(views.values())), axis=0)]
    assert [stored[i] for i in results.sample_ids] == expected.tolist()
    assert len(set(expected)) >= 2  # more than one view decides some frames
    assert "dequity_rare_by" in results.config.fields


def test_ranked_views_are_each_views_empirical_distribution(demo_run):
    """Below fit_samples, a view's rank is the share of the run's samples at most as likely."""
    _, results = demo_run
    n = len(results.sample_ids)
    assert n <= FIT_SAMPLES
    content = dv.content_view(np.array(_vectors(demo_run)))
    np.testing.assert_allclose(
        results.views["content"], rankdata(np.float32(content.likelihoods), "max") / n
    )
    off = np.array(results.views["off_domain"])
    assert off.min() >= 1 / n and off.max() == 1.0
    assert len(np.unique(off)) > 0.9 * n  # distances rarely tie: ranks spread over (0, 1]


def test_the_content_mode_keeps_the_content_views_likelihood(demo):
    res = dequity.compute_dequity(demo, "dq", embeddings=EMBEDDINGS_FIELD, views="content")
    assert res.config.views == "content" and list(res.views) == ["image", "content"]
    content = dv.content_view(np.array(demo.values(EMBEDDINGS_FIELD)))
    np.testing.assert_allclose(res.views["content"], content.likelihoods)
    auto = dequity.compute_dequity(demo, "auto", embeddings=EMBEDDINGS_FIELD, views="auto")
    assert auto.config.views == defaults.DEFAULT_VIEWS


def _vectors(demo_run) -> list:
    dataset, results = demo_run
    by_id = dict(zip(dataset.values("id"), dataset.values(EMBEDDINGS_FIELD)))
    return [by_id[i] for i in results.sample_ids]


def test_views_none_scores_the_whole_vector_and_writes_no_reason(demo):
    res = dequity.compute_dequity(demo, "whole", embeddings=EMBEDDINGS_FIELD, views=None)
    assert res.views is None and res.rare_by == []
    assert not demo.has_sample_field("whole_rare_by")
    assert demo.get_run_info("whole").config.views is None


def test_vectors_of_another_model_get_no_content_view(demo):
    final_features = np.array(demo.values(EMBEDDINGS_FIELD))[:, dv.CONTENT_COLUMNS]
    res = dequity.compute_dequity(demo, "other", embeddings=final_features)
    assert res.config.views is None and not demo.has_sample_field("other_rare_by")


def test_a_set_too_small_for_the_content_view_is_scored_on_the_whole_vector(demo):
    few = demo.limit(25)  # hdbscan (min_cluster_size 5) runs; the content view needs k 30
    res = dequity.compute_dequity(
        few,
        "few",
        embeddings=EMBEDDINGS_FIELD,
        clustering="hdbscan",
        clustering_kwargs={"min_cluster_size": 5},
    )
    assert res.config.views is None and not demo.has_sample_field("few_rare_by")
    assert few.count("few_weight") == 25


def test_overwrite_rename_and_delete_carry_the_reason_field(demo):
    dequity.compute_dequity(demo, "dq", embeddings=EMBEDDINGS_FIELD)
    assert demo.count("dq_rare_by") == len(demo)
    dequity.rename_dequity_run(demo, "dq", "renamed")
    assert demo.count("renamed_rare_by") == len(demo) and not demo.has_sample_field("dq_rare_by")
    dequity.compute_dequity(
        demo, "renamed", embeddings=EMBEDDINGS_FIELD, overwrite=True, views=None
    )
    assert not demo.has_sample_field("renamed_rare_by")  # no stale reasons
    dequity.compute_dequity(demo, "renamed", embeddings=EMBEDDINGS_FIELD, overwrite=True)
    dequity.delete_dequity_run(demo, "renamed")
    assert not any(f.startswith("renamed") for f in demo.get_field_schema())


def test_an_update_places_new_samples_in_both_views(demo):
    held = demo.take(20, seed=1)
    held_ids = held.values("id")
    vectors = dict(zip(demo.values("id"), demo.values(EMBEDDINGS_FIELD)))
    demo.select(held_ids).set_field(EMBEDDINGS_FIELD, None).save()
    dequity.compute_dequity(demo.exists(EMBEDDINGS_FIELD), "dq", embeddings=EMBEDDINGS_FIELD)
    demo.set_values(EMBEDDINGS_FIELD, {i: vectors[i] for i in held_ids}, key_field="id")
    before = dequity.load_dequity_results(demo, "dq").views
    res = dequity.update_dequity(demo, "dq")
    assert len(res.sample_ids) == len(demo)
    np.testing.assert_allclose(res.likelihoods, np.minimum.reduce(list(res.views.values())))
    assert demo.select(held_ids).count("dq_rare_by") == len(held_ids)
    old = len(before["content"])
    for view in ("content", "off_domain"):  # old ranks stay; new ones are on the same scale
        assert res.views[view][:old] == before[view]
    new = np.array(res.views["off_domain"][old:])
    assert new.min() > 0 and new.max() <= 1


def test_new_samples_rank_off_domain_as_a_refit_would(demo_run):
    """Out-of-sample closeness: held-back frames are not pushed off-domain for being new."""
    vectors = np.array(_vectors(demo_run))[:, dv.CONTENT_COLUMNS]
    gaps = []
    for seed in range(10):
        order = np.random.default_rng(seed).permutation(len(vectors))
        held, kept = order[:20], order[20:]
        fit, _ = dv.OffDomain.fit(vectors[kept])
        _, refit = dv.OffDomain.fit(vectors[np.concatenate([kept, held])])
        gaps.append(np.mean(fit.ranks(vectors[held]) - refit[len(kept) :]))
    assert abs(np.mean(gaps)) < 0.04, gaps


def test_bad_views_are_refused_before_any_work(demo):
    schema = list(demo.get_field_schema())
    with pytest.raises(DequityError, match="views must be 'auto'"):
        dequity.compute_dequity(demo, "dq", embeddings=EMBEDDINGS_FIELD, views="contents")
    assert list(demo.get_field_schema()) == schema and demo.list_runs() == []


def test_the_content_view_ranks_a_real_long_tail_closer_to_class_size():
    """Fashion-MNIST, classes 200 down to 5, by the default model, 5 draws: views raise the rank."""
    from benchmarks.real_sets import MODELS, long_tail

    def class_rank(x, y, views):
        p = estimate_likelihood(dequity.project(x, "pca"), "hdbscan_knn", "nearest")[1]
        if views:
            p = dv.score_views(x, p, dv.RANKED).likelihoods
        classes, sizes = np.unique(y, return_counts=True)
        return spearmanr([p[y == c].mean() for c in classes], sizes)[0]

    draws = [long_tail(MODELS[0], 200, 40.0, seed=seed, per_class=200) for seed in range(5)]
    with_views = np.mean([class_rank(x, y, True) for x, y in draws])
    without = np.mean([class_rank(x, y, False) for x, y in draws])
    assert with_views > without + 0.1, (with_views, without)


def test_the_command_line_turns_views_off_and_prints_the_split(demo, capsys):
    from dequity.cli import main

    assert main(["compute", "--dataset", demo.name, "--embeddings", EMBEDDINGS_FIELD]) == 0
    out = capsys.readouterr().out
    reasons = dequity.load_dequity_results(demo, "dequity").rare_by
    assert f"{reasons.count('content')} by content (what they show)" in out
    args = ["compute", "--dataset", demo.name, "--embeddings", EMBEDDINGS_FIELD, "--views", "none"]
    assert main([*args, "--run-key", "whole"]) == 0
    assert not demo.has_sample_field("whole_rare_by")
    assert demo.get_run_info("whole").config.views is None
