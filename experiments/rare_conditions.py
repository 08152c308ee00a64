"""A rare-conditions detection set with exact boxes, built deterministically from real images.

Backgrounds are crops of the real video frames and photos in Debian's
``opencv-doc`` (``vtest.avi`` and the example photos); objects are real
Fashion-MNIST product photos (10 classes), cut out by their mask, tinted
and scaled, 2-6 per image. Every box is the exact bounding box of the
pasted mask. Each image is shown in one condition:

- ``day``: the scene as it is (mild brightness changes);
- ``night``: dark, low contrast, sensor noise, a blue cast;
- ``fog``: blended towards a bright haze, stronger higher up;
- ``blur_rain``: motion blur and rain streaks;
- ``sideways``: daylight, but the camera turned a quarter turn (objects on
  their side), in sets whose ``rare_looks`` ask for it;
- ``rare_object``: daylight, but the ``Bag`` objects are inverted, magenta
  and turned on their side (a class mostly seen in a rare colour and shape).

Training is mostly ``day`` (``day_share``, 88 % by default); each other
condition has an equal part of the rest. Validation and test are balanced.
Objects of the test split come from Fashion-MNIST's test split; training
and validation objects from its training split (disjoint rows).

Example::

    spec = SetSpec(train=2000, val_per_condition=60, test_per_condition=200)
    dataset = load_rare_conditions(spec)          # cached FiftyOne dataset
    dataset.match_tags("test").count_values("condition")
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dequity.errors import DequityError
from experiments.fashion_mnist import CLASSES, load_split

CONDITIONS = ("day", "night", "fog", "blur_rain", "rare_object")
RARE_CONDITIONS = ("night", "fog", "blur_rain")
SIDEWAYS = "sideways"  # a rare look a set can take in place of one of the above
RARE_CLASS = "Bag"
OPENCV_DOC = Path(os.environ.get("DEQUITY_OPENCV_DOC", Path.home() / ".cache/dequity/opencv-doc"))
_DATA_DIR = "usr/share/doc/opencv-doc/examples/data"
_PHOTOS = (
    "aero1.jpg", "aero3.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "building.jpg",
    "butterfly.jpg", "fruits.jpg", "graf1.png", "home.jpg", "HappyFish.jpg", "leuvenA.jpg",
    "leuvenB.jpg", "messi5.jpg", "orange.jpg", "rubberwhale1.png", "smarties.png",
    "squirrel_cls.jpg", "stuff.jpg", "aloeL.jpg", "board.jpg",
)  # fmt: skip
# light, natural tints for common objects; the rare look is saturated magenta
_COMMON_TINTS = np.array(
    [[1.0, 1.0, 1.0], [0.95, 0.85, 0.7], [0.7, 0.8, 1.0], [0.9, 0.9, 0.8], [0.8, 1.0, 0.85]]
)
_RARE_TINT = np.array([1.0, 0.1, 0.9])


@dataclass(frozen=True)
class SetSpec:
    """Sizes and look of the set; its hash names the cache.

    ``object_px`` is the range of the longer side of a pasted object;
    ``rare_looks`` are the rare conditions (of :data:`RARE_CONDITIONS` and
    :data:`SIDEWAYS`), each as common as ``rare_object``.
    """

    train: int = 2000
    val_per_condition: int = 60
    test_per_condition: int = 200
    day_share: float = 0.88
    image_px: int = 128
    object_px: tuple[int, int] = (22, 56)
    min_objects: int = 2
    max_objects: int = 6
    seed: int = 0
    rare_looks: tuple[str, ...] = RARE_CONDITIONS

    def key(self) -> str:
        """A short hash of the spec (cache and dataset names)."""
        return hashlib.sha1(json.dumps(asdict(self)).encode()).hexdigest()[:10]

    @property
    def conditions(self) -> tuple[str, ...]:
        """Every condition of the set: ``day``, the rare looks, ``rare_object``."""
        return ("day", *self.rare_looks, "rare_object")

    def condition_counts(self, split: str) -> dict[str, int]:
        """How many images of each condition the split holds.

        Example::

            >>> SetSpec(train=100, day_share=0.88).condition_counts("train")["night"]
            3
        """
        if split == "train":
            n = len(self.conditions) - 1
            rare = round(self.train * (1 - self.day_share) / n)
            return {c: self.train - rare * n if c == "day" else rare
                    for c in self.conditions}  # fmt: skip
        per = self.val_per_condition if split == "val" else self.test_per_condition
        return dict.fromkeys(self.conditions, per)


def backgrounds(root: Path = OPENCV_DOC) -> dict[str, list[np.ndarray]]:
    """Real background images by split: frames of ``vtest.avi`` and photos, RGB uint8.

    The video is split in time (first 70 % train, next 10 % val, last 20 %
    test, every 4th frame); the photos serve every split (crops differ).
    """
    import cv2

    data = root / _DATA_DIR
    if not (data / "vtest.avi").exists():
        raise DequityError(
            f"opencv-doc's example data is missing under {root}; run `bash scripts/setup.sh "
            "--dev`, or `apt-get download opencv-doc && dpkg-deb -x opencv-doc_*.deb "
            f"{root}` (or set DEQUITY_OPENCV_DOC to such a folder)"
        )
    capture, frames, index = cv2.VideoCapture(str(data / "vtest.avi")), [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % 4 == 0:
            frames.append(frame[:, :, ::-1])
        index += 1
    cut1, cut2 = int(0.7 * len(frames)), int(0.8 * len(frames))
    photos = [cv2.imread(str(data / p))[:, :, ::-1] for p in _PHOTOS if (data / p).exists()]
    return {
        "train": frames[:cut1] + photos,
        "val": frames[cut1:cut2] + photos,
        "test": frames[cut2:] + photos,
    }


def _crop(rng: np.random.Generator, image: np.ndarray, size: int) -> np.ndarray:
    """A random square crop (40-100 % of the shorter side) resized to ``size``."""
    import cv2

    h, w = image.shape[:2]
    side = int(min(h, w) * rng.uniform(0.4, 1.0))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    out = cv2.resize(image[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out.copy()


def _object(
    rng: np.random.Generator, item: np.ndarray, rare: bool, longest: int
) -> tuple[np.ndarray, np.ndarray]:
    """A tinted RGB object and its alpha mask from a 28x28 item, scaled to ``longest`` px."""
    import cv2

    alpha = (item > 12).astype(np.float32)
    ys, xs = np.nonzero(alpha)
    if len(ys) == 0:
        raise ValueError("empty item")
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    gray, alpha = item[sl].astype(np.float32) / 255, alpha[sl]
    if rare:
        gray, alpha = np.rot90(1.0 - gray * 0.8), np.rot90(alpha)
        tint = _RARE_TINT
    else:
        tint = _COMMON_TINTS[rng.integers(len(_COMMON_TINTS))] * rng.uniform(0.75, 1.0)
    h, w = gray.shape
    scale = longest / max(h, w)
    size = (max(4, round(w * scale)), max(4, round(h * scale)))
    gray = cv2.resize(np.ascontiguousarray(gray), size, interpolation=cv2.INTER_LINEAR)
    alpha = cv2.resize(np.ascontiguousarray(alpha), size, interpolation=cv2.INTER_NEAREST)
    rgb = np.clip(gray[..., None] * tint[None, None] * 255, 0, 255)
    return rgb, alpha


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _apply_condition(rng: np.random.Generator, image: np.ndarray, condition: str) -> np.ndarray:
    """The scene under ``condition`` (float RGB in 0..255 in, uint8 out)."""
    import cv2

    img = image.astype(np.float32)
    size = img.shape[0]
    if condition in ("day", "rare_object", SIDEWAYS):
        img = img * rng.uniform(0.85, 1.15)
    elif condition == "night":
        mean = img.mean()
        img = (img - mean) * rng.uniform(0.5, 0.7) + mean  # low contrast
        img = img * rng.uniform(0.3, 0.45) * np.array([0.8, 0.9, 1.2])
        img = img + rng.normal(0, rng.uniform(4, 8), img.shape)
    elif condition == "fog":
        depth = np.linspace(1.0, 0.55, size)[:, None, None]  # denser at the top
        strength = rng.uniform(0.55, 0.75) * depth
        img = img * (1 - strength) + rng.uniform(200, 235) * strength
    elif condition == "blur_rain":
        length = int(rng.integers(7, 12))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1.0 / length
        angle = rng.uniform(0, 180)
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6)) * 0.8
        streaks = np.zeros((size, size), np.float32)
        slant = rng.uniform(-0.3, 0.3)
        for _ in range(int(rng.integers(40, 80))):
            x, y, n = rng.integers(0, size), rng.integers(0, size), int(rng.integers(6, 14))
            x2, y2 = int(x + slant * n), int(y + n)
            cv2.line(streaks, (int(x), int(y)), (x2, y2), 1.0, 1)
        img = img * (1 - 0.6 * streaks[..., None]) + 220 * 0.6 * streaks[..., None]
    else:
        raise DequityError(f"unknown condition {condition!r}; use one of {(*CONDITIONS, SIDEWAYS)}")
    return np.clip(img, 0, 255).astype(np.uint8)


def render_image(
    rng: np.random.Generator,
    background: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    condition: str,
    spec: SetSpec,
) -> tuple[np.ndarray, list[tuple[str, list[float]]]]:
    """One image and its ``(class, [x, y, w, h] relative)`` boxes.

    ``items``/``labels`` are the pool of Fashion-MNIST items to draw from.
    A ``rare_object`` image holds at least one Bag, and its Bags look rare.
    """
    size = spec.image_px
    canvas = _crop(rng, background, size).astype(np.float32)
    count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    bag = CLASSES.index(RARE_CLASS)
    bag_rows = np.flatnonzero(labels == bag)
    placed: list[tuple[int, int, int, int]] = []
    boxes = []
    for k in range(count):
        row = (
            rng.choice(bag_rows)
            if condition == "rare_object" and k == 0
            else rng.integers(len(items))
        )
        rare = condition == "rare_object" and labels[row] == bag
        rgb, alpha = _object(rng, items[row], rare, int(rng.integers(*spec.object_px)))
        h, w = alpha.shape
        for _ in range(20):
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            if all(_iou((x, y, x + w, y + h), p) < 0.15 for p in placed):
                break
        else:
            continue
        region = canvas[y : y + h, x : x + w]
        region[:] = region * (1 - alpha[..., None]) + rgb * alpha[..., None]
        ys, xs = np.nonzero(alpha)
        x1, y1, x2, y2 = x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1
        placed.append((x, y, x + w, y + h))
        boxes.append(
            (CLASSES[int(labels[row])], [x1 / size, y1 / size, (x2 - x1) / size, (y2 - y1) / size])
        )
    image = _apply_condition(rng, canvas, condition)
    if condition == SIDEWAYS:  # a quarter turn anticlockwise: (x, y) -> (y, 1 - x)
        image = np.ascontiguousarray(np.rot90(image))
        boxes = [(c, [y, 1 - x - w, h, w]) for c, (x, y, w, h) in boxes]
    return image, boxes


def generate(spec: SetSpec, folder: Path, progress: bool = True) -> list[dict[str, Any]]:
    """Writes every image as a PNG under ``folder``; returns one record per image.

    Deterministic: the same spec gives the same pixels and boxes.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    fm_train, fm_train_labels = load_split("train")
    fm_test, fm_test_labels = load_split("test")
    holdout = np.random.default_rng(spec.seed).permutation(len(fm_train))
    cut = len(holdout) * 5 // 6
    pools = {
        "train": (fm_train[holdout[:cut]], fm_train_labels[holdout[:cut]]),
        "val": (fm_train[holdout[cut:]], fm_train_labels[holdout[cut:]]),
        "test": (fm_test, fm_test_labels),
    }
    bgs = backgrounds()
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (split, condition, i)
        for split in ("train", "val", "test")
        for condition, n in spec.condition_counts(split).items()
        for i in range(n)
    ]
    records = []
    for index, (split, condition, i) in enumerate(
        tqdm(jobs, desc="rare-conditions set", disable=not progress)
    ):
        rng = np.random.default_rng([spec.seed, index])
        pool = bgs[split]
        image, boxes = render_image(
            rng, pool[rng.integers(len(pool))], *pools[split], condition, spec
        )
        path = folder / f"{split}-{condition}-{i:05d}.png"
        Image.fromarray(image).save(path)
        records.append(
            {"filepath": str(path), "split": split, "condition": condition, "boxes": boxes}
        )
    return records


