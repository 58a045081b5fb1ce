"""Rows the pipeline passes to itself through Kafka come back as they went out."""

from __future__ import annotations

from datetime import datetime

import pyspark.sql.functions as F
from pyspark.testing import assertDataFrameEqual

from txwatch.queries.alerts import REQUIRED_FIELDS, first_per_alert
from udfs.alerts import ALERT_COLUMNS, ALERT_SCHEMA
from udfs.messages import parse_messages, to_messages
from udfs.records import RAW_KAFKA_SCHEMA

T0 = datetime(2026, 1, 5, 12, 0, 0, 123456)


def alert_row(alert_id: str, score: float, evidence: dict[str, float | None]) -> tuple:
    return (
        alert_id,
        "impossible_travel",
        score,
        "high",
        "far away",
        T0,
        T0,
        "tx-1",
        None,
        "tok",
        "1234",
        "d1",
        "Shop",
        12.5,
        "EUR",
        48.85,
        2.35,
        evidence,
    )


def as_kafka_rows(spark, messages_df, offsets=None):
    """What ``records.with_kafka_columns`` makes of the messages once in a topic."""
    rows = messages_df.collect()
    offsets = offsets or list(range(len(rows)))
    return spark.createDataFrame(
        [("alerts", 0, off, T0, r.key, r.value) for r, off in zip(rows, offsets, strict=True)],
        RAW_KAFKA_SCHEMA,
    )


def test_an_alert_survives_the_round_trip_with_microseconds_and_null_evidence(spark):
    alerts = spark.createDataFrame(
        [alert_row("a1", 12.0, {"distance_m": 400000.0, "location_accuracy_m": None})],
        ALERT_SCHEMA,
    )
    raw = as_kafka_rows(spark, to_messages(alerts, key="alert_id"))
    assert raw.first().kafka_key == "a1"
    parsed = parse_messages(raw, ALERT_SCHEMA, ("alert_id", "alert_type"))
    assert parsed.filter(F.col("quarantine_reason").isNotNull()).count() == 0
    assertDataFrameEqual(parsed.select(*ALERT_COLUMNS), alerts)


def test_a_message_that_is_not_an_alert_gets_a_reason(spark):
    raw = spark.createDataFrame(
        [
            ("alerts", 0, 0, T0, "k", "not json"),
            ("alerts", 0, 1, T0, "k", '{"alert_type": "impossible_travel"}'),
        ],
        RAW_KAFKA_SCHEMA,
    )
    reasons = [
        r.quarantine_reason
        for r in parse_messages(raw, ALERT_SCHEMA, ("alert_id", "alert_type"))
        .orderBy("kafka_offset")
        .collect()
    ]
    assert reasons[0] in ("not a JSON object", "alert_id missing; alert_type missing")
    assert reasons[1] == "alert_id missing"


def test_the_first_published_message_of_an_alert_is_the_one_kept(spark):
    alerts = spark.createDataFrame(
        [alert_row("a1", 12.0, {}), alert_row("a1", 30.0, {}), alert_row("a2", 5.0, {})],
        ALERT_SCHEMA,
    )
    raw = as_kafka_rows(spark, to_messages(alerts, key="alert_id"), offsets=[7, 9, 8])
    kept = first_per_alert(parse_messages(raw, ALERT_SCHEMA, ("alert_id", "alert_type")))
    assert sorted((r.alert_id, r.score) for r in kept.collect()) == [("a1", 12.0), ("a2", 5.0)]


def test_an_alert_without_an_event_time_is_quarantined_not_silently_dropped(spark):
    alerts = spark.createDataFrame([alert_row("a1", 12.0, {})], ALERT_SCHEMA).withColumn(
        "event_time", F.lit(None).cast("timestamp")
    )
    raw = as_kafka_rows(spark, to_messages(alerts, key="alert_id"))
    parsed = parse_messages(raw, ALERT_SCHEMA, REQUIRED_FIELDS)
    assert [r.quarantine_reason for r in parsed.collect()] == ["event_time missing"]
