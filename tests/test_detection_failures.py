"""Failed detection runs are flagged, rerun with a fresh seed, and never averaged in."""

from __future__ import annotations

import fiftyone as fo
import pytest

from dequity.errors import DequityError
from experiments.detection import (
    RERUN_SEED_STEP,
    checked_run,
    coco_ap,
    failure_reason,
    seed_values,
)

FALLING = [2.0, 1.8, 1.5, 1.2, 1.0, 0.9, 0.8, 0.8, 0.7, 0.7]


def _det(label: str, box: list[float], confidence: float | None = None) -> fo.Detection:
    return fo.Detection(label=label, bounding_box=box, confidence=confidence)


TRUTHS = [[_det("Bag", [0.1, 0.1, 0.3, 0.3]), _det("Coat", [0.5, 0.5, 0.2, 0.4])]]
FOUND = [[_det("Bag", [0.1, 0.1, 0.3, 0.3], 0.9), _det("Coat", [0.5, 0.5, 0.2, 0.4], 0.8)]]


def _evaluation(found: list) -> dict:
    """The shape :func:`experiments.detection.evaluate` returns, from real COCO APs."""
    part = coco_ap(TRUTHS, found)
    return {"all": part, "rare": part, "night": part}


def test_a_run_that_detects_and_learns_is_a_result():
    assert failure_reason(_evaluation(FOUND), FALLING) is None


def test_all_zero_nan_and_diverged_runs_are_failures():
    assert failure_reason(_evaluation([None]), FALLING) == "every test AP is 0"
    nan = _evaluation(FOUND)
    nan["night"] = {**nan["night"], "mAP": float("nan")}
    assert "NaN" in failure_reason(nan, FALLING)
    assert "not finite" in failure_reason(_evaluation(FOUND), [*FALLING, float("nan")])
    assert "diverged" in failure_reason(_evaluation(FOUND), FALLING[::-1])


def test_a_failed_run_is_flagged_and_rerun_with_a_fresh_seed():
    seen = []

    def attempt(seed):
        seen.append(seed)
        found = [None] if len(seen) == 1 else FOUND  # the first run detects nothing
        return _evaluation(found), FALLING, f"model {seed}"

    evaluation, model = checked_run(attempt, 3)
    assert seen == [3, 3 + RERUN_SEED_STEP]
    assert model == f"model {3 + RERUN_SEED_STEP}"
    assert evaluation["seed"] == 3 + RERUN_SEED_STEP
    assert evaluation["failed_runs"] == [{"seed": 3, "reason": "every test AP is 0"}]
    assert evaluation["rare"]["mAP"] == pytest.approx(1.0)


def test_a_non_finite_loss_counts_as_a_failed_run_and_other_errors_stop():
    def attempt(seed):
        raise DequityError("the loss became nan at step 7; lower the learning rate")

    evaluation, model = checked_run(attempt, 0, reruns=1)
    assert model is None and evaluation["failed"] is True
    assert [f["seed"] for f in evaluation["failed_runs"]] == [0, RERUN_SEED_STEP]

    def broken(seed):
        raise DequityError("no sample has the validation tag 'val'")

    with pytest.raises(DequityError, match="validation tag"):
        checked_run(broken, 0)


def test_a_run_that_failed_every_attempt_is_never_averaged_in():
    def attempt(seed):
        return _evaluation([None]), FALLING, None

    failed, _ = checked_run(attempt, 1, reruns=0)
    good, _ = checked_run(lambda s: (_evaluation(FOUND), FALLING, None), 0)
    data = {"seeds": [0, 1], "runs": {"0": {"oracle": good}, "1": {"oracle": failed}}}
    values = seed_values(data, "oracle", "rare", "mAP")
    assert values[0] == pytest.approx(1.0)
    assert values[1] != values[1]  # NaN: left out of every mean and test


def test_a_failed_run_saved_before_the_check_is_flagged_on_reading():
    from experiments.detection import failed_runs_sentence
    from experiments.stats import paired_tests

    good = _evaluation(FOUND)
    data = {
        "seeds": [0, 1, 2],
        "runs": {
            "0": {"unweighted": good, "oracle_resampling": good},
            "1": {"unweighted": good, "oracle_resampling": _evaluation([None])},
            "2": {"unweighted": good, "oracle_resampling": good},
        },
    }
    values = seed_values(data, "oracle_resampling", "rare", "mAP")
    assert values[1] != values[1] and values[0] == pytest.approx(1.0)
    assert "oracle_resampling seed 1 (every test AP is 0; flagged on reading" in (
        failed_runs_sentence(data)
    )
    test = paired_tests({"oracle": values}, seed_values(data, "unweighted", "rare", "mAP"))
    assert test["oracle"].diff.n == 2  # the failed seed is left out of the pair
