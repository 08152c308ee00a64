"""The rare-conditions detection set (exact boxes, condition shares) and the statistics helpers."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.fashion_mnist import CLASSES, load_split
from experiments.rare_conditions import CONDITIONS, RARE_CLASS, SIDEWAYS, SetSpec, render_image
from experiments.stats import mean_ci, paired_tests


@pytest.fixture(scope="module")
def items():
    return load_split("test")


def test_default_split_has_mostly_day_and_each_rare_condition_at_2_to_5_percent():
    spec = SetSpec()
    train = spec.condition_counts("train")
    assert sum(train.values()) == spec.train
    assert train["day"] / spec.train >= 0.85
    for condition in CONDITIONS[1:]:
        assert 0.02 <= train[condition] / spec.train <= 0.05
    assert set(spec.condition_counts("test").values()) == {spec.test_per_condition}
    assert spec.test_per_condition >= 200


def test_a_set_with_the_sideways_camera_counts_it_in_place_of_fog():
    spec = SetSpec(train=1000, rare_looks=("night", SIDEWAYS, "blur_rain"))
    train = spec.condition_counts("train")
    assert list(train) == ["day", "night", SIDEWAYS, "blur_rain", "rare_object"]
    assert sum(train.values()) == 1000 and train[SIDEWAYS] == train["night"] == 30
    assert spec.key() != SetSpec(train=1000).key()


@pytest.mark.parametrize("condition", ["day", "rare_object", SIDEWAYS])
def test_a_single_object_box_is_the_exact_extent_of_its_pixels(items, condition):
    images, labels = items
    spec = SetSpec(min_objects=1, max_objects=1)
    black = np.zeros((200, 200, 3), np.uint8)
    for k in range(5):
        image, boxes = render_image(
            np.random.default_rng(k), black, images, labels, condition, spec
        )
        ((label, (x, y, w, h)),) = boxes
        ys, xs = np.nonzero(image.max(axis=2))
        size = spec.image_px
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == pytest.approx(
            [x * size, y * size, (x + w) * size, (y + h) * size]
        )
        assert label in CLASSES
        if condition == "rare_object":
            assert label == RARE_CLASS
            assert image[..., 1].max() < image[..., 0].max()  # magenta: little green


def test_rendering_is_deterministic_and_conditions_change_the_pixels(items):
    images, labels = items
    spec = SetSpec()
    background = np.full((160, 160, 3), 120, np.uint8)
    day, boxes = render_image(np.random.default_rng(1), background, images, labels, "day", spec)
    again, boxes_again = render_image(
        np.random.default_rng(1), background, images, labels, "day", spec
    )
    assert np.array_equal(day, again) and boxes == boxes_again
    assert spec.min_objects <= len(boxes) <= spec.max_objects
    night, night_boxes = render_image(
        np.random.default_rng(1), background, images, labels, "night", spec
    )
    assert night_boxes == boxes  # same objects and places, different look
    assert night.mean() < 0.6 * day.mean()
    fog, _ = render_image(np.random.default_rng(1), background, images, labels, "fog", spec)
    assert fog.std() < day.std()
    sideways, _ = render_image(np.random.default_rng(1), background, images, labels, SIDEWAYS, spec)
    assert np.array_equal(sideways, np.rot90(day))  # the day's scene, a quarter turn


def test_mean_ci_is_the_student_t_interval():
    summary = mean_ci([1.0, 2.0, 3.0])
    assert summary.mean == 2.0
    assert summary.high == pytest.approx(2 + 4.302653 * 1 / np.sqrt(3), rel=1e-5)
    assert mean_ci([0.5]).low == 0.5
    assert mean_ci([]).n == 0


def test_paired_tests_find_a_consistent_gain_and_holm_corrects_the_family():
    reference = [0.30, 0.32, 0.31, 0.29, 0.33]
    gain = [v + 0.02 + d for v, d in zip(reference, [0.001, -0.001, 0.002, 0.0, -0.002])]
    noise = [v + d for v, d in zip(reference, [0.02, -0.03, 0.01, -0.02, 0.015])]
    tests = paired_tests({"gain": gain, "noise": noise}, reference)
    assert tests["gain"].significant and tests["gain"].diff.mean == pytest.approx(0.02)
    assert not tests["noise"].significant
    assert tests["noise"].p_holm >= tests["noise"].p
    assert tests["gain"].p_holm == pytest.approx(min(1.0, 2 * tests["gain"].p))
    with pytest.raises(ValueError, match="values"):
        paired_tests({"short": [0.1]}, reference)


def test_coco_ap_is_one_for_exact_boxes_and_zero_for_misses():
    import fiftyone as fo

    from experiments.detection import coco_ap

    def det(label, box, confidence=None):
        return fo.Detection(label=label, bounding_box=box, confidence=confidence)

    truths = [[det("Bag", [0.1, 0.1, 0.3, 0.3]), det("Coat", [0.5, 0.5, 0.2, 0.4])]]
    exact = [[det("Bag", [0.1, 0.1, 0.3, 0.3], 0.9), det("Coat", [0.5, 0.5, 0.2, 0.4], 0.8)]]
    result = coco_ap(truths, exact)
    assert result["mAP"] == pytest.approx(1.0)
    assert result["per_class_AP"]["Bag"] == pytest.approx(1.0)
    assert result["per_class_AP"]["Dress"] is None  # no ground truth: left out
    wrong_class = [[det("Dress", [0.1, 0.1, 0.3, 0.3], 0.9)]]
    assert coco_ap(truths, wrong_class)["mAP"] == 0.0
    assert coco_ap(truths, [None])["mAP"] == 0.0
    # a box shifted to IoU ~0.6 counts at IoU 0.5 but not at the strict thresholds
    shifted = [[det("Bag", [0.15, 0.1, 0.3, 0.3], 0.9), det("Coat", [0.5, 0.5, 0.2, 0.4], 0.8)]]
    partial = coco_ap(truths, shifted)
    assert partial["per_class_AP50"]["Bag"] == pytest.approx(1.0)
    assert 0.0 < partial["per_class_AP"]["Bag"] < 1.0


def test_the_report_is_generated_from_the_raw_json(tmp_path):
    import json

    from experiments.detection import FULL, METHODS, section_from_json

    conds = FULL.spec.conditions

    def evaluation(value):
        part = {
            "mAP": value,
            "AP50": 2 * value,
            "per_class_AP": dict.fromkeys(CLASSES, value),
            "per_class_AP50": dict.fromkeys(CLASSES, 2 * value),
        }
        return {s: part for s in ("all", "rare", *conds)}

    seeds = [0, 1, 2, 3, 4]
    jitter = [0.001, -0.002, 0.0, 0.002, -0.001]
    runs = {}
    for seed, j in zip(seeds, jitter):
        runs[str(seed)] = {m: evaluation(0.1 + j + (0.05 if m == "oracle_resampling" else 0))
                           for m in METHODS}  # fmt: skip
        runs[str(seed)]["jtt_error_set"] = {"share": 0.5, "share_by_condition": {}}
    likelihoods = {"clusters": 3, "noise_share": 0.0,
                   "mean_likelihood_by_condition": dict.fromkeys(conds, 0.5)}  # fmt: skip
    data = {
        "mode": "full", "commit": "abc", "date": "today", "seconds": 60, "seeds": seeds,
        "config": {"spec": {"image_px": 128, "rare_looks": list(FULL.spec.rare_looks)},
                   "steps": 1, "batch_size": 8, "image_size": 96, "lr": 1e-4},
        "dataset": {"counts": {s: dict.fromkeys(conds, 1) for s in ("train", "val", "test")}},
        "weights": {"default_config": {"clustering": "x"}, "paper_eps": 2.0,
                    "dq": likelihoods, "dqpaper": likelihoods},
        "selection": {"seed": 100, "dequity_eta_gamma": {"1,5": 0.1}, "jtt_lambda": {"3": 0.1},
                      "eta": 1.0, "gamma": 5.0, "lambda": 3.0, "unweighted": 0.1},
        "budget": {"steps": 1, "seed": 100, "oracle_power": 0.5,
                   "oracle_candidates": {"oracle_resampling": 0.1, "oracle_sqrt": 0.12},
                   "curves": {m: [{"steps": 1, "all": 0.1}] for m in ("unweighted",
                                                                      "oracle_resampling")}},
        "runs": runs,
    }  # fmt: skip
    path = tmp_path / "detection_runs.json"
    path.write_text(json.dumps(data))
    section = section_from_json(path)
    oracle = next(v for v in section.verdicts if "oracle_resampling" in v)
    assert "significantly higher" in oracle and "+5.0" in oracle
    dequity = next(v for v in section.verdicts if v.startswith("Detection, dequity:"))
    assert "no significant difference" in dequity
    assert "5 seeds; 0 [0, 0] % of the oracle's gain; day mAP +0.0 [0.0, 0.0] points)" in dequity
    assert "| oracle_resampling | 15.0 [" in section.body
    assert section.body.startswith("**Calibration gate: passed.**")
    assert section.lead.startswith("**Calibration gate: passed.**")
    assert "**Answer.**" in section.body
    assert "+5.0 [5.0, 5.0] points of rare-condition mAP over 5 seeds" in section.body
    # no method but the oracle gains: 0 % of its gain, and no cost on day images
    print(section.body)
    assert "| dequity | 10.0 [9.8, 10.2] | +0.0 [0.0, 0.0] |" in section.body
    assert "| 0 [0, 0] | +0.0 [0.0, 0.0] | +0.0 [0.0, 0.0] |" in section.body
    assert "No run failed" in section.body
    text = " ".join(section.body.split())
    assert "(mean of the night, sideways and blur/rain test mAPs)" in text
    assert "| method | all | rare | day | night | sideways | blur_rain | rare_object |" in text
    assert "to the power −0.5 (square-root balancing)" in text
    assert "(full balancing 10.0, square root 12.0 %)" in text
    for seed in seeds:  # a smaller, noisier oracle gain does not pass the gate
        gain = 0.004 * (-1) ** seed
        runs[str(seed)]["oracle_resampling"] = evaluation(0.1 + jitter[seed] + gain)
    runs["3"]["oracle_resampling"]["failed_runs"] = [{"seed": 3, "reason": "every test AP is 0"}]
    path.write_text(json.dumps(data))
    section = section_from_json(path)
    assert section.body.startswith("**Calibration gate: not passed.**")
    assert "oracle_resampling seed 3 (every test AP is 0)" in section.body
    for seed, gain in zip(seeds, [0.02, 0.005, 0.01, 0.025, 0.005]):  # p < 0.05, Holm's not
        runs[str(seed)]["oracle_resampling"] = evaluation(0.1 + jitter[seed] + gain)
    path.write_text(json.dumps(data))
    text = " ".join(section_from_json(path).body.split())
    assert "gains +1.3 [0.2, 2.4] points (paired p 0.033), but not significantly after" in text
    # the gate on fresh seeds, beside this run and built on its commit, passes: shares shown
    gate = {"passed": True, "diff": 0.01, "low": 0.004, "high": 0.016, "p": 0.01, "seeds": 8}
    confirmation = {
        "complete": True,
        "gate": gate,
        "selection": {"source": "results/detection_runs.json (commit abc)"},
    }
    (tmp_path / "gate_runs.json").write_text(json.dumps(confirmation))
    section = section_from_json(path)
    assert section.lead.startswith(
        "**Calibration gate: not passed on these seeds, passed on fresh seeds.**"
    )
    text = " ".join(section.body.split())
    assert "+1.0 [0.4, 1.6] points, paired p 0.01, 8 fresh seeds" in text
    assert "its gain holds (the gate section)" in text
    dequity = next(v for v in section.verdicts if v.startswith("Detection, dequity:"))
    assert "% of the oracle's gain;" in dequity and "n/a" not in dequity
    confirmation["selection"]["source"] = "results/detection_runs.json (commit def)"
    (tmp_path / "gate_runs.json").write_text(json.dumps(confirmation))  # another run's
    assert section_from_json(path).lead.startswith("**Calibration gate: not passed.**")


def test_one_seed_is_never_significant():
    assert not paired_tests({"a": [0.9]}, [0.1])["a"].significant


def test_the_object_report_is_generated_from_the_raw_json(tmp_path):
    import json

    from experiments.objects import GROUPS, METHODS, section_from_json

    def evaluation(bag):
        part = {"mAP": 0.2, "AP50": 0.4, "per_class_AP": dict.fromkeys(CLASSES, 0.2),
                "per_class_AP50": dict.fromkeys(CLASSES, 0.4)}  # fmt: skip
        rare = {**part, "per_class_AP": {**part["per_class_AP"], RARE_CLASS: bag}}
        return {"all": part, "rare": part, "day": part, "rare_object": rare}

    seeds, jitter = [0, 1, 2, 3, 4], [0.001, -0.002, 0.0, 0.002, -0.001]
    gain = {"unweighted": 0.0, "dequity_image": 0.0, "dequity_object": 0.05,
            "brain_object": 0.0, "jtt": 0.06, "oracle_resampling": 0.1}  # fmt: skip
    runs = {str(s): {m: evaluation(0.1 + j + gain[m]) for m in METHODS}
            for s, j in zip(seeds, jitter)}  # fmt: skip
    runs["0"]["dequity_image"]["rare_object"]["per_class_AP"][RARE_CLASS] += 0.004
    group = {"boxes": 10, "object_weight": 0.9, "object_likelihood": 0.1, "image_weight": 0.6,
             "brain_weight": 0.7}  # fmt: skip
    data = {
        "mode": "full", "commit": "abc", "date": "today", "seconds": 60, "seeds": seeds,
        "config": {"steps": 1, "batch_size": 8, "image_size": 96, "lr": 1e-4},
        "dataset": {"counts": {s: {"day": 5, "rare_object": 2} for s in ("train", "test")}},
        "selection": {"eta": 1.0, "gamma": 5.0, "source": "test"},
        "weights": {"boxes": 30, "unscored_boxes": 0, "object_clusters": 3,
                    "groups": dict.fromkeys(GROUPS, group), "embedding_dim": 8,
                    "auroc": {"object": 0.99, "image": 0.4, "brain": 0.55}},
        "runs": runs,
    }  # fmt: skip
    path = tmp_path / "objects_runs.json"
    path.write_text(json.dumps(data))
    section = section_from_json(path)
    per_object = next(v for v in section.verdicts if "dequity_object" in v)
    assert "significantly higher rare-object AP" in per_object and "+5.0" in per_object
    per_image = next(v for v in section.verdicts if "dequity_image" in v)
    assert "no significant difference" in per_image
    assert "| dequity_object | 15.0 [" in section.body
    # half the oracle's gain, no cost on day images; AP and AP50 in one family of 6 tests
    assert "| 50 [50, 50] | +0.0 [0.0, 0.0] |" in section.body
    assert section.body.startswith("**Answer.**")
    text = " ".join(section.body.split())
    assert "object run 0.99, image run 0.40, FiftyOne Brain's per-box uniqueness 0.55" in text
    assert "On rare-condition mAP, per-object weights change +0.0 [0.0, 0.0] points" in text
    assert "Holm-corrected over 10 tests in one family" in text
    assert "`oracle_resampling` are the detection run's runs of the same seeds (test)" in text
    assert "| brain_object | 10.0 [" in section.body and "| 0.700 |" in section.body
    # the peers: the brain's box weights gain nothing, JTT gains 1 point more than dequity
    assert "FiftyOne Brain's per-box uniqueness shows no significant change" in text
    assert "+5.0 [5.0, 5.0] points against brain_object (Holm p 0.000 *)" in text
    assert "-1.0 [-1.0, -1.0] points against jtt (Holm p 0.000 *)" in text


def test_the_object_experiment_builds_on_a_finished_detection_run_only(tmp_path):
    import json
    from dataclasses import asdict, replace

    from dequity.errors import DequityError
    from experiments.detection import FULL, RAW_FILE
    from experiments.objects import detection_run, reused_runs

    config = replace(FULL, lr=0.123)  # a design no saved run has
    with pytest.raises(DequityError, match="run `python -m experiments.detection --seeds 0 1`"):
        detection_run(config, tmp_path, [0, 1])
    finished = {"unweighted": {"rare": 1}, "dequity": {"rare": 2}, "jtt": {},
                "oracle_resampling": {}}  # fmt: skip
    saved = {"config": {**asdict(config), "steps": 800, "workers": 1}, "commit": "c0ffee" * 7,
             "selection": {}, "seeds": [0, 1], "runs": {"0": finished}}  # fmt: skip
    (tmp_path / RAW_FILE).write_text(json.dumps(saved))
    with pytest.raises(DequityError, match="finished seeds \\[0, 1\\]"):
        detection_run(config, tmp_path, [0, 1])  # seed 1 has not finished
    source, data = detection_run(config, tmp_path, [0])  # another step count and workers
    assert source == "results/detection_runs.json (commit c0ffeec0ffee)"
    runs = reused_runs(data, 0, source)
    assert runs["dequity_image"] == {"rare": 2, "reused_from": source}
    assert sorted(runs) == ["dequity_image", "jtt", "oracle_resampling", "unweighted"]


def test_the_gate_on_fresh_seeds_is_one_test_and_gates_the_shares(tmp_path):
    import json

    from experiments.confirmation import METHODS, confirmed_gate, section_from_json

    def evaluation(value):
        part = {"mAP": value, "AP50": 2 * value, "per_class_AP": {}, "per_class_AP50": {}}
        return {s: part for s in ("all", "rare", "day", "night", "sideways", "blur_rain")}

    seeds, jitter = list(range(5, 13)), [0.001, -0.002, 0.0, 0.002, -0.001, 0.0, 0.001, -0.001]
    gain = {"unweighted": 0.0, "oracle_resampling": 0.02, "dequity": 0.0, "dequity_sampler": 0.01,
            "jtt": 0.005, "brain_uniqueness": -0.004}  # fmt: skip
    runs = {str(s): {m: evaluation(0.1 + j + gain[m]) for m in METHODS}
            for s, j in zip(seeds, jitter)}  # fmt: skip
    runs["5"]["dequity_sampler"]["rare"] = {**runs["5"]["dequity_sampler"]["rare"], "mAP": 0.112}
    for seed in seeds:
        runs[str(seed)]["jtt"].update(
            failed_runs=[], jtt_error_set={"share": 0.2 if seed % 2 else 0.3}
        )  # as checked_run records a run
    shares = {"day": 0.85, "night": 0.05, "sideways": 0.05, "blur_rain": 0.05}
    data = {
        "mode": "full", "commit": "abc", "date": "today", "seconds": 60, "seeds": seeds,
        "reference_seeds": [0, 1, 2, 3, 4, 100], "runs": runs,
        "selection": {"source": "results/detection_runs.json (commit abc)", "steps": 1600,
                      "oracle_power": 0.5, "sampler_power": 0.5, "eta": 1.0, "gamma": 5.0,
                      "lambda": 3.0},
        "config": {"spec": {"rare_looks": ["night", "sideways", "blur_rain"]}},
        "weights": {"image_share": shares, "draw_share_oracle": shares,
                    "draw_share_sampler": shares, "loss_share_dequity": shares,
                    "loss_share_brain": shares,
                    "sampler_max_over_median": 12.0},
    }  # fmt: skip
    path = tmp_path / "gate_runs.json"
    path.write_text(json.dumps(data))
    section = section_from_json(path)
    assert section.body.startswith("**Calibration gate on fresh seeds: passed.**")
    assert "+2.0 [2.0, 2.0] points of rare-condition mAP, paired p 0, 8 fresh seeds 5-12" in (
        section.lead
    )
    sampler = next(v for v in section.verdicts if "dequity_sampler" in v)
    assert "significantly higher rare-condition mAP" in sampler
    assert "51 [50, 52] % of the oracle's gain; day mAP +1.0 [1.0, 1.0] points" in sampler
    dequity = next(v for v in section.verdicts if ", dequity:" in v)
    assert "no significant difference" in dequity and "0 [0, 0] % of the oracle's gain" in dequity
    assert "| dequity | 10.0 [9.9, 10.1] | +0.0 [0.0, 0.0] | 1.000 (Holm 1.000) | 0 [0, 0] |" in (
        section.body
    )
    assert "| 0.000 (Holm 0.000 *) | 51 [50, 52] |" in section.body
    assert "JTT's error sets (weight 3, the rest 1) hold 20-30 % of the training images" in (
        section.body
    )
    assert "FiftyOne Brain uniqueness loss weights: day 85 %, night 5 %" in section.body
    assert "| jtt | -0.5 [-0.5, -0.5] | 0.000 (Holm 0.000 *) |" in section.body  # dequity - peer
    assert "| brain_uniqueness | +0.4 [0.4, 0.4] | 0.000 (Holm 0.000 *) |" in section.body
    for seed in seeds:  # the oracle's gain alternates in sign: the gate fails, no shares
        runs[str(seed)]["oracle_resampling"] = evaluation(0.1 + 0.004 * (-1) ** seed)
    path.write_text(json.dumps(data))
    assert not confirmed_gate(data)["passed"]
    section = section_from_json(path)
    assert section.lead.startswith("**Calibration gate on fresh seeds: not passed.**")
    assert all("no share of the oracle's gain (the gate has not passed)" in v
               for v in section.verdicts)  # fmt: skip
    del runs["12"]["oracle_resampling"]
    assert confirmed_gate(data) == {
        "passed": False,
        "reason": "the oracle or unweighted has not run on every seed",
    }


def test_the_gate_refuses_seeds_the_detection_run_used(tmp_path):
    import json
    from dataclasses import asdict

    from dequity.errors import DequityError
    from experiments.confirmation import fresh_seeds, run
    from experiments.detection import QUICK, RAW_FILE

    assert fresh_seeds(False, (0, 1, 2, 3, 4)) == tuple(range(5, 13))
    assert fresh_seeds(False, (7, 8)) == (7, 8)
    finished = {"unweighted": {}, "dequity": {}, "jtt": {}, "oracle_resampling": {}}
    saved = {"config": asdict(QUICK), "commit": "c0ffee" * 7, "seeds": [0, 3],
             "selection": {"seed": 100}, "runs": {"0": finished, "3": finished}}  # fmt: skip
    (tmp_path / RAW_FILE).write_text(json.dumps(saved))
    with pytest.raises(DequityError, match=r"seeds \[3\] were used by the detection run"):
        run(True, (3, 4), tmp_path)


def test_jtt_error_rule_counts_the_share_of_objects_found():
    import fiftyone as fo

    from experiments.detection import found_share

    def det(label, box, confidence=None):
        return fo.Detection(label=label, bounding_box=box, confidence=confidence)

    truths = [
        [det("Bag", [0.1, 0.1, 0.3, 0.3]), det("Coat", [0.5, 0.5, 0.2, 0.4])],
        [det("Bag", [0.1, 0.1, 0.3, 0.3])],
        [],
    ]
    found = [
        [det("Bag", [0.1, 0.1, 0.3, 0.3], 0.9), det("Coat", [0.5, 0.5, 0.2, 0.4], 0.1)],
        [det("Dress", [0.1, 0.1, 0.3, 0.3], 0.9)],  # the right box, the wrong class
        [],
    ]
    assert found_share(truths, found, 0.3).tolist() == [0.5, 0.0, 1.0]
    assert found_share(truths, found, 0.05).tolist() == [1.0, 0.0, 1.0]