def load_rare_conditions(spec: SetSpec, embed: bool = True, progress: bool = True) -> Any:
    """The set as a persistent FiftyOne dataset, built once per spec and cached.

    Samples are tagged ``train``/``val``/``test`` and have ``condition``,
    ``ground_truth`` (Detections) and, with ``embed``, the embeddings of the
    training images by dequity's default model (field :func:`embedding_field`).
    """
    import fiftyone as fo

    from experiments.pool import cache_dir

    name = f"dequity-exp-rare-conditions-{spec.key()}"
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        if dataset.info.get("complete"):
            if embed:
                _embed(dataset, progress)
            return dataset
        fo.delete_dataset(name)
    records = generate(spec, cache_dir() / "rare-conditions" / spec.key(), progress)
    dataset = fo.Dataset(name, persistent=True)
    dataset.add_samples(
        [
            fo.Sample(
                filepath=r["filepath"],
                tags=[r["split"]],
                condition=r["condition"],
                ground_truth=fo.Detections(
                    detections=[fo.Detection(label=c, bounding_box=b) for c, b in r["boxes"]]
                ),
            )
            for r in records
        ],
        progress=progress,
    )
    dataset.info = {"spec": asdict(spec), "complete": True}
    dataset.save()
    if embed:
        _embed(dataset, progress)
    return dataset


