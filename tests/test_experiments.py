"""The experiments' building blocks: imbalanced sets, baselines, the classifier, verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.classifier import (
    class_balanced_weights,
    inverse_frequency,
    jtt_weights,
    method_weights,
    predict,
    train_classifier,
)
from experiments.fashion_mnist import appearance_set, load_split, long_tail_set, power_law_sizes


@pytest.fixture(scope="module")
def fashion():
    return load_split("train")


def test_long_tail_set_follows_a_power_law_with_ratio_100(fashion):
    _, labels = fashion
    train_set = long_tail_set(labels, largest=500, imbalance=100.0, seed=3)
    counts = np.sort(np.bincount(labels[train_set.rows], minlength=10))[::-1]
    assert counts.tolist() == power_law_sizes(10, 500, 100.0).tolist()
    assert counts[0] / counts[-1] == pytest.approx(100, rel=0.01)
    assert len(set(train_set.rows.tolist())) == len(train_set.rows)
    assert not train_set.inverted.any()


def test_appearance_set_has_balanced_labels_and_a_rare_inverted_style(fashion):
    images, labels = fashion
    train_set = appearance_set(labels, per_class=40, rare_share=0.1, seed=0)
    y = labels[train_set.rows]
    assert np.bincount(y).tolist() == [40] * 10
    assert [int(train_set.inverted[y == c].sum()) for c in range(10)] == [4] * 10
    shown = train_set.images(images)
    first = int(np.argmax(train_set.inverted))
    assert np.array_equal(shown[first], 255 - images[train_set.rows[first]])
    normal = int(np.argmin(train_set.inverted))
    assert np.array_equal(shown[normal], images[train_set.rows[normal]])


def test_class_based_baselines_favour_rare_classes():
    labels = np.array([0] * 90 + [1] * 10)
    cb = class_balanced_weights(labels, beta=0.99)
    assert cb[-1] > cb[0]
    assert np.unique(cb).size == 2
    assert pytest.approx(np.unique(cb).sum()) == 2.0  # class weights sum to the class count
    freq = inverse_frequency(labels)
    assert freq[labels == 0].sum() == pytest.approx(freq[labels == 1].sum())
    assert method_weights("unweighted", labels, None) == (None, None)
    with pytest.raises(ValueError, match="dequity weights"):
        method_weights("dequity", labels, None)
    with pytest.raises(ValueError, match="unknown method"):
        method_weights("focal", labels, None)


def test_small_cnn_learns_fashion_mnist_and_resampling_runs(fashion):
    images, labels = fashion
    x, y = images[:1500], labels[:1500]
    net = train_classifier(x, y, epochs=2, seed=0)
    accuracy = (predict(net, images[-1000:]) == labels[-1000:]).mean()
    assert accuracy > 0.6  # chance is 0.1
    resampled = train_classifier(x, y, sampler_weights=inverse_frequency(y), epochs=1, seed=0)
    assert predict(resampled, images[-10:]).shape == (10,)


def test_jtt_weights_upweight_exactly_the_images_an_early_model_gets_wrong(fashion):
    images, labels = fashion
    x, y = images[:1500], labels[:1500]
    weights = jtt_weights(x, y, epochs=2, lam=10.0, seed=0)
    wrong = predict(train_classifier(x, y, epochs=2, seed=0), x) != y
    assert 0 < wrong.mean() < 0.5  # an early model errs on a minority
    assert np.array_equal(weights == 10.0, wrong)
    assert set(np.unique(weights).tolist()) == {1.0, 10.0}
    assert method_weights("JTT", y, weights)[0] is not None


def test_validation_split_is_balanced_and_never_shares_an_image_with_training(fashion):
    from experiments.classification import VALIDATION_PER_CLASS, validation_split

    images, labels = fashion
    train_set = long_tail_set(labels, largest=500, seed=100)
    x, y = validation_split(train_set, images, labels, both_styles=False)
    assert np.bincount(y).tolist() == [VALIDATION_PER_CLASS] * 10
    used = {images[r].tobytes() for r in train_set.rows}
    assert not any(image.tobytes() in used for image in x)
    both, both_y = validation_split(train_set, images, labels, both_styles=True)
    assert np.array_equal(both[len(x) :], 255 - x) and np.array_equal(both_y[len(x) :], y)
