"""Query ``enrich``: the enrichment-candidates topic -> ``transactions_enriched`` (silver).

The ``travel`` query joins every transaction to its device's fixes once and publishes, per
micro-batch, each transaction's nearest fix of that batch to the internal
enrichment-candidates topic. This query reads those messages and MERGEs one row per
transaction into ``transactions_enriched``: its nearest fix and the highest implied speed
seen over every batch. It is off the alert path, on its own trigger
(``stream.enrich_trigger_interval``, 30 s by default, like ingest's). The MERGE names the
batch's event-time range and the table uses deletion vectors, so a batch costs what it
holds, not what the table holds. A message repeated by a replayed travel batch changes
nothing; one that is not a candidate goes to ``quarantine``.
"""

from __future__ import annotations

from collections.abc import Callable

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.delta import event_time_range
from txwatch.infra.topics import valid_messages
from txwatch.queries import ingest, travel
from txwatch.queries.base import QuerySpec, RunContext
from udfs import schemas
from udfs.travel import combine_enriched

NAME = "enrich"


def read_candidates(spark: SparkSession, conf: Conf) -> DataFrame:
    """The enrichment-candidates topic as a stream (Kafka columns named as in every table)."""
    return ingest.read(spark, conf, (conf.kafka.topics.enrichment_candidates,))


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
        schema, required = schemas.ENRICHMENT_CANDIDATES, ("transaction_id", "event_time")
        with valid_messages(batch_df, schema, required, conf, NAME, batch_id) as messages_df:
            candidates_df = messages_df.select(*schema.fieldNames())
            in_range = event_time_range(candidates_df)
            if in_range is None:
                return
            # Several travel batches may have found fixes for the same transaction.
            merge_enriched(spark, conf, combine_enriched(candidates_df), in_range)

    return write_enrich_batch


def start(ctx: RunContext) -> StreamingQuery:
    spark, conf = ctx.spark, ctx.conf
    writer = read_candidates(spark, conf).writeStream.foreachBatch(batch_writer(spark, conf))
    interval = ctx.conf.stream.enrich_trigger_interval
    return ctx.start(ctx.with_trigger(ctx.checkpoint(writer, NAME), interval))


QUERY = QuerySpec(NAME, start, after=(travel.NAME,))
