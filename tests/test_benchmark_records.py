"""The README's speed and scale figures come from saved benchmark records."""

import json

from benchmarks import database, scale
from reporting import REPO


def _block(name: str) -> str:
    text = (REPO / "README.md").read_text()
    return text.split(f"<!-- results:{name} -->")[1].split(f"<!-- /results:{name} -->")[0]


def test_the_scale_sentence_is_generated_from_the_saved_record():
    record = json.loads((REPO / "benchmarks" / "results-scale.json").read_text())
    assert scale.summary(record["values"]) in _block("scale")
    assert not record["commit"].endswith("+dirty")


def test_the_scale_summary_marks_a_missed_target():
    values = {
        "unit_seconds": 0.1,
        "paths": {"default": {"10000": {"seconds": 1.0, "peak_gb": 0.5},
                              "1000000": {"seconds": 75.0, "peak_gb": 3.0}}},
    }  # fmt: skip
    text = scale.summary(values)
    assert "1,000,000 x 512" in text and "missed" in text


def test_the_database_sentence_is_generated_from_the_saved_record():
    record = json.loads((REPO / "benchmarks" / "results-database.json").read_text())
    assert database.summary(record["values"]) in _block("database")
    assert not record["commit"].endswith("+dirty")
    largest = max(record["values"]["sizes"], key=lambda r: r["n"])
    assert largest["n"] == 1_000_000 and len(largest["runs"]) == database.REPEATS


def test_the_database_summary_marks_a_missed_target():
    run = {
        "seconds": 130.0,
        "peak_gb": 4.0,
        "phases": {"read vectors": {"seconds": 30.0, "peak_gb": 3.0}},
    }
    values = {"unit_seconds": 0.1, "sizes": [{"n": 1_000_000, "dim": 512, "runs": [run]}]}
    text = database.summary(values)
    assert "1,000,000 samples" in text and "missed" in text and "read vectors (30 s)" in text
