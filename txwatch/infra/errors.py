"""Errors a user can act on, and how every entry point reports them.

A ``UserError`` is something the person running the job can fix (a missing setting, a
typo in the config, a broker that does not answer): it is printed as one line on stderr,
with the fix, and the job exits 2, without a traceback. Anything else is a bug or an
outage and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USAGE = 2


class UserError(RuntimeError):
    """A problem the user can fix; its message says how."""

    exit_code = EXIT_USAGE


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
