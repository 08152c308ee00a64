"""Embedding throughput: ``dequity.embeddings.from_model`` vs the bare forward."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common import md_table, timed

NAME = "embedding"
IMAGES = Path(__file__).resolve().parent.parent / "data" / "demo" / "data"
BATCH = 32


def _images(n: int) -> list[str]:
    files = sorted(str(p) for p in IMAGES.glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"no images under {IMAGES}")
    return (files * (n // len(files) + 1))[:n]


def _decode(path: str):
    """A 3 x 224 x 224 normalised tensor, decoded and resized with PIL."""
    import torch
    from PIL import Image

    img = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (t - 0.498) / 0.502


def _bare(files: list[str], decode_inline: bool) -> float:
    """Images per second of the bare forward at batch size ``BATCH``."""
    import torch

    from dequity.models import efficientnet_lite

    net = efficientnet_lite(0)
    net.reset_classifier(0)
    tensors = None if decode_inline else [_decode(f) for f in files]

    def forward() -> None:
        with torch.inference_mode():
            for s in range(0, len(files), BATCH):
                chunk = (
                    [_decode(f) for f in files[s : s + BATCH]]
                    if decode_inline
                    else tensors[s : s + BATCH]
                )
                net(torch.stack(chunk))

    with torch.inference_mode():  # warm-up
        net(torch.stack([_decode(f) for f in files[:BATCH]]))
    return len(files) / timed(forward)[0]


def _dataset(files: list[str]):
    import fiftyone as fo

    ds = fo.Dataset("dequity-bench-embedding", overwrite=True)
    ds.add_samples([fo.Sample(filepath=f) for f in files])
    return ds


def run(quick: bool) -> str:
    """Throughput of each path, as a share of the bare forward's."""
    from dequity.embeddings import from_model

    files = _images(BATCH if quick else 3 * BATCH)
    ds = _dataset(files)
    from_model(ds[:BATCH], batch_size=BATCH, num_workers=0)  # warm-up
    bare = _bare(files, decode_inline=False)
    rows = [["bare forward, pre-decoded tensors (reference)", bare, 1.0]]
    variants = [("bare forward, PIL decode + resize inline", None)]
    variants += [(f"from_model, num_workers={w}", w) for w in ((2,) if quick else (2, 1, 0))]
    for label, workers in variants:
        if workers is None:
            rate = _bare(files, decode_inline=True)
        else:
            rate = len(files) / timed(from_model, ds, batch_size=BATCH, num_workers=workers)[0]
        rows.append([label, rate, rate / bare])
    ds.delete()
    return (
        f"### Embedding throughput, EfficientNet-Lite0, {len(files)} real images "
        f"(data/demo, 384 px), batch {BATCH}, CPU\n\n"
        "Target: from_model with num_workers=2 >= 80 % of the bare forward. "
        "from_model includes loading the model.\n\n"
        + md_table(["path", "images/s", "share of bare forward"], rows)
    )
