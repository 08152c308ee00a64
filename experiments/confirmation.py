"""The calibration gate on fresh seeds, with dequity and its peers beside the oracle.

The detection run (:mod:`experiments.detection`, seeds 0-4) chose the training
budget, the oracle's strength and dequity's (eta, gamma) on validation and
tested seven methods; its oracle gained on rare-condition mAP with a raw paired
p below 0.05, but not after Holm's correction over the seven. This experiment
was fixed before it ran, every choice read from that run:

- **fresh seeds** (:data:`FRESH_SEEDS`, 5-12 by default), none of which the
  detection run used;
- **six methods**, with the detection run's budget, optimiser and image order:
  ``unweighted``; the chosen ``oracle_resampling``; ``dequity`` (GFL loss
  weights with the chosen eta and gamma, the default likelihood);
  ``dequity_sampler``, which draws each training image in proportion to
  ``likelihood ** -power``, ``power`` being the chosen oracle's (square-root
  balancing gives 0.5): the oracle's rule with the default likelihood in place
  of the condition's share, no labels needed; and the two tools a user would
  reach for instead: ``jtt`` (Just Train Twice: the unweighted model of the
  same seed marks the training images where it misses objects, which get the
  detection run's chosen ``lambda``) and ``brain_uniqueness`` (FiftyOne
  Brain's ``compute_uniqueness`` on the final-features block, as the
  likelihood ``1 - uniqueness`` in the same GFL weights as ``dequity``);
- **the gate**: one paired t-test, the oracle against unweighted on
  rare-condition test mAP; it passes with a gain at p < 0.05 (a family of one);
- **the methods**: the four that need no condition labels against
  unweighted, Holm-corrected together, each with its share of the oracle's
  gain (reported only when the gate passes); then ``dequity`` against each
  peer, Holm-corrected over the two.

Raw per-seed values go to ``docs/results/gate_runs.json``; :func:`section_from_json`
turns that file into the report. A failed run is set aside and rerun with a
fresh seed (:func:`experiments.detection.checked_run`).

Run: ``python -m experiments.confirmation [--quick] [--seeds 5 6 7 8 9 10 11 12]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dequity.errors import DequityError
from experiments import detection, report
from experiments.detection import (
    FULL,
    FULL_SEEDS,
    GATE_SEEDS,
    ORACLE,
    QUICK,
    Config,
    checked_run,
    default_run,
    default_weights,
    evaluate,
    failed_runs_sentence,
    jtt_error_set,
    load_results,
    oracle_field,
    own_copy,
    raw_record,
    seed_values,
    set_field,
    train_run,
)
from experiments.objects import chosen_eta_gamma, detection_run
from experiments.rare_conditions import (
    brain_gfl_weights,
    embedding_field,
    load_rare_conditions,
)
from experiments.report import Section, script_main, table
from experiments.stats import mean_ci, paired_tests, share_ci

NAME = "confirmation"
RAW_FILE = detection.CONFIRMATION_FILE
METHODS = ("unweighted", ORACLE, "dequity", "dequity_sampler", "jtt", "brain_uniqueness")
#: the methods that need no condition labels, each tested against unweighted
COMPARED = ("dequity", "dequity_sampler", "jtt", "brain_uniqueness")
#: the tools a user would reach for instead of dequity
PEERS = ("jtt", "brain_uniqueness")
FRESH_SEEDS = tuple(range(5, 13))
QUICK_SEEDS = (5,)
GATE_ALPHA = 0.05
#: the run tag of the fields the gate's methods train from (see ``training_kwargs``)
TAG = "fresh"
#: one worker's job: (dataset name, seed, method, config, the detection run's choices)
Job = tuple[str, int, str, Config, dict[str, Any]]


def fresh_seeds(quick: bool, seeds: Sequence[int]) -> tuple[int, ...]:
    """The seeds to train: ``seeds``, or the mode's fresh default for the shared default.

    Example::

        fresh_seeds(False, (0, 1, 2, 3, 4))   # FRESH_SEEDS: the shared default is not fresh
    """
    if quick and tuple(seeds) == (0,):
        return QUICK_SEEDS
    if not quick and tuple(seeds) == report.FULL_SEEDS:
        return FRESH_SEEDS
    return tuple(seeds)


def training_options(method: str, sampler_power: float) -> dict[str, Any]:
    """The training keywords of ``method``; the sampler draws by ``likelihood ** -power``.

    Example::

        training_options("dequity_sampler", 0.5)["sampling_power"]   # -0.5
    """
    if method == "dequity_sampler":
        return {
            "weight_field": None,
            "sampling_field": "dq_likelihood",
            "sampling_power": -sampler_power,
        }
    return detection.training_kwargs(method, TAG)


def jtt_lambda(reference: dict[str, Any]) -> float:
    """JTT's error-set weight as the detection run ``reference`` chose it on validation.

    Example::

        jtt_lambda({"selection": {"lambda": 3.0}})   # 3.0
    """
    chosen = reference["selection"].get("lambda")
    if chosen is None:
        raise DequityError(
            "the detection run chose no JTT lambda (its selection has no 'lambda'); "
            "rerun it: python -m experiments.detection"
        )
    return float(chosen)


def brain_weights(train: Any, eta: float, gamma: float) -> np.ndarray:
    """FiftyOne Brain's uniqueness as GFL weights in ``w_brain`` (likelihood ``1 - uniqueness``).

    The brain scores the final-features block of the default model's vectors,
    the embedding that serves it best on the fidelity benchmark's long tails.

    Example::

        brain_weights(dataset.match_tags("train"), 1.0, 5.0)
    """
    vectors = np.array(train.values(embedding_field()), dtype=np.float32)
    weights = brain_gfl_weights(train, vectors, eta, gamma)
    set_field(train, detection.training_kwargs("brain_uniqueness", TAG)["weight_field"], weights)
    return weights


def _job(job: Job) -> list[tuple[int, str, dict[str, Any]]]:
    """One method with one seed in a worker process, evaluated on the test split.

    The ``unweighted`` job also trains ``jtt`` from its model's error set.
    """
    import torch

    torch.set_num_threads(1)  # the cores are shared
    name, seed, method, config, chosen = job
    tag = f"fresh{seed}_{method}"
    dataset = own_copy(name, tag)
    train, test = dataset.match_tags("train"), dataset.match_tags("test")

    def attempt(method: str, s: int) -> tuple[dict[str, Any], list[float], Any]:
        options = training_options(method, chosen["sampler_power"])
        model, losses = train_run(dataset, method, s, config, tag, options=options)
        return evaluate(model, test, tag, config), losses, model

    start = time.perf_counter()
    evaluation, model = checked_run(partial(attempt, method), seed, config.reruns)
    out = [(seed, method, _timed(evaluation, start, seed, method))]
    if method == "unweighted":
        start = time.perf_counter()
        if model is None:
            raise RuntimeError(f"every unweighted run of seed {seed} failed; see the log")
        missed, recall = jtt_error_set(model, train, config, tag)
        jtt_field = detection.training_kwargs("jtt", TAG)["weight_field"]
        set_field(train, jtt_field, np.where(missed, chosen["lambda"], 1.0))
        jtt = checked_run(partial(attempt, "jtt"), seed, config.reruns)[0]
        jtt["jtt_error_set"] = {"recall_below": recall, "share": float(missed.mean())}
        out.append((seed, "jtt", _timed(jtt, start, seed, "jtt")))
    dataset.delete()
    return out


def _timed(evaluation: dict[str, Any], start: float, seed: int, method: str) -> dict[str, Any]:
    """``evaluation`` with its seconds since ``start``, printed as one progress line."""
    evaluation["seconds"] = round(time.perf_counter() - start, 1)
    rare = evaluation.get("rare", {}).get("mAP")
    print(
        f"  seed {seed} {method}: rare mAP {'failed' if rare is None else f'{100 * rare:.1f}'} "
        f"({evaluation['seconds']:.0f} s)",
        flush=True,
    )
    return evaluation


def run(quick: bool, seeds: Sequence[int], output: Path) -> Section:
    """Reads the detection run's choices, trains every method on fresh seeds, writes the JSON."""
    import torch

    torch.set_num_threads(1)
    config = QUICK if quick else FULL
    reference_seeds = (0,) if quick else FULL_SEEDS
    seeds = fresh_seeds(quick, seeds)
    start = time.perf_counter()
    source, reference = detection_run(config, output, reference_seeds)
    used = set(reference["seeds"]) | {reference["selection"]["seed"]}
    if used & set(seeds):
        raise DequityError(
            f"seeds {sorted(used & set(seeds))} were used by the detection run ({source}); "
            f"the gate is confirmed on fresh seeds, e.g. --seeds {' '.join(map(str, FRESH_SEEDS))}"
        )
    chosen = chosen_eta_gamma(reference, source)
    power = (reference.get("budget") or {}).get("oracle_power", 1.0)
    chosen.update(oracle_power=power, sampler_power=power, **{"lambda": jtt_lambda(reference)})
    config = replace(config, steps=chosen["steps"])
    dataset = load_rare_conditions(config.spec)
    train = dataset.match_tags("train")
    default_run(train)
    default_weights(train, chosen["eta"], chosen["gamma"])
    conditions = np.array(train.values("condition"))
    oracle_field(train, conditions, config.spec.conditions, power)
    brain_weights(train, chosen["eta"], chosen["gamma"])
    data = raw_record(NAME, quick, config, seeds, dataset)
    draws = _draws(train, conditions, power)
    data.update(selection=chosen, reference_seeds=sorted(used), weights=draws)
    data["runs"] = {str(s): {} for s in seeds}
    path = output / RAW_FILE
    path.write_text(json.dumps(data, indent=1))
    jobs = [(dataset.name, s, m, config, chosen) for s in seeds for m in METHODS if m != "jtt"]
    workers = min(config.workers, len(jobs))
    print(f"{len(METHODS)} methods x seeds {list(seeds)} in {workers} processes...", flush=True)
    print("  (each unweighted job also trains jtt from its model's error set)", flush=True)
    pool = None
    if workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers)
    results = pool.imap_unordered(_job, jobs) if pool is not None else map(_job, jobs)
    for finished in results:
        for seed, method, evaluation in finished:
            data["runs"][str(seed)][method] = evaluation
        path.write_text(json.dumps(data, indent=1))  # the finished runs so far
    if pool is not None:
        pool.close()
    data["complete"] = True
    data["seconds"] = round(time.perf_counter() - start, 1)
    data["gate"] = confirmed_gate(data)
    path.write_text(json.dumps(data, indent=1))
    return section_from_json(path)


