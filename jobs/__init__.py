"""Runnable txwatch jobs; each module has a ``main()`` started through ``spark-submit.sh``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime


def utc_time(text: str) -> datetime:
    """An argparse type: an ISO-8601 time with a zone (``Z`` allowed), as UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. {text}Z")
    return value.astimezone(UTC)
