"""The shape of ``training``: one runner with a registry of frameworks, no private imports.

Import circles are checked for the whole project in ``tests/test_repo.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from training.config import FRAMEWORK_NAMES
from training.runner import FRAMEWORKS

TRAINING = Path(__file__).resolve().parents[1] / "training"


def _imports(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from training... import name`` in a file, anywhere in it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("training"):
            found += [(node.module, alias.name) for alias in node.names]
    return found


def test_the_runner_has_a_framework_for_every_name_a_config_accepts():
    assert tuple(FRAMEWORKS) == FRAMEWORK_NAMES
    names = [f.checkpoint_name for f in FRAMEWORKS.values()]
    assert len(set(names)) == len(names)


def test_no_module_imports_a_private_name_of_another():
    for path in TRAINING.glob("*.py"):
        private = [f"{m}.{n}" for m, n in _imports(path) if n.startswith("_")]
        assert not private, (path.name, private)
