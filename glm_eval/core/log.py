"""One logging path: every module logs to `glm_eval.<module>` loggers; the commands call `setup` once. Quiet by
default (warnings only, as `warning: …` lines on stderr), `verbose=true` adds what happens (loading, conversion,
cache use). Results and tables a command exists to show are printed to stdout, not logged."""
from __future__ import annotations

import logging
import sys

ROOT = "glm_eval"


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno == logging.INFO else f"{record.levelname.lower()}: {message}"


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted (a redirected or captured stderr included)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def setup(verbose: bool = False) -> None:
    logger = logging.getLogger(ROOT)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(_Format())
        logger.addHandler(handler)
    logger.propagate = False
    if not verbose:  # transformers' per-load bars and notices would bury ours
        try:
            from transformers.utils import logging as hf_logging
        except ImportError:
            return
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
