"""A real long-tailed image set: Fashion-MNIST classes subsampled to a power law."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

ROOT = Path("/usr/share/datasets/fashion-mnist")
CACHE = Path("/tmp/dequity-bench-cache")


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 60k training images ``(n, 28, 28)`` uint8 and their labels."""
    if not ROOT.exists():
        raise FileNotFoundError(f"{ROOT} is missing: apt-get install -y dataset-fashion-mnist")
    return _idx(ROOT / "train-images-idx3-ubyte.gz"), _idx(ROOT / "train-labels-idx1-ubyte.gz")


def long_tail(
    labels: np.ndarray, total: int, imbalance: float = 100.0, seed: int = 0
) -> np.ndarray:
    """Indices of a subsample whose class sizes fall off as a power law.

    Classes are ranked in a random order; the largest has ``imbalance`` times
    as many images as the smallest (at least 2 per class).
    """
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    share = imbalance ** (-np.arange(len(classes)) / (len(classes) - 1))
    sizes = np.maximum(2, np.round(total * share / share.sum())).astype(int)
    picks = [
        rng.choice(np.flatnonzero(labels == c), s, replace=False) for c, s in zip(classes, sizes)
    ]
    return rng.permutation(np.concatenate(picks))


def embed(images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """EfficientNet-Lite0 (ImageNet) pooled 1280-d features of 28x28 grey images.

    Upsampled to 224 px (bilinear), grey copied to 3 channels, normalised
    with mean 0.498 and std 0.502.
    """
    import torch
    import torch.nn.functional as F

    from dequity.models import efficientnet_lite

    net = efficientnet_lite(0)
    net.reset_classifier(0)
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            b = torch.from_numpy(np.array(images[s : s + batch_size])).float().div(255)[:, None]
            b = F.interpolate(b, size=224, mode="bilinear", align_corners=False)
            b = ((b - 0.498) / 0.502).expand(-1, 3, -1, -1)
            out.append(net(b).numpy())
    return np.concatenate(out)


def long_tail_embeddings(total: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of a long-tailed subsample, cached under /tmp."""
    path = CACHE / f"fashion_mnist_longtail_{total}.npz"
    if path.exists():
        data = np.load(path)
        return data["x"], data["y"]
    images, labels = load_fashion_mnist()
    rows = long_tail(labels, total)
    x, y = embed(images[rows]), labels[rows]
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return x, y
