"""Embedding throughput: ``dequity.sources.embeddings.from_model`` vs the bare forward.

Steady-state throughput is compared on the same module at the same batch
size: the bare forward runs on tensors decoded and transformed beforehand,
``from_model`` reads the filepaths from FiftyOne, decodes, resizes and
normalises the JPEGs and runs the forward. Loading the model (building timm's
network and reading the checkpoint) is a one-off cost, reported on its own,
and so is the start-up of each ``from_model`` call (the DataLoader, its
workers' database connections), stated as seconds and amortised over the
images embedded.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import save_raw, timed
from dequity.defaults import DEFAULT_MODEL
from reporting import md_table

NAME = "embedding"
#: the page whose generated block this benchmark fills
DOCUMENT = "README.md"
IMAGES = Path(__file__).resolve().parent.parent / "data" / "demo" / "data"
BATCH = 32
TARGET = 0.8
#: the model measured: the library's default (every stage of EfficientNet-Lite0)
MODEL = DEFAULT_MODEL


def demo_image_paths(n: int) -> list[str]:
    """``n`` paths of the demo JPEGs, repeated as often as needed."""
    files = sorted(str(p) for p in IMAGES.glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"no images under {IMAGES}")
    return (files * (n // len(files) + 1))[:n]


def demo_images_dataset(n: int):
    """A new dataset of ``n`` demo images (:func:`demo_image_paths`); the caller deletes it."""
    import fiftyone as fo

    ds = fo.Dataset("dequity-bench-embedding", overwrite=True)
    ds.add_samples([fo.Sample(filepath=f) for f in demo_image_paths(n)], progress=False)
    return ds


def _bare_forward(fo_model, tensors: list) -> float:
    """Seconds of the forward alone, batch ``BATCH``, on pre-decoded tensors."""
    import torch

    net = fo_model._model

    def forward() -> None:
        with torch.inference_mode():
            for s in range(0, len(tensors), BATCH):
                net(torch.stack(tensors[s : s + BATCH]))

    return timed(forward)[0]


def _decode_ms(files: list[str], size: int, draft: bool) -> float:
    """Milliseconds per image to decode, resize to ``size`` and normalise (one thread)."""
    from dequity.sources.models import load_image, load_model

    transforms = _decode_ms.transforms = getattr(_decode_ms, "transforms", None) or (
        load_model(MODEL, device="cpu").transforms
    )
    start = time.perf_counter()
    for f in files:
        transforms(load_image(f, size if draft else None))
    return 1000 * (time.perf_counter() - start) / len(files)


def _decode_rows(files: list[str]) -> list[list]:
    """Decode cost of the demo JPEGs and of 4x larger copies, full vs reduced decode."""
    from PIL import Image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        large = []
        for i, f in enumerate(files):
            path = os.path.join(tmp, f"{i}.jpg")
            Image.open(f).convert("RGB").resize((1536, 1152), Image.BICUBIC).save(path, quality=92)
            large.append(path)
        for label, paths in (("demo JPEG, 384 x 288", files), ("JPEG 1536 x 1152", large)):
            full, draft = _decode_ms(paths, 224, False), _decode_ms(paths, 224, True)
            rows.append([label, full, draft, full / draft])
    return rows


def run(quick: bool) -> str:
    """Throughput of each path, as a share of the bare forward's."""
    import torch

    from dequity.sources.embeddings import default_num_workers, from_model
    from dequity.sources.models import load_image, load_model

    n = 64 if quick else 256
    files = demo_image_paths(n)
    ds = demo_images_dataset(n)
    load_s, fo_model = timed(load_model, MODEL, device="cpu")
    tensors = [fo_model.transforms(load_image(f, 224)) for f in files]
    default = default_num_workers(fo_model)

    def embed(workers: int | None) -> float:
        seconds, emb = timed(
            from_model, ds, fo_model, batch_size=BATCH, num_workers=workers, progress=False
        )
        assert emb.vectors.shape[0] == n
        return seconds

    from_model(ds[:BATCH], fo_model, batch_size=BATCH, num_workers=0, progress=False)  # warm-up
    _bare_forward(fo_model, tensors[:BATCH])
    # interleaved repeats, best of each: other processes on the machine slow
    # some passes down, not the code under test
    load_before = os.getloadavg()[0]
    repeats = 1 if quick else 2
    pairs = [(_bare_forward(fo_model, tensors), embed(default)) for _ in range(repeats)]
    bare_s = min(p[0] for p in pairs)
    timings = [(f"from_model, default num_workers ({default})", min(p[1] for p in pairs))]
    timings += [(f"from_model, num_workers={w}", embed(w)) for w in ((2,) if quick else (1, 2))]
    rows = [["bare forward, pre-decoded tensors (reference)", n / bare_s, 1.0, 0.0]]
    for label, seconds in timings:
        rows.append([label, n / seconds, bare_s / seconds, seconds - bare_s])
    with_load = load_s + embed(default)
    rows.append(
        [
            "from_model incl. model load, default workers",
            n / with_load,
            bare_s / with_load,
            with_load - bare_s,
        ]
    )
    ds.delete()
    share = rows[1][2]
    decode = _decode_rows(files[:16])
    if not quick:
        _save(n, load_s, rows, decode)
    verdict = (
        f"met: {share:.0%}"
        if share >= TARGET
        else f"NOT met: {share:.0%}; the gap is the per-call start-up ({rows[1][3]:.1f} s, "
        "DataLoader set-up and FiftyOne's reads) and the decode done in the main "
        "process between forwards"
    )
    return (
        f"### Embedding throughput, {MODEL} (the default model), {n} real images "
        f"(data/demo, 384 x 288 JPEG), batch {BATCH}, CPU "
        f"({len(os.sched_getaffinity(0))} cores, torch {torch.get_num_threads()} threads, "
        f"load average {load_before:.1f} at the start: best of {repeats} interleaved "
        "passes)\n\n"
        f"Target: from_model with its default workers >= {TARGET:.0%} of the bare "
        f"forward at batch {BATCH}, steady state: {verdict}. Model load "
        f"(timm network + checkpoint), measured apart: {load_s:.1f} s. "
        "'start-up' = from_model's seconds minus the bare forward's over the same "
        f"{n} images: building FiftyOne's torch dataset (its reads of the samples), "
        "the DataLoader and its workers, and decoding in the main process when "
        "there are none. On CPU the forward already uses every core, so workers "
        "only move the decoding (a few ms per image, against tens of ms for the "
        "forward) onto the same cores: the default is no workers up to 4 cores. "
        "Images are resized and normalised in numpy, not with torch's element-wise "
        "ops, whose intra-op threads cost ~20 ms per image when the forward's "
        "threads hold the cores (that was most of the earlier gap, with the model "
        "load counted in the timing)."
        + (
            " A negative start-up means the passes varied by more than the start-up "
            "costs: other processes shared the cores."
            if min(row[3] for row in rows) < 0
            else ""
        )
        + "\n\n"
        + md_table(["path", "images/s", "share of bare forward", "start-up s"], rows)
        + "\n\nDecode cost per image (PIL, one thread); JPEGs are decoded at reduced size "
        "(PIL draft, sides kept >= 224) before the resize. The demo frames are too "
        "small to scale, so their cost and pixels are unchanged.\n\n"
        + md_table(
            ["image", "full decode + resize, ms", "draft decode + resize, ms", "speed-up"],
            decode,
        )
    )


