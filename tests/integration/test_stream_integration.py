"""The alert path end to end (ingest, travel, alerts, enrich): real broker, real Spark
streaming, real Delta tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyspark.sql.functions as F
import pytest
from pyspark.testing import assertDataFrameEqual

from tests.conftest import TEST_TOKEN_KEY
from tests.integration.kafka_helpers import TRAVEL_PATH, consume_all, produce, run_pipeline
from txwatch.infra import tables
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.lake import read_table
from udfs.geo import haversine_m_py
from udfs.privacy import id_token_py

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
PARIS = (48.8566, 2.3522)
LYON = (45.7640, 4.8357)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def tx(tx_id: str, device: str, at: datetime, pos=PARIS, **extra) -> dict:
    return {
        "transaction_id": tx_id,
        "user_id": f"u-{device}",
        "card_number": "4111111111111111",
        "device_id": device,
        "merchant": "Shop",
        "amount": 20.0,
        "currency": "EUR",
        "status": "approved",
        "latitude": pos[0],
        "longitude": pos[1],
        "event_time": iso(at),
        **extra,
    }


def fixes(device: str, start: datetime, seconds: int, every: int = 10, pos=PARIS) -> list[dict]:
    return [
        {
            "device_id": device,
            "latitude": pos[0],
            "longitude": pos[1],
            "horizontal_accuracy": 8.0,
            "speed": 0.0,
            "event_time": iso(start + timedelta(seconds=s)),
        }
        for s in range(0, seconds, every)
    ]


def table(spark, conf, name):
    return read_table(spark, conf, name)


def test_join_across_micro_batches_alerts_once_and_publishes(spark, kafka_conf):
    conf = kafka_conf
    topics = conf.kafka.topics
    ensure_topics(conf)
    # First run: the payments arrive, the phone's fixes have not yet.
    produce(
        conf,
        topics.transactions,
        [
            tx("legit", "d1", T0),
            tx("fraud", "d1", T0 + timedelta(seconds=60), pos=LYON),
        ],
        key_field="user_id",
    )
    run_pipeline(spark, conf, TRAVEL_PATH)
    assert table(spark, conf, tables.BRONZE_TRANSACTIONS).count() == 2
    assert table(spark, conf, tables.TRANSACTIONS_ENRICHED).count() == 0
    # Second run: the fixes arrive in a later micro-batch and complete the join.
    produce(
        conf,
        topics.device_locations,
        fixes("d1", T0 - timedelta(seconds=60), 240),
        key_field="device_id",
    )
    run_pipeline(spark, conf, TRAVEL_PATH)
    enriched = table(spark, conf, tables.TRANSACTIONS_ENRICHED).select(
        "transaction_id", "has_location", F.floor(F.col("distance_m") / 1000).alias("km"), "gap_s"
    )
    expected = spark.createDataFrame(
        [("legit", True, 0, 0.0), ("fraud", True, int(haversine_m_py(*PARIS, *LYON) // 1000), 0.0)],
        "transaction_id string, has_location boolean, km long, gap_s double",
    )
    assertDataFrameEqual(enriched, expected)
    alerts = table(spark, conf, tables.ALERTS)
    assertDataFrameEqual(
        alerts.select("transaction_id", "alert_type", "severity"),
        spark.createDataFrame(
            [("fraud", "impossible_travel", "high")],
            "transaction_id string, alert_type string, severity string",
        ),
    )
    # The alert went to the potential-fraud topic as JSON, keyed by its alert_id.
    published = consume_all(conf, topics.potential_fraud, expected=1)
    assert len(published) == 1
    message = json.loads(published[0].value)
    assert published[0].key.decode() == message["alert_id"] == alerts.first().alert_id
    device = id_token_py("d1", "device_id", TEST_TOKEN_KEY)  # no id in the clear outside bronze
    assert message["transaction_id"] == "fraud" and f"km from device {device}" in message["reason"]
    assert message["device_id"] == device and message["user_id"].startswith("u_")
    # Re-running with nothing new changes nothing: no second alert, no second message.
    produce(
        conf,
        topics.device_locations,
        fixes("d1", T0 + timedelta(seconds=180), 30),
        key_field="device_id",
    )
    run_pipeline(spark, conf, TRAVEL_PATH)
    assert table(spark, conf, tables.ALERTS).count() == 1
    assert len(consume_all(conf, topics.potential_fraud, timeout_s=4)) == 1


def test_data_later_than_the_watermark_stays_in_bronze_and_is_counted(spark, kafka_conf):
    conf = kafka_conf
    topics = conf.kafka.topics
    ensure_topics(conf)
    later = T0 + timedelta(hours=1)
    produce(
        conf,
        topics.device_locations,
        fixes("d2", T0 - timedelta(minutes=1), 180)
        + fixes("d2", later - timedelta(minutes=1), 180),
    )
    produce(conf, topics.transactions, [tx("on-time", "d2", T0), tx("next-hour", "d2", later)])
    run_pipeline(spark, conf, TRAVEL_PATH)  # the watermark is now about an hour past T0
    # A payment from T0 + 1 min shows up only now: far behind the watermark.
    produce(conf, topics.transactions, [tx("late", "d2", T0 + timedelta(minutes=1))])
    recorder_rows_before = (
        table(spark, conf, tables.PIPELINE_PROGRESS)
        .agg(F.sum("rows_dropped_by_watermark"))
        .first()[0]
        or 0
    )
    run_pipeline(spark, conf, TRAVEL_PATH)
    bronze_ids = {
        r.transaction_id for r in table(spark, conf, tables.BRONZE_TRANSACTIONS).collect()
    }
    enriched_ids = {
        r.transaction_id for r in table(spark, conf, tables.TRANSACTIONS_ENRICHED).collect()
    }
    assert bronze_ids == {"on-time", "next-hour", "late"}
    assert enriched_ids == {"on-time", "next-hour"}
    dropped = (
        table(spark, conf, tables.PIPELINE_PROGRESS)
        .agg(F.sum("rows_dropped_by_watermark"))
        .first()[0]
    )
    assert dropped - recorder_rows_before >= 1


def test_malformed_records_land_in_quarantine_and_nothing_is_lost(spark, kafka_conf):
    conf = kafka_conf
    topics = conf.kafka.topics
    ensure_topics(conf)
    good = tx("ok", "d3", T0)
    values = [
        good,
        '{"transaction_id": "broken", "card_number": "4111 1111 1111 1111", "amo',
        {k: v for k, v in tx("no-amount", "d3", T0).items() if k != "amount"},
        tx("bad-lat", "d3", T0, pos=(123.0, 2.0)),
        tx("bad-type", "d3", T0, amount="lots"),
        "not json at all",
    ]
    produce(conf, topics.transactions, values)
    produce(conf, topics.device_locations, ['{"device_id": "d3", "latitude": "north"}'])
    run_pipeline(spark, conf, TRAVEL_PATH)
    quarantine = table(spark, conf, tables.QUARANTINE)
    result = quarantine.select("kafka_topic", "reason")
    expected = spark.createDataFrame(
        [
            (topics.transactions, "malformed_json"),
            (topics.transactions, "missing_field:amount"),
            (topics.transactions, "out_of_range:latitude"),
            (topics.transactions, "invalid_type:amount"),
            (topics.transactions, "malformed_json"),
            (
                topics.device_locations,
                "invalid_type:latitude; missing_field:longitude; missing_field:event_time",
            ),
        ],
        "kafka_topic string, reason string",
    )
    assertDataFrameEqual(result, expected)
    # Every record is accounted for, by topic, partition and offset.
    bronze = table(spark, conf, tables.BRONZE_TRANSACTIONS)
    assert (
        bronze.count() + quarantine.filter(F.col("kafka_topic") == topics.transactions).count() == 6
    )
    assert (
        quarantine.select("kafka_topic", "kafka_partition", "kafka_offset").distinct().count() == 6
    )
    raw_values = " ".join(r.raw_value for r in quarantine.collect())
    assert "4111111111111111" not in raw_values and "4111 1111 1111 1111" not in raw_values
    assert "****1111" in raw_values
