"""The README's speed and scale figures come from saved benchmark records."""

import json

from benchmarks import scale
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
