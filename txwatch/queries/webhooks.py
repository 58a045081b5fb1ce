"""Query ``webhooks``: new rows of the Delta ``alerts`` table -> Slack and Teams webhooks.

It runs only when ``webhooks.slack`` or ``webhooks.teams`` name a URL. It reads ``alerts``
as a Delta stream, which holds every alert once (the ``alerts`` query keeps one row per
``alert_id``), so a webhook gets each alert once, whatever detector raised it and however
often it was published. Its very first micro-batch (the table as it stands when the query
first starts) posts only the alerts detected since the job started: turning webhooks on
for a lake with history does not post the history. Per micro-batch and target:

1. the alerts of at least ``webhooks.min_severity``, after those still pending for the
   target, in event-time order, each ``alert_id`` once;
2. in messages of at most ``max_alerts_per_message`` alerts, no more messages than the
   target's rate limit allows (``max_messages_per_minute``);
3. each message POSTed with retries and a doubling backoff (``txwatch.infra.webhooks``);
   a delivered message's alerts are recorded ``sent`` in ``webhook_deliveries``; a target
   that failed last time gets one attempt, not ``attempts``, until it answers again;
4. what was not delivered (the webhook is down, or the rate limit is reached) is recorded
   ``pending``, with the alert, and sent first next time: at the next micro-batch, or
   within ``tick`` (every 30 s of a continuous run, and once at the end of an
   ``--available-now`` run) when no new alert comes.

A webhook that is down therefore neither stops the stream (the batch ends normally) nor
loses an alert (``alerts`` is written by its own query; what the webhook missed waits in
``webhook_deliveries``, read back when the job starts). Delivery is at least once: a
crash between a POST and its record sends that message again after the restart (a batch
whose records were committed is not sent again). Each alert line carries its ``alert_id``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra import tables
from txwatch.infra.config import SEVERITIES, Conf, duration_s
from txwatch.infra.delta import append_once
from txwatch.infra.webhooks import RateLimiter, message, post
from txwatch.queries import alerts
from txwatch.queries.base import QuerySpec, RunContext
from udfs import schemas

NAME = "webhooks"
SENT = "sent"
PENDING = "pending"
# When this job started (the module loads with the pipeline): the first micro-batch of a
# new checkpoint posts only alerts detected since.
JOB_STARTED = datetime.now(UTC)


def enabled(conf: Conf) -> bool:
    return bool(conf.webhooks.targets())


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _event_time(alert: dict[str, Any]) -> datetime | None:
    value = alert.get("event_time")
    # Collected rows and the JSON of pending ones both hold naive datetimes.
    return datetime.fromisoformat(value) if isinstance(value, str) else value


class Deliverer:
    """Sends new and pending alerts to every target and records what happened.

    One per running job: the query's micro-batches and the runner's ``tick`` share it, and
    its lock keeps them from sending the same pending alerts twice at once. What is
    pending is read from ``webhook_deliveries`` once, at the first use, and then kept in
    memory: a micro-batch's cost follows its alerts, not the table.
    """

    def __init__(self, spark: SparkSession, conf: Conf) -> None:
        self._spark = spark
        self._conf = conf
        self._hooks = conf.webhooks
        self._limiter = RateLimiter(self._hooks.max_messages_per_minute)
        self._lock = threading.Lock()
        self._waiting: dict[str, list[dict[str, Any]]] | None = None  # target -> alerts
        # The micro-batches whose outcome is recorded: read with the pending alerts.
        self._recorded_batches: set[int] = set()
        self._down: dict[str, str] = {}  # target -> error, while it fails

    def _load_pending(self) -> dict[str, list[dict[str, Any]]]:
        """Per target, the alerts recorded pending and not sent since, and (into
        ``_recorded_batches``) the micro-batches already recorded (at start)."""
        records = self._spark.read.format("delta").load(
            self._conf.table_path(tables.WEBHOOK_DELIVERIES)
        )
        self._recorded_batches = {
            r.batch_id
            for r in records.filter(F.col("batch_id").isNotNull())
            .select("batch_id")
            .distinct()
            .collect()
        }
        sent = records.filter(F.col("status") == SENT).select("target", "alert_id")
        rows = (
            records.filter(F.col("status") == PENDING)
            .join(sent, ["target", "alert_id"], "left_anti")
            .dropDuplicates(["target", "alert_id"])
            .select("target", "alert")
            .collect()
        )
        pending: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            pending.setdefault(row.target, []).append(json.loads(row.alert))
        return pending

    @property
    def has_pending(self) -> bool:
        return self._waiting is None or any(self._waiting.values())

    def deliver(
        self, new_alerts: list[dict[str, Any]], batch_id: int | None, wait: bool = True
    ) -> None:
        """Send pending, then ``new_alerts``; record the outcome (once per batch id).

        With ``wait=False`` (a retry between batches) nothing happens while a micro-batch
        is sending.
        """
        if not self._lock.acquire(blocking=wait):
            return
        try:
            if self._waiting is None:
                self._waiting = self._load_pending()
            # A micro-batch replayed after a crash whose outcome was recorded: sent already.
            if batch_id is not None and batch_id in self._recorded_batches:
                return
            records = self._send_all(self._waiting, new_alerts, batch_id)
            if not records:
                return
            df = self._spark.createDataFrame(records, schemas.WEBHOOK_DELIVERIES)
            if batch_id is None:
                path = self._conf.table_path(tables.WEBHOOK_DELIVERIES)
                df.write.format("delta").mode("append").save(path)
            else:
                append_once(df, self._conf, tables.WEBHOOK_DELIVERIES, NAME, batch_id)
                self._recorded_batches.add(batch_id)
        finally:
            self._lock.release()

    def _send_all(
        self,
        waiting: dict[str, list[dict[str, Any]]],
        new_alerts: list[dict[str, Any]],
        batch_id: int | None,
    ) -> list[tuple]:
        """Send to every target; update ``waiting``; the rows to record."""
        hooks = self._hooks
        now = datetime.now(UTC).replace(tzinfo=None)
        records: list[tuple] = []
        for target, (kind, url) in hooks.targets().items():
            before = waiting.get(target, [])
            known = {a["alert_id"] for a in before}
            fresh = []
            for alert in new_alerts:
                if alert["alert_id"] not in known:
                    known.add(alert["alert_id"])
                    fresh.append(alert)
            queue = sorted(
                before + fresh, key=lambda a: (_event_time(a) or datetime.min, a["alert_id"])
            )
            size = hooks.max_alerts_per_message
            delivered: set[str] = set()
            error = None
            failed = False  # a POST failed (not merely the rate limit)
            for i in range(0, len(queue), size):
                chunk = queue[i : i + size]
                if not self._limiter.allowed(target):
                    error = f"rate limit of {hooks.max_messages_per_minute} messages per minute"
                    break
                self._limiter.record(target)
                result = post(
                    url,
                    message(kind, chunk),
                    duration_s(hooks.timeout),
                    1 if target in self._down else hooks.attempts,
                    duration_s(hooks.backoff),
                )
                if not result.delivered:
                    error = f"not delivered after {result.attempts} attempts: {result.error}"
                    failed = True
                    break
                delivered.update(a["alert_id"] for a in chunk)
            fresh_ids = {a["alert_id"] for a in fresh}
            for alert in queue:
                if alert["alert_id"] in delivered:
                    records.append(self._record(target, alert, SENT, now, None, batch_id))
                elif alert["alert_id"] in fresh_ids:
                    records.append(self._record(target, alert, PENDING, now, error, batch_id))
            waiting[target] = [a for a in queue if a["alert_id"] not in delivered]
            self._report(target, error if failed else None, delivered)
        return records

    def _report(self, target: str, failure: str | None, delivered: set[str]) -> None:
        """One line when a target starts failing and one when it is back, not one per batch.

        A target held back by its rate limit is not failing: it keeps its full attempts.
        """
        if failure is not None:
            if target not in self._down:
                waiting = len(self._waiting.get(target, [])) if self._waiting else 0
                print(f"[{NAME}] {target}: {failure}; {waiting} alerts wait", flush=True)
            self._down[target] = failure
        elif delivered and target in self._down:
            del self._down[target]
            print(f"[{NAME}] {target}: delivering again", flush=True)

    @staticmethod
    def _record(
        target: str,
        alert: dict[str, Any],
        status: str,
        now: datetime,
        error: str | None,
        batch_id: int | None,
    ) -> tuple:
        text = json.dumps({k: _json_value(v) for k, v in alert.items()}, sort_keys=True)
        event_time = _event_time(alert)
        return (target, alert["alert_id"], status, text, event_time, now, error, batch_id)


# One Deliverer per lake and webhooks conf in this process: the query and the runner's
# tick share it.
_DELIVERERS: dict[tuple[str, str], Deliverer] = {}


def deliverer(ctx: RunContext) -> Deliverer:
    key = (ctx.conf.lake_root, repr(ctx.conf.webhooks))
    if key not in _DELIVERERS or _DELIVERERS[key]._spark is not ctx.spark:
        _DELIVERERS[key] = Deliverer(ctx.spark, ctx.conf)
    return _DELIVERERS[key]


def new_alerts(
    batch_df: DataFrame, min_severity: str, detected_since: datetime | None = None
) -> list[dict[str, Any]]:
    """The batch's alerts of at least ``min_severity`` (a few rows: collected), detected
    since ``detected_since`` when given."""
    wanted = SEVERITIES[SEVERITIES.index(min_severity) :]
    df = batch_df.filter(F.col("severity").isin(*wanted))
    if detected_since is not None:
        # An aware datetime: PySpark makes it the same instant whatever the time zones.
        df = df.filter(F.col("detected_at") >= F.lit(detected_since))
    return [row.asDict(recursive=True) for row in df.collect()]


def batch_writer(sender: Deliverer, conf: Conf) -> Callable[[DataFrame, int], None]:
    def write_webhooks_batch(batch_df: DataFrame, batch_id: int) -> None:
        # Batch 0 is the table as it stood when the query first started: its history.
        since = JOB_STARTED if batch_id == 0 else None
        sender.deliver(new_alerts(batch_df, conf.webhooks.min_severity, since), batch_id)

    return write_webhooks_batch


def start(ctx: RunContext) -> StreamingQuery:
    spark, conf = ctx.spark, ctx.conf
    sender = deliverer(ctx)
    source = spark.readStream.format("delta").load(conf.table_path(tables.ALERTS))
    writer = source.writeStream.foreachBatch(batch_writer(sender, conf))
    writer = ctx.with_trigger(ctx.checkpoint(writer, NAME), conf.webhooks.trigger_interval)
    return ctx.start(writer)


def tick(ctx: RunContext) -> None:
    """Send what is pending, even when no new alert comes to trigger a micro-batch."""
    sender = deliverer(ctx)
    if sender.has_pending:
        sender.deliver([], None, wait=False)


QUERY = QuerySpec(NAME, start, after=(alerts.NAME,), enabled=enabled, tick=tick)
