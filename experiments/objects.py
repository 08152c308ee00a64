"""Per-object weights for a rare-looking object: per-box, per-image or no weights?

The set, training and evaluation are those of :mod:`experiments.detection`
(its ``rare_object`` condition: daylight images whose Bags are inverted,
magenta and turned on their side). Six methods, with the same steps,
optimiser, learning rate, seeds and image order:

- ``unweighted``;
- ``dequity_image``: the image-level default run, one weight per image
  (detection's ``dequity``);
- ``dequity_object``: an object run on the training boxes
  (``compute_dequity(..., patches_field="ground_truth")``, the default method
  arguments on the crops' embeddings), one weight per box
  (``weight_level="object"``);
- ``brain_object``: the tool a FiftyOne user would reach for instead, per box:
  FiftyOne Brain's ``compute_uniqueness`` on the patches view, from the final
  features of the same crop embeddings, read as the likelihood
  ``1 - uniqueness`` and given the same GFL weights, one weight per box;
- ``jtt``: detection's Just Train Twice (images its first model gets wrong,
  upweighted), the label-using peer;
- ``oracle_resampling``: detection's condition oracle (it knows which images
  show the rare look), the reference for the share of the oracle's gain.

Only the per-box methods (:data:`TRAINED`) are trained here. The others are the
detection run's own runs of the same seeds (:data:`REUSED`), which must come from the
same configuration; its (eta, gamma) and step count, chosen on validation,
are used here too. The headline is rare-object AP: the Bag's COCO
AP@[.5:.95] and AP50 on the ``rare_object`` test images, both metrics in one
Holm family. Raw per-seed values go to ``docs/results/objects_runs.json``
with the config and commit; :func:`section_from_json` turns that file into
the report.

Run: ``python -m experiments.objects [--quick] [--seeds 0 1 2 3 4]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from dequity.errors import DequityError
from experiments import detection, report
from experiments.detection import (
    FULL,
    FULL_SEEDS,
    ORACLE,
    QUICK,
    Config,
    checked_run,
    default_run,
    default_weights,
    evaluate,
    failed_runs_sentence,
    finish_record,
    load_results,
    map_jobs,
    own_copy,
    partial_path,
    raw_record,
    seed_values,
    train_run,
)
from experiments.rare_conditions import (
    RARE_CLASS,
    brain_gfl_weights,
    load_rare_conditions,
    object_embeddings,
)
from experiments.report import Section, script_main, table
from experiments.stats import mean_ci, paired_tests, share_ci

NAME = "objects"
RAW_FILE = "objects_runs.json"
METHODS = ("unweighted", "dequity_image", "dequity_object", "brain_object", "jtt", ORACLE)
#: the tools a user would reach for instead, compared with ``dequity_object`` directly
PEERS = ("brain_object", "jtt")
OBJECT_RUN = "dqobj"
#: the box attribute holding FiftyOne Brain's per-box weight
BRAIN_WEIGHT = "brain_weight"
#: the box groups of the weight summary
GROUPS = ("rare-looking Bag", "Bag elsewhere", "other boxes")
#: the methods whose runs are the detection experiment's (its name for each): same design,
#: budget, seeds and image order, so they pair with the per-object runs seed by seed
REUSED = {"unweighted": "unweighted", "dequity_image": "dequity", "jtt": "jtt", ORACLE: ORACLE}
#: the per-box methods trained here, each with its training keywords
#: (:func:`detection.train_run`'s ``options``); a box too small to embed trains unweighted
TRAINED = {
    method: {"weight_field": field, "weight_level": "object", "missing_box_weight": 1.0}
    for method, field in (
        ("dequity_object", f"{OBJECT_RUN}_weight"),
        ("brain_object", BRAIN_WEIGHT),
    )
}


def detection_run(config: Config, output: Path, seeds: Sequence[int]) -> tuple[str, dict]:
    """The finished detection run of ``config``'s design that this experiment builds on.

    Read from ``detection_runs.json`` in ``output`` (else ``docs/results``): its
    configuration must equal ``config`` but for the step count (which it chose on
    validation) and the number of worker processes, and it must have finished
    every one of ``seeds``. Returns ``(source, data)``, ``source`` naming the
    file and its commit. Raises :class:`DequityError` when no such run exists.

    Example::

        source, reference = detection_run(FULL, Path("docs/results"), FULL_SEEDS)
    """

    def design(saved: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in saved.items() if k not in ("steps", "workers")}

    wanted = design(json.loads(json.dumps(asdict(config))))
    for folder in (output, report.DOCS / "results"):
        path = folder / detection.RAW_FILE
        if not path.exists():
            continue
        data = load_results(path)
        finished = all(
            all(name in data["runs"].get(str(s), {}) for name in REUSED.values()) for s in seeds
        )
        if design(data.get("config", {})) == wanted and "selection" in data and finished:
            return f"results/{detection.RAW_FILE} (commit {data['commit'][:12]})", data
    raise DequityError(
        f"no {detection.RAW_FILE} in {output} or docs/results from a detection run with this "
        f"configuration that finished seeds {list(seeds)}; run `python -m experiments.detection "
        f"--seeds {' '.join(map(str, seeds))}` first (it chooses eta, gamma and the budget on "
        "validation, and trains the runs this experiment compares with)"
    )


def chosen_eta_gamma(reference: dict[str, Any], source: str) -> dict[str, Any]:
    """The (eta, gamma) and step count that the detection run ``reference`` chose on validation.

    Example::

        source, reference = detection_run(FULL, Path("docs/results"), FULL_SEEDS)
        chosen_eta_gamma(reference, source)["eta"]
    """
    sel = reference["selection"]
    return {
        "eta": sel["eta"],
        "gamma": sel["gamma"],
        "steps": reference["config"]["steps"],
        "candidates": sel["dequity_eta_gamma"],
        "metric": sel["metric"],
        "seed": sel["seed"],
        "source": source,
    }


def prepare_weights(dataset: Any, eta: float, gamma: float) -> dict[str, Any]:
    """The image run (``w_dequity``), the object run (``dqobj_*`` box attributes) and
    FiftyOne Brain's per-box weights (:func:`brain_object_weights`) on train.

    Returns the weight summary of :func:`weight_summary` and the runs' timings.
    """
    import dequity

    train = dataset.match_tags("train")
    start = time.perf_counter()
    default_run(train)
    default_weights(train, eta, gamma)
    image_seconds = time.perf_counter() - start
    start = time.perf_counter()
    vectors = object_embeddings(train)
    embed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    dequity.compute_dequity(
        train,
        OBJECT_RUN,
        patches_field="ground_truth",
        embeddings=vectors,
        eta=eta,
        gamma=gamma,
        overwrite=True,
        progress=False,
    )
    object_seconds = time.perf_counter() - start
    brain_object_weights(train, vectors, eta, gamma)
    summary = weight_summary(train)
    summary.update(
        image_run_seconds=round(image_seconds, 1),
        object_embedding_seconds=round(embed_seconds, 1),
        object_run_seconds=round(object_seconds, 1),
        embedding_dim=int(vectors.shape[1]),
    )
    return summary


def brain_object_weights(train: Any, vectors: np.ndarray, eta: float, gamma: float) -> None:
    """FiftyOne Brain's uniqueness of each box as its GFL weight, in :data:`BRAIN_WEIGHT`.

    ``compute_uniqueness`` runs on the patches view of ``ground_truth``, from the
    final-features block of ``vectors`` (:func:`object_embeddings`' rows), the
    embedding that serves it best on the fidelity benchmark's long tails. Boxes
    too small to embed (zero rows) get no weight, as in the object run.

    Example::

        brain_object_weights(train, object_embeddings(train), 1.0, 5.0)
    """
    per_sample = train.values("ground_truth.detections.id")
    ids = [i for sample in per_sample for i in sample or []]
    row_of = {box: row for row, box in enumerate(ids) if np.any(vectors[row])}
    patches = train.to_patches("ground_truth")
    boxes = patches.values("ground_truth.id")
    keep = [p for p, box in zip(patches.values("id"), boxes) if box in row_of]
    scored = patches.select(keep, ordered=True)
    scored_boxes = scored.values("ground_truth.id")
    rows = vectors[[row_of[box] for box in scored_boxes]]
    weight_of = dict(zip(scored_boxes, brain_gfl_weights(scored, rows, eta, gamma)))
    nested = [
        [None if box not in weight_of else float(weight_of[box]) for box in sample or []]
        for sample in per_sample
    ]
    train.set_values(f"ground_truth.detections.{BRAIN_WEIGHT}", nested)


def weight_summary(train: Any) -> dict[str, Any]:
    """How the object run and the image run weight the rare-looking Bags of ``train``.

    Per box group (:data:`GROUPS`): the number of boxes, the mean box weight
    and likelihood of the object run, the mean weight of the box's image in the
    image run, the mean FiftyOne Brain box weight; and each one's AUROC for telling
    the rare-looking Bags from every other box by weight (0.5: no better than
    chance; ties count half).

    Example::

        weight_summary(dataset.match_tags("train"))["auroc"]["object"]
    """
    from sklearn.metrics import roc_auc_score

    conditions, labels, box_w, box_p, clusters, image_w, brain_w = train.values(
        [
            "condition",
            "ground_truth.detections.label",
            f"ground_truth.detections.{OBJECT_RUN}_weight",
            f"ground_truth.detections.{OBJECT_RUN}_likelihood",
            f"ground_truth.detections.{OBJECT_RUN}_cluster",
            "w_dequity",
            f"ground_truth.detections.{BRAIN_WEIGHT}",
        ]
    )
    rows = []
    for cond, ls, ws, ps, cs, iw, bs in zip(
        conditions, labels, box_w, box_p, clusters, image_w, brain_w
    ):
        for label, w, p, c, b in zip(ls or [], ws or [], ps or [], cs or [], bs or []):
            group = (
                GROUPS[0] if label == RARE_CLASS and cond == "rare_object"
                else GROUPS[1] if label == RARE_CLASS else GROUPS[2]
            )  # fmt: skip
            rows.append((group, w, p, c, iw, b))
    group = np.array([r[0] for r in rows])
    unscored = sum(r[1] is None for r in rows)
    box_weight = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=float)
    box_like = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=float)
    cluster = np.array([-1 if r[3] is None else r[3] for r in rows])
    image_weight = np.array([r[4] for r in rows], dtype=float)
    brain_weight = np.array([np.nan if r[5] is None else r[5] for r in rows], dtype=float)
    rare = group == GROUPS[0]
    scored = np.isfinite(box_weight)
    return {
        "boxes": len(rows),
        "unscored_boxes": int(unscored),
        "object_clusters": int(len(set(cluster[cluster >= 0].tolist()))),
        "object_noise_share": float(np.mean(cluster < 0)),
        "groups": {
            g: {
                "boxes": int((group == g).sum()),
                "object_weight": float(np.nanmean(box_weight[group == g])),
                "object_likelihood": float(np.nanmean(box_like[group == g])),
                "image_weight": float(image_weight[group == g].mean()),
                "brain_weight": float(np.nanmean(brain_weight[group == g])),
            }
            for g in GROUPS
            if (group == g).any()
        },
        "auroc": {
            "object": float(roc_auc_score(rare[scored], box_weight[scored])),
            "image": float(roc_auc_score(rare, image_weight)),
            "brain": float(roc_auc_score(rare[scored], brain_weight[scored])),
        },
    }


def run_seed(dataset: Any, seed: int, config: Config, save: Path | None = None) -> dict[str, Any]:
    """The per-box methods (:data:`TRAINED`) with one seed, evaluated on the test split.

    Needs :func:`prepare_weights` run first. A failed run is set aside and rerun
    with a fresh seed (:func:`detection.checked_run`). With ``save``, the results
    so far are written there (JSON) after each method.
    """
    test = dataset.match_tags("test")
    tag = f"objects{seed}"
    out: dict[str, Any] = {}
    for method, options in TRAINED.items():
        start = time.perf_counter()

        def attempt(
            s: int, method: str = method, options: dict[str, Any] = options
        ) -> tuple[dict[str, Any], list[float], Any]:
            model, losses = train_run(dataset, method, s, config, tag, options=options)
            return evaluate(model, test, tag, config), losses, model

        evaluation = checked_run(attempt, seed, config.reruns)[0]
        out[method] = {**evaluation, "seconds": round(time.perf_counter() - start, 1)}
        if save is not None:
            save.write_text(json.dumps(out))
        ap = evaluation.get("rare_object", {}).get("per_class_AP", {}).get(RARE_CLASS)
        print(
            f"  seed {seed}, {method}: rare-object AP {100 * (ap or 0):.1f} "
            f"({out[method]['seconds']:.0f} s)",
            flush=True,
        )
    return out


def reused_runs(reference: dict[str, Any], seed: int, source: str) -> dict[str, Any]:
    """The detection run's results for :data:`REUSED`'s methods and ``seed``, marked as reused.

    Example::

        reused_runs(load_results(path), 0, "results/detection_runs.json (commit abc)")
    """
    runs = reference["runs"][str(seed)]
    return {m: {**runs[name], "reused_from": source} for m, name in REUSED.items()}


def _seed_worker(job: tuple[str, int, Config, Path]) -> dict[str, Any]:
    """One seed in a worker process (one torch thread: the cores are shared)."""
    import torch

    torch.set_num_threads(1)
    name, seed, config, output = job
    dataset = own_copy(name, f"objects{seed}")
    result = run_seed(dataset, seed, config, partial_path(output, seed, RAW_FILE))
    dataset.delete()
    return result


def run(quick: bool, seeds: Sequence[int], output: Path) -> Section:
    """Runs both weightings, trains the per-object method per seed, joins the detection run's
    runs of the other methods (same seeds) and writes the JSON."""
    import torch

    torch.set_num_threads(1)  # on shared cores, threads of one process wait on each other
    config = QUICK if quick else FULL
    if not quick and tuple(seeds) == report.FULL_SEEDS:
        seeds = FULL_SEEDS
    start = time.perf_counter()
    source, reference = detection_run(config, output, seeds)
    chosen = chosen_eta_gamma(reference, source)
    config = replace(config, steps=chosen["steps"])
    dataset = load_rare_conditions(config.spec)
    print("image and object runs on the training split...", flush=True)
    weights = prepare_weights(dataset, chosen["eta"], chosen["gamma"])
    data = raw_record(NAME, quick, config, seeds, dataset)
    data.update(selection=chosen, weights=weights)
    path = output / RAW_FILE
    path.write_text(json.dumps(data, indent=1))  # the seeds' results join it as they finish
    workers = min(config.workers, len(seeds))
    pool = None
    if workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers)
    print(f"{', '.join(TRAINED)} x seeds {list(seeds)} in {workers} processes...", flush=True)
    results = map_jobs(pool, _seed_worker, [(dataset.name, s, config, output) for s in seeds])
    if pool is not None:
        pool.close()
    results = [{**reused_runs(reference, s, source), **r} for s, r in zip(seeds, results)]
    finish_record(data, path, results, start)
    for seed in seeds:
        partial_path(output, seed, RAW_FILE).unlink(missing_ok=True)
    return section_from_json(path)


def section_from_json(path: Path) -> Section:
    """The report of a saved run (``objects_runs.json``): tables with CIs, tests, verdicts.

    Example::

        section = section_from_json(Path("docs/results/objects_runs.json"))
        print(section.markdown())
    """
    data = load_results(path)
    seeds, cfg, sel, w = data["seeds"], data["config"], data["selection"], data["weights"]
    done = [m for m in METHODS if all(m in data["runs"].get(str(s), {}) for s in seeds)]
    others = [m for m in done if m != "unweighted"]
    ap, ap50 = f"AP:{RARE_CLASS}", f"AP50:{RARE_CLASS}"
    tests = rare_object_tests(data, others) if "unweighted" in done else {ap: {}, ap50: {}}

    def change(m: str, subset: str, metric: str) -> np.ndarray:
        reference = seed_values(data, "unweighted", subset, metric)
        return np.subtract(seed_values(data, m, subset, metric), reference)

    def share(m: str) -> str:
        if m in ("unweighted", ORACLE) or ORACLE not in done:
            return ""
        oracle = tests[ap][ORACLE]
        if not (oracle.significant and oracle.diff.mean > 0):
            return "n/a"  # a share of a gain the oracle does not show means nothing
        gain = change(m, "rare_object", ap)
        return share_ci(gain, change(ORACLE, "rare_object", ap)).format(digits=0)

    rows = []
    for m in done:
        row = [m]
        for metric in (ap, ap50):
            row.append(mean_ci(seed_values(data, m, "rare_object", metric)).format())
            t = tests[metric].get(m)
            row += (
                [t.diff.format(signed=True), f"{t.p_holm:.3f}{' *' if t.significant else ''}"]
                if t is not None
                else ["", ""]
            )
        day = "" if m == "unweighted" else mean_ci(change(m, "day", "mAP")).format(signed=True)
        rows.append([*row, share(m), day])
    headline = table(
        [
            "method", "rare-object AP %", "change", "p (Holm)",
            "rare-object AP50 %", "change", "p (Holm)", "share of the oracle's gain %",
            "day mAP change",
        ],
        rows,
    )  # fmt: skip
    subsets = [
        ("rare_object", "mAP", "rare_object mAP"),
        ("day", "mAP", "day mAP"),
        ("all", "mAP", "all-condition mAP"),
        ("rare", "mAP", "rare-condition mAP"),
        ("day", ap, f"{RARE_CLASS} AP on day"),
    ]
    other_rows = [
        [m, *(mean_ci(seed_values(data, m, s, k)).format() for s, k, _ in subsets)] for m in done
    ]
    pair = ""
    if {"dequity_image", "dequity_object"} <= set(done):
        t = paired_tests(
            {"o": seed_values(data, "dequity_object", "rare_object", ap)},
            seed_values(data, "dequity_image", "rare_object", ap),
        )["o"]
        pair = (
            f" Per-object against per-image weights, rare-object AP: "
            f"{t.diff.format(signed=True)} points (paired t, p {t.p:.3f}, one comparison)."
        )
    pair += _against_peers(data, done)
    verdicts = []
    for m in others:
        t = tests[ap][m]
        if t.significant:
            kind = "higher" if t.diff.mean > 0 else "lower"
            what = f"significantly {kind} rare-object AP than unweighted"
        else:
            what = "no significant difference from unweighted in rare-object AP"
        closes = "" if m == ORACLE else _share_clause(share(m))
        day = mean_ci(change(m, "day", "mAP")).format(signed=True)
        verdicts.append(
            f"Rare object, {m}: {what} ({RARE_CLASS} AP@[.5:.95] on rare_object "
            f"test images, {t.diff.format(signed=True)} points, Holm p {t.p_holm:.3f}, "
            f"{len(seeds)} seeds{closes}; day mAP {day} points)."
        )
    missing = [m for m in METHODS if m not in done]
    answer = _answer(tests[ap], w)
    if {"unweighted", "dequity_object"} <= set(done):
        ref = np.array(seed_values(data, "unweighted", "rare_object", ap))
        diffs = {
            name: mean_ci(change("dequity_object", s, k)).format(signed=True)
            for s, k, name in (("day", "mAP", "day mAP"), ("all", "mAP", "all-condition mAP"))
        }
        answer += (
            f" Elsewhere per-object weights change day mAP by {diffs['day mAP']} and "
            f"all-condition mAP by {diffs['all-condition mAP']} points (paired differences, "
            f"untested); unweighted, the detector reaches {100 * np.nanmean(ref):.1f} % AP on "
            f"these {RARE_CLASS}s."
        )
    if {"unweighted", "dequity_object", ORACLE} <= set(done):
        answer += " " + _rare_condition_share(data)
    if missing:
        answer += (
            f" **The run did not finish:** no complete results for {', '.join(missing)};"
            " nothing is concluded about them."
        )
    group_rows = [
        [g, v["boxes"], f"{v['object_weight']:.3f}", f"{v['object_likelihood']:.3f}",
         f"{v['image_weight']:.3f}", f"{v['brain_weight']:.3f}"]
        for g, v in w["groups"].items()
    ]  # fmt: skip
    group_table = table(
        ["boxes", "count", "object weight", "object likelihood", "weight of its image",
         "FiftyOne Brain box weight"],
        group_rows,
    )  # fmt: skip
    counts = data["dataset"]["counts"]
    reused = ", ".join(f"`{m}`" for m in REUSED)
    took = f"{data['seconds'] / 60:.0f} min in all" if "seconds" in data else "unfinished"
    chosen = f"eta {sel['eta']:g}, gamma {sel['gamma']:g}"
    if "candidates" in sel:
        cands = ", ".join(f"({k}): {100 * v:.1f}" for k, v in sel["candidates"].items())
        chosen += (
            f", chosen by the detection experiment on validation (seed {sel['seed']}, "
            f"{sel['metric']} %: {cands}; {sel['source']})"
        )
    else:
        chosen += f" ({sel['source']})"
    body = f"""**Answer.** {answer}{pair}

Generated from `results/{RAW_FILE}` ({data["mode"]} mode, commit `{data["commit"][:12]}`,
{data["date"]}; {took}). Values are percent, mean and 95 % t-interval over seeds {seeds}.
Changes are paired per-seed differences against unweighted; p-values are paired t-tests,
Holm-corrected over {2 * len(others)} tests in one family (each method against unweighted on
AP and on AP50; \\* = significant at 0.05). The share of the oracle's gain is
(method − unweighted) / (oracle − unweighted) on rare-object AP, with a 95 % bootstrap
interval over seeds; the day mAP change is the paired change on the day test images.
{failed_runs_sentence(data)}

### Rare-object AP: {RARE_CLASS} on the rare_object test images

{headline}

Rare-object AP is COCO AP@[.5:.95] (AP50: at IoU 0.5) of the {RARE_CLASS} class on the
{counts["test"].get("rare_object", 0)} `rare_object` test images, where every {RARE_CLASS} is
inverted, magenta and turned on its side; {counts["train"].get("rare_object", 0)} of the
{sum(counts["train"].values())} training images show that look.

### Other test subsets, mAP@[.5:.95] and the {RARE_CLASS} in daylight

{table(["method", *(name for _, _, name in subsets)], other_rows)}

### Which boxes the weights single out (training split)

{group_table}

"Object weight" and "object likelihood" come from the object run (`patches_field=
"ground_truth"`, {w["object_clusters"]} clusters over {w["boxes"]} boxes,
{w["unscored_boxes"]} boxes unscored); "weight of its image" is the image run's weight of the
box's image, which image-level training gives to every box of the image. AUROC of telling the
rare-looking {RARE_CLASS}s from all other boxes by weight: object run
{w["auroc"]["object"]:.2f}, image run {w["auroc"]["image"]:.2f}, FiftyOne Brain's per-box
uniqueness {w["auroc"]["brain"]:.2f} (0.5 = chance).

### Setup

The set, detector and training of the detection section ({cfg["steps"]} steps of batch
{cfg["batch_size"]} at {cfg["image_size"]} px, AdamW lr {cfg["lr"]:g}), identical for every
method and seeded alike. `dequity_image` is detection's `dequity` (one weight per image,
`w_dequity`); `dequity_object` trains with `weight_level="object"`: each box's
`{OBJECT_RUN}_weight`, from the default method arguments on {w["embedding_dim"]}-d crop
embeddings (the box grown by 10 % per side). `brain_object`, the tool a FiftyOne user would
reach for instead, trains the same way on each box's `{BRAIN_WEIGHT}`: FiftyOne Brain's
`compute_uniqueness` on the patches view, from the final features of the same crop
embeddings, as the likelihood 1 - uniqueness. `jtt` is detection's Just Train Twice (one
weight per image). Every weighting uses {chosen}.
Only {" and ".join(f"`{m}`" for m in TRAINED)} are trained by this experiment; {reused} are the
detection run's runs of the same seeds ({sel["source"]}), so every method pairs with
unweighted seed by seed.
Every value per seed, subset and class is in `results/{RAW_FILE}`.
"""
    lead = f"""**Per-object weights for a rare-looking object.** {answer}

