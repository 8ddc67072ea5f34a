"""Helpers shared by the ``pysv.bin`` command-line entry points."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from pysv.utils.io import DataError


def str2bool(v: str) -> bool:
    """argparse ``type`` for true/false options: true|1|yes, false|0|no (any case)."""
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def run_cli(run: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str,
            log: logging.Logger) -> int:
    """Return ``run(args)``; a ``DataError`` or ``ValueError`` is logged to ``log``, printed to stderr as
    ``<prog>: error: <message>`` and gives exit status 1."""
    try:
        return run(args)
    except (DataError, ValueError) as e:
        log.error("%s", e)
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