def embedding_field() -> str:
    """The field holding the training images' embeddings by dequity's default model.

    Example::

        >>> embedding_field()
        'embedding_efficientnet_lite0_layers'
    """
    from dequity.defaults import DEFAULT_MODEL

    return "embedding_" + "".join(c if c.isalnum() else "_" for c in DEFAULT_MODEL)


def _embed(dataset: Any, progress: bool) -> None:
    """Embeds the training images that lack an embedding by dequity's default model."""
    from dequity.sources.embeddings import from_model

    field = embedding_field()
    todo = dataset.match_tags("train").exists(field, False)
    if len(todo) == 0:
        return
    emb = from_model(todo, batch_size=64, progress=progress)
    dataset.set_values(field, dict(zip(emb.sample_ids, list(emb.vectors))), key_field="id")


def object_embeddings(train: Any, progress: bool = True) -> np.ndarray:
    """The crop embedding of every ``ground_truth`` box of ``train`` by dequity's default model.

    One row per box in collection order (samples in order, boxes in list
    order), as ``compute_dequity(..., patches_field="ground_truth",
    embeddings=...)`` takes them; a skipped box (too small to embed) has a
    zero row. The crops are cut and embedded as an object run does it
    (:func:`dequity.sources.crops.crop_embeddings`) and cached in a file named
    after the dataset, checked against the boxes' ids.

    Example::

        vectors = object_embeddings(dataset.match_tags("train"))
    """
    from dequity.defaults import DEFAULT_MODEL
    from dequity.sources.crops import crop_embeddings, usable_objects
    from experiments.pool import cache_dir

    ids = [i for sample in train.values("ground_truth.detections.id") for i in sample or []]
    model = "".join(c if c.isalnum() else "_" for c in DEFAULT_MODEL)
    cache = cache_dir() / "rare-conditions" / f"{train._root_dataset.name}-objects-{model}.npz"
    if cache.exists():
        saved = np.load(cache)
        if saved["ids"].tolist() == ids:
            return saved["vectors"]
    objs = usable_objects(train, "ground_truth")
    by_id = crop_embeddings(train, "ground_truth", objs, progress=progress)
    dim = len(next(iter(by_id.values())))
    vectors = np.zeros((len(ids), dim), np.float32)
    for row, object_id in zip(objs.rows, objs.object_ids):
        if object_id in by_id:
            vectors[row] = by_id[object_id]
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, ids=np.array(ids), vectors=vectors)
    return vectors