{headline}

{RARE_CLASS} AP@[.5:.95] and AP50 (%) on the `rare_object` test images, mean and 95 % CI over
{len(seeds)} seeds; changes are paired per seed; \\* = significant after Holm's correction
over AP and AP50 together; the share of the oracle's gain is on rare-object AP, with a 95 %
bootstrap interval; the day change is the paired change of day-test mAP. Details: the
per-object section below."""
    return Section(
        "Detection: per-object weights for a rare-looking object", body, verdicts, lead=lead
    )


def rare_object_tests(data: dict[str, Any], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each method against unweighted on the rare-looking class's AP and AP50, one Holm family.

    Returns ``{metric: {method: PairedTest}}`` for ``AP:<class>`` and ``AP50:<class>``. A
    paired t-test is a one-sample test of the per-seed differences, so every test is run
    on its differences against zero and the family is corrected together.

    Example::

        rare_object_tests(load_results(path), ["dequity_object"])["AP:Bag"]["dequity_object"]
    """
    metrics = (f"AP:{RARE_CLASS}", f"AP50:{RARE_CLASS}")
    diffs = {}
    for metric in metrics:
        ref = seed_values(data, "unweighted", "rare_object", metric)
        for m in methods:
            diffs[f"{metric}|{m}"] = np.subtract(seed_values(data, m, "rare_object", metric), ref)
    family = paired_tests(diffs, np.zeros(len(data["seeds"])))
    return {metric: {m: family[f"{metric}|{m}"] for m in methods} for metric in metrics}


