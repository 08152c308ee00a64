"""Groups count once: cluster shares and crowding over scenes, near-duplicate frames."""

from __future__ import annotations

import numpy as np
import pytest

from dequity.density import knn_likelihood
from dequity.errors import DequityError
from dequity.estimate import estimate_likelihood
from dequity.groups import distinct_groups_per_label, group_codes, near_duplicate_groups
from dequity.likelihood import cluster_sizes, scaled_likelihood


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
