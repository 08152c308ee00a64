"""Real images with known rarity, from two real 28 x 28 sets of different domains.

The sources are Fashion-MNIST (products, Debian's ``dataset-fashion-mnist``)
and Animal-MNIST (animal silhouettes, the ``animal-mnist`` wheel's own data).
Every set is drawn from one fixed pool of a source (``POOL_PER_CLASS`` images
per class), embedded once per style with dequity's default model (every stage
of EfficientNet-Lite0, ImageNet weights) and cached as ``.npz`` under
:func:`experiments.pool.cache_dir`. The final-layer features are the last
1,280 numbers of that vector (:data:`FINAL_DIMS`), so one pass serves both
embedders. Three kinds of set:

* long tail: one style, class sizes falling geometrically from ``largest``;
* rare style: balanced classes, ``share`` of every class shown in a rare style
  (inverted; night: dark, low contrast and noisy; fog: blurred and hazy);
* odd kind: balanced classes of one source with ``share`` images of the other
  source mixed in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

POOL_PER_CLASS = 1_000
#: images per class of the rare-style sets (the first of each class's pool)
STYLED_PER_CLASS = 200
_BATCH = 64
#: the embedders compared: dequity's default, and its final-layer block alone
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


#: the sources of real images: name -> loader of ``(images, labels)``
SOURCES = ("fashion", "animal")
#: the final-layer features: the last block of the every-stage vector
FINAL_DIMS = 1_280


def load_source(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Grey ``(n, 28, 28)`` uint8 images and labels of a source's training images.

    Example::

        images, labels = load_source("animal")   # (10000, 28, 28), 10 kinds x 1,000
    """
    if source == "fashion":
        from experiments.fashion_mnist import load_split

        return load_split("train")
    if source == "animal":
        return _animal_mnist()
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}")


def _animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Animal-MNIST from the files inside its wheel (its loader imports TensorFlow)."""
    import gzip
    import importlib.util
    import pickle

    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install --no-deps animal-mnist (bash scripts/setup.sh --dev)")
    root = Path(spec.submodule_search_locations[0]) / "data" / "Animal_MNIST"
    arrays = []
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        with gzip.open(root / name, "rb") as f:
            arrays.append(pickle.load(f))  # the package's own data, never user input
    return np.asarray(arrays[0], np.uint8), np.asarray(arrays[1], np.int64)


def embed_images(images: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Every-stage embeddings (dequity's default model) of grey ``(n, 28, 28)`` images.

    Same network and preprocessing as ``compute_dequity``'s default.
    """
    import torch
    from PIL import Image
    from tqdm import tqdm

    from dequity.sources.models import StagePooled, efficientnet_lite, efficientnet_lite_preprocess

    net = efficientnet_lite(0)
    net.reset_classifier(0)
    net = StagePooled(net).to(device)
    prep = efficientnet_lite_preprocess(0)
    out = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), _BATCH), desc="Embedding images", unit="batch"):
            batch = torch.stack(
                [prep(Image.fromarray(im).convert("RGB")) for im in images[start : start + _BATCH]]
            ).to(device)
            out.append(net(batch).cpu())
    return torch.cat(out).numpy()


def cache_file(source: str, style: str, per_class: int) -> Path:
    """The cached embeddings of the pool's first ``per_class`` images per class in ``style``."""
    from experiments.pool import cache_dir

    return cache_dir() / f"{source}-{MODELS[0]}-{style}-{per_class}.npz"


def pool_embeddings(
    model: str, style: str, per_class: int, source: str = "fashion", device: str = "cpu"
) -> dict[int, np.ndarray]:
    """Class -> ``model``'s embeddings of its first ``per_class`` pool images in ``style``.

    The every-stage vectors are computed once and cached; a cache of the whole
    pool serves every smaller ``per_class``. ``model="efficientnet-lite0"``
    gives their last :data:`FINAL_DIMS` numbers (the unit-length final features).
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    path = next(
        (
            cache_file(source, style, size)
            for size in (per_class, STYLED_PER_CLASS, 300, POOL_PER_CLASS)
            if size >= per_class and cache_file(source, style, size).exists()
        ),
        cache_file(source, style, per_class),
    )
    if not path.exists():
        images, labels = load_source(source)
        rows = np.concatenate([r[:per_class] for r in pool_rows(labels).values()])
        shown = np.stack([stylise(images[r], style, int(r)) for r in rows])
        print(f"embedding {len(rows)} {source} images ({style}; cached afterwards)")
        vectors = embed_images(shown, device).astype(np.float16)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, rows=rows, labels=labels[rows], vectors=vectors)
    data = np.load(path)
    labels, vectors = data["labels"], data["vectors"].astype(np.float32)
    if model == MODELS[1]:
        vectors = vectors[:, -FINAL_DIMS:]
    return {int(c): vectors[labels == c][:per_class] for c in np.unique(labels)}


def long_tail(
    model: str,
    largest: int,
    imbalance: float,
    seed: int,
    per_class: int = POOL_PER_CLASS,
    source: str = "fashion",
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of a long-tailed draw, class sizes ``largest`` down.

    The smallest class has ``largest / imbalance`` images.

    The seed orders the classes and draws each class's images from the pool.
    """
    from experiments.fashion_mnist import power_law_sizes

    pool = pool_embeddings(model, "normal", per_class, source)
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


def odd_kind(
    model: str, seed: int, share: float = 0.03, per_class: int = STYLED_PER_CLASS
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced Fashion-MNIST with ``share`` Animal-MNIST images mixed in.

    Returns ``(x, is_odd)``: ``per_class`` products of each kind, then animals
    drawn at random from the animal pool, ``share`` of the whole set.
    """
    products = pool_embeddings(model, "normal", per_class)
    animals = np.concatenate(list(pool_embeddings(model, "normal", per_class, "animal").values()))
    rng = np.random.default_rng(seed)
    x = np.concatenate(list(products.values()))
    odd = animals[rng.choice(len(animals), round(len(x) * share / (1 - share)), replace=False)]
    x = np.concatenate([x, odd])
    is_odd = np.arange(len(x)) >= len(x) - len(odd)
    order = rng.permutation(len(x))
    return x[order], is_odd[order]
