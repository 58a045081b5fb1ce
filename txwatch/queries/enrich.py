"""Query ``enrich``: bronze -> ``transactions_enriched`` (silver).

Reads the two bronze tables as streams, joins each transaction to its device's location
fixes with the same join as the ``travel`` query (``txwatch.queries.travel.build_pairs``)
and MERGEs one row per transaction into ``transactions_enriched``: its nearest fix and the
highest implied speed seen. Alerts do not wait for this query: ``travel`` raises them
straight from Kafka. The MERGE names the batch's event-time range and the table uses
deletion vectors, so a batch rewrites no files of the rows it does not change.
"""

from __future__ import annotations

from collections.abc import Callable

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.delta import event_time_range
from txwatch.queries.base import QuerySpec, RunContext
from txwatch.queries.travel import build_pairs
from udfs.travel import nearest_location_per_transaction

NAME = "enrich"


def read_bronze(spark: SparkSession, conf: Conf, table: str) -> DataFrame:
    """A bronze table as a stream."""
    return (
        spark.readStream.format("delta")
        .option("maxFilesPerTrigger", str(conf.stream.max_files_per_trigger))
        .load(conf.table_path(table))
    )


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

    def write_enrich_batch(batch_df: DataFrame, batch_id: int) -> None:
        pairs_df = batch_df.persist()
        try:
            in_range = event_time_range(pairs_df)
            if in_range is None:  # a batch that only moved the watermark
                return
            merge_enriched(spark, conf, nearest_location_per_transaction(pairs_df), in_range)
        finally:
            pairs_df.unpersist()

    return write_enrich_batch


def start(ctx: RunContext) -> StreamingQuery:
    spark, conf = ctx.spark, ctx.conf
    pairs_df = build_pairs(
        read_bronze(spark, conf, tables.BRONZE_TRANSACTIONS),
        read_bronze(spark, conf, tables.BRONZE_DEVICE_LOCATIONS),
        conf,
    )
    writer = pairs_df.writeStream.foreachBatch(batch_writer(spark, conf))
    return ctx.start(ctx.with_trigger(ctx.checkpoint(writer, NAME)))


QUERY = QuerySpec(NAME, (tables.TRANSACTIONS_ENRICHED,), start)
