"""Helpers for the integration tests: produce to and consume from the real test broker."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta

from kafka import KafkaConsumer, KafkaProducer
from pyspark.sql import SparkSession

from txwatch.infra.config import Conf
from txwatch.queries import PIPELINE, alerts, enrich, ingest, travel
from txwatch.queries.base import QuerySpec, RunContext
from txwatch.queries.runner import run_available_now
from txwatch.simulator import SimulationParams

# The queries an impossible-travel alert and its tables go through: bronze, quarantine,
# transactions_enriched, alerts and pipeline_progress. Tests of that path alone run these
# (as `--queries ingest,travel,alerts,enrich` does), without the metrics and scoring
# queries, which have tests of their own: test_bad_clocks.py alone, cold, took 248 s with
# every query and 180 s with these (2026-11-27).
TRAVEL_PATH: tuple[QuerySpec, ...] = (ingest.QUERY, travel.QUERY, alerts.QUERY, enrich.QUERY)


def run_pipeline(
    spark: SparkSession, conf: Conf, queries: tuple[QuerySpec, ...] = PIPELINE
) -> None:
    """One --available-now run of ``queries`` (default every query), as
    `spark-submit.sh stream --available-now [--queries ...]` does it."""
    run_available_now(RunContext(spark, conf, available_now=True), queries)


def produce(conf: Conf, topic: str, values: list, key_field: str | None = None) -> None:
    """Send dicts as JSON (or str/bytes as they are) and wait until the broker has them."""
    producer = KafkaProducer(bootstrap_servers=conf.kafka.bootstrap_servers, acks="all")
    try:
        for value in values:
            key = None
            if isinstance(value, dict):
                if key_field and key_field in value:
                    key = str(value[key_field]).encode()
                value = json.dumps(value)
            producer.send(topic, key=key, value=value.encode() if isinstance(value, str) else value)
        producer.flush()
    finally:
        producer.close()


def consume_all(
    conf: Conf, topic: str, expected: int | None = None, timeout_s: float = 20.0
) -> list:
    """Every record on ``topic`` (waits for ``expected`` of them when given)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=conf.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            records.extend(consumer)
            if expected is None or len(records) >= expected:
                break
    finally:
        consumer.close()
    return records


def travel_only_params(**settings: object) -> SimulationParams:
    """Simulation settings where every phone reports throughout and nothing is late or out
    of order, and no payment comes from a new device (card testing, takeovers, rings,
    repeats of known fraud have no fixes to find): impossible travel is the only fraud."""
    quiet: dict[str, object] = {
        "out_of_order_rate": 0.0,
        "late_rate": 0.0,
        "no_location_rate": 0.0,
        "amount_outlier_rate": 0.0,
        "card_testing_per_hour": 0.0,
        "account_takeover_per_hour": 0.0,
        "fraud_rings": 0,
        "pattern_repeats_per_hour": 0.0,
    }
    return SimulationParams(**{**quiet, **settings})


def series_with_spike(first: datetime, points: int, spike_at: int) -> list[dict]:
    """A noisy daily series (``svc.latency_ms``) every 5 minutes from ``first``, with a
    spike of +400 at point ``spike_at``."""
    series = []
    for i in range(points):
        value = 50 + 20 * math.sin(2 * math.pi * i / 288) + (i * 7919 % 13) - 6
        if i == spike_at:
            value += 400
        at = first + timedelta(minutes=5 * i)
        series.append(
            {"series": "svc.latency_ms", "event_time": at.isoformat(), "value": round(value, 2)}
        )
    return series
