"""Benchmarks of dequity: speed, scale, fidelity, embedding throughput, writes.

Run ``python -m benchmarks [--quick] [--only NAME]``. Every figure is given
as a ratio against a reference measured in the same run, because absolute
times depend on the machine and its load.
"""

import os

# FiftyOne reads these at import time, and importing dequity imports FiftyOne.
# The experiments' database: benchmarks reuse its cached Fashion-MNIST embeddings.
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_DIR", "/tmp/dequity-experiments/db")
os.environ.setdefault("FIFTYONE_DATABASE_NAME", "dequity_experiments")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
