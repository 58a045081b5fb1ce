"""Helpers for the integration tests: produce to and consume from the real test broker."""

from __future__ import annotations

import json
import time

from kafka import KafkaConsumer, KafkaProducer
from pyspark.sql import SparkSession

from txwatch.infra.config import Conf
from txwatch.queries import PIPELINE
from txwatch.queries.base import RunContext
from txwatch.queries.runner import run_available_now


def run_pipeline(spark: SparkSession, conf: Conf) -> None:
    """One --available-now run, as `spark-submit.sh stream --available-now` does it."""
    run_available_now(RunContext(spark, conf, available_now=True), PIPELINE)


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