def _draws(train: Any, conditions: np.ndarray, power: float) -> dict[str, Any]:
    """Each training condition's share of the draws, by the oracle and by the sampler."""
    from training.samples import sampling_probabilities

    sampler = sampling_probabilities(train, "dq_likelihood", -power).numpy()
    oracle = np.array(train.values("p_oracle"), dtype=float)
    weights = np.array(train.values("w_dequity"), dtype=float)
    brain_field = detection.training_kwargs("brain_uniqueness", TAG)["weight_field"]
    brain = np.array(train.values(brain_field), dtype=float)

    def shares(draw: np.ndarray) -> dict[str, float]:
        return {c: float(draw[conditions == c].sum() / draw.sum()) for c in np.unique(conditions)}

    return {
        "draw_share_oracle": shares(oracle),
        "draw_share_sampler": shares(sampler),
        "loss_share_dequity": shares(weights),
        "loss_share_brain": shares(brain),
        "image_share": shares(np.ones(len(conditions))),
        "sampler_max_over_median": float(sampler.max() / np.median(sampler)),
    }


def confirmed_gate(data: dict[str, Any]) -> dict[str, Any]:
    """The gate on the fresh seeds: the oracle against unweighted, one paired t-test.

    It passes when the oracle's mean change in rare-condition test mAP is a
    gain with p < :data:`GATE_ALPHA` over at least
    :data:`~experiments.detection.GATE_SEEDS` seeds (a family of one test).

    Example::

        confirmed_gate(load_results(Path("docs/results/gate_runs.json")))["passed"]
    """
    runs = [data["runs"].get(str(s), {}) for s in data["seeds"]]
    if not all("unweighted" in r and ORACLE in r for r in runs):
        return {"passed": False, "reason": "the oracle or unweighted has not run on every seed"}
    ref = seed_values(data, "unweighted", "rare", "mAP")
    test = paired_tests({ORACLE: seed_values(data, ORACLE, "rare", "mAP")}, ref)[ORACLE]
    passed = bool(test.p < GATE_ALPHA and test.diff.mean > 0 and test.diff.n >= GATE_SEEDS)
    return {
        "metric": "rare-condition test mAP",
        "method": ORACLE,
        "reference": "unweighted",
        "seeds": test.diff.n,
        "diff": test.diff.mean,
        "low": test.diff.low,
        "high": test.diff.high,
        "p": test.p,
        "passed": passed,
    }


