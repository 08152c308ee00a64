"""A real long-tailed image set: Fashion-MNIST classes subsampled to a power law.

The images and their EfficientNet-Lite0 embeddings come from the
experiments' cached pool (:mod:`experiments.pool`), embedded once through
dequity's model path.
"""

from __future__ import annotations

import numpy as np


def long_tail_embeddings(largest: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of a long-tailed subsample (largest class ``largest``).

    Class sizes fall from ``largest`` to ``largest / 100`` in a seeded order.
    """
    from experiments.fashion_mnist import load_split, long_tail_set
    from experiments.pool import EMBEDDING_FIELD, training_dataset, values_in_order

    images, labels = load_split("train")
    train_set = long_tail_set(labels, largest, seed=seed)
    dataset = training_dataset(train_set, images, labels)
    vectors = np.stack(values_in_order(dataset, train_set, EMBEDDING_FIELD))
    return vectors, labels[train_set.rows]
