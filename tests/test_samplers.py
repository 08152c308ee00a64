"""Weighted sampling and repeat factors from a dequity run on the demo frames."""

from __future__ import annotations

import fiftyone as fo
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from dequity.errors import DequityError
from tests.conftest import DEMO_FRAMES, frames_with_thumbnail_run
from training import detection_dataset, repeat_factors, sample_weights, weighted_sampler


@pytest.fixture(scope="module")
def frames() -> fo.Dataset:
    """The demo frames with a real dequity run ``dequity`` on grey thumbnails."""
    dataset = frames_with_thumbnail_run()
    yield dataset
    dataset.delete()


def _view(frames: fo.Dataset) -> fo.DatasetView:
    """Twenty frames whose weights differ, in a fixed order."""
    ids = frames.sort_by("dequity_weight").skip(len(frames) // 2 - 10).limit(20).values("id")
    return frames.select(ids, ordered=True)


def test_sampler_draws_each_image_in_proportion_to_its_weight(frames):
    view = _view(frames)
    weights = np.asarray(view.values("dequity_weight"))
    assert weights.max() / weights.min() > 1.05, "the test needs differing weights"
    draws = 200_000
    sampler = weighted_sampler(
        view, "dequity", num_samples=draws, generator=torch.Generator().manual_seed(0)
    )
    counts = np.bincount(np.fromiter(iter(sampler), dtype=np.int64), minlength=len(view))
    expected = draws * weights / weights.sum()
    assert chisquare(counts, expected).pvalue > 1e-3
    # and the test can tell: equal probabilities are rejected by the same draws
    assert chisquare(counts, np.full(len(view), draws / len(view))).pvalue < 1e-6


def test_sampler_indices_are_the_torch_dataset_positions(frames):
    view = _view(frames)
    sampler = weighted_sampler(view, "dequity", generator=torch.Generator().manual_seed(1))
    assert len(sampler) == len(view)
    ds = detection_dataset(view, "ground_truth", weight_field="dequity_weight")
    ids, weights = view.values("id"), view.values("dequity_weight")
    for i in list(sampler)[:3]:
        _, target = ds[i]
        assert target["sample_id"] == ids[i]
        assert float(target["weight"]) == pytest.approx(weights[i])


def test_repeat_factors_are_proportional_to_the_weights_with_minimum_one(frames):
    view = _view(frames)
    factors = repeat_factors(view, "dequity")
    weights = np.asarray(view.values("dequity_weight"))
    assert factors.dtype == torch.float32 and factors.shape == (len(view),)
    assert float(factors.min()) == pytest.approx(1.0)
    np.testing.assert_allclose(factors.numpy(), weights / weights.min(), rtol=1e-6)
    # detectron2's stochastic rounding repeats image i r_i times in expectation
    g = torch.Generator().manual_seed(0)
    epochs = 4000
    total = torch.zeros(len(view))
    for _ in range(epochs):
        frac = factors - factors.trunc()
        total += factors.trunc() + (torch.rand(len(view), generator=g) < frac).float()
    np.testing.assert_allclose((total / epochs).numpy(), factors.numpy(), rtol=0.03)


def test_weight_zero_is_never_drawn_and_gets_repeat_factor_zero(frames):
    view = _view(frames)
    first = view.first()
    original = first["dequity_weight"]
    first["dequity_weight"] = 0.0
    first.save()
    try:
        factors = repeat_factors(view, "dequity")
        assert float(factors[0]) == 0.0 and float(factors[1:].min()) == pytest.approx(1.0)
        sampler = weighted_sampler(
            view, "dequity", num_samples=5000, generator=torch.Generator().manual_seed(0)
        )
        assert 0 not in set(sampler)
    finally:
        first["dequity_weight"] = original
        first.save()


def test_bad_input_names_the_problem(frames):
    with pytest.raises(DequityError, match="no dequity run 'nope'.*dequity compute"):
        weighted_sampler(frames, "nope")
    with pytest.raises(DequityError, match="num_samples"):
        weighted_sampler(frames, "dequity", num_samples=0)
    with pytest.raises(DequityError, match="empty"):
        sample_weights(frames.limit(0), "dequity")
    extra = fo.Sample(filepath=str(DEMO_FRAMES / "data" / "missing.jpg"))
    frames.add_sample(extra)
    try:
        with pytest.raises(DequityError, match="1 of the 200 samples .* no 'dequity_weight'"):
            repeat_factors(frames, "dequity")
    finally:
        frames.delete_samples(extra)
    frames.rename_sample_field("dequity_weight", "moved_weight")
    try:
        with pytest.raises(DequityError, match="no longer has"):
            weighted_sampler(frames, "dequity")
    finally:
        frames.rename_sample_field("moved_weight", "dequity_weight")
