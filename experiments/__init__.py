"""Experiments: does dequity help, where, and how sensitive is it?

``python -m experiments`` runs them all and writes ``docs/results.md``;
``python -m experiments --quick`` runs each pipeline at a tiny size. Each
experiment is also a script: ``python -m experiments.classification --quick``.
"""

import os

# FiftyOne reads these at import time, and importing dequity imports FiftyOne.
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_DIR", "/tmp/dequity-experiments/db")
os.environ.setdefault("FIFTYONE_DATABASE_NAME", "dequity_experiments")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
