"""Errors a user can act on, and how every entry point reports them.

A ``UserError`` is something the person running the job can fix (a missing setting, a
typo in the config, a broker that does not answer): it is printed as one line on stderr,
with the fix, and the job exits 2, without a traceback. Anything else is a bug or an
outage and keeps its traceback.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

EXIT_USAGE = 2

# Spark wraps the cause in "[STREAM_FAILED] Query [id = ..., runId = ...] terminated with
# exception: <cause> SQLSTATE: XXKST"; queries are named by us, by name, not by UUID.
_SPARK_WRAPPER = re.compile(r"^\[STREAM_FAILED\] Query \[[^\]]*\] terminated with exception: ")
_SQLSTATE = re.compile(r"\s*SQLSTATE: \w+\s*$")


class UserError(RuntimeError):
    """A problem the user can fix; its message says how."""

    exit_code = EXIT_USAGE


def first_line(error: BaseException) -> str:
    """The cause of a (Spark) error in one line, without Spark's wrapper, plan or SQLSTATE."""
    text = str(getattr(error, "desc", None) or error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return _SQLSTATE.sub("", _SPARK_WRAPPER.sub("", lines[0]))[:300]


def run_entry_point(prog: str, main: Callable[[], int]) -> int:
    """Run ``main``; report a ``UserError`` (or a missing token key) as one line, exit 2."""
    from udfs.privacy import MissingTokenKeyError

    try:
        return main()
    except (UserError, MissingTokenKeyError) as err:
        print(f"{prog}: {err}", file=sys.stderr, flush=True)
        return getattr(err, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