def _against_peers(data: dict[str, Any], done: Sequence[str]) -> str:
    """``dequity_object`` against each peer on rare-object AP, paired per seed, Holm over them."""
    ap = f"AP:{RARE_CLASS}"
    peers = [m for m in PEERS if m in done]
    if "dequity_object" not in done or not peers:
        return ""
    ours = seed_values(data, "dequity_object", "rare_object", ap)
    diffs = {m: np.subtract(ours, seed_values(data, m, "rare_object", ap)) for m in peers}
    tests = paired_tests(diffs, np.zeros(len(data["seeds"])))
    parts = [
        f"{tests[m].diff.format(signed=True)} points against {m} (Holm p "
        f"{tests[m].p_holm:.3f}{' *' if tests[m].significant else ''})"
        for m in peers
    ]
    return (
        " Per-object weights against the tools a user would reach for instead, rare-object AP: "
        f"{', '.join(parts)}."
    )


def _share_clause(share: str) -> str:
    """A verdict's clause on the share of the oracle's gain (``share`` as a report cell)."""
    if share in ("", "n/a"):
        return "; no share of the oracle's gain (the oracle shows no significant gain)"
    return f"; {share} % of the oracle's gain"


def _rare_condition_share(data: dict[str, Any]) -> str:
    """Per-object weights on rare-condition mAP, as a share of the oracle's gain there."""
    rare = {m: seed_values(data, m, "rare", "mAP") for m in ("dequity_object", ORACLE)}
    ref = seed_values(data, "unweighted", "rare", "mAP")
    oracle = paired_tests({ORACLE: rare[ORACLE]}, ref)[ORACLE]
    change = mean_ci(np.subtract(rare["dequity_object"], ref)).format(signed=True)
    text = f"On rare-condition mAP, per-object weights change {change} points"
    if not (oracle.significant and oracle.diff.mean > 0):
        return text + " (the oracle shows no gain there to take a share of)."
    gain = np.subtract(rare["dequity_object"], ref)
    share = share_ci(gain, np.subtract(rare[ORACLE], ref)).format(digits=0)
    return text + f": {share} % of the oracle's gain (95 % bootstrap interval over seeds)."


