"""Baseline: the plain Python loop a user might write instead of the pipeline.

    .venv/bin/python -m bench.baseline [--transactions 1000000]

One kafka-python consumer reads both input topics from the earliest offset (partitions
assigned by hand, no consumer group, nothing committed; kafka-python 3 does its network I/O
on a thread of its own) and one thread processes the records: it ``json.loads`` every
value, keeps the latest fix of each device in a dict and checks every transaction against
its device's latest fix with the rule of ``udfs.travel`` (``impossible_travel`` in
conf/base.yaml), counting alerts. No event-time windows, no Delta, no exactly-once: that
is the point of the comparison. ``bench.throughput`` runs it on its backlog after the Spark
measurements.

Run alone, it consumes what the bench topics (``bench-*``) hold; when they are empty it
first loads a backlog of ``--transactions`` payments the way ``bench.throughput`` does.
The topics are kept afterwards (``bench.throughput`` recreates them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import KafkaConsumer, TopicPartition

from txwatch.infra.config import Conf
from udfs.geo import haversine_m_py
from udfs.records import DEVICE_LOCATION_FIELDS, TRANSACTION_FIELDS

# Consumer settings: up to 5,000 records per poll, 64 MiB per fetch. A partition's share of a
# fetch is kept at 256 KiB (500 to 1,300 records) because the consumer hands out one
# partition's records after another: with larger shares the transactions run ahead of (or
# behind) the fixes they are checked against. A backlog of 20,000 transactions (whole
# partitions of 1 to 3 MiB): 1 MiB left half of them without a fix, 8 MiB all of them, and
# 256 KiB was no slower than 1 MiB.
FETCH_MAX_BYTES = 64 * 1024 * 1024
MAX_PARTITION_FETCH_BYTES = 256 * 1024
MAX_POLL_RECORDS = 5000
POLL_TIMEOUT_MS = 1000
# kafka-python's defaults, as the loop a user writes would have them: record CRCs are
# checked (in pure Python without the optional ``crc32c`` package, about two thirds of the
# loop's time; with check_crcs=False the loop reads ~60k events/s here). The pipeline
# checks CRCs too (Spark's Java client).
CHECK_CRCS = True
# Give up when the topics yield nothing for this long before the backlog is consumed.
STALL_TIMEOUT_S = 60.0
PROGRESS_EVERY_S = 10.0

REQUIRED_TRANSACTION_FIELDS = frozenset(f.name for f in TRANSACTION_FIELDS if f.required)
REQUIRED_LOCATION_FIELDS = frozenset(f.name for f in DEVICE_LOCATION_FIELDS if f.required)


@dataclass(frozen=True)
class BaselineResult:
    records: int  # transactions plus location fixes consumed
    seconds: float  # from creating the consumer to the last record processed
    transactions: int
    locations: int
    malformed: int  # skipped: not JSON, a required field missing, a used field unreadable
    checked: int  # transactions compared with a fix of their device
    alerts: int  # transactions found impossible

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    def summary(self) -> str:
        return (
            f"{self.records:,} records in {self.seconds:.1f} s; {self.malformed:,} malformed "
            f"skipped, {self.checked:,} of {self.transactions:,} transactions checked against "
            f"a fix, {self.alerts:,} alerts"
        )


def epoch_s(text: str) -> float:
    """Seconds since the epoch of an ISO-8601 time; without a zone it is taken as UTC."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def _position(record: dict) -> tuple[float, float] | None:
    """The record's latitude and longitude, or None when they are out of range."""
    lat, lon = float(record["latitude"]), float(record["longitude"])
    if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
        return lat, lon
    return None


