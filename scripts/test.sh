#!/usr/bin/env bash
# The test suite: the fast tests first, then the slow end-to-end ones (marked
# `slow`: trials against real processes, replica sets and the App in a browser).
# Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q -m "not slow" "$@"
.venv/bin/python -m pytest -q -m slow "$@"
