"""Usage errors of the command lines (dsd, dsctl, dschat): one line on stderr, exit 2.

Every check of what a user typed raises :class:`UsageError`, argparse's own errors
included (:class:`Parser`), and :func:`run` turns it into ``PROG: MESSAGE`` and exit
status 2. `run` is also the one place that keeps tracebacks from the user: Ctrl-C and
a closed stdout end the program with a short line instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable, NoReturn

from dsd.config import is_ipc_endpoint, is_tcp_endpoint

EXIT_FAILED, EXIT_USAGE = 1, 2
MAX_SECONDS = 86400.0  # a day: larger is a typo, and libzmq's poll takes milliseconds in an int


class UsageError(ValueError):
    """What the user typed cannot work; ``str(e)`` is one line saying what and what is allowed."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is a UsageError (one line) instead of usage text and exit(2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_SECONDS:g} seconds, not {text}")
    return value


def check_endpoint(endpoint: str, option: str = "-e") -> str:
    """A daemon's endpoint as clients connect to it: ipc://PATH or tcp://HOST:PORT."""
    if is_ipc_endpoint(endpoint) or (is_tcp_endpoint(endpoint) and "*" not in endpoint):
        return endpoint
    raise UsageError(f"{option} {endpoint!r}: not a daemon endpoint; give ipc://PATH (at most 107 bytes) "
                     "or tcp://HOST:PORT")


def run(prog: str, body: Callable[[], int]) -> int:
    """`body()`'s exit status; a UsageError is one line and exit 2, Ctrl-C and a closed pipe exit 1."""
    try:
        return body()
    except UsageError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (`dsctl watch | head`): nothing more to say, and nowhere to say it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
