"""The paper's eq. 3 (scaled likelihood) and eq. 4 (GFL weight) on hand-computed cases."""

import numpy as np
import pytest
import torch

from dequity import DequityError, gfl_weight, scaled_likelihood
from dequity.pipeline.likelihood import cluster_sizes


def test_scaled_likelihood_is_cluster_size_over_largest():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    assert scaled_likelihood(labels).tolist() == [1, 1, 1, 1, 0.5, 0.5, 0.25]


def test_noise_singleton_counts_each_noise_point_as_size_one():
    labels = np.array([0, 0, 0, 0, -1, -1, -1, -1, -1])
    expected = [1, 1, 1, 1] + [0.25] * 5
    assert scaled_likelihood(labels, noise="singleton").tolist() == expected


def test_noise_cluster_reproduces_the_authors_code():
    # five noise points form one "cluster" that outgrows the real one
    labels = np.array([0, 0, 0, 0, -1, -1, -1, -1, -1])
    expected = [0.8] * 4 + [1.0] * 5
    assert scaled_likelihood(labels, noise="cluster").tolist() == expected


def test_noise_nearest_needs_assigned_labels():
    with pytest.raises(DequityError, match="assign_noise"):
        scaled_likelihood(np.array([0, 0, -1]), noise="nearest")
    assert scaled_likelihood(np.array([0, 0, 1]), noise="nearest").tolist() == [1, 1, 0.5]


def test_cluster_sizes_under_both_policies():
    labels = np.array([3, 3, -1, 7, -1])
    assert cluster_sizes(labels, "singleton").tolist() == [2, 2, 1, 1, 1]
    assert cluster_sizes(labels, "cluster").tolist() == [2, 2, 2, 1, 2]


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array([], dtype=int), "empty"),
        (np.array([[0, 1]]), "1-D"),
        (np.array([0.5, 1.0]), "integers"),
    ],
)
def test_scaled_likelihood_rejects_bad_labels(labels, message):
    with pytest.raises(DequityError, match=message):
        scaled_likelihood(labels)


def test_unknown_noise_policy_is_rejected():
    with pytest.raises(DequityError, match="noise must be one of"):
        scaled_likelihood(np.array([0, 1]), noise="drop")


@pytest.mark.parametrize(
    "p, eta, gamma, expected",
    [
        (0.0, 1.0, 5.0, 1.0),  # rarest: full weight
        (1.0, 1.0, 5.0, 0.5),  # most common: eta / (eta + 1)
        (0.5, 1.0, 1.0, 0.75),  # (1 + 0.5) / 2
        (0.5, 0.0, 2.0, 0.25),  # eta = 0: the focal-loss term (1 - p)^gamma
        (0.25, 3.0, 5.0, (3.0 + 0.75**5) / 4.0),
        (0.8, 0.5, 2.0, (0.5 + 0.2**2) / 1.5),
    ],
)
def test_gfl_weight_on_floats(p, eta, gamma, expected):
    weight = gfl_weight(p, eta=eta, gamma=gamma)
    assert isinstance(weight, float)
    assert weight == pytest.approx(expected)


def test_gfl_weight_on_arrays_and_tensors_agree():
    p = [0.0, 0.1, 0.5, 0.9, 1.0]
    expected = np.array([(0.5 + (1 - x) ** 2) / 1.5 for x in p])
    from_array = gfl_weight(np.array(p), eta=0.5, gamma=2.0)
    assert isinstance(from_array, np.ndarray)
    np.testing.assert_allclose(from_array, expected)
    tensor = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    from_tensor = gfl_weight(tensor, eta=0.5, gamma=2.0)
    assert isinstance(from_tensor, torch.Tensor) and from_tensor.requires_grad
    np.testing.assert_allclose(from_tensor.detach().numpy(), expected)


def test_gfl_weight_decreases_with_likelihood():
    weights = gfl_weight(np.linspace(0, 1, 11), eta=1.0, gamma=5.0)
    assert np.all(np.diff(weights) < 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p": 0.5, "eta": -0.1}, "eta must be"),
        ({"p": 0.5, "gamma": -1.0}, "gamma must be"),
        ({"p": 1.5}, r"\[0, 1\]"),
        ({"p": np.array([0.2, -0.1])}, r"\[0, 1\]"),
        ({"p": torch.tensor([float("nan")])}, r"\[0, 1\]"),
    ],
)
def test_gfl_weight_rejects_bad_input(kwargs, message):
    with pytest.raises(DequityError, match=message):
        gfl_weight(**kwargs)
