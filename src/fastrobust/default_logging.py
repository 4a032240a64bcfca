"""Where fastrobust's log lines go when the application has not configured logging.

Library code only logs (the command line prints). A user who calls :func:`fastrobust.fit` from
a plain script has configured no logging, and Python would drop every INFO line: the run would
be silent for minutes. :func:`log_to_stderr_unless_configured` wraps such calls: when neither
the ``fastrobust`` logger nor any logger above it has a handler, it shows fastrobust's INFO
lines (the run folder, each epoch's summary) on stderr for the duration of the call, the way
Python shows warnings without being asked. Any logging the application sets up wins, and
``logging.getLogger("fastrobust").setLevel(logging.WARNING)`` silences it (the progress bar
follows the logger too).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

LOGGER = "fastrobust"


@contextmanager
def log_to_stderr_unless_configured() -> Iterator[None]:
    """Within the block, log fastrobust's INFO lines to stderr if nobody configured logging."""
    logger = logging.getLogger(LOGGER)
    if logger.hasHandlers():  # the application (or a test harness) decides
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if level == logging.NOTSET:  # a level the user set (e.g. WARNING) stays
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
