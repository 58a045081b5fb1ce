"""Series from transactions, the per-series detector, and what its scores become.

- ``transaction_series_points``: per-minute event-time windows over the transactions:
  count and amount per status and per merchant category, as points of series named
  ``<metric>:<dimension>=<value>`` (``tx_count:status=failed``).
- ``score_series``: every series through one ``SeriesDetector`` (``udfs.series_scoring``)
  keyed by series, with ``transformWithStateInPandas``.
- ``to_metric_values``, ``to_metric_scores``: the scored points as the two tables.
- ``metric_alerts``: each detection as a ``metric_spike``, ``metric_dip`` or
  ``metric_outage`` alert, one per incident, with the numbers in its reason.
"""

from __future__ import annotations

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame

from udfs.alerts import to_alerts
from udfs.eventtime import WATERMARK_TIME
from udfs.metric_detector import DetectorConfig
from udfs.schemas import METRIC_SCORES, METRIC_VALUES
from udfs.series_scoring import SCORED_POINT_SCHEMA, SeriesDetector

ALERT_TYPE_SPIKE = "metric_spike"
ALERT_TYPE_DIP = "metric_dip"
ALERT_TYPE_OUTAGE = "metric_outage"
METRIC_ALERT_TYPES = (ALERT_TYPE_SPIKE, ALERT_TYPE_DIP, ALERT_TYPE_OUTAGE)

SOURCE_TRANSACTIONS = "transactions"
SOURCE_METRICS_TOPIC = "metrics"


def _transaction_metrics() -> tuple[tuple[str, Column], ...]:
    """(metric, how a window's transactions become its value)."""
    return (("tx_count", F.count(F.lit(1))), ("tx_amount", F.sum("amount")))


def _transaction_dimensions() -> tuple[tuple[str, Column], ...]:
    """(dimension, the column it groups by); a missing category is its own value."""
    return (
        ("status", F.col("status")),
        ("merchant_category", F.coalesce(F.col("merchant_category"), F.lit("unknown"))),
    )


def series_name(metric: Column, dimension: Column, dimension_value: Column) -> Column:
    return F.concat(metric, F.lit(":"), dimension, F.lit("="), dimension_value)


def transaction_series_points(transactions_df: DataFrame, window: str, watermark: str) -> DataFrame:
    """Per-window count and amount of transactions per status and per merchant category.

    ``transactions_df`` is bronze-shaped with ``watermark_time`` (``udfs.eventtime``); the
    windows are on it, so one terminal with a bad clock cannot open windows hours ahead.
    A window is emitted once the watermark passes its end (append mode): a transaction
    later than ``watermark`` is counted by Spark as dropped, not added to a closed minute.
    Output: ``series``, ``event_time`` (window start), ``value``.
    """
    by_dimension = F.explode(
        F.array(
            *[
                F.struct(F.lit(name).alias("dimension"), column.alias("dimension_value"))
                for name, column in _transaction_dimensions()
            ]
        )
    )
    windows_df = (
        transactions_df.withWatermark(WATERMARK_TIME, watermark)
        .select(WATERMARK_TIME, "amount", by_dimension.alias("d"))
        .groupBy(F.window(WATERMARK_TIME, window), "d.dimension", "d.dimension_value")
        .agg(*[agg.alias(metric) for metric, agg in _transaction_metrics()])
    )
    by_metric = F.explode(
        F.array(
            *[
                F.struct(F.lit(metric).alias("metric"), F.col(metric).cast("double").alias("value"))
                for metric, _ in _transaction_metrics()
            ]
        )
    )
    return windows_df.select("window", "dimension", "dimension_value", by_metric.alias("m")).select(
        series_name(F.col("m.metric"), F.col("dimension"), F.col("dimension_value")).alias(
            "series"
        ),
        F.col("window.start").alias("event_time"),
        F.col("m.value").alias("value"),
    )


def score_series(
    points_df: DataFrame,
    cfg: DetectorConfig,
    expiry_ms: int,
    fill_step_ms: int | None,
    clock_watermark: str | None = None,
) -> DataFrame:
    """Every point of ``points_df`` (``series``, ``event_time``, ``value``) scored in order.

    With ``fill_step_ms`` (transaction series) the input's ``event_time`` carries the
    watermark and missing steps become zeros. Without (metrics topic), the operator's
    clock is the points' ``kafka_timestamp``, watermarked ``clock_watermark`` behind.
    """
    if fill_step_ms is not None:
        clocked_df = points_df.select(
            "series", "event_time", "value", F.col("event_time").alias("clock")
        )
    else:
        clocked_df = points_df.withWatermark(
            "kafka_timestamp", clock_watermark or "1 minute"
        ).select("series", "event_time", "value", F.col("kafka_timestamp").alias("clock"))
    return clocked_df.groupBy("series").transformWithStateInPandas(
        statefulProcessor=SeriesDetector(cfg, expiry_ms, fill_step_ms),
        outputStructType=SCORED_POINT_SCHEMA,
        outputMode="Append",
        timeMode="EventTime",
    )