def section_from_json(path: Path) -> Section:
    """The report of a saved run (``gate_runs.json``): the gate, then the methods' shares.

    Example::

        section = section_from_json(Path("docs/results/gate_runs.json"))
    """
    data = load_results(path)
    seeds, sel, draws = data["seeds"], data["selection"], data["weights"]
    done = [m for m in METHODS if all(m in data["runs"].get(str(s), {}) for s in seeds)]
    gate = data.get("gate") or confirmed_gate(data)
    if "unweighted" not in done or ORACLE not in done:
        raise DequityError(f"{path} holds no finished unweighted and oracle runs to report")
    ref = seed_values(data, "unweighted", "rare", "mAP")
    oracle_gain = np.subtract(seed_values(data, ORACLE, "rare", "mAP"), ref)
    compared = [m for m in COMPARED if m in done]
    tests = paired_tests({m: seed_values(data, m, "rare", "mAP") for m in compared}, ref)

    def change(m: str, subset: str) -> str:
        diff = np.subtract(
            seed_values(data, m, subset, "mAP"), seed_values(data, "unweighted", subset, "mAP")
        )
        return mean_ci(diff).format(signed=True)

    def share(m: str) -> str:
        if not gate["passed"]:
            return "n/a"
        gain = np.subtract(seed_values(data, m, "rare", "mAP"), ref)
        return share_ci(gain, oracle_gain).format(digits=0)

    rows = [["unweighted", mean_ci(ref).format(), "", "", "", "", ""]]
    rows.append([
        f"{ORACLE} (the gate)", mean_ci(seed_values(data, ORACLE, "rare", "mAP")).format(),
        mean_ci(oracle_gain).format(signed=True), f"{gate['p']:.3f} (alone)", "",
        change(ORACLE, "day"), change(ORACLE, "all"),
    ])  # fmt: skip
    for m in compared:
        t = tests[m]
        rows.append([
            m, mean_ci(seed_values(data, m, "rare", "mAP")).format(), t.diff.format(signed=True),
            f"{t.p:.3f} (Holm {t.p_holm:.3f}{_star(t)})", share(m),
            change(m, "day"), change(m, "all"),
        ])  # fmt: skip
    headline = table(
        ["method", "rare-condition mAP %", "change vs unweighted", "p (paired t)",
         "share of the oracle's gain %", "day change", "all-condition change"],
        rows,
    )  # fmt: skip
    gate_line = gate_text(gate, seeds)
    verdicts = [_verdict(m, tests[m], share(m), change(m, "day")) for m in compared]
    peers = [m for m in PEERS if m in done and "dequity" in done]
    against_peers = _against_peers(data, peers)
    looks = data["config"]["spec"]["rare_looks"]

    def shares(key: str) -> str:
        order = [c for c in ("day", *looks, "rare_object") if c in draws[key]]
        return ", ".join(f"{c} {100 * draws[key][c]:.0f} %" for c in order)

    subsets = ("all", "rare", "day", *looks)
    cond_rows = [
        [m, *(mean_ci(seed_values(data, m, s, "mAP")).format() for s in subsets)] for m in done
    ]
    took = f"{data['seconds'] / 60:.0f} min in all" if "seconds" in data else "unfinished"
    body = f"""{gate_line}

Generated from `results/{RAW_FILE}` ({data["mode"]} mode, commit `{data["commit"][:12]}`,
{data["date"]}; {took}). Fixed before the run (`experiments/confirmation.py`): seeds
{seeds}, none used by the detection run (its seeds and selection seed:
{data["reference_seeds"]}); its choices, read from {sel["source"]}: {sel["steps"]} steps,
the oracle's power {sel["oracle_power"]:g}, eta {sel["eta"]:g} and gamma {sel["gamma"]:g}.
The gate is one paired t-test (a family of one); the methods that need no condition
labels (dequity's two, JTT with the detection run's lambda {sel.get("lambda", "n/a")},
FiftyOne Brain uniqueness) are Holm-corrected together (\\* = significant at 0.05 after
correction). Values are percent, mean and 95 % t-interval over seeds; the share of the
oracle's gain is (method − unweighted) / (oracle − unweighted) on rare-condition mAP with
a 95 % bootstrap interval over seeds (resampled in pairs). {failed_runs_sentence(data)}

### Rare-condition mAP@[.5:.95] on fresh seeds

{headline}

### What each method draws or weights

Share of the training draws (or, for the loss weights, of the total weight) that each
condition gets. Images: {shares("image_share")}. The oracle: {shares("draw_share_oracle")}.
`dequity_sampler` (likelihood to the power −{sel["sampler_power"]:g}, zeros at the smallest
positive likelihood): {shares("draw_share_sampler")}; its most-drawn image is drawn
{draws["sampler_max_over_median"]:.0f} times as often as the median image. `dequity` loss
weights: {shares("loss_share_dequity")}.{_peer_weights(data, shares)}
{against_peers}
### mAP@[.5:.95] by test subset

{table(["method", *subsets], cond_rows)}

Every value per seed, subset and class is in `results/{RAW_FILE}`.
"""
    lead = f"""{gate_line}

{headline}

Rare-condition mAP@[.5:.95] (%), mean and 95 % CI over the fresh seeds {seeds}; changes
are paired per seed; the share of the oracle's gain is (method − unweighted) / (oracle −
unweighted) with a 95 % bootstrap interval. Design and draws: the gate section below."""
    return Section("The calibration gate on fresh seeds", body, verdicts, lead)


