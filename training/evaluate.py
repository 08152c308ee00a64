"""Predictions stored on FiftyOne samples, and COCO-style evaluation of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from training.datasets import FiftyOneTorchDataset, collate_detection, detection_dataset

__all__ = ["evaluate_predictions", "predict"]


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    view: Any,
    field: str,
    classes: Sequence[str],
    *,
    batch_size: int = 4,
    device: str = "cpu",
    num_workers: int = 0,
    vectorize: bool = False,
    progress: bool = False,
) -> int:
    """Runs a torchvision detector on ``view`` and stores ``Detections`` in ``field``.

    Boxes are stored as FiftyOne's relative ``[x, y, w, h]``, labels by name
    (``classes[label - 1]``). ``vectorize`` reads the file paths once up front
    instead of per image. Returns the number of samples predicted.

    Kept instead of ``view.apply_model`` with a ``fiftyone.utils.torch.TorchImageModel``
    and ``DetectorOutputProcessor`` (same 8000 boxes, labels and confidences to
    2.7e-7 on 80 demo frames): that processor gives every image of a batch the
    first one's size, so images of mixed sizes must go one at a time, which took
    1.55-1.8x as long at 96 px, batch 32 and 1.2-1.5x at 192 px, batch 4.

    Example::

        predict(model, val_view, "run1_predictions", ["person", "car", "truck"])
        session = fo.launch_app(val_view)
    """
    import fiftyone.core.labels as fol
    from tqdm.auto import tqdm

    dataset = detection_dataset(
        view, label_field=None, classes=classes, weight_field=None, vectorize=vectorize
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_detection,
        worker_init_fn=FiftyOneTorchDataset.worker_init,
    )
    model.eval().to(device)
    values: dict[str, fol.Detections] = {}
    for images, targets in tqdm(loader, desc="predict", disable=not progress, leave=False):
        outputs = model([image.to(device) for image in images])
        for image, target, output in zip(images, targets, outputs, strict=True):
            height, width = image.shape[-2:]
            dets = []
            for box, label, score in zip(
                output["boxes"].cpu().tolist(),
                output["labels"].cpu().tolist(),
                output["scores"].cpu().tolist(),
                strict=True,
            ):
                if not 1 <= label <= len(classes):
                    continue
                x1, y1, x2, y2 = box
                dets.append(
                    fol.Detection(
                        label=classes[label - 1],
                        bounding_box=[
                            x1 / width,
                            y1 / height,
                            (x2 - x1) / width,
                            (y2 - y1) / height,
                        ],
                        confidence=score,
                    )
                )
            values[target["sample_id"]] = fol.Detections(detections=dets)
    view.set_values(field, values, key_field="id")
    return len(values)


def evaluate_predictions(
    view: Any,
    pred_field: str,
    gt_field: str,
    eval_key: str,
    classes: Sequence[str],
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """COCO-style evaluation (FiftyOne ``evaluate_detections``, ``compute_mAP=True``).

    Returns ``{"mAP": float, "per_class_ap": {class: AP or None}, "eval_key": ...}``;
    AP is None for a class with no ground truth nor predictions in the view.

    Example::

        metrics = evaluate_predictions(val_view, "run1_predictions", "ground_truth",
                                       "run1_eval", ["person", "car", "truck"])
    """
    results = view.evaluate_detections(
        pred_field,
        gt_field=gt_field,
        eval_key=eval_key,
        method="coco",
        compute_mAP=True,
        classes=list(classes),
        progress=progress,
    )
    per_class = {}
    for name in classes:
        ap = float(results.mAP(classes=[name]))
        per_class[name] = ap if ap >= 0 else None
    mean = float(results.mAP())
    return {"mAP": mean if mean >= 0 else None, "per_class_ap": per_class, "eval_key": eval_key}