def _save(n: int, load_s: float, rows: list[list], decode: list[list]) -> None:
    """Raw figures to ``results-embedding.json`` and the README's summary sentence."""
    save_raw(
        NAME,
        {"paths": rows, "decode_ms": decode, "model_load_s": load_s},
        {"images": n, "batch": BATCH, "model": MODEL},
        block=readme_block,
        document=DOCUMENT,
    )


def readme_block(record: dict) -> str:
    """The README's sentence from the saved record.

    Example::

        from benchmarks.common import load_raw

        print(readme_block(load_raw(NAME)))
    """
    v, config = record["values"], record["config"]
    rows, decode, load_s = v["paths"], v["decode_ms"], v["model_load_s"]
    bare_ips, share, with_load = rows[0][1], rows[1][2], rows[-1][2]
    return (
        f"Embedding throughput ({config['images']} demo JPEGs, batch {config['batch']}, CPU): "
        f"`compute_dequity`'s model path runs at **{share:.0%}** of the bare "
        f"forward of the default model ({config['model']}) on pre-decoded tensors "
        f"(target: at least {TARGET:.0%}"
        + ("; above 100 % is run-to-run noise" if share > 1 else "")
        + "), "
        f"{with_load:.0%} when the {load_s:.1f} s model load is counted; the bare forward "
        f"takes {1 / bare_ips:.2f} s per image at 224 px. Decoding a 1536 px JPEG at "
        f"reduced size is {decode[1][3]:.1f}x faster than a full decode."
    )
