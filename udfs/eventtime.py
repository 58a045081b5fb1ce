"""Event time that one bad clock cannot poison.

A record's ``event_time`` is a claim made by a phone or a terminal, and their clocks can be
wrong by hours. Spark's event-time watermark follows the largest event time it has seen, so
a single record dated tomorrow would move it a day ahead and make every honest record
"late". Stateful operators therefore watermark ``watermark_time``: the claimed event time,
but never more than ``max_lead`` past the record's Kafka timestamp (when the broker, or the
producer, saw it). Tables keep the claimed ``event_time`` as it came.
"""

from __future__ import annotations

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame

WATERMARK_TIME = "watermark_time"


def bounded_event_time(event_time: Column, kafka_timestamp: Column, max_lead: str) -> Column:
    """``event_time``, capped at ``kafka_timestamp + max_lead`` (a Spark interval string)."""
    cap = kafka_timestamp + F.expr(f"INTERVAL {max_lead}")
    # least() skips nulls: a record without a Kafka timestamp keeps its claim.
    return F.least(event_time, cap)


def with_watermark_time(df: DataFrame, max_lead: str) -> DataFrame:
    """Add ``watermark_time`` (see the module docstring) from ``event_time``/``kafka_timestamp``."""
    return df.withColumn(
        WATERMARK_TIME,
        bounded_event_time(F.col("event_time"), F.col("kafka_timestamp"), max_lead),
    )
