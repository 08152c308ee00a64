"""A small CNN for 28 x 28 images, trained plain, with dequity, with its peers, class-based.

- ``unweighted``: plain cross-entropy.
- ``dequity``: each image's loss times its ``dequity_weight`` (label-free).
- ``FiftyOne Brain uniqueness``: the same GFL weights from the likelihood
  ``1 - uniqueness`` (FiftyOne Brain's ``compute_uniqueness``, final features).
- ``JTT`` (Just Train Twice, Liu et al. 2021): an unweighted model trained for
  a few epochs marks the training images it gets wrong; those get weight
  ``lambda``, the rest 1 (:func:`jtt_weights`).
- ``class-balanced loss``: each image's loss times its class's weight by the
  effective number of samples, ``(1 - beta) / (1 - beta ** n_class)``
  (Cui et al., CVPR 2019).
- ``class-balanced resampling``: ``WeightedRandomSampler`` drawing every
  class equally often.

Weighted losses use :func:`training.weighted_loss` with ``normalize=True``
(a weighted mean over the batch), so weights shift the balance between
images and leave the learning rate alone. All methods take the same number
of optimiser steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import WeightedRandomSampler

from training.losses import weighted_loss

#: label-free methods: their weights come from ``compute_dequity``
LABEL_FREE = {
    "dequity": {},
    "dequity, previous default (content view as a likelihood, no off-domain view)": {
        "views": "content",
    },
    "dequity, earlier default (whole vector)": {
        "views": None,
        "clustering_kwargs": {"density_power": 0.5},
    },
    "dequity, final features (default before the every-stage model)": {
        "model": "efficientnet-lite0",
        "clustering": "hdbscan",
        "noise": "singleton",
        "views": None,
    },
    "dequity, k-NN": {"clustering": "knn", "views": None},
}
#: the tools a user would reach for instead of dequity; their weights are computed per set
PEERS = ("FiftyOne Brain uniqueness", "JTT")
#: JTT's candidates, chosen on validation: epochs of the model that finds the errors, lambda
JTT_GRID = {"epochs": (1, 3), "lambda": (3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)}
METHODS = (
    "unweighted",
    *LABEL_FREE,
    *PEERS,
    "class-balanced loss",
    "class-balanced resampling",
)


class SmallCNN(nn.Module):
    """Two conv blocks and a small head: about 110k parameters."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def class_balanced_weights(labels: np.ndarray, beta: float = 0.999) -> np.ndarray:
    """Per-image weights by the effective number of its class (Cui et al. 2019).

    Class weights are normalised to sum to the number of classes.

    Example::

        >>> w = class_balanced_weights(np.array([0, 0, 0, 1]), beta=0.9)
        >>> bool(w[3] > w[0])
        True
    """
    classes, counts = np.unique(labels, return_counts=True)
    per_class = (1 - beta) / (1 - beta ** counts.astype(float))
    per_class *= len(classes) / per_class.sum()
    return per_class[np.searchsorted(classes, labels)]


def inverse_frequency(labels: np.ndarray) -> np.ndarray:
    """Per-image sampling weights that draw every class equally often."""
    classes, counts = np.unique(labels, return_counts=True)
    return 1.0 / counts[np.searchsorted(classes, labels)]


def method_weights(
    method: str, labels: np.ndarray, dequity_weights: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(loss weights, sampling weights)`` of a training method.

    ``dequity_weights``: the images' weights from the label-free method's
    ``compute_dequity`` run (:data:`LABEL_FREE`) or from the peer's
    (:data:`PEERS`); ignored by the others.
    """
    if method == "unweighted":
        return None, None
    if method in LABEL_FREE or method in PEERS:
        if dequity_weights is None:
            raise ValueError(f"the {method} method needs the images' dequity weights")
        return np.asarray(dequity_weights, dtype=float), None
    if method == "class-balanced loss":
        return class_balanced_weights(labels), None
    if method == "class-balanced resampling":
        return None, inverse_frequency(labels)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(n, 28, 28)`` images as a float ``(n, 1, 28, 28)`` tensor in [-1, 1]."""
    return torch.from_numpy(np.array(images, dtype=np.float32)).div(127.5).sub(1.0)[:, None]


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    loss_weights: np.ndarray | None = None,
    sampler_weights: np.ndarray | None = None,
    epochs: int = 10,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 2e-3,
    num_classes: int = 10,
) -> SmallCNN:
    """Trains a :class:`SmallCNN` for ``epochs`` passes' worth of steps.

    Example::

        net = train_classifier(images, labels, loss_weights=w, epochs=2)
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x, y = as_tensor(images), torch.from_numpy(labels.astype(np.int64))
    w = None if loss_weights is None else torch.as_tensor(loss_weights, dtype=torch.float32)
    n = len(y)
    net = SmallCNN(num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = math.ceil(epochs * n / batch_size)
    if sampler_weights is not None:
        sampler = WeightedRandomSampler(
            sampler_weights, steps * batch_size, replacement=True, generator=generator
        )
        order = torch.tensor(list(sampler))
    else:
        order = torch.cat([torch.randperm(n, generator=generator) for _ in range(epochs)])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    for step in range(steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        if len(idx) < 2:  # batch norm needs two images
            break
        losses = F.cross_entropy(net(x[idx]), y[idx], reduction="none")
        loss = losses.mean() if w is None else weighted_loss(losses, w[idx], normalize=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def jtt_weights(
    images: np.ndarray, labels: np.ndarray, epochs: int, lam: float, seed: int
) -> np.ndarray:
    """JTT's weights: ``lam`` on the images an unweighted model of ``epochs`` gets wrong, else 1.

    Example::

        w = jtt_weights(images, labels, epochs=1, lam=10.0, seed=0)
    """
    net = train_classifier(images, labels, epochs=epochs, seed=seed)
    return np.where(predict(net, images) != labels, lam, 1.0)


@torch.inference_mode()
def predict(net: nn.Module, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Predicted class of each image."""
    x = as_tensor(images)
    return np.concatenate(
        [net(x[s : s + batch_size]).argmax(1).numpy() for s in range(0, len(x), batch_size)]
    )


def label_free_models() -> tuple[str, ...]:
    """The embedding models the label-free methods read.

    Example::

        >>> "efficientnet-lite0" in label_free_models()
        True
    """
    from dequity.defaults import DEFAULT_MODEL

    return tuple(sorted({c.get("model", DEFAULT_MODEL) for c in LABEL_FREE.values()}))
