"""Every generated figure is what its saved raw file gives, from committed code.

The README's blocks and ``docs/scale_out.md``'s are rebuilt from the
benchmarks' ``results-*.json``; each section of ``docs/results.md`` is rebuilt
from its experiment's per-seed file, and the page from the sections. A figure
typed by hand, or left behind by a rerun, makes these fail.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil

import pytest

from benchmarks.__main__ import MODULES as BENCHMARKS
from benchmarks.__main__ import block_modules
from benchmarks.common import load_raw
from experiments.__main__ import MODULES as EXPERIMENTS
from experiments.__main__ import PAGE_ORDER, raw_digest, raw_files, readme_summary, results_page
from experiments.report import DOCS, Section
from reporting import REPO

RESULTS = DOCS / "results"
#: the line of results.md that names where and when the page was assembled
ASSEMBLED = re.compile(
    r"\(full mode\) on (?P<machine>[^;]+); assembled (?P<date>\d{4}-\d{2}-\d{2})"
)


def _block(document: str, name: str) -> str:
    text = (REPO / document).read_text()
    return text.split(f"<!-- results:{name} -->\n")[1].split(f"\n<!-- /results:{name} -->")[0]


def _experiments_with_raw_files() -> list[str]:
    return [
        name
        for name, path in EXPERIMENTS.items()
        if (raw := getattr(importlib.import_module(path), "RAW_FILE", None))
        and (RESULTS / raw).exists()
    ]


@pytest.mark.parametrize("module", block_modules(list(BENCHMARKS)), ids=lambda m: m.NAME)
def test_each_benchmark_block_is_generated_from_its_saved_record(module):
    record = load_raw(module.NAME)
    source = f"benchmarks/results-{module.NAME}.json"
    expected = f"_Generated from `{source}`._\n\n{module.readme_block(record)}"
    assert _block(module.DOCUMENT, module.NAME) == expected
    assert not record["commit"].endswith("+dirty"), f"{source} ran from uncommitted code"


@pytest.mark.parametrize("name", _experiments_with_raw_files())
def test_each_experiment_section_is_generated_from_its_raw_file(name, tmp_path):
    module = importlib.import_module(EXPERIMENTS[name])
    raw = RESULTS / module.RAW_FILE
    saved = Section.load(RESULTS, name)
    assert saved is not None, f"{raw.name} has no section; run python -m experiments"
    assert saved.source_sha256 == raw_digest(RESULTS, name)
    for file in raw_files(name):  # plots are redrawn beside the copies
        if (RESULTS / file).exists():
            shutil.copy(RESULTS / file, tmp_path / file)
    rebuilt = module.section_from_json(tmp_path / raw.name)
    timing = re.compile(rf"\n_{name}: \d+ s_\n$")
    assert timing.sub("", saved.body).rstrip() == rebuilt.body.rstrip()
    assert (saved.title, saved.lead, saved.verdicts) == (
        rebuilt.title,
        rebuilt.lead,
        rebuilt.verdicts,
    )
    commit = json.loads(raw.read_text())["commit"]
    assert not commit.endswith("+dirty"), f"{raw.name} ran from uncommitted code"


def test_results_page_and_readme_summary_are_assembled_from_the_sections():
    sections = [s for s in (Section.load(RESULTS, name) for name in PAGE_ORDER) if s]
    page = (DOCS / "results.md").read_text()
    where = ASSEMBLED.search(page)
    assert where, "docs/results.md does not say where it was assembled"
    assert page == results_page(sections, False, where["machine"], where["date"])
    expected = f"_Generated from `docs/results/`._\n\n{readme_summary(sections)}"
    assert _block("README.md", "experiments") == expected
