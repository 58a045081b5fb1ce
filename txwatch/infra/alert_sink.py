"""The one alert sink: every detector's alerts go to Kafka and to the Delta ``alerts`` table.

A detector hands over a DataFrame shaped by ``udfs.alerts.to_alerts``; the sink keeps the
alerts not stored yet, publishes them to the ``potential-fraud`` topic (keyed by
``alert_id``) and MERGEs them into ``alerts`` on ``alert_id``. Publishing comes first: a
crash between the two republishes on restart (the topic is at-least-once, consumers
deduplicate on the key) but never loses an alert; the table holds each alert once.
"""

from __future__ import annotations

import pyspark.sql.functions as F
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.delta import event_time_range
from udfs.alerts import ALERT_COLUMNS


class AlertSink:
    """Stores and publishes alerts; one instance per streaming query that raises alerts."""

    def __init__(self, spark: SparkSession, conf: Conf) -> None:
        self._spark = spark
        self._conf = conf

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

    def save(self, alerts_df: DataFrame) -> int:
        """Publish and store the alerts of ``alerts_df`` not stored yet; return how many."""
        alerts_df = alerts_df.select(*ALERT_COLUMNS)
        in_range = event_time_range(alerts_df)
        if in_range is None:
            return 0
        target = DeltaTable.forPath(self._spark, self._conf.table_path(tables.ALERTS))
        stored_df = target.toDF().alias("t").filter(F.expr(in_range)).select("alert_id")
        new_alerts_df = alerts_df.join(stored_df, on="alert_id", how="left_anti").persist()
        try:
            count = new_alerts_df.count()
            if count:
                self.publish(new_alerts_df)
                (
                    target.alias("t")
                    .merge(new_alerts_df.alias("s"), f"t.alert_id = s.alert_id AND {in_range}")
                    .whenNotMatchedInsertAll()
                    .execute()
                )
            return count
        finally:
            new_alerts_df.unpersist()
