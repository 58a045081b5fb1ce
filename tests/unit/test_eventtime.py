"""Event time bounded by the Kafka timestamp, and the watermark-vs-wall-clock check."""

from __future__ import annotations

from datetime import datetime

from pyspark.testing import assertDataFrameEqual

from txwatch.infra.progress import AHEAD, BEHIND, WatermarkBounds, watermark_lag, watermark_warning
from udfs.eventtime import with_watermark_time

KAFKA_TS = datetime(2026, 1, 5, 12, 0, 0)


def test_watermark_time_caps_future_claims_and_keeps_the_rest(spark):
    rows = [
        ("honest", datetime(2026, 1, 5, 11, 59, 50), KAFKA_TS),
        ("slightly-ahead", datetime(2026, 1, 5, 12, 3, 0), KAFKA_TS),
        ("tomorrow", datetime(2026, 1, 6, 8, 0, 0), KAFKA_TS),
        ("hours-behind", datetime(2026, 1, 5, 9, 0, 0), KAFKA_TS),
        ("no-kafka-time", datetime(2026, 1, 5, 11, 0, 0), None),
    ]
    df = spark.createDataFrame(rows, "id string, event_time timestamp, kafka_timestamp timestamp")
    result = with_watermark_time(df, "5 minutes").select("id", "event_time", "watermark_time")
    expected = spark.createDataFrame(
        [
            ("honest", rows[0][1], rows[0][1]),
            ("slightly-ahead", rows[1][1], rows[1][1]),
            ("tomorrow", rows[2][1], datetime(2026, 1, 5, 12, 5, 0)),
            ("hours-behind", rows[3][1], rows[3][1]),
            ("no-kafka-time", rows[4][1], rows[4][1]),
        ],
        "id string, event_time timestamp, watermark_time timestamp",
    )
    assertDataFrameEqual(result, expected)


def test_watermark_lag_and_warning():
    bounds = WatermarkBounds(max_lead_s=600, max_lag_s=3600)
    at = "2026-01-05T12:00:00.000Z"
    assert watermark_lag(at, "2026-01-05T11:55:00.000Z") == 300.0
    assert watermark_lag(at, "1970-01-01T00:00:00.000Z") is None  # no data yet
    assert watermark_lag(at, None) is None
    assert watermark_warning(300.0, bounds) is None
    assert watermark_warning(-300.0, bounds) is None
    assert watermark_warning(watermark_lag(at, "2026-01-06T08:00:00.000Z"), bounds) == AHEAD
    assert watermark_warning(watermark_lag(at, "2026-01-05T09:00:00.000Z"), bounds) == BEHIND
    assert watermark_warning(None, bounds) is None