def _peer_weights(data: dict[str, Any], shares: Any) -> str:
    """The sentence on what the peers weight, when the run trained them."""
    parts = []
    if "loss_share_brain" in data["weights"]:
        parts.append(f" FiftyOne Brain uniqueness loss weights: {shares('loss_share_brain')}.")
    errors = [
        run["jtt"]["jtt_error_set"]["share"]
        for run in data["runs"].values()
        if "jtt_error_set" in run.get("jtt", {})
    ]
    if errors:
        low, high = f"{100 * min(errors):.0f}", f"{100 * max(errors):.0f}"
        parts.append(
            f" JTT's error sets (weight {data['selection']['lambda']:g}, the rest 1) hold "
            f"{low if low == high else f'{low}-{high}'} % of the training images."
        )
    return "".join(parts)


def _against_peers(data: dict[str, Any], peers: Sequence[str]) -> str:
    """The table of dequity against each peer on rare-condition mAP, Holm over the peers."""
    if not peers:
        return ""
    ours = seed_values(data, "dequity", "rare", "mAP")
    gaps = {m: np.subtract(ours, seed_values(data, m, "rare", "mAP")) for m in peers}
    tests = paired_tests(gaps, np.zeros(len(ours)))
    rows = [
        [m, t.diff.format(signed=True), f"{t.p:.3f} (Holm {t.p_holm:.3f}{_star(t)})"]
        for m, t in tests.items()
    ]
    return f"""
### dequity against the tools a user would reach for instead

Rare-condition mAP of `dequity` minus the peer's, paired per seed, Holm-corrected over
the peers.

{table(["peer", "dequity − peer", "p (paired t)"], rows)}
"""


