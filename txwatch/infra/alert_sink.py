"""The one alert sink: every detector's alerts go to Kafka and to the Delta ``alerts`` table.

A detector hands over a DataFrame shaped by ``udfs.alerts.to_alerts``; the sink keeps the
alerts not stored yet (an anti-join on ``alert_id`` with the stored alerts of the batch's
event-time range, so the cost follows the batch, not the table), publishes them to the
``potential-fraud`` topic (keyed by ``alert_id``) and appends them to ``alerts`` with
Delta's ``txnAppId``/``txnVersion``, so a replayed micro-batch is not stored twice.
Publishing comes first: a crash between the two republishes on restart (the topic is
at-least-once, consumers deduplicate on the key) but never loses an alert; the table holds
each alert once.
"""

from __future__ import annotations

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.delta import append_once, event_time_range
from udfs.alerts import ALERT_COLUMNS


class AlertSink:
    """Stores and publishes alerts; one instance per streaming query that raises alerts.

    ``writer_id`` (the query's name) keeps the queries' idempotent appends apart.
    """

    def __init__(self, spark: SparkSession, conf: Conf, writer_id: str) -> None:
        self._spark = spark
        self._conf = conf
        self._writer_id = writer_id

    def publish(self, alerts_df: DataFrame) -> None:
        """Send alerts as JSON to the alert topic, keyed by ``alert_id``."""
        conf = self._conf
        (
            alerts_df.select(
                F.col("alert_id").alias("key"),
                F.to_json(F.struct(*[F.col(c) for c in ALERT_COLUMNS])).alias("value"),
            )
            .write.format("kafka")
            .options(**conf.kafka_options())
            .option("topic", conf.kafka.topics.potential_fraud)
            .save()
        )

    def save(self, alerts_df: DataFrame, batch_id: int) -> int:
        """Publish and store the alerts of micro-batch ``batch_id`` not stored yet.

        Returns how many were new. ``alerts_df`` must be deterministic for a batch id
        (Spark replays a micro-batch with the same input and state after a crash).
        """
        alerts_df = alerts_df.select(*ALERT_COLUMNS).persist()
        try:
            in_range = event_time_range(alerts_df)
            if in_range is None:
                return 0
            path = self._conf.table_path(tables.ALERTS)
            stored_df = (
                self._spark.read.format("delta")
                .load(path)
                .alias("t")
                .filter(F.expr(in_range))
                .select("alert_id")
            )
            new_alerts_df = alerts_df.join(stored_df, on="alert_id", how="left_anti").persist()
            try:
                count = new_alerts_df.count()
                if count:
                    self.publish(new_alerts_df)
                    append_once(new_alerts_df, self._conf, tables.ALERTS, self._writer_id, batch_id)
                return count
            finally:
                new_alerts_df.unpersist()
        finally:
            alerts_df.unpersist()
