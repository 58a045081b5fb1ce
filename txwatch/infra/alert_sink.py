"""The one alert path: every detector publishes its alerts here, to the potential-fraud topic.

A detector hands over a DataFrame shaped by ``udfs.alerts.to_alerts``. ``AlertSink.publish``
sends each alert to the ``potential-fraud`` topic as JSON, keyed by ``alert_id``, within
the detector's own micro-batch: nothing on the alert path waits for a Delta commit. The
``alerts`` query (``txwatch.queries.alerts``) then stores the topic into the Delta
``alerts`` table, one row per ``alert_id``, exactly once.

A detector may find the same alert again in a later micro-batch (impossible travel: every
new fix near a fraudulent payment shows it again). The sink remembers the ids it published
and sends each once while the job runs; at start it learns the ids stored recently. So the
topic carries an alert once, except after a crash or restart, when an alert published
but not yet stored may be published once more: consumers deduplicate on the key, as the
``alerts`` query does.
"""

from __future__ import annotations

from collections import OrderedDict

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.topics import publish
from udfs.alerts import ALERT_COLUMNS

# How many published alert ids the sink remembers (about 100 bytes each): far more alerts
# than any detector raises within the time it can find the same alert again (impossible
# travel: join_before + join_after + the watermark delay, minutes).
REMEMBERED_IDS = 100_000
# At start, the ids of the alerts stored in this much detection time before the newest.
SEED_WINDOW = "INTERVAL 1 HOUR"


class AlertSink:
    """Publishes alerts, each ``alert_id`` once; one instance per query that raises alerts."""

    def __init__(self, spark: SparkSession, conf: Conf) -> None:
        self._spark = spark
        self._conf = conf
        self._published: OrderedDict[str, None] | None = None

    def _remember(self, alert_ids: list[str]) -> None:
        published = self._published
        assert published is not None
        for alert_id in alert_ids:
            published[alert_id] = None
            published.move_to_end(alert_id)
        while len(published) > REMEMBERED_IDS:
            published.popitem(last=False)

    def _seed(self) -> None:
        """Learn the ids of the alerts stored lately (the table's newest hour)."""
        self._published = OrderedDict()
        stored_df = self._spark.read.format("delta").load(self._conf.table_path(tables.ALERTS))
        newest = stored_df.agg(F.max("detected_at")).collect()[0][0]
        if newest is None:
            return
        recent = (
            stored_df.filter(F.col("detected_at") >= F.lit(newest) - F.expr(SEED_WINDOW))
            .orderBy("detected_at")
            .select("alert_id")
            .tail(REMEMBERED_IDS)
        )
        self._remember([r.alert_id for r in recent])

    def publish(self, alerts_df: DataFrame) -> int:
        """Publish the alerts not published before; returns how many were sent.

        Alerts are few (a handful per micro-batch), so their ids come to the driver.
        """
        if self._published is None:
            self._seed()
        assert self._published is not None
        alerts_df = alerts_df.select(*ALERT_COLUMNS).persist()
        try:
            ids = [r.alert_id for r in alerts_df.select("alert_id").collect()]
            new_ids = sorted({i for i in ids if i not in self._published})
            if new_ids:
                new_df = alerts_df.filter(F.col("alert_id").isin(new_ids))
                publish(new_df, self._conf, self._conf.kafka.topics.potential_fraud, "alert_id")
                self._remember(new_ids)
            return len(new_ids)
        finally:
            alerts_df.unpersist()
