"""Checkpoints that load without running code: tensors in ``.pt``, the rest in JSON.

A checkpoint is two files: ``checkpoint.pt`` holds tensors only (model and
optimizer state, loaded with ``weights_only=True``) and ``checkpoint.json``
beside it the metadata (step, epoch, config, metrics) and the tensors'
SHA-256, so a replaced or half-written pair is refused. Each file is written
aside and moved into place whole.

Example::

    save_checkpoint(run_dir / CHECKPOINT_NAME, {"model": model.state_dict()}, {"step": 10})
    tensors, meta = load_checkpoint(checkpoint_file(run_dir))
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from dequity.errors import DequityError

__all__ = [
    "CHECKPOINT_NAME",
    "checkpoint_file",
    "file_sha256",
    "load_checkpoint",
    "save_checkpoint",
]

#: the checkpoint's file name in a run folder (its metadata: the same with ``.json``)
CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_file(resume: str | Path) -> Path:
    """The checkpoint of a run folder, or ``resume`` itself when it is the file.

    Raises a DequityError when the checkpoint or its metadata is missing.

    Example::

        path = checkpoint_file("runs/dequity_train")  # runs/dequity_train/checkpoint.pt
    """
    path = Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists() or not path.with_suffix(".json").exists():
        raise DequityError(
            f"no checkpoint at {path} with its metadata {path.with_suffix('.json').name}; "
            "pass a run folder or its checkpoint.pt"
        )
    return path


def save_checkpoint(path: Path, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Writes ``tensors`` to ``path`` and ``meta`` with the tensors' hash beside it (``.json``).

    Example::

        save_checkpoint(run_dir / CHECKPOINT_NAME, {"model": model.state_dict()}, {"step": 10})
    """
    partial = path.with_suffix(".pt.partial")
    torch.save(tensors, partial)
    meta = {**meta, "sha256": file_sha256(partial)}
    meta_partial = path.with_suffix(".json.partial")
    meta_partial.write_text(json.dumps(meta, indent=1))
    os.replace(partial, path)
    os.replace(meta_partial, path.with_suffix(".json"))


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, metadata)``: tensors only (``weights_only=True``: no code runs).

    Example::

        tensors, meta = load_checkpoint(Path("runs/dequity_train/checkpoint.pt"))
        model.load_state_dict(tensors["model"])
    """
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("sha256") != file_sha256(path):
        raise DequityError(
            f"{path.name} does not match {path.with_suffix('.json').name} (one was replaced "
            "or half written); resume from a complete run folder"
        )
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DequityError(
            f"{path} holds more than tensors and is not loaded (it could run code): {e}"
        ) from None
    return tensors, meta


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex.

    Example::

        file_sha256(Path("runs/dequity_train/checkpoint.pt"))  # '9f86d0...'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
