"""Groups count once: cluster shares and crowding over scenes, near-duplicate frames."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

import dequity
from dequity.errors import DequityError
from dequity.pipeline.density import knn_likelihood
from dequity.pipeline.estimate import estimate_likelihood
from dequity.pipeline.groups import distinct_groups_per_label, group_codes, near_duplicate_groups
from dequity.pipeline.likelihood import cluster_sizes, scaled_likelihood
from tests.conftest import EMBEDDINGS_FIELD, REPO


def _scenes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A common kind seen in 200 scenes (one frame each) and a rare kind filmed for
    60 frames of one scene: as frames the rare kind is a dense cluster."""
    common = rng.normal(0, 1.0, (200, 5))
    rare = rng.normal(12, 0.05, (60, 5))
    points = np.concatenate([common, rare])
    groups = np.concatenate([np.arange(200), np.full(60, 200)])
    is_rare = np.arange(260) >= 200
    return points, groups, is_rare


def test_a_rare_event_filmed_for_many_frames_stays_rare_when_scenes_count():
    points, groups, is_rare = _scenes(np.random.default_rng(0))
    _, by_frame = estimate_likelihood(points, "hdbscan_knn", "nearest")
    _, by_scene = estimate_likelihood(points, "hdbscan_knn", "nearest", groups=groups)
    # as frames, the 60 frames crowd each other: the event looks about as common as the rest
    assert by_frame[is_rare].mean() > 0.2 * by_frame[~is_rare].mean()
    # as scenes, it is one scene against 200
    assert by_scene[is_rare].mean() < 0.05 * by_scene[~is_rare].mean()
    assert by_scene[is_rare].max() < by_scene[~is_rare].min()


def test_cluster_sizes_count_distinct_groups_and_noise_policies_still_hold():
    labels = np.array([0, 0, 0, 1, 1, -1, -1])
    groups = np.array([3, 3, 4, 5, 5, 6, 6])
    assert cluster_sizes(labels, groups=groups).tolist() == [2, 2, 2, 1, 1, 1, 1]
    assert cluster_sizes(labels, "cluster", groups=groups).tolist() == [2, 2, 2, 1, 1, 1, 1]
    assert scaled_likelihood(labels, groups=groups).tolist() == [1, 1, 1, 0.5, 0.5, 0.5, 0.5]
    # one group per sample: the same as counting samples
    own = np.arange(len(labels))
    assert (
        cluster_sizes(labels, "cluster", own).tolist() == cluster_sizes(labels, "cluster").tolist()
    )


def test_knn_crowding_with_one_group_per_sample_equals_plain_crowding():
    points = np.random.default_rng(1).normal(size=(300, 4))
    plain = knn_likelihood(points, k=10)
    assert np.array_equal(knn_likelihood(points, k=10, groups=np.arange(300)), plain)
    subsampled = knn_likelihood(points, k=10, fit_samples=100)
    grouped = knn_likelihood(points, k=10, fit_samples=100, groups=np.arange(300))
    assert np.array_equal(grouped, subsampled)


def test_group_codes_need_a_value_on_every_sample():
    assert group_codes(["b", "a", "b", 3]).tolist() == [2, 1, 2, 0]
    with pytest.raises(DequityError, match=r"2 of 4 samples have no value in 'scene_id'"):
        group_codes(["a", None, "b", None], "scene_id")


def test_group_ids_must_match_the_samples():
    with pytest.raises(DequityError, match="3 group ids for 4 samples"):
        distinct_groups_per_label(np.zeros(4, int), np.zeros(3, int))
    with pytest.raises(DequityError, match="3 group ids for 50 samples"):
        knn_likelihood(np.random.default_rng(0).normal(size=(50, 2)), k=5, groups=np.zeros(3))


def test_near_duplicate_groups_split_where_consecutive_frames_differ():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=8), rng.normal(size=8)
    frames = np.stack([a, a + 0.01, a + 0.02, b, b + 0.01, a])
    assert near_duplicate_groups(frames, 0.99).tolist() == [0, 0, 0, 1, 1, 2]
    assert near_duplicate_groups(frames, 1.0).max() >= 3
    for bad in (0, 1.5, "high", True):
        with pytest.raises(DequityError, match="collapse_near_duplicates"):
            near_duplicate_groups(frames, bad)


def test_collapsing_near_duplicate_frames_makes_long_runs_of_one_moment_rarer(demo):
    """The demo frames are a video: a run of near-identical frames counts once, so the
    frames of long runs move towards the rare end, as documented."""
    dequity.compute_dequity(demo, "frames", embeddings=EMBEDDINGS_FIELD, progress=False)
    dequity.compute_dequity(
        demo, "runs", embeddings=EMBEDDINGS_FIELD, collapse_near_duplicates=0.8, progress=False
    )
    groups = near_duplicate_groups(np.array(demo.values(EMBEDDINGS_FIELD)), 0.8)
    assert 20 < groups.max() + 1 < len(demo), "some frames merge into runs, not all"
    run_length = np.bincount(groups)[groups]
    frames, runs = (np.array(demo.values(f"{k}_likelihood")) for k in ("frames", "runs"))
    assert not np.array_equal(np.argsort(frames)[:10], np.argsort(runs)[:10])
    rank_change = rankdata(runs) - rankdata(frames)  # negative: rarer when runs count once
    assert spearmanr(run_length, rank_change)[0] < -0.3


