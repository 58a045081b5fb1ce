"""One bad clock must not blind the detector for everyone else.

A phone in a café reports a fix every 10 s for 40 minutes; its owner pays near it every
2 minutes; in the second 20 minutes the card is also used ten times 500 km away. The
records reach Kafka live (Kafka timestamp = event time) and are streamed in two
``--available-now`` runs, the first 20 minutes and then the rest. All ten frauds must be
caught although the first part holds one transaction and one fix of another device dated
20 hours ahead (accepted: inside ``max_future_skew``), and a third phone whose clock runs
three hours behind keeps reporting. (The same records without the bad clocks are a subset
of this case, with a subset of its checks: the alert path's other tests cover them.)
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pyspark.sql.functions as F
import pytest
from kafka import KafkaProducer

from tests.integration.kafka_helpers import TRAVEL_PATH, run_pipeline
from txwatch.infra import tables
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.infra.progress import AHEAD
from txwatch.lake import read_table
from txwatch.queries import metrics

pytestmark = pytest.mark.kafka

CAFE = (48.8530, 2.3499)
BORDEAUX = (44.8378, -0.5792)  # ~500 km from the café
START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=45)
FUTURE = timedelta(hours=20)
SLOW_CLOCK = timedelta(hours=3)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def fix(device: str, at: datetime, pos=CAFE) -> dict:
    return {
        "device_id": device,
        "latitude": pos[0],
        "longitude": pos[1],
        "horizontal_accuracy": 12.0,
        "speed": 0.0,
        "event_time": iso(at),
    }


def payment(tx_id: str, device: str, at: datetime, pos=CAFE) -> dict:
    return {
        "transaction_id": tx_id,
        "user_id": f"u-{device}",
        "card_number": "4111111111111111",
        "device_id": device,
        "merchant": "Café de Flore" if pos == CAFE else "Bordeaux electronics",
        "amount": 4.5 if pos == CAFE else 899.0,
        "currency": "EUR",
        "status": "approved",
        "latitude": pos[0],
        "longitude": pos[1],
        "event_time": iso(at),
    }


def cafe_records() -> tuple[list, list, set[str]]:
    """``(first 20 minutes, the rest, fraud ids)``, each record ``(sent_at, topic, value)``."""
    records = []
    for s in range(0, 40 * 60, 10):
        at = START + timedelta(seconds=s)
        records.append((at, "loc", fix("cafe-phone", at)))
    frauds = set()
    for i, s in enumerate(range(30, 40 * 60, 120)):
        at = START + timedelta(seconds=s)
        records.append((at, "tx", payment(f"coffee-{i}", "cafe-phone", at)))
        if s >= 20 * 60 and len(frauds) < 10:
            fraud_at = at + timedelta(seconds=40)
            frauds.add(f"fraud-{i}")
            records.append(
                (fraud_at, "tx", payment(f"fraud-{i}", "cafe-phone", fraud_at, BORDEAUX))
            )
    sent = START + timedelta(minutes=7)
    records.append((sent, "loc", fix("future-phone", sent + FUTURE)))
    records.append((sent, "tx", payment("future-tx", "future-phone", sent + FUTURE)))
    for s in range(0, 40 * 60, 30):
        sent = START + timedelta(seconds=s)
        records.append((sent, "loc", fix("slow-phone", sent - SLOW_CLOCK)))
    records.sort(key=lambda r: r[0])
    split = START + timedelta(minutes=20)
    first = [r for r in records if r[0] < split]
    rest = [r for r in records if r[0] >= split]
    assert len(frauds) == 10
    return first, rest, frauds


def produce_live(conf, records) -> None:
    """Send each record with its sending time as the Kafka timestamp, as a live feed would."""
    topics = {"tx": conf.kafka.topics.transactions, "loc": conf.kafka.topics.device_locations}
    producer = KafkaProducer(bootstrap_servers=conf.kafka.bootstrap_servers, acks="all")
    try:
        for sent_at, kind, value in records:
            producer.send(
                topics[kind],
                key=value["device_id"].encode(),
                value=json.dumps(value).encode(),
                timestamp_ms=int(sent_at.timestamp() * 1000),
            )
        producer.flush()
    finally:
        producer.close()


# The alert path and metric_windows: the queries whose watermark a future clock could move.
WATERMARKED = (*TRAVEL_PATH, metrics.WINDOWS_QUERY)


def stream_in_two_runs(spark, conf) -> set[str]:
    ensure_topics(conf)
    first, rest, frauds = cafe_records()
    produce_live(conf, first)
    run_pipeline(spark, conf, WATERMARKED)
    produce_live(conf, rest)
    run_pipeline(spark, conf, WATERMARKED)
    return frauds


def test_every_fraud_is_caught_whatever_other_clocks_say(spark, kafka_conf):
    conf = kafka_conf
    frauds = stream_in_two_runs(spark, conf)

    alerts = read_table(spark, conf, tables.ALERTS)
    caught = {r.transaction_id for r in alerts.collect()}
    assert caught == frauds
    progress = read_table(spark, conf, tables.PIPELINE_PROGRESS)
    assert progress.filter(F.col("watermark_warning") == AHEAD).count() == 0
    # The honest phone's payments of the first 20 minutes were all placed near the café.
    enriched = read_table(spark, conf, tables.TRANSACTIONS_ENRICHED)
    placed = {
        r.transaction_id
        for r in enriched.filter("has_location AND distance_m < 1000").collect()
        if r.transaction_id.startswith("coffee-")
    }
    assert {f"coffee-{i}" for i in range(10)} <= placed
    bronze_tx = read_table(spark, conf, tables.BRONZE_TRANSACTIONS)
    # Bronze keeps the claimed time as it came.
    future = bronze_tx.filter(F.col("transaction_id") == "future-tx").first()
    assert future.event_time - future.kafka_timestamp >= FUTURE - timedelta(seconds=1)
    # The slow phone's fixes are all stored, and those of the second run came too late for
    # the join: counted, not silently lost, and harmless to the others.
    bronze_loc = read_table(spark, conf, tables.BRONZE_DEVICE_LOCATIONS)
    slow_fixes = bronze_loc.filter(F.col("device_id") == "slow-phone").count()
    assert slow_fixes == 80
    dropped = progress.agg(F.sum("rows_dropped_by_watermark")).first()[0]
    assert dropped >= 40


def test_without_the_bound_a_future_clock_moves_the_watermark_and_is_flagged(spark, kafka_conf):
    """The bug the bound fixes, shown by switching the bound off: the warning fires."""
    stream = dataclasses.replace(kafka_conf.stream, max_event_time_lead="2 days")
    conf = dataclasses.replace(kafka_conf, stream=stream)
    frauds = stream_in_two_runs(spark, conf)
    progress = read_table(spark, conf, tables.PIPELINE_PROGRESS)
    assert progress.filter(F.col("watermark_warning") == AHEAD).count() >= 1
    caught = {r.transaction_id for r in read_table(spark, conf, tables.ALERTS).collect()}
    assert len(caught & frauds) < len(frauds)
