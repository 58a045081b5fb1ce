"""``pipeline_progress``: one row per streaming micro-batch, and a line per batch on stdout.

Besides Spark's own figures each row says how far the query's event-time watermark is from
the wall clock. A watermark ahead of the clock means some input claims times from the
future (a bad clock got past validation); one far behind means the query is replaying
history or falling behind. Either is logged once when it starts and stored per batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQueryListener

from txwatch.infra import tables
from txwatch.infra.config import Conf, duration_s
from udfs import schemas

AHEAD = "ahead_of_wall_clock"
BEHIND = "behind_wall_clock"


@dataclass(frozen=True)
class WatermarkBounds:
    """How far a watermark may run ahead of / behind the wall clock before a warning."""

    max_lead_s: float
    max_lag_s: float

    @classmethod
    def from_conf(cls, conf: Conf) -> WatermarkBounds:
        return cls(
            duration_s(conf.stream.watermark_max_lead), duration_s(conf.stream.watermark_max_lag)
        )


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def watermark_lag(batch_time: str | None, watermark: str | None) -> float | None:
    """Seconds from the watermark to the batch's wall-clock time (None before any data)."""
    at, mark = _parse_iso(batch_time), _parse_iso(watermark)
    if at is None or mark is None or mark.timestamp() <= 0:  # Spark starts at the epoch
        return None
    return (at - mark).total_seconds()


def watermark_warning(lag_s: float | None, bounds: WatermarkBounds) -> str | None:
    if lag_s is None:
        return None
    if -lag_s > bounds.max_lead_s:
        return AHEAD
    if lag_s > bounds.max_lag_s:
        return BEHIND
    return None


def progress_row(p, bounds: WatermarkBounds) -> tuple:
    """One ``pipeline_progress`` row from a ``StreamingQueryProgress``."""
    watermark = (p.eventTime or {}).get("watermark")
    lag_s = watermark_lag(p.timestamp, watermark)
    return (
        p.name,
        str(p.runId),
        p.batchId,
        p.timestamp,
        p.numInputRows,
        float(p.inputRowsPerSecond or 0.0),
        float(p.processedRowsPerSecond or 0.0),
        int(p.durationMs.get("triggerExecution", 0)),
        sum(op.numRowsTotal for op in p.stateOperators),
        sum(op.numRowsDroppedByWatermark for op in p.stateOperators),
        watermark,
        lag_s,
        watermark_warning(lag_s, bounds),
    )


def write_progress(spark: SparkSession, conf: Conf, rows: list[tuple]) -> None:
    """Append progress rows to ``pipeline_progress``."""
    if rows:
        (
            spark.createDataFrame(rows, schemas.PIPELINE_PROGRESS)
            .write.format("delta")
            .mode("append")
            .save(conf.table_path(tables.PIPELINE_PROGRESS))
        )


def _describe_lag(lag_s: float) -> str:
    magnitude = abs(lag_s)
    if magnitude >= 2 * 86400:
        return f"{magnitude / 86400:.0f} days"
    if magnitude >= 2 * 3600:
        return f"{magnitude / 3600:.1f} hours"
    return f"{magnitude / 60:.0f} minutes"


def warning_line(query_name: str, warning: str, lag_s: float, watermark: str) -> str:
    if warning == AHEAD:
        return (
            f"[{query_name}] WARNING: event-time watermark {watermark} is "
            f"{_describe_lag(lag_s)} ahead of the wall clock: some input claims future times; "
            "check producers' clocks and stream.max_event_time_lead"
        )
    return (
        f"[{query_name}] WARNING: event-time watermark {watermark} is {_describe_lag(lag_s)} "
        "behind the wall clock: expected when replaying history, otherwise the job is "
        "falling behind (see stream.watermark_max_lag)"
    )


class ProgressRecorder(StreamingQueryListener):
    """Prints one line per micro-batch; buffers rows for ``pipeline_progress`` if asked.

    Listener events arrive asynchronously, so a run that stops (``--available-now``) takes
    its rows from ``query.recentProgress`` instead and does not buffer here.
    """

    def __init__(self, bounds: WatermarkBounds, quiet: bool = False, buffer: bool = False) -> None:
        self._bounds = bounds
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._quiet = quiet
        self._buffer = buffer
        self._warnings: dict[str, str | None] = {}

    def onQueryStarted(self, event) -> None:  # noqa: N802 (Spark's listener API)
        if not self._quiet:
            print(f"[{event.name}] started", flush=True)

    def onQueryProgress(self, event) -> None:  # noqa: N802
        p = event.progress
        row = progress_row(p, self._bounds)
        if self._buffer:
            with self._lock:
                self._rows.append(row)
        state_rows, dropped, watermark, lag_s, warning = row[8:13]
        if warning != self._warnings.get(p.name) and lag_s is not None:
            self._warnings[p.name] = warning
            if warning:  # warnings are shown even with --quiet
                print(warning_line(p.name, warning, lag_s, watermark), flush=True)
        if not self._quiet and p.numInputRows:
            print(
                f"[{p.name}] batch {p.batchId}: {p.numInputRows:,} rows in "
                f"{row[7] / 1000:.1f} s ({row[6]:,.0f} rows/s)"
                + (f", state {state_rows:,} rows" if p.stateOperators else "")
                + (f", {dropped} late rows dropped by watermark" if dropped else "")
                + (f", watermark {watermark}" if watermark else ""),
                flush=True,
            )

    def onQueryIdle(self, event) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event) -> None:  # noqa: N802
        pass  # the runner reports failures, by query name

    def flush(self, spark: SparkSession, conf: Conf) -> None:
        """Append the buffered progress rows to ``pipeline_progress``."""
        with self._lock:
            rows, self._rows = self._rows, []
        write_progress(spark, conf, rows)