def test_group_field_counts_scenes_and_is_recorded(demo):
    scene = [i // 20 for i in range(len(demo))]  # 20 consecutive frames per scene
    demo.set_values("scene_id", scene)
    results = dequity.compute_dequity(
        demo, "scenes", embeddings=EMBEDDINGS_FIELD, group_field="scene_id", progress=False
    )
    assert demo.get_run_info("scenes").config.group_field == "scene_id"
    labels = np.array(results.labels)
    # a cluster's size is its number of distinct scenes: the largest has share 1
    sizes = distinct_groups_per_label(labels, np.array(scene))
    share = sizes / sizes.max()
    p = np.array(results.likelihoods)
    assert np.all(p <= share + 1e-9)  # share times a crowding in (0, 1]


def test_bad_group_requests_write_nothing(demo):
    demo.set_values("scene_id", [None] * 5 + ["a"] * (len(demo) - 5))
    with pytest.raises(DequityError, match="5 of 199 samples have no value in 'scene_id'"):
        dequity.compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, group_field="scene_id")
    with pytest.raises(DequityError, match="no field 'scene' to group by"):
        dequity.compute_dequity(demo, embeddings=EMBEDDINGS_FIELD, group_field="scene")
    with pytest.raises(DequityError, match="not both"):
        dequity.compute_dequity(
            demo,
            embeddings=EMBEDDINGS_FIELD,
            group_field="scene_id",
            collapse_near_duplicates=0.9,
        )
    assert demo.list_runs() == [] and not demo.has_sample_field("dequity_weight")


def _video_of_demo_frames(demo, videos: int = 4):
    """A video dataset whose frames are the demo's images, ``videos`` clips in a row."""
    import fiftyone as fo

    paths, vectors = demo.values("filepath"), demo.values(EMBEDDINGS_FIELD)
    per = len(paths) // videos
    video = fo.Dataset()
    samples = []
    for k in range(videos):
        sample = fo.Sample(filepath=str(REPO / "data" / "demo" / f"clip{k}.mp4"))
        for i in range(per):
            row = k * per + i
            sample.frames[i + 1] = fo.Frame(filepath=paths[row], embedding=vectors[row])
        samples.append(sample)
    video.add_samples(samples)
    return video


def test_video_frames_count_each_video_once_and_frame_views_are_refused(demo):
    video = _video_of_demo_frames(demo)
    frames_view = video.to_frames(sample_frames=False)
    with pytest.raises(DequityError, match=r"not on frames, patches or clips views.*clone"):
        dequity.compute_dequity(frames_view, embeddings=EMBEDDINGS_FIELD)
    frames = frames_view.clone()
    results = dequity.compute_dequity(
        frames, embeddings=EMBEDDINGS_FIELD, group_field="sample_id", progress=False
    )
    videos = np.array([str(v) for v in frames.values("sample_id")])
    sizes = distinct_groups_per_label(np.array(results.labels), group_codes(videos))
    assert sizes.max() <= 4  # a cluster holds at most the 4 videos
    assert np.all(np.array(results.likelihoods) <= sizes / sizes.max() + 1e-9)
    video.delete()
    frames.delete()


def test_a_grouped_datasets_group_counts_once(demo):
    import fiftyone as fo

    grouped = fo.Dataset()
    grouped.add_group_field("group", default="left")
    pairs = [fo.Group() for _ in range((len(demo) + 1) // 2)]  # two cameras per moment
    samples = [
        fo.Sample(
            filepath=path,
            embedding=vector,
            group=pairs[i // 2].element("left" if i % 2 == 0 else "right"),
        )
        for i, (path, vector) in enumerate(
            zip(demo.values("filepath"), demo.values(EMBEDDINGS_FIELD))
        )
    ]
    grouped.add_samples(samples)
    every_slice = grouped.select_group_slices()
    results = dequity.compute_dequity(
        every_slice, embeddings=EMBEDDINGS_FIELD, group_field="group", progress=False
    )
    assert len(results.sample_ids) == len(demo)
    groups = group_codes(every_slice.values("group.id"))
    sizes = distinct_groups_per_label(np.array(results.labels), groups)
    assert np.all(np.array(results.likelihoods) <= sizes / sizes.max() + 1e-9)
    assert grouped.count("dequity_weight") == len(pairs)  # the default slice: "left"
    assert len(grouped.select_group_slices().exists("dequity_weight")) == len(demo)
    grouped.delete()
