"""The README's Python snippet runs on the demo dataset as `dequity demo` leaves it."""

import json
import re

from tests.conftest import REPO


def readme_python_snippet() -> str:
    """The first ``python`` code block of the README's *Python* section."""
    section = (REPO / "README.md").read_text().split("\n## Python\n", 1)[1]
    return re.search(r"```python\n(.+?)\n```", section, re.DOTALL).group(1)


def test_readme_python_snippet_runs_after_dequity_demo(demo_run, tmp_path, monkeypatch):
    snippet = readme_python_snippet()
    assert 'fo.load_dataset("dequity-demo")' in snippet
    # the demo's state: run "dequity", vectors in "embedding"
    dataset = demo_run[0].clone("dequity-demo")
    try:
        assert dataset.list_runs() == ["dequity"]
        weights = dataset.values("dequity_weight")
        monkeypatch.chdir(tmp_path)
        for _ in range(2):  # and again, as a reader re-running it would
            exec(compile(snippet, "README.md", "exec"), {})
        dataset.reload()
        (new_key,) = set(dataset.list_runs()) - {"dequity"}
        assert dataset.count(f"{new_key}_weight") == len(dataset)
        assert dataset.values("dequity_weight") == weights  # the demo's run is untouched
        (exported,) = tmp_path.glob("*.json")
        assert len(json.loads(exported.read_text())["samples"]) == len(dataset)
    finally:
        dataset.delete()
