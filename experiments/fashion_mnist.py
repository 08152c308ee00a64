"""Fashion-MNIST as arrays, and the imbalanced training sets the experiments use.

The images come from Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``); without it, from FiftyOne's zoo
(``fashion-mnist``, which downloads it once).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_DEBIAN_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format) as an array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 28, 28)`` uint8 and labels ``(n,)`` of the train or test split.

    Example::

        images, labels = load_split("test")   # (10000, 28, 28), (10000,)
    """
    if split not in _DEBIAN_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if DEBIAN_ROOT.exists():
        images, labels = _DEBIAN_FILES[split]
        return _idx(DEBIAN_ROOT / images), _idx(DEBIAN_ROOT / labels)
    return _from_zoo(split)


def _from_zoo(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split from FiftyOne's zoo, for machines without the Debian package."""
    import fiftyone.zoo as foz
    from PIL import Image

    zoo = foz.load_zoo_dataset("fashion-mnist", split=split)
    paths, names = zoo.values(["filepath", "ground_truth.label"])
    images = np.stack([np.asarray(Image.open(p).convert("L")) for p in paths])
    return images, np.array([CLASSES.index(n) for n in names], dtype=np.uint8)


def power_law_sizes(num_classes: int, largest: int, imbalance: float) -> np.ndarray:
    """Class sizes from ``largest`` down to ``largest / imbalance``, geometrically.

    Example::

        >>> power_law_sizes(3, 100, 100.0).tolist()
        [100, 10, 1]
    """
    ranks = np.arange(num_classes) / max(num_classes - 1, 1)
    return np.maximum(1, np.round(largest * imbalance**-ranks)).astype(int)


@dataclass
class TrainingSet:
    """Rows of the training split, with the style each image is shown in.

    ``inverted[i]`` says that image ``rows[i]`` is shown with inverted
    intensities (the rare style of the appearance-imbalance set).
    """

    name: str
    rows: np.ndarray
    inverted: np.ndarray

    def images(self, train_images: np.ndarray) -> np.ndarray:
        """The ``(n, 28, 28)`` uint8 images, in their styles."""
        out = train_images[self.rows].copy()
        out[self.inverted] = 255 - out[self.inverted]
        return out


def long_tail_set(
    labels: np.ndarray, largest: int, imbalance: float = 100.0, seed: int = 0
) -> TrainingSet:
    """A subsample whose class sizes fall off as a power law (one style).

    Classes are ranked in a seeded random order; the largest has ``largest``
    images, the smallest ``largest / imbalance``.
    """
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    sizes = power_law_sizes(len(classes), largest, imbalance)
    rows = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), s, replace=False) for c, s in zip(classes, sizes)]
    )
    rows = rng.permutation(rows)
    return TrainingSet(f"long-tail-{imbalance:g}-seed{seed}", rows, np.zeros(len(rows), bool))


def appearance_set(
    labels: np.ndarray, per_class: int, rare_share: float = 0.05, seed: int = 0
) -> TrainingSet:
    """Balanced labels, two styles: in every class ``rare_share`` are inverted.

    The label-free analogue of the paper's "70 % NYC, 30 % desert": class
    counts are equal, so label-based rebalancing sees nothing to fix. The
    images are the same for every seed (the first ``per_class`` of each
    class in a fixed shuffle); ``seed`` picks which of them are inverted.
    """
    fixed, rng = np.random.default_rng(0), np.random.default_rng(seed)
    rows, inverted = [], []
    num_rare = max(1, round(per_class * rare_share))
    for c in np.unique(labels):
        rows.append(fixed.permutation(np.flatnonzero(labels == c))[:per_class])
        inverted.append(rng.permutation(per_class) < num_rare)
    order = rng.permutation(per_class * len(rows))
    return TrainingSet(
        f"appearance-{rare_share:g}-seed{seed}",
        np.concatenate(rows)[order],
        np.concatenate(inverted)[order],
    )