def brain_gfl_weights(samples: Any, vectors: np.ndarray, eta: float, gamma: float) -> np.ndarray:
    """FiftyOne Brain's uniqueness of ``samples`` as GFL weights of the likelihood 1 - uniqueness.

    The brain scores the final-features block of ``vectors`` (the default
    model's every-stage rows, in the collection's order), the embedding that
    serves it best on the fidelity benchmark's long tails. Returns the weights in
    the collection's order.

    Example::

        weights = brain_gfl_weights(train, np.array(train.values(embedding_field())), 1.0, 5.0)
    """
    import fiftyone.brain as fob

    from dequity.pipeline.views import content_columns
    from dequity.pipeline.weights import gfl_weight

    final = np.asarray(vectors)[:, content_columns(vectors)]
    fob.compute_uniqueness(samples, "brain_uniqueness", embeddings=final, progress=False)
    uniqueness = np.array(samples.values("brain_uniqueness"), dtype=float)
    return gfl_weight(1.0 - uniqueness, eta, gamma)


def example_sheet(
    dataset: Any, path: Path, conditions: Sequence[str], per_condition: int = 6
) -> Path:
    """A PNG grid of test images, one row per condition, with their exact boxes in green.

    Example::

        spec = SetSpec()
        example_sheet(load_rare_conditions(spec), Path("examples.png"), spec.conditions)
    """
    from fiftyone import ViewField as F
    from PIL import Image, ImageDraw

    rows = []
    for condition in conditions:
        view = dataset.match_tags("test").match(F("condition") == condition).limit(per_condition)
        tiles = []
        for filepath, dets in zip(*view.values(["filepath", "ground_truth.detections"])):
            image = Image.open(filepath).convert("RGB")
            draw, (w, h) = ImageDraw.Draw(image), image.size
            for d in dets or []:
                x, y, bw, bh = d.bounding_box
                draw.rectangle([x * w, y * h, (x + bw) * w - 1, (y + bh) * h - 1], outline="lime")
            tiles.append(np.asarray(image))
        rows.append(np.concatenate(tiles, axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    """``python -m experiments.rare_conditions [--examples PNG]``: build (or load) the set
    of the detection experiment (:data:`experiments.detection.FULL`)."""
    import argparse

    from experiments.detection import FULL

    parser = argparse.ArgumentParser(prog="python -m experiments.rare_conditions")
    parser.add_argument("--examples", type=Path, help="write a sheet of test images with boxes")
    args = parser.parse_args(argv)
    dataset = load_rare_conditions(FULL.spec)
    print(f"{dataset.name}: {dataset.count_sample_tags()}")
    if args.examples:
        print(f"written to {example_sheet(dataset, args.examples, FULL.spec.conditions)}")


if __name__ == "__main__":
    main()
