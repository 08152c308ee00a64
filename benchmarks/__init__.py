"""Benchmarks of dequity: speed, scale, fidelity, embedding throughput, writes.

Run ``python -m benchmarks [--quick] [--only NAME]``. Every figure is given
as a ratio against a reference measured in the same run, because absolute
times depend on the machine and its load.
"""

import os

# FiftyOne reads these at import time, and importing dequity imports FiftyOne.
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_DIR", "/tmp/dequity-bench-db")
os.environ.setdefault("FIFTYONE_DATABASE_NAME", "dequity_bench")