def _star(test: Any) -> str:
    """`` *`` when ``test`` is significant after Holm's correction."""
    return " *" if test.significant else ""


def gate_text(gate: dict[str, Any], seeds: Sequence[int]) -> str:
    """The confirmed gate's result as the report's first sentence.

    Example::

        gate_text(confirmed_gate(data), data["seeds"])
    """
    if "diff" not in gate:
        return f"**Calibration gate on fresh seeds: not passed** ({gate['reason']})."
    change = (
        f"{100 * gate['diff']:+.1f} [{100 * gate['low']:.1f}, {100 * gate['high']:.1f}] points "
        f"of rare-condition mAP, paired p {gate['p']:.3g}, {gate['seeds']} fresh seeds "
        f"{min(seeds)}-{max(seeds)}"
    )
    if gate["passed"]:
        return (
            f"**Calibration gate on fresh seeds: passed.** The oracle that balances the "
            f"conditions with their labels beats unweighted training ({change}; one test fixed "
            "before the run), so this benchmark can register a gain from rebalancing, and the "
            "methods below are judged by their share of the oracle's gain."
        )
    return (
        f"**Calibration gate on fresh seeds: not passed.** The oracle does not significantly "
        f"beat unweighted training ({change}; the gate needs a gain with p < {GATE_ALPHA} in "
        "one test fixed before the run), so no share of its gain is reported."
    )


def _verdict(method: str, test: Any, share: str, day: str) -> str:
    if test.significant:
        what = f"significantly {'higher' if test.diff.mean > 0 else 'lower'} rare-condition mAP"
    else:
        what = "no significant difference in rare-condition mAP"
    of_gain = (
        "no share of the oracle's gain (the gate has not passed)"
        if share == "n/a"
        else f"{share} % of the oracle's gain"
    )
    return (
        f"Detection on fresh seeds, {method}: {what} against unweighted "
        f"({test.diff.format(signed=True)} points, Holm p {test.p_holm:.3f}, {test.diff.n} seeds; "
        f"{of_gain}; day mAP {day} points)."
    )


if __name__ == "__main__":
    script_main(run, __doc__, NAME)
