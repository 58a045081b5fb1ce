"""Posting alerts to chat webhooks (Slack and Microsoft Teams incoming webhooks).

Plain Python on the driver: a micro-batch's new alerts are a handful of rows, collected
once and sent as a few messages. What is here:

- ``message``: one JSON body for up to ``max_alerts_per_message`` alerts, in the target's
  format: Slack's ``{"text": ...}`` (mrkdwn), Teams' MessageCard (``summary`` and ``text``);
- ``post``: one HTTP POST with a timeout, tried ``attempts`` times with a doubling
  backoff; a 2xx answer is delivered, anything else (refused, timeout, 4xx/5xx) is not;
- ``RateLimiter``: at most ``max_messages_per_minute`` messages per target over any
  minute; what does not fit waits for a later micro-batch.

Alerts name no one: user and device ids are tokens, and a card only by its last four
digits (the ``alerts`` table's columns).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SLACK = "slack"
TEAMS = "teams"


def alert_line(alert: dict[str, Any]) -> str:
    """One alert in one line: severity, type, when, what, the reason."""
    when = alert.get("event_time")
    if isinstance(when, str):  # a pending alert, read back from JSON
        when = datetime.fromisoformat(when)
    # PySpark hands timestamps over as naive datetimes in this process's local time.
    when_text = (
        when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if isinstance(when, datetime)
        else "?"
    )
    subject = []
    if alert.get("transaction_id"):
        subject.append(f"transaction {alert['transaction_id']}")
    if alert.get("card_last4"):
        subject.append(f"card ****{alert['card_last4']}")
    if alert.get("amount") is not None:
        subject.append(f"{alert['amount']:.2f} {alert.get('currency') or ''}".strip())
    about = f" ({', '.join(subject)})" if subject else ""
    severity = (alert.get("severity") or "").upper()
    return (
        f"[{severity}] {alert.get('alert_type')} at {when_text}{about}: {alert.get('reason')} "
        f"(alert {alert.get('alert_id')})"
    )


def message(kind: str, alerts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The JSON body posting ``alerts`` to a webhook of kind ``kind`` (slack or teams)."""
    title = f"txwatch: {len(alerts)} new alert{'s' if len(alerts) != 1 else ''}"
    lines = [alert_line(a) for a in alerts]
    if kind == SLACK:
        # Slack reads &, < and > as markup (links, @channel): escaped as its docs say.
        lines = [
            line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for line in lines
        ]
        return {"text": "\n".join([f"*{title}*", *(f"• {line}" for line in lines)])}
    if kind == TEAMS:
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": title,
            "title": title,
            # MessageCard text is Markdown: one paragraph per alert.
            "text": "\n\n".join(lines),
        }
    raise ValueError(f"unknown webhook kind {kind!r} (slack or teams)")


@dataclass(frozen=True)
class PostResult:
    delivered: bool
    attempts: int
    error: str | None = None


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be a webhook (None when it can). The URL itself is a secret: the
    answer never repeats it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "its URL must start with https:// (or http://)"
    if not parts.hostname or any(c.isspace() for c in url):
        return "its URL has no host, or holds spaces"
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return "its URL has a bad port"
    return None


def post(
    url: str,
    body: dict[str, Any],
    timeout_s: float,
    attempts: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> PostResult:
    """POST ``body`` as JSON; retry up to ``attempts`` times, waiting backoff, 2x backoff...

    Never raises: whatever goes wrong (refused, timeout, an answer that is not HTTP) is the
    result's ``error``, which names no URL.
    """
    data = json.dumps(body).encode()
    error = None
    for attempt in range(1, attempts + 1):
        try:
            request = urllib.request.Request(
                url, data=data, headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                status = getattr(response, "status", None)
                if status is not None and 200 <= status < 300:
                    return PostResult(True, attempt)
                error = f"HTTP {status}"
        except urllib.error.HTTPError as err:
            err.close()
            error = f"HTTP {err.code}"
        except urllib.error.URLError as err:
            error = f"connection failed ({type(err.reason).__name__})"
        except TimeoutError:
            error = f"no answer within {timeout_s:g} s"
        except Exception as err:  # a broken answer, a bad URL: never stop the stream
            error = type(err).__name__
        if attempt < attempts:
            sleep(backoff_s * 2 ** (attempt - 1))
    return PostResult(False, attempts, error)


class RateLimiter:
    """At most ``per_minute`` messages per target in any 60 seconds (this process)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._sent: dict[str, deque[float]] = {}

    def allowed(self, target: str) -> int:
        """How many messages ``target`` may get now."""
        sent = self._sent.setdefault(target, deque())
        now = self._clock()
        while sent and sent[0] <= now - 60.0:
            sent.popleft()
        return max(0, self._per_minute - len(sent))

    def record(self, target: str) -> None:
        self._sent.setdefault(target, deque()).append(self._clock())
