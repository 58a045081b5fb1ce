"""Queries ``metric_windows`` and ``metric_points``: anomalies in series, per series.

- ``metric_windows`` reads the transactions topic, keeps the valid transactions (the same
  parse and checks as ``ingest``), counts them and sums their amounts per minute, status
  and merchant category (``udfs.metrics.transaction_series_points``) and scores every
  series, zeros filled for minutes without transactions.
- ``metric_points`` reads the metrics topic (any series a user sends: ``series``,
  ``event_time``, ``value``) and scores its valid points; ``ingest`` quarantines the rest.

Both run the same per-series detector (``udfs.series_scoring.SeriesDetector`` around
``udfs.metric_detector``, one configuration for every series) and write the same way: each
detection to the alert sink (one alert per incident), every scored point to
``metric_scores``, and, for the transaction series, every minute to ``metric_values``.
Delta appends carry ``txnAppId``/``txnVersion``: a replayed micro-batch is not stored twice.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra import tables
from txwatch.infra.alert_sink import AlertSink
from txwatch.infra.config import Conf, duration_s
from txwatch.infra.delta import append_once
from txwatch.queries import ingest
from txwatch.queries.base import QuerySpec, RunContext
from udfs.eventtime import with_watermark_time
from udfs.metric_detector import DetectorConfig
from udfs.metrics import (
    SOURCE_METRICS_TOPIC,
    SOURCE_TRANSACTIONS,
    metric_alerts,
    score_series,
    to_metric_scores,
    to_metric_values,
    transaction_series_points,
)
from udfs.records import (
    parse_metric_points,
    parse_transactions,
    to_bronze_transactions,
    to_metric_points,
)

WINDOWS_NAME = "metric_windows"
POINTS_NAME = "metric_points"

# The one configuration of the detector, for every series (udfs/metric_detector.py).
DETECTOR = DetectorConfig()


def _ms(duration: str) -> int:
    return int(duration_s(duration) * 1000)


def build_windows(raw_transactions_df: DataFrame, conf: Conf) -> DataFrame:
    """Raw Kafka rows of the transactions topic -> scored per-minute points of every series."""
    stream = conf.stream
    transactions_df = to_bronze_transactions(
        parse_transactions(raw_transactions_df, conf.privacy.token_key_env, stream.max_future_skew)
    )
    points_df = transaction_series_points(
        with_watermark_time(transactions_df, stream.max_event_time_lead),
        conf.metrics.window,
        conf.metrics.watermark,
    )
    return score_series(
        points_df, DETECTOR, _ms(conf.metrics.series_expiry), fill_step_ms=_ms(conf.metrics.window)
    )


def build_points(raw_metrics_df: DataFrame, conf: Conf) -> DataFrame:
    """Raw Kafka rows of the metrics topic -> the valid points, scored."""
    points_df = to_metric_points(parse_metric_points(raw_metrics_df, conf.stream.max_future_skew))
    return score_series(
        points_df,
        DETECTOR,
        _ms(conf.metrics.series_expiry),
        fill_step_ms=None,
        clock_watermark=conf.metrics.watermark,
    )


def batch_writer(
    sink: AlertSink, conf: Conf, query_name: str, source: str
) -> Callable[[DataFrame, int], None]:
    """The ``foreachBatch`` function: alerts first (they are due), then the tables."""
    window = conf.metrics.window if source == SOURCE_TRANSACTIONS else None

    def write_metrics_batch(scores_df: DataFrame, batch_id: int) -> None:
        # Persisted: every action on an uncached batch would run the Python operator again.
        scores_df = scores_df.persist()
        try:
            sink.publish(metric_alerts(scores_df, window))
            append_once(
                to_metric_scores(scores_df, source),
                conf,
                tables.METRIC_SCORES,
                query_name,
                batch_id,
            )
            if window is not None:
                append_once(
                    to_metric_values(scores_df, window),
                    conf,
                    tables.METRIC_VALUES,
                    query_name,
                    batch_id,
                )
        finally:
            scores_df.unpersist()

    return write_metrics_batch


def _start(ctx: RunContext, name: str, source: str, scores_df: DataFrame) -> StreamingQuery:
    sink = AlertSink(ctx.spark, ctx.conf)
    writer = scores_df.writeStream.foreachBatch(batch_writer(sink, ctx.conf, name, source))
    return ctx.start(
        ctx.with_trigger(ctx.checkpoint(writer, name), ctx.conf.metrics.trigger_interval)
    )


def start_windows(ctx: RunContext) -> StreamingQuery:
    raw_df = ingest.read(ctx.spark, ctx.conf, (ctx.conf.kafka.topics.transactions,))
    return _start(ctx, WINDOWS_NAME, SOURCE_TRANSACTIONS, build_windows(raw_df, ctx.conf))


def start_points(ctx: RunContext) -> StreamingQuery:
    raw_df = ingest.read(ctx.spark, ctx.conf, (ctx.conf.kafka.topics.metrics,))
    return _start(ctx, POINTS_NAME, SOURCE_METRICS_TOPIC, build_points(raw_df, ctx.conf))


WINDOWS_QUERY = QuerySpec(WINDOWS_NAME, start_windows)
POINTS_QUERY = QuerySpec(POINTS_NAME, start_points)
