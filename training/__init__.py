"""Train detectors on FiftyOne views with DatasetEquity weights.

Example::

    import fiftyone as fo, dequity, training
    dataset = fo.load_dataset("demo")
    dequity.compute_dequity(dataset)                        # writes dequity_weight
    run = training.train_detector(dataset, train_key="dequity_train", steps=500)
    base = training.train_detector(dataset, train_key="baseline", weight_field=None,
                                   steps=500)
    print(training.compare_runs(base, run, output="compare.png").table())

A run goes through one runner (:mod:`training.runner`): it loads and splits
the samples (:mod:`training.samples`), hands them to the framework that
``TrainConfig.framework`` names in its registry (``runner.FRAMEWORKS``:
:mod:`training.torchvision_training` or :mod:`training.yolo`, each plugged in
through :mod:`training.framework`), then evaluates and records the run alike
for every framework (:mod:`training.records`).

The public names are imported on first use (PEP 562), so the command line can
read ``training.cli`` without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

# submodule -> the public names it defines
_EXPORTS = {
    "compare": ["Comparison", "compare_runs"],
    "config": ["TrainConfig", "TrainingResult"],
    "datasets": [
        "ClassificationGetItem",
        "DetectionGetItem",
        "FiftyOneTorchDataset",
        "classification_dataset",
        "collate_detection",
        "detection_dataset",
        "detection_transforms",
    ],
    "detectors": ["EfficientNetLiteFPN", "build_detector"],
    "evaluate": ["evaluate_predictions", "predict"],
    "features": ["cached_features", "predict_features"],
    "losses": ["WeightedFCOSHead", "WeightedRetinaNetHead", "weight_image_losses", "weighted_loss"],
    "records": ["TrainingRunConfig", "TrainingRunResults", "load_training_run"],
    "runner": ["train_detector", "train_yolo"],
    "samplers": ["repeat_factors", "sample_weights", "weighted_sampler"],
    "samples": ["split_view"],
    "yolo": ["export_yolo", "yolo_predict"],
}

__getattr__, _, __all__ = lazy_loader.attach(__name__, submod_attrs=_EXPORTS)

if TYPE_CHECKING:  # for type checkers; at run time names resolve on first use
    from training.compare import Comparison as Comparison
    from training.compare import compare_runs as compare_runs
    from training.config import TrainConfig as TrainConfig
    from training.config import TrainingResult as TrainingResult
    from training.datasets import ClassificationGetItem as ClassificationGetItem
    from training.datasets import DetectionGetItem as DetectionGetItem
    from training.datasets import FiftyOneTorchDataset as FiftyOneTorchDataset
    from training.datasets import classification_dataset as classification_dataset
    from training.datasets import collate_detection as collate_detection
    from training.datasets import detection_dataset as detection_dataset
    from training.datasets import detection_transforms as detection_transforms
    from training.detectors import EfficientNetLiteFPN as EfficientNetLiteFPN
    from training.detectors import build_detector as build_detector
    from training.evaluate import evaluate_predictions as evaluate_predictions
    from training.evaluate import predict as predict
    from training.features import cached_features as cached_features
    from training.features import predict_features as predict_features
    from training.losses import WeightedFCOSHead as WeightedFCOSHead
    from training.losses import WeightedRetinaNetHead as WeightedRetinaNetHead
    from training.losses import weight_image_losses as weight_image_losses
    from training.losses import weighted_loss as weighted_loss
    from training.records import TrainingRunConfig as TrainingRunConfig
    from training.records import TrainingRunResults as TrainingRunResults
    from training.records import load_training_run as load_training_run
    from training.runner import train_detector as train_detector
    from training.runner import train_yolo as train_yolo
    from training.samplers import repeat_factors as repeat_factors
    from training.samplers import sample_weights as sample_weights
    from training.samplers import weighted_sampler as weighted_sampler
    from training.samples import split_view as split_view
    from training.yolo import export_yolo as export_yolo
    from training.yolo import yolo_predict as yolo_predict


def __dir__() -> list[str]:
    # lazy_loader's own __dir__ lists only the lazy names
    return sorted({*globals(), *__all__})
