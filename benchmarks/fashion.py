"""Real images with known rarity: Fashion-MNIST with long-tailed classes or rare styles.

Every set is drawn from one fixed pool of the training split (``POOL_PER_CLASS``
images per class), embedded once per style with dequity's default model
(EfficientNet-Lite0, ImageNet weights) and cached as ``.npz`` under
:func:`experiments.pool.cache_dir`. Two kinds of set:

* long tail: one style, class sizes falling geometrically from ``largest``;
* rare style: balanced classes, ``share`` of every class shown in a rare style
  (inverted; night: dark, low contrast and noisy; fog: blurred and hazy).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

POOL_PER_CLASS = 1_000
#: images per class of the rare-style sets (the first of each class's pool)
STYLED_PER_CLASS = 200
_BATCH = 64
#: the embedders compared: dequity's default, and the final features alone
MODELS = ("efficientnet-lite0-layers", "efficientnet-lite0")


def _inverted(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255.0 - img


def _night(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark, low contrast, sensor noise."""
    return img * 0.3 + 10.0 + rng.normal(0.0, 12.0, img.shape)


def _fog(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blurred, and washed towards a light grey haze."""
    from PIL import Image, ImageFilter

    blurred = Image.fromarray(img.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5))
    return 0.45 * np.asarray(blurred, dtype=np.float32) + 0.55 * 200.0


STYLES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "inverted": _inverted,
    "night": _night,
    "fog": _fog,
}


def stylise(img: np.ndarray, style: str, row: int) -> np.ndarray:
    """Image ``img`` (28 x 28 uint8, training row ``row``) in ``style``; noise seeded by row.

    Example::

        >>> img = np.full((28, 28), 200, np.uint8)
        >>> int(stylise(img, "inverted", 0)[0, 0]), int(stylise(img, "normal", 0)[0, 0])
        (55, 200)
    """
    if style == "normal":
        return img
    out = STYLES[style](img.astype(np.float32), np.random.default_rng(row))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def pool_rows(labels: np.ndarray, per_class: int = POOL_PER_CLASS) -> dict[int, np.ndarray]:
    """The pool: ``per_class`` training rows of every class, in a fixed shuffle."""
    rng = np.random.default_rng(0)
    return {
        int(c): rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)
    }


def embed_images(images: np.ndarray, model: str, device: str = "cpu") -> np.ndarray:
    """Embeddings of grey ``(n, 28, 28)`` images by ``model``.

    ``model`` is ``"efficientnet-lite0-layers"`` (the default model of
    ``compute_dequity``: every stage pooled) or ``"efficientnet-lite0"``
    (final features); same network and preprocessing as ``compute_dequity``.
    """
    import torch
    from PIL import Image
    from tqdm import tqdm

    from dequity.models import StagePooled, efficientnet_lite, efficientnet_lite_preprocess

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    net = efficientnet_lite(0)
    net.reset_classifier(0)
    net = (StagePooled(net) if model == MODELS[0] else net).to(device)
    prep = efficientnet_lite_preprocess(0)
    out = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), _BATCH), desc="Embedding images", unit="batch"):
            batch = torch.stack(
                [prep(Image.fromarray(im).convert("RGB")) for im in images[start : start + _BATCH]]
            ).to(device)
            out.append(net(batch).cpu())
    return torch.cat(out).numpy()


def cache_file(model: str, style: str, per_class: int) -> Path:
    """The cached embeddings of the pool's first ``per_class`` images per class in ``style``."""
    from experiments.pool import cache_dir

    return cache_dir() / f"fashion-{model}-{style}-{per_class}.npz"


def pool_embeddings(
    model: str, style: str, per_class: int, device: str = "cpu"
) -> dict[int, np.ndarray]:
    """Class -> embeddings of its first ``per_class`` pool images in ``style`` (cached).

    A cache of the whole pool serves every smaller ``per_class``.
    """
    path = cache_file(model, style, per_class)
    if not path.exists() and cache_file(model, style, POOL_PER_CLASS).exists():
        path = cache_file(model, style, POOL_PER_CLASS)
    if not path.exists():
        from experiments.fashion_mnist import load_split

        images, labels = load_split("train")
        rows = np.concatenate([r[:per_class] for r in pool_rows(labels).values()])
        shown = np.stack([stylise(images[r], style, int(r)) for r in rows])
        print(f"embedding {len(rows)} Fashion-MNIST images ({model}, {style}; cached afterwards)")
        vectors = embed_images(shown, model, device).astype(np.float16)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, rows=rows, labels=labels[rows], vectors=vectors)
    data = np.load(path)
    labels, vectors = data["labels"], data["vectors"].astype(np.float32)
    return {int(c): vectors[labels == c][:per_class] for c in np.unique(labels)}


def long_tail(
    model: str, largest: int, imbalance: float, seed: int, per_class: int = POOL_PER_CLASS
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of a long-tailed draw, class sizes ``largest`` down.

    The smallest class has ``largest / imbalance`` images.

    The seed orders the classes and draws each class's images from the pool.
    """
    from experiments.fashion_mnist import power_law_sizes

    pool = pool_embeddings(model, "normal", per_class)
    rng = np.random.default_rng(seed)
    classes = rng.permutation(sorted(pool))
    sizes = power_law_sizes(len(classes), largest, imbalance)
    parts = [pool[c][rng.choice(len(pool[c]), s, replace=False)] for c, s in zip(classes, sizes)]
    labels = np.repeat(classes, sizes)
    order = rng.permutation(len(labels))
    return np.concatenate(parts)[order], labels[order]


def rare_style(
    model: str, style: str, seed: int, share: float = 0.05, per_class: int = STYLED_PER_CLASS
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of ``per_class`` images per class, ``share`` of each in ``style``.

    Returns ``(x, is_rare)``; the seed picks which images are shown in the rare style.
    """
    normal = pool_embeddings(model, "normal", per_class)
    styled = pool_embeddings(model, style, per_class)
    rng = np.random.default_rng(seed)
    xs, rare = [], []
    for c in sorted(normal):
        is_rare = rng.permutation(per_class) < round(per_class * share)
        xs.append(np.where(is_rare[:, None], styled[c], normal[c]))
        rare.append(is_rare)
    order = rng.permutation(per_class * len(xs))
    return np.concatenate(xs)[order], np.concatenate(rare)[order]
