"""Query ``alerts``: the potential-fraud topic -> the Delta ``alerts`` table, exactly once.

Every detector publishes through ``txwatch.infra.alert_sink``; this query stores what was
published. Per micro-batch it keeps each ``alert_id``'s first message (the topic is keyed
by ``alert_id``, so repeats of an alert sit in one partition, in order), drops the alerts
already stored (an anti-join with the stored alerts of the batch's event-time range, so the
cost follows the batch, not the table) and appends the rest with Delta's
``txnAppId``/``txnVersion``: a replayed micro-batch is not stored twice. A message that is
not an alert goes to ``quarantine`` with the reason.

It runs on ``stream.alert_table_trigger_interval`` (seconds), in a scheduler pool of its own
(``alert_table``): below the alert path's, above the other table writers'.
"""

from __future__ import annotations

from collections.abc import Callable

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.delta import append_once, event_time_range
from txwatch.infra.topics import valid_messages
from txwatch.queries import ingest, metrics, payment_scoring, travel
from txwatch.queries.base import ALERT_TABLE_POOL, QuerySpec, RunContext
from udfs.alerts import ALERT_COLUMNS, ALERT_SCHEMA

NAME = "alerts"
# What an alert message must hold to be stored; one without is quarantined with the reason.
# ``event_time`` too: a batch's alerts are matched with the stored ones within their
# event-time range, which alerts without one would leave empty (and them unstored).
REQUIRED_FIELDS = ("alert_id", "alert_type", "event_time")


def first_per_alert(messages_df: DataFrame) -> DataFrame:
    """Valid alert messages, one per ``alert_id``: the earliest published."""
    first_first = Window.partitionBy("alert_id").orderBy("kafka_partition", "kafka_offset")
    return (
        messages_df.withColumn("_rank", F.row_number().over(first_first))
        .filter(F.col("_rank") == 1)
        .select(*ALERT_COLUMNS)
    )


def store_new_alerts(spark: SparkSession, conf: Conf, alerts_df: DataFrame, batch_id: int) -> None:
    """Append the alerts of ``alerts_df`` (valid messages with their Kafka columns, as
    ``valid_messages`` yields them; an id possibly repeated) that ``alerts`` does not hold
    yet, each id once (its first message).

    A batch job that raises alerts (``similarity``) stores them itself before publishing
    them: this query then finds them stored and skips them.
    """
    # The range of every message's event time covers that of the first message per id, and
    # needs no window (``first_per_alert``'s shuffle) to find.
    in_range = event_time_range(alerts_df)
    if in_range is None:
        return
    stored_df = (
        spark.read.format("delta")
        .load(conf.table_path(tables.ALERTS))
        .alias("t")
        .filter(F.expr(in_range))
        .select("alert_id")
    )
    new_df = first_per_alert(alerts_df).join(stored_df, on="alert_id", how="left_anti")
    append_once(new_df, conf, tables.ALERTS, NAME, batch_id)


def batch_writer(spark: SparkSession, conf: Conf) -> Callable[[DataFrame, int], None]:
    """The ``foreachBatch`` function of the alerts query."""

    def write_alerts_batch(batch_df: DataFrame, batch_id: int) -> None:
        with valid_messages(
            batch_df, ALERT_SCHEMA, REQUIRED_FIELDS, conf, NAME, batch_id
        ) as alerts_df:
            store_new_alerts(spark, conf, alerts_df, batch_id)

    return write_alerts_batch


def start(ctx: RunContext) -> StreamingQuery:
    spark, conf = ctx.spark, ctx.conf
    source = ingest.read(spark, conf, (conf.kafka.topics.potential_fraud,))
    writer = source.writeStream.foreachBatch(batch_writer(spark, conf))
    interval = conf.stream.alert_table_trigger_interval
    writer = ctx.with_trigger(ctx.checkpoint(writer, NAME), interval)
    return ctx.start(writer, ALERT_TABLE_POOL)


# Every query that publishes alerts: an --available-now run stores them once they are done.
QUERY = QuerySpec(
    NAME,
    start,
    after=(
        travel.NAME,
        metrics.WINDOWS_NAME,
        metrics.POINTS_NAME,
        payment_scoring.NAME,
    ),
    starts_first=True,
)
