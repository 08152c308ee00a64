"""The boxes of an object run: which are usable, and one vector per box.

An object run (``compute_dequity(..., patches_field="ground_truth")``) embeds
each box of a ``Detections`` field rather than each image. Objects are taken
in collection order: the samples in the collection's order, and within a
sample the boxes in the order of its ``Detections`` list.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dequity.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, DEFAULT_PRECISION
from dequity.errors import DequityError
from dequity.sources import embeddings as de
from dequity.sources.models import load_model
from dequity.store import compat as fc

logger = logging.getLogger(__name__)

#: boxes narrower or lower than this many pixels are skipped
MIN_BOX_PIXELS = 4
#: context around each crop: the box grows by this fraction of its width and
#: height (half on each side, so 10 % of the side per side), clipped to the image
CROP_MARGIN = 0.2


@dataclass
class Objects:
    """The usable boxes of a collection, in collection order.

    ``object_ids[i]`` is a ``Detection`` of sample ``sample_ids[i]``;
    ``rows[i]`` is its position among all the field's boxes (what an
    ``(n_objects, d)`` embeddings array is aligned with). ``all_sample_ids``
    are the collection's samples, those without a usable box included.
    """

    object_ids: list[str]
    sample_ids: list[str]
    rows: list[int]
    total: int
    all_sample_ids: list[str]
    skipped: dict[str, int] = field(default_factory=dict)


def check_patches_field(samples: Any, patches_field: Any) -> None:
    """Raise :class:`DequityError` unless ``patches_field`` is a ``Detections`` field.

    Example::

        check_patches_field(dataset, "ground_truth")
    """
    import fiftyone.core.fields as fof
    import fiftyone.core.labels as fol

    if not isinstance(patches_field, str) or not patches_field:
        raise DequityError(f"patches_field must be a field name, got {patches_field!r}")
    schema = samples.get_field_schema()
    labels = {
        name: kind.document_type.__name__
        for name, kind in schema.items()
        if isinstance(kind, fof.EmbeddedDocumentField) and issubclass(kind.document_type, fol.Label)
    }
    detections = [name for name, kind in labels.items() if kind == "Detections"]
    present = ", ".join(f"{n} ({k})" for n, k in labels.items()) or "none"
    hint = (
        f"pass one of the Detections fields {detections}"
        if detections
        else "add boxes as a Detections field first"
    )
    if patches_field not in schema:
        raise DequityError(
            f"the collection has no field {patches_field!r}; its label fields: {present}; {hint}"
        )
    kind = schema[patches_field]
    if labels.get(patches_field) != "Detections":
        found = labels.get(patches_field, type(kind).__name__)
        raise DequityError(
            f"field {patches_field!r} holds {found}, not Detections; object runs score "
            f"boxes. Label fields: {present}; {hint}"
        )


def usable_objects(samples: Any, patches_field: str, min_pixels: int = MIN_BOX_PIXELS) -> Objects:
    """The boxes of ``patches_field`` worth embedding, with one warning counting the rest.

    Skipped: boxes that are empty or degenerate (no box, non-finite, zero
    or negative width or height, or wholly outside the image), boxes under
    ``min_pixels`` pixels wide or high (measured with the samples'
    metadata, computed where missing), and boxes of images whose size
    cannot be read. Raises :class:`DequityError` if no box remains.

    Example::

        objs = usable_objects(dataset, "ground_truth")
        len(objs.object_ids)
    """
    if samples.exists("metadata.width", False).count() > 0:
        logger.info("Computing image sizes (metadata) to measure the boxes...")
        samples.exists("metadata.width", False).compute_metadata(skip_failures=True)
    ids, widths, heights, det_ids, boxes = samples.values(
        [
            "id",
            "metadata.width",
            "metadata.height",
            f"{patches_field}.detections.id",
            f"{patches_field}.detections.bounding_box",
        ]
    )
    objs = Objects([], [], [], 0, list(ids))
    skipped = {"degenerate": 0, "tiny": 0, "unknown size": 0}
    for sample_id, width, height, sample_dets, sample_boxes in zip(
        ids, widths, heights, det_ids, boxes
    ):
        for det_id, box in zip(sample_dets or [], sample_boxes or []):
            row = objs.total
            objs.total += 1
            why = _skip_reason(box, width, height, min_pixels)
            if why is not None:
                skipped[why] += 1
                continue
            objs.object_ids.append(det_id)
            objs.sample_ids.append(sample_id)
            objs.rows.append(row)
    objs.skipped = {k: v for k, v in skipped.items() if v}
    if objs.skipped:
        logger.warning(
            "skipped %d of the %d boxes of %r (%s); they get no likelihood or weight",
            sum(objs.skipped.values()),
            objs.total,
            patches_field,
            _skipped_text(objs.skipped, min_pixels),
        )
    if not objs.object_ids:
        raise DequityError(
            f"no usable box in field {patches_field!r} ({objs.total} boxes, "
            f"{_skipped_text(objs.skipped, min_pixels)}); object runs need boxes of at least "
            f"{min_pixels} x {min_pixels} pixels"
        )
    return objs


_SKIP_TEXT = {
    "degenerate": "empty or degenerate",
    "tiny": "under {n} px",
    "unknown size": "on images whose size cannot be read",
}


def _skipped_text(skipped: dict[str, int], min_pixels: int) -> str:
    if not skipped:
        return "none skipped"
    return ", ".join(f"{v} {_SKIP_TEXT[k].format(n=min_pixels)}" for k, v in skipped.items())


def _skip_reason(box: Any, width: Any, height: Any, min_pixels: int) -> str | None:
    """Why a box is skipped, or None if it is usable."""
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        return "degenerate"
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return "degenerate"
    if x >= 1 or y >= 1 or x + w <= 0 or y + h <= 0:
        return "degenerate"
    if not width or not height:
        return "unknown size"
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, 1.0), min(y + h, 1.0)
    if (x1 - x0) * width < min_pixels or (y1 - y0) * height < min_pixels:
        return "tiny"
    return None


def object_embeddings(
    samples: Any,
    patches_field: str,
    objs: Objects,
    embeddings: str | np.ndarray | None,
    model: Any,
    progress: Any = None,
    **options: Any,
) -> de.Embeddings:
    """One vector per usable object: from an array, a Detection attribute or the model.

    ``Embeddings.sample_ids`` holds object ids here. Objects without a
    vector (an unreadable image, an empty attribute) are left out, with a
    warning.

    Example::

        emb = object_embeddings(dataset, "ground_truth", objs, None, "efficientnet-lite0")
    """
    if isinstance(embeddings, str):
        values = samples.values(f"{patches_field}.detections.{embeddings}")
        flat = [v for sample_values in values for v in (sample_values or [])]
        vectors = [_vector(flat[r]) for r in objs.rows]
        return _present(objs, vectors, f"have no {embeddings!r} attribute")
    if embeddings is not None:
        array = np.asarray(embeddings) if not isinstance(embeddings, np.ndarray) else embeddings
        if array.ndim != 2 or array.shape[0] != objs.total:
            raise DequityError(
                f"got embeddings of shape {array.shape} for {objs.total} boxes of "
                f"{patches_field!r}; pass one row per box in collection order (samples in "
                "order, each sample's boxes in list order), skipped boxes included"
            )
        vectors = de.validate_vectors(array[objs.rows])
        return de.Embeddings(vectors, list(objs.object_ids), [])
    by_id = crop_embeddings(samples, patches_field, objs, model, progress=progress, **options)
    return _present(objs, [by_id.get(i) for i in objs.object_ids], "could not be embedded")


def crop_embeddings(
    samples: Any,
    patches_field: str,
    objs: Objects,
    model: Any = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    skip_failures: bool = True,
    device: str | None = None,
    precision: str = DEFAULT_PRECISION,
    progress: Any = None,
) -> dict[str, np.ndarray]:
    """``{object id: vector}``: the model on each usable box's crop, with context.

    FiftyOne's ``compute_patch_embeddings`` reads each image once, in
    DataLoader workers when ``num_workers`` > 0, cuts every crop there
    (the box grown by :data:`CROP_MARGIN`, clipped to the image) and runs the
    model on the crops in batches of up to ``batch_size`` per image.

    Example::

        vectors = crop_embeddings(dataset, "ground_truth", objs, "efficientnet-lite0")
    """
    fo_model = load_model(
        model if model is not None else DEFAULT_MODEL, device=device, precision=precision
    )
    if num_workers is None:
        num_workers = de.default_num_workers(fo_model)
    view = fc.root_dataset(samples).select(sorted(set(objs.sample_ids)))
    view = view.select_labels(ids=objs.object_ids, fields=patches_field)
    logger.info("Embedding %d object crops...", len(objs.object_ids))
    with de.embedding_errors(skip_failures):
        by_sample = view.compute_patch_embeddings(
            fo_model,
            patches_field,
            alpha=CROP_MARGIN,
            handle_missing="skip",
            batch_size=batch_size,
            num_workers=num_workers,
            skip_failures=skip_failures,
            progress=progress,
        )
    sample_ids, det_ids = view.values(["id", f"{patches_field}.detections.id"])
    out: dict[str, np.ndarray] = {}
    for sample_id, ids in zip(sample_ids, det_ids):
        vectors = by_sample.get(sample_id)
        if vectors is not None:
            out.update(zip(ids or [], vectors))
    return out


def _vector(value: Any) -> Any:
    """An attribute's vector; arrays in undeclared attributes come back as serialized bytes."""
    if isinstance(value, bytes):
        import fiftyone.core.utils as fou

        return fou.deserialize_numpy_array(value)
    return value


def _present(objs: Objects, vectors: list[Any], why: str) -> de.Embeddings:
    kept = [i for i, v in enumerate(vectors) if v is not None]
    missing = [objs.object_ids[i] for i, v in enumerate(vectors) if v is None]
    if missing:
        logger.warning("%d objects %s; they get no likelihood or weight", len(missing), why)
    if not kept:
        raise DequityError(f"all {len(vectors)} objects {why}; nothing to cluster")
    return de.Embeddings(
        de.validate_vectors([vectors[i] for i in kept]),
        [objs.object_ids[i] for i in kept],
        missing,
    )
