"""The generated blocks of the README and docs/ pages."""

from __future__ import annotations

from reporting import update_readme


def test_a_generated_block_is_replaced_and_names_its_source(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- results:speed -->\nold 1.0 s\n<!-- /results:speed -->\noutro\n")

    assert update_readme("speed", "new 2.0 s", document=str(page))

    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n")
    assert "old 1.0 s" not in text
    assert "_Generated from `benchmarks/results-speed.json`._\n\nnew 2.0 s\n" in text
    # a second update replaces the first, it does not nest
    assert update_readme("speed", "new 3.0 s", "docs/results/x.json", document=str(page))
    assert page.read_text().count("<!-- results:speed -->") == 1
    assert "new 2.0 s" not in page.read_text() and "docs/results/x.json" in page.read_text()


def test_a_page_without_the_block_is_left_alone(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("no block here\n")
    assert not update_readme("speed", "new", document=str(page))
    assert page.read_text() == "no block here\n"


def test_a_checkout_is_dirty_only_when_its_code_changed(tmp_path, monkeypatch):
    import subprocess

    from reporting import git_commit

    monkeypatch.delenv("DEQUITY_COMMIT", raising=False)
    files = {
        "lib.py": "x = 1\n",
        "README.md": "text\n",
        "benchmarks/results-speed.json": "{}\n",
        "docs/results/a_runs.json": "{}\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=tmp_path, check=True, capture_output=True)  # fmt: skip

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    head = git_commit(tmp_path)
    assert len(head) == 40
    for name in ("README.md", "benchmarks/results-speed.json", "docs/results/a_runs.json"):
        (tmp_path / name).write_text("rewritten by a run\n")
    assert git_commit(tmp_path) == head  # results and prose are not code
    (tmp_path / "lib.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head + "+dirty"
