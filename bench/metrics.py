"""Benchmark the per-series detector: many series through the metrics topic, one query.

    .venv/bin/python -m bench.metrics [--series 10000] [--hours 24] [--keep-data]
    (or: make bench-metrics BENCH_ARGS="--series 1000")

Sends ``--series`` series with a point a minute for ``--hours`` of event time (minute by
minute, every series, as a monitoring export would) to a topic of its own, then drains it
with the ``metric_points`` query (``--available-now``, conf/bench.yaml's micro-batch size)
and prints points per second, micro-batch durations and the state: rows, the operator's
memory, the checkpoint's size on disk and the bytes one series' detector state takes. The
broker that answers is used, or the local one is started and stopped afterwards.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import shutil
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaProducer

from bench.throughput import (
    BENCH_DIR,
    DEFAULT_CONF,
    bench_conf,
    jvm_pid,
    peak_rss_mib,
    token_key_variable,
)
from txwatch.infra.config import Conf
from txwatch.infra.kafka_admin import admin_client, ensure_topics, local_broker
from txwatch.infra.session import create_session
from txwatch.queries import metrics
from txwatch.queries.base import RunContext
from txwatch.queries.runner import run_available_now
from udfs.metric_detector import SeriesState, score_point

LAKE_ROOT = BENCH_DIR / "metrics-lake"
TOPIC = "bench-metric-series"
START = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
PRODUCERS = 2


def point_value(series: int, minute: int) -> float:
    """A series' level, daily shape and noise: deterministic, different per series."""
    level = 10.0 + (series * 7919) % 990
    daily = 1.0 + 0.4 * math.sin(2.0 * math.pi * (minute % 1440) / 1440.0 + series)
    noise = ((series * 31 + minute * 17) % 21 - 10) / 100.0
    return round(level * (daily + noise), 3)


def produce_share(bootstrap: str, first: int, last: int, minutes: int) -> int:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=50, batch_size=1024 * 1024
    )
    sent = 0
    try:
        for minute in range(minutes):
            at = (START + timedelta(minutes=minute)).isoformat()
            for series in range(first, last):
                name = f"bench.series.{series:05d}"
                value = {"series": name, "event_time": at, "value": point_value(series, minute)}
                producer.send(TOPIC, key=name.encode(), value=json.dumps(value).encode())
                sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def send_points(conf: Conf, series: int, minutes: int) -> tuple[int, float]:
    started = time.monotonic()
    bounds = [round(series * i / PRODUCERS) for i in range(PRODUCERS + 1)]
    with mp.get_context("spawn").Pool(PRODUCERS) as pool:
        sent = sum(
            pool.starmap(
                produce_share,
                [
                    (conf.kafka.bootstrap_servers, a, b, minutes)
                    for a, b in itertools.pairwise(bounds)
                ],
            )
        )
    return sent, time.monotonic() - started


def detector_state_bytes(minutes: int) -> int:
    """Serialized detector state of one series after ``minutes`` points."""
    state = SeriesState.new()
    for minute in range(minutes):
        t = (START + timedelta(minutes=minute)).timestamp()
        score_point(state, t, point_value(1, minute), metrics.DETECTOR)
    return len(state.to_bytes())


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(args: argparse.Namespace) -> int:
    conf = bench_conf(args.conf)
    kafka = replace(conf.kafka, topics=replace(conf.kafka.topics, metrics=TOPIC), partitions=4)
    conf = replace(conf, kafka=kafka, lake_root=str(LAKE_ROOT))
    minutes = int(args.hours * 60)
    with local_broker(conf.kafka.bootstrap_servers, "bench.metrics"):
        ensure_topics(conf, recreate=True, names=[TOPIC, conf.kafka.topics.potential_fraud])
        print(f"bench.metrics: sending {args.series:,} series x {minutes:,} minutes", flush=True)
        sent, send_s = send_points(conf, args.series, minutes)
        print(f"bench.metrics: {sent:,} points sent in {send_s:.0f} s", flush=True)
        shutil.rmtree(LAKE_ROOT, ignore_errors=True)
        token_key_variable(conf)  # quarantined points get their Kafka key tokenized
        spark = create_session(conf, "bench-metrics")
        pid = jvm_pid(spark)
        try:
            started = time.monotonic()
            run_available_now(
                RunContext(spark, conf, available_now=True),
                [metrics.POINTS_QUERY],
            )
            seconds = time.monotonic() - started
            query = spark.read.format("delta").load(conf.table_path("pipeline_progress"))
            batches = query.filter("query_name = 'metric_points' AND num_input_rows > 0").collect()
            scored = spark.read.format("delta").load(conf.table_path("metric_scores")).count()
            alerts = spark.read.format("delta").load(conf.table_path("alerts")).count()
            rss = peak_rss_mib(pid)
        finally:
            spark.stop()
        if not args.keep_data:
            admin = admin_client(conf.kafka.bootstrap_servers)
            try:
                admin.delete_topics([TOPIC, conf.kafka.topics.potential_fraud])
            finally:
                admin.close()
    durations = sorted(b.batch_duration_ms / 1000 for b in batches)
    state_rows = max((b.state_rows or 0 for b in batches), default=0)
    state_disk = directory_bytes(LAKE_ROOT / "_checkpoints" / metrics.POINTS_NAME / "state")
    per_series = detector_state_bytes(min(minutes, 1440))
    median_s = statistics.median(durations) if durations else 0.0
    longest_s = max(durations, default=0.0)
    all_state_mib = per_series * args.series / 2**20
    rss_text = f"{rss:,.0f} MiB" if rss is not None else "n/a"
    print(
        f"""
txwatch per-series detector: {args.series:,} series x {minutes:,} points (1 a minute)
--------------------------------------------------------------------------------
points scored        {scored:,} of {sent:,} sent
wall time            {seconds:.1f} s (the metric_points query, --available-now)
throughput           {sent / seconds:,.0f} points/s
micro-batches        {len(durations)}: median {median_s:.1f} s, max {longest_s:.1f} s
state rows           {state_rows:,} (one per series)
detector state       {per_series:,} bytes per series serialized, {all_state_mib:,.1f} MiB in all
state on disk        {state_disk / 2**20:,.1f} MiB (RocksDB checkpoint, all versions kept)
alerts               {alerts:,} (series are regular: few expected)
driver JVM peak RSS  {rss_text}""",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--conf", default=str(DEFAULT_CONF))
    parser.add_argument("--keep-data", action="store_true", help="keep the topic afterwards")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