def to_metric_values(scores_df: DataFrame, window: str) -> DataFrame:
    """The scored points of transaction series as ``metric_values`` rows."""
    parts = F.split(F.col("series"), "[:=]", 3)
    return (
        scores_df.filter(~F.col("is_late"))
        .select(
            "series",
            parts[0].alias("metric"),
            parts[1].alias("dimension"),
            parts[2].alias("dimension_value"),
            F.col("event_time").alias("window_start"),
            (F.col("event_time") + F.expr(f"INTERVAL {window}")).alias("window_end"),
            "value",
            "is_filled",
            F.current_timestamp().alias("computed_at"),
        )
        .select(*METRIC_VALUES.fieldNames())
    )


def to_metric_scores(scores_df: DataFrame, source: str) -> DataFrame:
    """The operator's output as ``metric_scores`` rows."""
    return scores_df.select(
        "*", F.lit(source).alias("source"), F.current_timestamp().alias("scored_at")
    ).select(*METRIC_SCORES.fieldNames())


def _number(column: Column) -> Column:
    """A value for a sentence: whole numbers as such, others with 3 significant digits."""
    rounded = F.round(column, 0)
    return F.when(F.abs(column - rounded) < 1e-9, F.format_number(rounded, 0)).otherwise(
        F.format_string("%.3g", column)
    )


def metric_alerts(scores_df: DataFrame, step: str | None) -> DataFrame:
    """One alert per detection (the detector flags an incident once), typed by direction.

    ``step``: the series' resolution ("1 minute") when known: reasons then say "41/min";
    metrics-topic series say "41" and count points.
    """
    detected_df = scores_df.filter(F.col("is_anomaly") & ~F.col("is_late"))
    is_outage = (F.col("direction") < 0) & (F.col("value") == 0) & (F.col("expected") > 0)
    alert_type = (
        F.when(is_outage, F.lit(ALERT_TYPE_OUTAGE))
        .when(F.col("direction") < 0, F.lit(ALERT_TYPE_DIP))
        .otherwise(F.lit(ALERT_TYPE_SPIKE))
    )
    per_step = "/min" if step == "1 minute" else ""
    duration = (
        F.format_string("for %d min", F.col("incident_points"))
        if step == "1 minute"
        else F.format_string("for %d points", F.col("incident_points"))
    )
    reason = F.concat_ws(
        " ",
        F.concat(F.col("series"), F.lit(":")),
        F.concat(_number(F.col("value")), F.lit(per_step)),
        F.lit("vs expected"),
        _number(F.col("expected")),
        F.concat(
            F.lit("["), _number(F.col("lower")), F.lit(", "), _number(F.col("upper")), F.lit("]")
        ),
        duration,
    )
    subject = F.concat_ws(
        "@",
        F.col("series"),
        F.date_format(F.coalesce("incident_start", "event_time"), "yyyy-MM-dd'T'HH:mm:ss.SSS"),
    )
    # How far outside the band, in half-bands (expected to the band's edge on that side):
    # an outage, or three half-bands and more, is high.
    half_band = F.when(F.col("direction") < 0, F.col("expected") - F.col("lower")).otherwise(
        F.col("upper") - F.col("expected")
    )
    distance = F.abs(F.col("value") - F.col("expected")) / F.greatest(half_band, F.lit(1e-9))
    severity = (
        F.when(is_outage | (distance >= 3), F.lit("high"))
        .when(distance >= 1.5, F.lit("medium"))
        .otherwise(F.lit("low"))
    )
    return to_alerts(
        detected_df,
        alert_type=alert_type,
        subject_id=subject,
        score=F.col("anomaly_score"),
        severity=severity,
        reason=reason,
        evidence={
            "value": F.col("value"),
            "expected": F.col("expected"),
            "lower": F.col("lower"),
            "upper": F.col("upper"),
            "incident_points": F.col("incident_points"),
        },
    )