def _answer(tests: dict[str, Any], weights: dict[str, Any]) -> str:
    """Plain sentences on what the rare-object AP tests support."""

    def says(m: str) -> str:
        if m not in tests:
            return "no result (not run to the end)"
        t = tests[m]
        if not t.significant:
            return f"no significant change ({t.diff.format(signed=True)} points)"
        kind = "a gain" if t.diff.mean > 0 else "a loss"
        return f"{kind} of {t.diff.format(signed=True)} points (Holm p {t.p_holm:.3f})"

    groups = weights["groups"]
    rare, other = groups.get(GROUPS[0]), groups.get(GROUPS[2])
    parts = [
        f"On the rare-looking {RARE_CLASS}s of the test set, per-object weights show "
        f"{says('dequity_object')} in AP@[.5:.95] against unweighted training, per-image "
        f"weights {says('dequity_image')}, and the oracle that knows which images show the "
        f"rare look {says(ORACLE)}. The tools a user would reach for instead: FiftyOne "
        f"Brain's per-box uniqueness shows {says('brain_object')}, JTT {says('jtt')}."
    ]
    if rare and other:
        parts.append(
            f"The object run gives those {RARE_CLASS}s a mean weight of "
            f"{rare['object_weight']:.2f} against {other['object_weight']:.2f} for boxes of "
            f"other classes (image run: {rare['image_weight']:.2f} against "
            f"{other['image_weight']:.2f})."
        )
    obj = tests.get("dequity_object")
    if obj is not None and not obj.significant:
        parts.append(
            "These runs do not support the claim that per-object weights improve detection "
            "of a rare-looking object here; they cannot exclude an effect smaller than the "
            "interval of the change."
        )
    return " ".join(parts)


if __name__ == "__main__":
    script_main(run, __doc__, NAME)
