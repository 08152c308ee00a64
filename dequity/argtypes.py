"""argparse types that check a command's output paths before any work is done."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def output_path(value: str) -> Path:
    """An argparse type: a file path whose folder exists or can be created.

    Catches a parent that is a file, or a folder that cannot be written,
    before any work is done.

    Example::

        >>> output_path("/tmp/weights.json")
        PosixPath('/tmp/weights.json')
    """
    path = Path(value).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder; give a file name")
    _check_folder(path.absolute().parent, path)
    return path


def output_folder(value: str) -> Path:
    """An argparse type: a folder that exists or can be created, and written to.

    Example::

        >>> output_folder("/tmp/runs/baseline")
        PosixPath('/tmp/runs/baseline')
    """
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a file; give a folder")
    _check_folder(path.absolute(), path)
    return path


def _check_folder(folder: Path, target: Path) -> None:
    """Raise unless ``folder``, or its nearest existing parent, is a writable folder."""
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {target}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {target}: {folder} is not writable")