def _is_id(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


class NaiveDetector:
    """The loop's state: the latest fix per device, and what it counted.

    Only the fields the rule uses are validated (besides the required fields being
    present); the pipeline's quarantine checks more.
    """

    def __init__(self, conf: Conf) -> None:
        rule = conf.impossible_travel
        self.max_speed_mps = rule.max_plausible_speed_mps
        self.min_gap_s = rule.min_gap_s
        self.merchant_uncertainty_m = rule.merchant_location_uncertainty_m
        self.min_distance_m = rule.min_distance_m
        self.default_accuracy_m = rule.default_location_accuracy_m
        # device_id -> (event time in seconds, latitude, longitude, accuracy in metres)
        self.fixes: dict[str, tuple[float, float, float, float]] = {}
        self.transactions = self.locations = self.malformed = self.checked = self.alerts = 0

    def location(self, value: bytes | None) -> None:
        self.locations += 1
        try:
            fix = json.loads(value or b"")  # a tombstone (None) is malformed too
            device_id = fix["device_id"]
            position = _position(fix)
            accuracy = fix.get("horizontal_accuracy")
            accuracy_m = self.default_accuracy_m if accuracy is None else float(accuracy)
            t = epoch_s(fix["event_time"])
        except (ValueError, TypeError, KeyError, AttributeError):
            self.malformed += 1
            return
        if not (position and _is_id(device_id) and fix.keys() >= REQUIRED_LOCATION_FIELDS):
            self.malformed += 1
            return
        latest = self.fixes.get(device_id)
        if latest is None or t >= latest[0]:
            self.fixes[device_id] = (t, *position, accuracy_m)

    def transaction(self, value: bytes | None) -> None:
        self.transactions += 1
        try:
            tx = json.loads(value or b"")
            device_id = tx["device_id"]
            position = _position(tx)
            t = epoch_s(tx["event_time"])
        except (ValueError, TypeError, KeyError, AttributeError):
            self.malformed += 1
            return
        if not (position and _is_id(device_id) and tx.keys() >= REQUIRED_TRANSACTION_FIELDS):
            self.malformed += 1
            return
        fix = self.fixes.get(device_id)
        if fix is None:
            return
        self.checked += 1
        fix_t, fix_lat, fix_lon, accuracy_m = fix
        distance_m = haversine_m_py(*position, fix_lat, fix_lon)
        effective_m = max(distance_m - accuracy_m - self.merchant_uncertainty_m, 0.0)
        speed_mps = effective_m / max(abs(fix_t - t), self.min_gap_s)
        if speed_mps > self.max_speed_mps and effective_m >= self.min_distance_m:
            self.alerts += 1


def run_baseline(conf: Conf, expected_records: int) -> BaselineResult:
    """Consume the input topics from the start until ``expected_records`` are processed.

    It also stops when every partition has reached the end offset it had at the start (the
    topics held fewer records than expected).
    """
    topics = conf.kafka.topics
    print(
        "bench: baseline (one kafka-python consumer, json.loads, dict of latest fixes)", flush=True
    )
    detector = NaiveDetector(conf)
    started = time.monotonic()
    consumer = KafkaConsumer(
        bootstrap_servers=conf.kafka.bootstrap_servers,
        client_id="txwatch-bench-baseline",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        max_poll_records=MAX_POLL_RECORDS,
        check_crcs=CHECK_CRCS,
    )
    try:
        partitions = []
        for topic in (topics.transactions, topics.device_locations):
            ids = consumer.partitions_for_topic(topic)
            if not ids:
                raise RuntimeError(f"baseline: topic {topic} does not exist")
            partitions += [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        starts = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
        available = sum(ends[tp] - starts[tp] for tp in partitions)
        if available != expected_records:
            print(
                f"baseline: the topics hold {available:,} records, {expected_records:,} expected",
                flush=True,
            )
        unfinished = {tp for tp in partitions if ends[tp] > starts[tp]}
        records, last_record = 0, time.monotonic()
        next_report = started + PROGRESS_EVERY_S
        while records < expected_records and unfinished:
            batches = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
            now = time.monotonic()
            if not batches:
                if now - last_record > STALL_TIMEOUT_S:
                    raise RuntimeError(
                        f"baseline: nothing to read for {STALL_TIMEOUT_S:.0f} s after "
                        f"{records:,} of {expected_records:,} records"
                    )
                continue
            last_record = now
            for tp, messages in batches.items():
                handle = (
                    detector.transaction if tp.topic == topics.transactions else detector.location
                )
                for message in messages:
                    handle(message.value)
                records += len(messages)
                if messages[-1].offset + 1 >= ends[tp]:
                    unfinished.discard(tp)
            if now >= next_report:
                next_report += PROGRESS_EVERY_S
                print(
                    f"baseline: {records:,} records ({records / (now - started):,.0f}/s)",
                    flush=True,
                )
        seconds = time.monotonic() - started
    finally:
        consumer.close()
    return BaselineResult(
        records=records,
        seconds=seconds,
        transactions=detector.transactions,
        locations=detector.locations,
        malformed=detector.malformed,
        checked=detector.checked,
        alerts=detector.alerts,
    )


def main(argv: list[str] | None = None) -> int:
    # Imported here: bench.throughput imports this module for its own run.
    from bench.throughput import (
        BENCH_DIR,
        DEFAULT_CONF,
        bench_conf,
        prepare_backlog,
        topic_record_counts,
    )
    from txwatch.infra.kafka_admin import ensure_topics, local_broker

    parser = argparse.ArgumentParser(
        prog="python -m bench.baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--transactions",
        type=int,
        default=1_000_000,
        help="transactions to load when the bench topics are empty (default %(default)s)",
    )
    parser.add_argument(
        "--conf", default=str(DEFAULT_CONF), help="YAML config (default conf/bench.yaml)"
    )
    args = parser.parse_args(argv)
    if args.transactions < 1:
        parser.error("--transactions must be positive")
    conf = bench_conf(args.conf)
    BENCH_DIR.mkdir(exist_ok=True)
    with local_broker(conf.kafka.bootstrap_servers):
        ensure_topics(conf)
        records = sum(topic_record_counts(conf).values())
        if records:
            print(f"baseline: consuming the {records:,} records in the bench topics", flush=True)
        else:
            records = prepare_backlog(conf, args.transactions, keep_data=False).records
        result = run_baseline(conf, records)
    print(f"baseline: {result.rate:,.0f} events/s; {result.summary()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
