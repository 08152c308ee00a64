"""Train detectors on FiftyOne views with DatasetEquity weights.

Example::

    import fiftyone as fo, dequity, training
    dataset = fo.load_dataset("demo")
    dequity.compute_dequity(dataset)                        # writes dequity_weight
    run = training.train_detector(dataset, train_key="dequity_train", steps=500)
    base = training.train_detector(dataset, train_key="baseline", weight_field=None,
                                   steps=500)
    print(training.compare_runs(base, run, output="compare.png").table())
"""

from training.compare import Comparison, compare_runs
from training.datasets import (
    ClassificationGetItem,
    DetectionGetItem,
    FiftyOneTorchDataset,
    classification_dataset,
    collate_detection,
    detection_dataset,
    detection_transforms,
)
from training.detectors import EfficientNetLiteFPN, build_detector
from training.evaluate import evaluate_predictions, predict
from training.losses import (
    WeightedFCOSHead,
    WeightedRetinaNetHead,
    weight_image_losses,
    weighted_loss,
)
from training.records import TrainingRunConfig, TrainingRunResults, load_training_run
from training.train import TrainingResult, split_view, train_detector

__all__ = [
    "ClassificationGetItem",
    "Comparison",
    "DetectionGetItem",
    "EfficientNetLiteFPN",
    "FiftyOneTorchDataset",
    "TrainingResult",
    "TrainingRunConfig",
    "TrainingRunResults",
    "WeightedFCOSHead",
    "WeightedRetinaNetHead",
    "build_detector",
    "classification_dataset",
    "collate_detection",
    "compare_runs",
    "detection_dataset",
    "detection_transforms",
    "evaluate_predictions",
    "load_training_run",
    "predict",
    "split_view",
    "train_detector",
    "weight_image_losses",
    "weighted_loss",
]
