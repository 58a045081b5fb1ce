"""Query ``enrich``: bronze -> ``transactions_enriched`` + impossible-travel alerts.

Reads the two bronze tables as streams, joins each transaction to its device's location
fixes (a watermarked stream-stream join on ``watermark_time``, see ``udfs.eventtime``),
MERGEs one row per transaction into ``transactions_enriched`` and hands every detector's
alerts on these transaction/fix pairs to the alert sink.

A detector of single transactions is a transform ``(metrics_df, conf) -> alerts`` shaped
by ``udfs.alerts.to_alerts``: list it in ``DETECTORS``.
"""

from __future__ import annotations

from collections.abc import Callable

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra import tables
from txwatch.infra.alert_sink import AlertSink
from txwatch.infra.config import Conf
from txwatch.infra.delta import event_time_range
from txwatch.queries.base import QuerySpec, RunContext
from udfs.eventtime import with_watermark_time
from udfs.travel import (
    impossible_travel_alerts,
    join_transactions_to_locations,
    nearest_location_per_transaction,
    with_travel_metrics,
)

NAME = "enrich"

Detector = Callable[[DataFrame, Conf], DataFrame]

DETECTORS: tuple[Detector, ...] = (
    lambda metrics_df, conf: impossible_travel_alerts(metrics_df, conf.impossible_travel),
)


def read_bronze(spark: SparkSession, conf: Conf, table: str) -> DataFrame:
    """A bronze table as a stream, with ``watermark_time`` for the join's watermark."""
    return (
        spark.readStream.format("delta")
        .option("maxFilesPerTrigger", str(conf.stream.max_files_per_trigger))
        .load(conf.table_path(table))
        .transform(with_watermark_time, conf.stream.max_event_time_lead)
    )


def build(transactions_df: DataFrame, locations_df: DataFrame, conf: Conf) -> DataFrame:
    """Transaction/fix pairs with distance, gap and implied speed (one row per pair)."""
    pairs_df = join_transactions_to_locations(transactions_df, locations_df, conf.travel_join())
    return with_travel_metrics(pairs_df, conf.impossible_travel)


def merge_enriched(spark: SparkSession, conf: Conf, enriched_df: DataFrame, in_range: str) -> None:
    """Upsert one row per transaction, keeping the nearest fix and the highest speed seen.

    Replaying a micro-batch changes nothing: a row is only replaced by a strictly nearer
    fix, and ``max_implied_speed_mps`` only grows. A transaction's event time never
    changes, so ``in_range`` (see ``event_time_range``) is safe to add to the condition.
    """
    target = DeltaTable.forPath(spark, conf.table_path(tables.TRANSACTIONS_ENRICHED))
    columns = enriched_df.columns
    keep_max: dict[str, str | Column] = {
        "max_implied_speed_mps": "greatest(t.max_implied_speed_mps, s.max_implied_speed_mps)"
    }
    is_nearer_fix = "s.has_location AND (NOT t.has_location OR abs(s.gap_s) < abs(t.gap_s))"
    is_faster = "s.max_implied_speed_mps > coalesce(t.max_implied_speed_mps, -1.0)"
    (
        target.alias("t")
        .merge(
            enriched_df.alias("s"),
            f"t.transaction_id = s.transaction_id AND t.event_time = s.event_time AND {in_range}",
        )
        .whenMatchedUpdate(
            condition=is_nearer_fix, set={**{c: f"s.{c}" for c in columns}, **keep_max}
        )
        .whenMatchedUpdate(condition=is_faster, set=keep_max)
        .whenNotMatchedInsertAll()
        .execute()
    )


def batch_writer(spark: SparkSession, conf: Conf) -> Callable[[DataFrame, int], None]:
    """The ``foreachBatch`` function of the enrich query."""
    alert_sink = AlertSink(spark, conf)

    def write_enrich_batch(batch_df: DataFrame, batch_id: int) -> None:
        metrics_df = batch_df.persist()
        try:
            in_range = event_time_range(metrics_df)
            if in_range is None:  # a batch that only moved the watermark
                return
            merge_enriched(spark, conf, nearest_location_per_transaction(metrics_df), in_range)
            for detector in DETECTORS:
                alert_sink.save(detector(metrics_df, conf))
        finally:
            metrics_df.unpersist()

    return write_enrich_batch


def start(ctx: RunContext) -> StreamingQuery:
    spark, conf = ctx.spark, ctx.conf
    metrics_df = build(
        read_bronze(spark, conf, tables.BRONZE_TRANSACTIONS),
        read_bronze(spark, conf, tables.BRONZE_DEVICE_LOCATIONS),
        conf,
    )
    writer = metrics_df.writeStream.foreachBatch(batch_writer(spark, conf))
    return ctx.with_trigger(ctx.checkpoint(writer, NAME)).start()


QUERY = QuerySpec(NAME, (tables.TRANSACTIONS_ENRICHED, tables.ALERTS), start)
