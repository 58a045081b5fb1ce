"""Scoring the points of one series in event-time order: the stateful operator's logic.

``SeriesDetector`` is the ``StatefulProcessor`` that ``transformWithStateInPandas`` runs
per series (grouping key ``series``). What it does with a series' points is plain Python
on plain values (``score_points``, ``fill_zeros_until``), so tests run it without Spark.

- Points are scored in event-time order: a micro-batch's points of a series are sorted
  first. A point at or before the last scored one of its series came late: it is stored
  with ``is_late`` and not scored, so the results depend only on the points in order,
  never on how they fell into micro-batches.
- Series derived from transactions have a point per minute, and a minute without
  transactions is a zero (``fill_step_ms``): zeros come for gaps between two points and,
  through an event-time timer, for minutes that closed with no point at all (an outage
  is the absence of data, and nothing else would ever score it).
- A series that stays silent for ``expiry_ms`` is forgotten: state deleted (transaction
  series: after that much event time of zeros; metrics-topic series: that much time after
  its last point reached the broker, while others still arrive).
- Incidents: a run of points outside the detector's band. ``incident_start`` and
  ``incident_points`` go with every point, so an alert can say how long it has lasted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyspark.sql.types as T
from pyspark.sql.streaming.stateful_processor import (
    ExpiredTimerInfo,
    StatefulProcessor,
    StatefulProcessorHandle,
    TimerValues,
)

from udfs.metric_detector import DetectorConfig, PointScore, SeriesState, score_point

# What the operator emits per point; ``to_metric_scores`` adds the rest of the table.
SCORED_POINT_SCHEMA = T.StructType(
    [
        T.StructField("series", T.StringType()),
        T.StructField("event_time", T.TimestampType()),
        T.StructField("value", T.DoubleType()),
        T.StructField("expected", T.DoubleType()),
        T.StructField("lower", T.DoubleType()),
        T.StructField("upper", T.DoubleType()),
        T.StructField("anomaly_score", T.DoubleType()),
        T.StructField("is_anomaly", T.BooleanType()),
        T.StructField("direction", T.IntegerType()),
        T.StructField("incident_start", T.TimestampType()),
        T.StructField("incident_points", T.IntegerType()),
        T.StructField("is_filled", T.BooleanType()),
        T.StructField("is_late", T.BooleanType()),
    ]
)
SCORED_POINT_COLUMNS = tuple(f.name for f in SCORED_POINT_SCHEMA.fields)

# One value-state row per series.
MEMORY_SCHEMA = T.StructType(
    [
        T.StructField("detector", T.BinaryType()),
        T.StructField("last_time_ms", T.LongType()),  # the last point scored (filled or not)
        T.StructField("last_event_ms", T.LongType()),  # the last point that arrived
        T.StructField("incident_start_ms", T.LongType()),  # -1 while inside the band
        T.StructField("incident_points", T.IntegerType()),
    ]
)

NO_INCIDENT = -1


@dataclass
class SeriesMemory:
    """What the operator keeps per series: the detector's state and the incident so far."""

    detector: SeriesState
    last_time_ms: int
    last_event_ms: int
    incident_start_ms: int = NO_INCIDENT
    incident_points: int = 0

    @classmethod
    def new(cls) -> SeriesMemory:
        return cls(SeriesState.new(), last_time_ms=-(2**62), last_event_ms=-(2**62))

    def to_row(self) -> tuple[bytes, int, int, int, int]:
        return (
            self.detector.to_bytes(),
            self.last_time_ms,
            self.last_event_ms,
            self.incident_start_ms,
            self.incident_points,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> SeriesMemory:
        detector, last_time_ms, last_event_ms, incident_start_ms, incident_points = row
        return cls(
            SeriesState.from_bytes(bytes(detector)),
            int(last_time_ms),
            int(last_event_ms),
            int(incident_start_ms),
            int(incident_points),
        )


@dataclass(frozen=True)
class ScoredPoint:
    time_ms: int
    value: float
    score: PointScore | None  # None for a late point
    incident_start_ms: int
    incident_points: int
    is_filled: bool = False
    is_late: bool = False


def _score(memory: SeriesMemory, time_ms: int, value: float, cfg: DetectorConfig) -> ScoredPoint:
    score = score_point(memory.detector, time_ms / 1000.0, value, cfg)
    outside = value < score.lower or value > score.upper or score.is_anomaly
    if outside:
        if memory.incident_start_ms == NO_INCIDENT:
            memory.incident_start_ms = time_ms
        memory.incident_points += 1
    else:
        memory.incident_start_ms, memory.incident_points = NO_INCIDENT, 0
    memory.last_time_ms = time_ms
    start = memory.incident_start_ms if outside else time_ms
    return ScoredPoint(time_ms, value, score, start, memory.incident_points)


def fill_zeros_until(
    memory: SeriesMemory, until_ms: int, step_ms: int, cfg: DetectorConfig
) -> list[ScoredPoint]:
    """Score a zero for every step after the last point that starts before ``until_ms``."""
    filled = []
    time_ms = memory.last_time_ms + step_ms
    while time_ms < until_ms:
        filled.append(_fill(memory, time_ms, cfg))
        time_ms += step_ms
    return filled


def _fill(memory: SeriesMemory, time_ms: int, cfg: DetectorConfig) -> ScoredPoint:
    return dataclasses.replace(_score(memory, time_ms, 0.0, cfg), is_filled=True)


def score_points(
    memory: SeriesMemory,
    points: Iterable[tuple[int, float]],
    cfg: DetectorConfig,
    fill_step_ms: int | None = None,
) -> list[ScoredPoint]:
    """Score ``(time_ms, value)`` points in time order, zeros filled between them if asked."""
    scored: list[ScoredPoint] = []
    for time_ms, value in sorted(points, key=lambda p: p[0]):
        if time_ms <= memory.last_time_ms:
            scored.append(ScoredPoint(time_ms, value, None, NO_INCIDENT, 0, is_late=True))
            continue
        if fill_step_ms is not None and memory.last_time_ms > -(2**62):
            scored += fill_zeros_until(memory, time_ms, fill_step_ms, cfg)
        scored.append(_score(memory, time_ms, value, cfg))
        memory.last_event_ms = max(memory.last_event_ms, time_ms)
    return scored


def _frame(series: str, scored: list[ScoredPoint]) -> Any:
    """The scored points as the operator's output frame (numpy columns: cheap per series)."""
    import numpy as np
    import pandas as pd

    nan = float("nan")
    scores = [p.score for p in scored]
    starts = [p.incident_start_ms for p in scored]
    incident_start = np.array(starts, dtype="int64").astype("datetime64[ms]")
    incident_start[np.array(starts) == NO_INCIDENT] = np.datetime64("NaT")
    return pd.DataFrame(
        {
            "series": [series] * len(scored),
            "event_time": np.array([p.time_ms for p in scored], dtype="datetime64[ms]"),
            "value": np.array([p.value for p in scored], dtype="float64"),
            # NaN becomes null on the way to Spark (Arrow's from_pandas)
            "expected": np.array([s.expected if s else nan for s in scores], dtype="float64"),
            "lower": np.array([s.lower if s else nan for s in scores], dtype="float64"),
            "upper": np.array([s.upper if s else nan for s in scores], dtype="float64"),
            "anomaly_score": np.array(
                [s.anomaly_score if s else nan for s in scores], dtype="float64"
            ),
            "is_anomaly": np.array([bool(s and s.is_anomaly) for s in scores], dtype="bool"),
            "direction": np.array([s.direction if s else 0 for s in scores], dtype="int32"),
            "incident_start": incident_start,
            "incident_points": np.array([p.incident_points for p in scored], dtype="int32"),
            "is_filled": np.array([p.is_filled for p in scored], dtype="bool"),
            "is_late": np.array([p.is_late for p in scored], dtype="bool"),
        },
        columns=list(SCORED_POINT_COLUMNS),
    )


def _epoch_ms(column: Any) -> Any:
    """A pandas timestamp column (naive, the session's UTC) as epoch milliseconds."""
    return column.to_numpy(dtype="datetime64[ms]").astype("int64")


class SeriesDetector(StatefulProcessor):
    """``transformWithStateInPandas`` processor: one detector per series (see module doc).

    It runs on event time in both uses; its input has ``series``, ``event_time``,
    ``value`` and ``clock``, the watermarked column its timers follow.

    - ``fill_step_ms`` set (transaction series): a point every step, zeros included;
      ``clock`` is the window start. A timer fills the minutes that closed without a
      point, and a series is forgotten after ``expiry_ms`` of zeros.
    - unset (metrics-topic series): the points are what arrives, possibly from another
      year than other series (a replay), so ``clock`` is the Kafka timestamp, not the
      point's own time; a series is forgotten ``expiry_ms`` after its last point arrived.
      Spark's processing-time TTL would do the same but keeps an ``--available-now`` run
      from ever ending (it schedules batches forever).
    """

    def __init__(self, cfg: DetectorConfig, expiry_ms: int, fill_step_ms: int | None) -> None:
        self.cfg = cfg
        self.expiry_ms = expiry_ms
        self.fill_step_ms = fill_step_ms

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.memory_state = handle.getValueState("series", MEMORY_SCHEMA)

    def _load(self) -> SeriesMemory:
        row = self.memory_state.get() if self.memory_state.exists() else None
        return SeriesMemory.new() if row is None else SeriesMemory.from_row(row)

    def _delete_timers(self, fired_ms: int | None) -> None:
        """Delete the series' timers; ``fired_ms``, the one being handled, is gone already
        (Spark still lists it, and logs a warning for deleting it)."""
        for expiry in list(self.handle.listTimers()):
            if expiry != fired_ms:
                self.handle.deleteTimer(expiry)

    def _set_timer(self, expiry_ms: int, fired_ms: int | None = None) -> None:
        self._delete_timers(fired_ms)
        self.handle.registerTimer(expiry_ms)

    def _forget(self, fired_ms: int | None = None) -> None:
        self.memory_state.clear()
        self._delete_timers(fired_ms)

    def handleInputRows(  # noqa: N802 (Spark's API names)
        self,
        key: Any,
        rows: Iterator[Any],
        timerValues: TimerValues,  # noqa: N803
    ) -> Iterator[Any]:
        import pandas as pd

        series = key[0]
        frames = list(rows)
        points_df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        times = _epoch_ms(points_df["event_time"])
        memory = self._load()
        scored = score_points(
            memory,
            zip(times.tolist(), points_df["value"].astype(float).tolist(), strict=True),
            self.cfg,
            self.fill_step_ms,
        )
        self.memory_state.update(memory.to_row())
        if self.fill_step_ms is not None:
            # The aggregation emits a minute once the watermark passes its end; when the
            # watermark passes the end of the next minute, that minute's point has come
            # (rows are handled before timers in a micro-batch) or never will.
            self._set_timer(memory.last_time_ms + 2 * self.fill_step_ms)
        else:
            self._set_timer(int(_epoch_ms(points_df["clock"]).max()) + self.expiry_ms)
        yield _frame(series, scored)

    def handleExpiredTimer(  # noqa: N802
        self,
        key: Any,
        timerValues: TimerValues,  # noqa: N803
        expiredTimerInfo: ExpiredTimerInfo,  # noqa: N803
    ) -> Iterator[Any]:
        if not self.memory_state.exists():
            return
        fired_ms = expiredTimerInfo.getExpiryTimeInMs()
        if self.fill_step_ms is None:
            self._forget(fired_ms)  # no point arrived for expiry_ms
            return
        memory = self._load()
        watermark_ms = timerValues.getCurrentWatermarkInMs()
        # Every minute whose end the watermark has reached: the aggregation emitted it in
        # this micro-batch or an earlier one if it had any transaction.
        until_ms = min(watermark_ms - self.fill_step_ms + 1, memory.last_event_ms + self.expiry_ms)
        scored = fill_zeros_until(memory, until_ms, self.fill_step_ms, self.cfg)
        if memory.last_time_ms - memory.last_event_ms >= self.expiry_ms - self.fill_step_ms:
            self._forget(fired_ms)  # zeros for expiry_ms: it starts afresh if it comes back
        else:
            self.memory_state.update(memory.to_row())
            self._set_timer(memory.last_time_ms + 2 * self.fill_step_ms, fired_ms)
        if scored:
            yield _frame(key[0], scored)

    def close(self) -> None:
        pass
