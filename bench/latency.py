"""Latency benchmark: how long a live impossible-travel fraud takes to become an alert.

    .venv/bin/python -m bench.latency [--rates 2000,10000] [--minutes 5] [--warmup-s 30]
    make bench-latency BENCH_ARGS="--rates 500 --minutes 1"

For each rate R (events/s, location fixes and payments together), in order:

1. Fresh topics ``lat-*`` and a fresh lake ``.bench/latency/lake-<R>``; a conf file
   ``.bench/latency/conf-<R>.yaml`` extending ``conf/local.yaml`` (or ``--conf``, a conf of
   your own to compare settings) with those (and the trigger intervals, when
   ``--alert-trigger``/``--table-trigger``/``--alert-table-trigger``/``--scoring-trigger``/
   ``--enrich-trigger`` override them).
2. The pipeline runs as a user runs it continuously, in its own process:
   ``python -m jobs.stream --conf <that file> --quiet --duration ...`` (log in
   ``.bench/latency/stream-<R>.log``; ``--java-options=...`` as its ``JAVA_TOOL_OPTIONS``).
   The benchmark waits until its tables and the ingest checkpoint exist.
3. Two producer processes (``bench.throughput``'s shards) each simulate half of a population
   sized for R events per simulated second (phones report every 10 s; payments are 5 % of the
   events, enough of them impossible travel for a few hundred frauds) starting at the wall
   clock, and send every record when the wall clock reaches its simulated time (in bursts
   every ``SEND_EVERY_S``, 50 ms: the records that fell due since the last one), with the
   actual send time as its Kafka timestamp: a live feed whose event time is its
   publication time, the send up to about 50 ms late (never early; counted in the
   producers' "behind schedule").
   The first ``--warmup-s`` seconds are traffic that is not measured.
4. A thread reads the alert topic. After producing, the benchmark waits until every fraud
   has an alert and no query has a micro-batch in flight, or ``--grace-s`` passes, reads
   the driver's peak RSS and stops the job with SIGTERM.

Figures, per rate, over the measured window (warm-up end to end of producing):

- alert latency on Kafka: the alert message's timestamp minus the fraud's send time, and
  how many frauds got an alert; in Delta: the time the ``alerts`` commit adding the row
  became visible (its ``_delta_log`` file; data files are rewritten by auto compaction, so
  their own time says nothing) minus the send time;
- input rate (Kafka end offsets) next to what each Kafka-reading query committed (the
  offsets of its newest committed batch, from its checkpoint), and their difference, the
  backlog; the job kept up when every such query processed 95 % of the input;
- micro-batch durations per query in the first and last third of the window, state rows
  in its first and last minute (``pipeline_progress``), peak RSS of the driver JVM and of
  the Python driver, the producers' CPU;
- the CPU the stream job used (its Python driver, JVM and Python workers; the JVM alone
  beside it), in cores and in ms per 1,000 input events;
- a machine index: the CPU time of a fixed Python loop just before the job starts.

Spark reads the lakes after the last job has exited; lakes, confs and logs stay in
``.bench/latency``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyspark.sql.functions as F
import yaml
from confluent_kafka import KafkaError, Producer
from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import SparkSession

from bench.throughput import (
    BENCH_DIR,
    BENCH_TOKEN_KEY,
    PRODUCERS,
    REPO_ROOT,
    Shard,
    ShardSimulator,
    delete_topics,
    peak_rss_mib,
    read_stat,
)
from txwatch.infra import tables
from txwatch.infra.config import Conf, load_conf
from txwatch.infra.kafka_admin import ensure_topics, local_broker
from txwatch.infra.session import create_session
from txwatch.queries import PIPELINE
from txwatch.simulator import SimulationParams, TruthRow
from udfs.travel import ALERT_TYPE_IMPOSSIBLE_TRAVEL

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Barrier, Event

LAT_DIR = BENCH_DIR / "latency"
BASE_CONF = REPO_ROOT / "conf" / "local.yaml"
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
TOPICS = {
    "transactions": "lat-transactions",
    "device_locations": "lat-device-locations",
    "potential_fraud": "lat-potential-fraud",
    "enrichment_candidates": "lat-enrichment-candidates",
    "metrics": "lat-metrics",
}
PING_INTERVAL_S = 10.0
PAYMENT_SHARE = 0.05  # of all events; the rest are location fixes
TARGET_FRAUDS = 500  # in the measured window; sets the impossible-travel rate
READY_TIMEOUT_S = 300.0
PROGRESS_EVERY_S = 10.0
# A producer wakes up this often and sends the records that fell due since. The producers
# share the cores with the job they measure, so they must cost little: with kafka-python
# (360 us of CPU per record sent one by one at 1,000 records/s, 130 us in bursts every
# 50 ms) the two took 0.47-0.60 cores at 2,000 events/s beside the job; with librdkafka
# (confluent-kafka) they take 0.10-0.22, of which the simulator itself is about 0.06 (32 us
# per record).
SEND_EVERY_S = 0.05
KEPT_UP = 0.95  # kept up: every Kafka-reading query processed this share of the input
CPU_INDEX_LOOP = 10_000_000

Stats = tuple[float, float, float, float]  # p50, p95, p99, max


def cpu_index_s() -> float:
    """CPU seconds a fixed pure-Python loop takes on one core: this machine's speed varies by
    a factor of 3 from hour to hour, so runs on different days compare through this."""
    started, total = time.process_time(), 0
    for i in range(CPU_INDEX_LOOP):
        total += i
    return time.process_time() - started


def log(message: str) -> None:
    print(f"bench-latency: {message}", flush=True)


def percentiles(values: list[float]) -> Stats | None:
    if not values:
        return None
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return float(p50), float(p95), float(p99), float(max(values))


# --------------------------------------------------------------------------- producers


class _FraudIds(list[TruthRow]):
    """Ground truth that keeps only the ids of impossible-travel transactions."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def append(self, item: TruthRow) -> None:
        if item.scenario == "impossible_travel" and item.transaction_id:
            self.ids.add(item.transaction_id)


class LiveSimulator(ShardSimulator):
    """A shard whose users pay at their active-hours rate whatever the hour of day."""

    def __init__(self, shard: Shard, conf: Conf) -> None:
        super().__init__(shard, conf)
        self.frauds = _FraudIds()
        self.truth = self.frauds

    def start_at(self, start: datetime) -> None:
        """Date simulated time 0 (the population, already built, does not depend on it)."""
        self.p = replace(self.p, start=start)

    def _next_tx_gap(self, user: Any, t: float) -> float:
        return self.rng.expovariate(user.tx_per_hour / 3600.0)


def plan_shards(rate: int, warmup_s: float, measure_s: float) -> list[Shard]:
    """A population making ``rate`` events per simulated second, split over the producers."""
    users = round(rate * (1 - PAYMENT_SHARE) * PING_INTERVAL_S)
    payments_per_s = rate * PAYMENT_SHARE
    # A fraud follows a legitimate payment by 5-240 s (txwatch.simulator): frauds build up
    # over the first 4 minutes, and those due after the end are not sent.
    fraud_s = np.clip((np.arange(warmup_s, warmup_s + measure_s) - 5) / 235, 0, 1).sum()
    fraud_rate = min(max(TARGET_FRAUDS / (payments_per_s * fraud_s), 0.005), 0.5)
    tx_per_hour = payments_per_s * 3600 / users / (1 + fraud_rate)
    shards, first_user = [], 0
    for index in range(PRODUCERS):
        params = SimulationParams(
            users=users // PRODUCERS + (index < users % PRODUCERS),
            duration_min=(warmup_s + measure_s) / 60,
            ping_interval_s=PING_INTERVAL_S,
            tx_per_hour=tx_per_hour,
            impossible_travel_rate=fraud_rate,
            malformed_rate=0.0,
            out_of_order_rate=0.0,
            late_rate=0.0,
            no_location_rate=0.0,
            tail_s=0.0,
        )
        shards.append(Shard(index, first_user, params.seed + 1000 * (index + 1), params))
        first_user += params.users
    return shards


def produce_live(
    shard: Shard,
    conf: Conf,
    warmup_s: float,
    ready: Barrier,
    go: Event,
    start_epoch: Synchronized[float],
    sent_counter: Synchronized[int],
    out: Path,
) -> None:
    """Body of a producer process: send each record when the wall clock reaches its time.

    It writes to ``out`` how far behind schedule it fell, the frauds' send times and the
    CPU it used (``cpu_s`` over ``wall_s``): it shares the cores with the job it measures.
    """
    sim = LiveSimulator(shard, conf)
    producer = Producer(
        {
            "bootstrap.servers": conf.kafka.bootstrap_servers,
            "acks": "all",
            "linger.ms": 5,
            "message.send.max.retries": 10,
        }
    )
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    ready.wait()
    go.wait()
    start = start_epoch.value
    cpu_at_start = time.process_time()
    sim.start_at(datetime.fromtimestamp(start, UTC))
    end_s = shard.params.duration_min * 60
    tx_topic = conf.kafka.topics.transactions
    sent, max_behind_s, frauds = 0, 0.0, {}
    woke = time.time()
    for t, record in sim.records():
        if t >= end_s:  # frauds scheduled after the end of the run are not sent
            break
        if start + t > woke:  # not due yet: sleep until it is, and at least SEND_EVERY_S
            time.sleep(max(0.0, max(start + t, woke + SEND_EVERY_S) - time.time()))
            woke = time.time()
        now = time.time()  # its Kafka timestamp: latencies count from the actual send
        max_behind_s = max(max_behind_s, now - start - t)
        while True:
            try:
                producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    timestamp=int(now * 1e3),
                    on_delivery=on_delivery,
                )
                break
            except BufferError:  # librdkafka's queue is full (a slow broker): wait for it
                producer.poll(0.1)
        producer.poll(0)  # serve delivery reports
        sent += 1
        if record.topic == tx_topic:
            tx_id = json.loads(record.value)["transaction_id"]
            if tx_id in sim.frauds.ids:
                frauds[tx_id] = now
        if sent % 1000 == 0:
            sent_counter.value = sent
    undelivered = producer.flush(60.0)
    if undelivered or failed:
        raise RuntimeError(
            f"{undelivered} records still queued after 60 s, {len(failed)} failed: {failed[:3]}"
        )
    sent_counter.value = sent
    report = {
        "max_behind_s": max_behind_s,
        "frauds": frauds,
        "cpu_s": time.process_time() - cpu_at_start,
        "wall_s": time.time() - start,
    }
    out.write_text(json.dumps(report))


@dataclass(frozen=True)
class Positions:
    """The input topics at one moment: records in each, and what each query has committed."""

    at: float  # epoch seconds
    topics: dict[str, int]  # input topic -> records (sum of its partitions' end offsets)
    committed: dict[str, int]  # query reading Kafka -> records up to its last committed batch
    reads: dict[str, tuple[str, ...]]  # query -> the input topics it reads

    def records(self, query: str) -> int:
        """Records in the input topics ``query`` reads (metric_windows: payments only)."""
        return sum(n for t, n in self.topics.items() if t in self.reads.get(query, ()))

    def backlog(self, query: str) -> int:
        return self.records(query) - self.committed.get(query, 0)


@dataclass(frozen=True)
class ProcessStat:
    """One process, from ``/proc/<pid>/stat``."""

    command: str  # the executable's name, e.g. "java"
    parent: int
    cpu_s: float  # user plus system CPU time so far, all its threads


def processes() -> dict[int, ProcessStat]:
    """Every process Linux lists now, by pid."""
    found = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        stat = read_stat(path)
        if stat is not None:
            name, fields, cpu_s = stat
            found[int(path.parent.name)] = ProcessStat(name, int(fields[1]), cpu_s)
    return found


def process_tree_cpu_seconds(root: int, table: dict[int, ProcessStat]) -> float | None:
    """User plus system CPU time of process ``root`` and every live descendant so far.

    The job's tree: the Python driver (``foreachBatch`` functions, the progress listener),
    the JVM (driver and, in local mode, every task) and the Python workers the JVM starts
    (the pandas operators). A worker that exited is not counted; Spark reuses them.
    ``table``: ``processes()``.
    """
    if root not in table:  # gone
        return None
    tree, grew = {root}, True
    while grew:
        children = {pid for pid, stat in table.items() if stat.parent in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(table[pid].cpu_s for pid in tree)


# What the JVM's threads do, by the names Linux shows (the first 15 characters of the Java
# thread's name): the first prefix that matches names the group.
JVM_THREAD_GROUPS = (
    ("tasks", ("Executor task",)),
    ("query threads", ("stream executio",)),  # planning, offsets, commits, foreachBatch
    ("JIT compiler", ("C1 CompilerThre", "C2 CompilerThre", "Sweeper thread")),
    ("GC", ("GC Thread", "G1 ")),
)


def jvm_thread_group(name: str) -> str:
    """The group of ``JVM_THREAD_GROUPS`` a JVM thread belongs to, or "other"."""
    return next(
        (group for group, prefixes in JVM_THREAD_GROUPS if name.startswith(prefixes)), "other"
    )


def thread_cpu_seconds(pid: int) -> dict[tuple[int, str], tuple[str, float]]:
    """Each live thread of process ``pid``, by thread id and start time (an id can be
    reused): its name and user plus system CPU time so far."""
    found = {}
    for path in Path(f"/proc/{pid}/task").glob("[0-9]*/stat"):
        stat = read_stat(path)
        if stat is not None:
            name, fields, cpu_s = stat
            found[(int(path.parent.name), fields[19])] = (name, cpu_s)
    return found


@dataclass(frozen=True)
class JobCpu:
    """CPU seconds the stream job has used so far: all its processes, its JVM alone, and
    the JVM's live threads (``thread_cpu_seconds``)."""

    job_s: float | None
    jvm_s: float | None
    jvm_threads: dict[tuple[int, str], tuple[str, float]]

    @classmethod
    def read(cls, job_pid: int, jvm_pid: int | None) -> JobCpu:
        table = processes()  # one look at /proc for both figures
        jvm = table.get(jvm_pid) if jvm_pid is not None else None
        threads = thread_cpu_seconds(jvm_pid) if jvm and jvm_pid is not None else {}
        return cls(process_tree_cpu_seconds(job_pid, table), jvm.cpu_s if jvm else None, threads)

    def cores_since(self, start: JobCpu, wall_s: float) -> tuple[float | None, float | None]:
        """Cores busy on average since ``start``, ``wall_s`` ago: the job's, the JVM's."""

        def cores(end: float | None, begin: float | None) -> float | None:
            if end is None or begin is None or wall_s <= 0:
                return None
            return (end - begin) / wall_s

        return cores(self.job_s, start.job_s), cores(self.jvm_s, start.jvm_s)

    def jvm_groups_since(self, start: JobCpu) -> dict[str, float]:
        """The JVM's CPU seconds since ``start`` by thread group (``JVM_THREAD_GROUPS``).

        A thread alive now counts what it used since ``start`` (all of it if it started
        since). What threads that ended in between used (Spark's task pool ends a thread
        idle for a minute) is the JVM's total less the rest: "ended threads".
        """
        used: dict[str, float] = {}
        for thread, (name, cpu_s) in self.jvm_threads.items():
            before = start.jvm_threads.get(thread)
            group = jvm_thread_group(name)
            used[group] = used.get(group, 0.0) + cpu_s - (before[1] if before else 0.0)
        if self.jvm_s is not None and start.jvm_s is not None:
            used["ended threads"] = max(0.0, self.jvm_s - start.jvm_s - sum(used.values()))
        return used


@dataclass(frozen=True)
class Sent:
    """What the producers did: when the measured window began, and the frauds' send times."""

    window_start: Positions
    max_behind_s: float  # behind the simulated schedule, at most
    frauds: dict[str, float]
    producer_cores: float  # CPU the producer processes used while sending, in cores
    cpu_at_start: JobCpu  # the job's CPU time so far when the measured window began


def run_producers(
    conf: Conf,
    shards: list[Shard],
    warmup_s: float,
    job: subprocess.Popen[bytes],
    listener: AlertListener,
    rate: int,
    jvm_pid: int | None,
) -> Sent:
    """Send the shards' records live; report progress; stop if the job dies.

    ``jvm_pid``: the job's JVM; its CPU time and the whole job's are read when the measured
    window begins.
    """
    ctx = mp.get_context("spawn")
    ready, go = ctx.Barrier(len(shards) + 1, timeout=300), ctx.Event()
    start_epoch, counters = ctx.Value("d", 0.0), [ctx.Value("q", 0) for _ in shards]
    outs = [LAT_DIR / f"producer-{rate}-{s.index}.json" for s in shards]
    processes = [
        ctx.Process(
            target=produce_live,
            args=(s, conf, warmup_s, ready, go, start_epoch, c, o),
            name=f"latency-producer-{s.index}",
        )
        for s, c, o in zip(shards, counters, outs, strict=True)
    ]
    for process in processes:
        process.start()
    try:
        ready.wait()  # the populations are built
        start_epoch.value = time.time() + 0.2
        go.set()
        total_s, next_report = shards[0].params.duration_min * 60, PROGRESS_EVERY_S
        window_start, cpu_at_start = None, JobCpu(None, None, {})
        while any(p.is_alive() for p in processes):
            time.sleep(0.5)
            if job.poll() is not None:
                raise RuntimeError(f"the stream job exited with code {job.returncode}")
            elapsed = time.time() - start_epoch.value
            if window_start is None and elapsed >= warmup_s:
                window_start = kafka_positions(conf)
                cpu_at_start = JobCpu.read(job.pid, jvm_pid)
            if elapsed >= next_report:
                next_report += PROGRESS_EVERY_S
                sent = sum(c.value for c in counters)
                log(
                    f"{rate:,} ev/s: {min(elapsed, total_s):.0f} of {total_s:.0f} s, "
                    f"{sent:,} records sent ({sent / elapsed:,.0f}/s), "
                    f"{len(listener.first_ms):,} alerts"
                )
    except BaseException:
        for process in processes:
            process.terminate()
        raise
    finally:
        for process in processes:
            process.join()
    if any(p.exitcode != 0 for p in processes) or window_start is None:
        raise RuntimeError("a producer failed; see its traceback above")
    reports = [json.loads(o.read_text()) for o in outs]
    return Sent(
        window_start=window_start,
        max_behind_s=max(r["max_behind_s"] for r in reports),
        frauds={k: v for r in reports for k, v in r["frauds"].items()},
        producer_cores=sum(r["cpu_s"] for r in reports) / max(r["wall_s"] for r in reports),
        cpu_at_start=cpu_at_start,
    )


# --------------------------------------------------------------------------- Kafka side


class AlertListener(threading.Thread):
    """Reads the alert topic from the start: first Kafka timestamp per transaction id."""

    def __init__(self, conf: Conf) -> None:
        super().__init__(name="alert-listener", daemon=True)
        self._conf = conf
        self._halt = threading.Event()
        self.first_ms: dict[str, int] = {}
        self.messages = 0
        self.by_type: Counter[str] = Counter()  # distinct alert ids per alert type
        self._ids: set[str] = set()

    def run(self) -> None:
        topic = self._conf.kafka.topics.potential_fraud
        consumer = KafkaConsumer(
            bootstrap_servers=self._conf.kafka.bootstrap_servers, enable_auto_commit=False
        )
        try:
            consumer.assign(
                [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            )
            consumer.seek_to_beginning()
            while not self._halt.is_set():
                for messages in consumer.poll(timeout_ms=500).values():
                    for m in messages:
                        self.messages += 1
                        alert = json.loads(m.value)
                        if alert.get("alert_id") not in self._ids:
                            self._ids.add(alert.get("alert_id"))
                            self.by_type[str(alert.get("alert_type"))] += 1
                        tx_id = alert.get("transaction_id")
                        # Other detectors (the model) may alert on the same payment.
                        if tx_id and alert.get("alert_type") == ALERT_TYPE_IMPOSSIBLE_TRAVEL:
                            self.first_ms.setdefault(tx_id, m.timestamp)
        finally:
            consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        if self.is_alive():
            log("the alert listener did not stop within 10 s: its counts may be incomplete")


def _batch_ids(folder: Path) -> list[int]:
    return [int(p.name) for p in folder.glob("[0-9]*")]


def checkpoints(conf: Conf) -> dict[str, Path]:
    """The checkpoint folder of each query of the pipeline that has one, by query name."""
    folders = {q.name: Path(conf.checkpoint_path(q.name)) for q in PIPELINE}
    return {name: folder for name, folder in folders.items() if folder.is_dir()}


def batches_in_flight(conf: Conf) -> list[str]:
    """Queries that have started a micro-batch they have not committed yet."""
    return [
        name
        for name, checkpoint in checkpoints(conf).items()
        if max(_batch_ids(checkpoint / "offsets"), default=-1)
        > max(_batch_ids(checkpoint / "commits"), default=-1)
    ]


def kafka_positions(conf: Conf) -> Positions:
    """End offsets of the input topics, and the offsets of each query's last committed batch."""
    topics = [conf.kafka.topics.transactions, conf.kafka.topics.device_locations]
    consumer = KafkaConsumer(bootstrap_servers=conf.kafka.bootstrap_servers)
    try:
        parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t)]
        ends, at = consumer.end_offsets(parts), time.time()
    finally:
        consumer.close()
    committed: dict[str, int] = {}
    reads: dict[str, tuple[str, ...]] = {}
    for name, checkpoint in checkpoints(conf).items():
        batches = _batch_ids(checkpoint / "commits")
        if not batches:
            continue
        # "v1", the batch's metadata, then one line per source: Kafka's is {topic: {p: offset}}
        lines = (checkpoint / "offsets" / str(max(batches))).read_text().splitlines()
        # Sources of other topics (ingest also reads the metrics topic) are left out.
        kafka = [
            {t: p for t, p in source.items() if t in topics}
            for source in map(json.loads, lines[2:])
        ]
        # A query reads each topic once (ingest: both in one source; travel: one source per
        # topic); where two sources read the same partition, the least advanced one counts.
        merged: dict[tuple[str, str], int] = {}
        for source in kafka:
            for topic, partitions in source.items():
                for partition, offset in partitions.items():
                    key = (topic, partition)
                    merged[key] = min(offset, merged.get(key, offset))
        if merged:
            committed[name] = sum(merged.values())
            reads[name] = tuple(sorted({topic for topic, _ in merged}))
    counts = {t: sum(n for tp, n in ends.items() if tp.topic == t) for t in topics}
    return Positions(at, counts, committed, reads)


# --------------------------------------------------------------------------- the job


def write_job_conf(
    rate: int,
    alert_trigger: str | None,
    table_trigger: str | None,
    model_registry: str | None = None,
    alert_table_trigger: str | None = None,
    scoring_trigger: str | None = None,
    enrich_trigger: str | None = None,
    base_conf: Path = BASE_CONF,
) -> Path:
    path = LAT_DIR / f"conf-{rate}.yaml"
    stream = {}
    if alert_trigger:
        stream["alert_trigger_interval"] = alert_trigger
    if table_trigger:
        stream["trigger_interval"] = table_trigger
    if alert_table_trigger:
        stream["alert_table_trigger_interval"] = alert_table_trigger
    if scoring_trigger:
        stream["scoring_trigger_interval"] = scoring_trigger
    if enrich_trigger:
        stream["enrich_trigger_interval"] = enrich_trigger
    overrides = {
        "extends": str(base_conf.resolve()),
        "lake_root": str(LAT_DIR / f"lake-{rate}"),
        "kafka": {"topics": TOPICS},
        **({"stream": stream} if stream else {}),
        **({"model": {"registry_uri": model_registry}} if model_registry else {}),
    }
    path.write_text(
        f"# Written by bench/latency.py for {rate} events/s.\n" + yaml.safe_dump(overrides)
    )
    return path


def log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def java_child(pid: int) -> int | None:
    """The ``java`` process started by process ``pid`` (PySpark's driver JVM)."""
    return next(
        (
            child
            for child, stat in processes().items()
            if stat.command == "java" and stat.parent == pid
        ),
        None,
    )


def wait_until_ready(job: subprocess.Popen[bytes], conf: Conf, log_path: Path) -> None:
    lake = Path(conf.lake_root)
    checkpoints = lake / "_checkpoints"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not (
        (lake / tables.ALERTS / "_delta_log").is_dir() and any(checkpoints.glob("*/offsets/[0-9]*"))
    ):
        if job.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the stream job did not get ready; its log is {log_path}")
        time.sleep(1.0)


@dataclass
class Run:
    rate: int
    conf: Conf
    sent: Sent
    alert_ms: dict[str, int]
    alert_messages: int
    alerts_by_type: dict[str, int]
    window_end: Positions  # the end of producing
    jvm_rss_mib: float | None
    python_rss_mib: float | None
    exit_code: int | None
    cpu_index_s: float  # before the job started (``cpu_index_s``)
    # Cores busy on average over the measured window: the job's processes, its JVM alone.
    job_cores: float | None
    jvm_cores: float | None
    # The JVM's CPU seconds over the measured window by thread group (``JVM_THREAD_GROUPS``).
    jvm_groups: dict[str, float]


def run_rate(rate: int, args: argparse.Namespace) -> Run:
    """One rate: fresh topics and lake, the job, live traffic, alerts; the job stopped."""
    conf_path = write_job_conf(
        rate,
        args.alert_trigger,
        args.table_trigger,
        args.model_registry,
        args.alert_table_trigger,
        args.scoring_trigger,
        args.enrich_trigger,
        args.conf,
    )
    conf = load_conf(conf_path)
    index_s = cpu_index_s()
    log(f"machine: a fixed Python loop took {index_s:.2f} s of CPU (the lower, the faster)")
    shutil.rmtree(conf.lake_root, ignore_errors=True)
    ensure_topics(conf, recreate=True)
    listener = AlertListener(conf)
    listener.start()
    log_path = LAT_DIR / f"stream-{rate}.log"
    job_s = READY_TIMEOUT_S + args.warmup_s + args.minutes * 60 + args.grace_s + 300
    # The user's key when set: a --model-registry from another lake (the demo's) has its
    # customer profiles keyed by that lake's user tokens, which only the same key matches.
    env = {**os.environ}
    env.setdefault(conf.privacy.token_key_env, BENCH_TOKEN_KEY.decode())
    env.update(PYTHONPATH=str(REPO_ROOT))
    env.pop("TXWATCH_LAKE_ROOT", None)
    # The job's JVMs (spark-submit's short launcher too), not the broker's or the producers'.
    if args.java_options:
        env["JAVA_TOOL_OPTIONS"] = args.java_options
    command = [str(PYTHON), "-m", "jobs.stream", "--conf", str(conf_path), "--quiet"]
    if args.queries:
        command += ["--queries", args.queries]
    command += ["--duration", f"{job_s:.0f} seconds"]
    log(f"{rate:,} ev/s: starting the stream job (log {log_path.relative_to(REPO_ROOT)})")
    with log_path.open("wb") as job_log:
        job = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=job_log, stderr=job_log)
    try:
        wait_until_ready(job, conf, log_path)
        shards = plan_shards(rate, args.warmup_s, args.minutes * 60)
        users = sum(s.params.users for s in shards)
        log(f"{rate:,} ev/s: job ready; {users:,} users, {PRODUCERS} producers")
        jvm_pid = java_child(job.pid)
        sent = run_producers(conf, shards, args.warmup_s, job, listener, rate, jvm_pid)
        window_end = kafka_positions(conf)
        cpu_at_end = JobCpu.read(job.pid, jvm_pid)
        job_cores, jvm_cores = cpu_at_end.cores_since(
            sent.cpu_at_start, window_end.at - sent.window_start.at
        )
        jvm_groups = cpu_at_end.jvm_groups_since(sent.cpu_at_start)
        backlog = {q: window_end.backlog(q) for q in window_end.committed}
        log(f"{rate:,} ev/s: producing done, Kafka backlog {backlog}; waiting for alerts")
        settled, deadline = 0, time.monotonic() + args.grace_s
        while settled < 2 and time.monotonic() < deadline:  # idle twice in a row
            time.sleep(1.0)
            done = not set(sent.frauds) - set(listener.first_ms) and not batches_in_flight(conf)
            settled = settled + 1 if done else 0
        missing = len(set(sent.frauds) - set(listener.first_ms))
        busy = ", ".join(batches_in_flight(conf)) or "none"
        log(f"{rate:,} ev/s: {missing} frauds without an alert, queries busy: {busy}; stopping")
        jvm_rss, python_rss = peak_rss_mib(jvm_pid), peak_rss_mib(job.pid)
        job.send_signal(signal.SIGTERM)
        exit_code = job.wait(timeout=300)
        if exit_code != 0:
            log(f"the stream job exited with code {exit_code}:\n{log_tail(log_path)}")
    except BaseException:
        if job.poll() is None:
            job.terminate()
            job.wait(timeout=300)
        print(log_tail(log_path), flush=True)
        raise
    finally:
        listener.stop()
    alerts = dict(listener.first_ms)
    return Run(
        rate,
        conf,
        sent,
        alerts,
        listener.messages,
        dict(listener.by_type),
        window_end,
        jvm_rss,
        python_rss,
        exit_code,
        index_s,
        job_cores,
        jvm_cores,
        jvm_groups,
    )


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Batch:
    """One micro-batch with input, from ``pipeline_progress``."""

    query: str
    at: float  # epoch seconds
    seconds: float
    state_rows: int


@dataclass(frozen=True)
class Figures:
    frauds: int  # sent in the measured window
    kafka_alerted: int
    kafka: Stats | None
    kafka_thirds: list[Stats | None]  # frauds sent in the first, last third of the window
    other_alerts: int  # on payments that are not frauds
    delta_alerted: int
    delta: Stats | None
    input_rate: float  # records/s into the input topics during the window
    processed: dict[str, float]  # query reading Kafka -> records/s it committed
    query_input: dict[str, float]  # query reading Kafka -> records/s into the topics it reads
    durations: dict[str, list[list[float]]]  # query -> batch durations, first and last third
    state_rows: dict[str, tuple[int, int]]  # query -> max in the first and the last minute


def read_batches(spark: SparkSession, conf: Conf) -> list[Batch]:
    rows = spark.read.format("delta").load(conf.table_path(tables.PIPELINE_PROGRESS)).collect()
    return [
        Batch(
            r.query_name,
            datetime.fromisoformat(r.batch_time.replace("Z", "+00:00")).timestamp(),
            r.batch_duration_ms / 1e3,
            r.state_rows or 0,
        )
        for r in rows
        if r.num_input_rows
    ]


def alert_commit_times(spark: SparkSession, conf: Conf) -> dict[str, float]:
    """Transaction id -> when the commit adding its alert to ``alerts`` became visible.

    Data files do not keep their time: auto compaction rewrites them. So: the files each
    commit of the log added as new data, dated by the commit file, read as Parquet.
    """
    table = Path(conf.table_path(tables.ALERTS))
    added: dict[str, float] = {}
    for commit in (table / "_delta_log").glob("*.json"):
        for action in map(json.loads, commit.read_text().splitlines()):
            if action.get("add", {}).get("dataChange"):
                added[Path(action["add"]["path"]).name] = commit.stat().st_mtime
    if not added:
        return {}
    df = spark.read.parquet(*(str(table / name) for name in added))
    rows = (
        df.filter(F.col("alert_type") == ALERT_TYPE_IMPOSSIBLE_TRAVEL)
        .select("transaction_id", F.col("_metadata.file_name").alias("file"))
        .collect()
    )
    return {r.transaction_id: added[r.file] for r in rows}


def analyse(spark: SparkSession, run: Run) -> Figures:
    """The figures of one run, from what the benchmark saw on Kafka and from its lake."""
    sent, first, last = run.sent, run.sent.window_start, run.window_end
    start, end = first.at, last.at
    thirds = [(start, start + (end - start) / 3), (end - (end - start) / 3, end + 1)]
    measured = {tx: at for tx, at in sent.frauds.items() if at >= start}
    on_kafka = {
        tx: run.alert_ms[tx] / 1e3 - at for tx, at in measured.items() if tx in run.alert_ms
    }
    committed = alert_commit_times(spark, run.conf)
    in_delta = [committed[tx] - at for tx, at in measured.items() if tx in committed]
    batches = read_batches(spark, run.conf)
    queries = [q.name for q in PIPELINE if any(b.query == q.name for b in batches)]

    def state(query: str, lo: float, hi: float) -> int:
        return max(
            (b.state_rows for b in batches if b.query == query and lo <= b.at < hi), default=0
        )

    return Figures(
        frauds=len(measured),
        kafka_alerted=len(on_kafka),
        kafka=percentiles(list(on_kafka.values())),
        kafka_thirds=[
            percentiles([d for tx, d in on_kafka.items() if lo <= measured[tx] < hi])
            for lo, hi in thirds
        ],
        other_alerts=len(set(run.alert_ms) - set(sent.frauds)),
        delta_alerted=len(in_delta),
        delta=percentiles(in_delta),
        input_rate=(sum(last.topics.values()) - sum(first.topics.values())) / (end - start),
        processed={
            q: (n - first.committed.get(q, 0)) / (end - start) for q, n in last.committed.items()
        },
        query_input={
            q: (last.records(q) - first.records(q)) / (end - start) for q in last.committed
        },
        durations={
            q: [
                [b.seconds for b in batches if b.query == q and lo <= b.at < hi]
                for lo, hi in thirds
            ]
            for q in queries
        },
        state_rows={
            q: (state(q, start, start + 60), state(q, end - 60, end + 1))
            for q in queries
            if any(b.state_rows for b in batches if b.query == q)
        },
    )


# --------------------------------------------------------------------------- report


def _latency(stats: Stats | None) -> str:
    if stats is None:
        return "n/a"
    names = ("p50", "p95", "p99", "max")
    return ", ".join(f"{n} {v:.2f}" for n, v in zip(names, stats, strict=True))


def _durations(values: list[float]) -> str:
    stats = percentiles(values)
    if stats is None:
        return "n/a"
    return f"median {stats[0]:.2f}, p95 {stats[1]:.2f}, max {stats[3]:.2f}"


def _cpu_row(run: Run, input_rate: float) -> tuple[str, str, str]:
    """The job's CPU over the measured window, in cores and per 1,000 input events.

    Unlike latency, which jumps once a query falls behind, CPU per event tracks the work
    done; a job that did not keep up left part of the window's work undone (and cannot use
    more than the cores), so its figure understates the cost. It also moves with the
    machine's speed: compare two runs with their machine index.
    """
    if run.job_cores is None or input_rate <= 0:
        return ("CPU, stream job", "n/a", "its processes could not be read")
    per_1000_ms = run.job_cores / input_rate * 1_000_000
    jvm = "n/a" if run.jvm_cores is None else f"{run.jvm_cores:.2f}"
    return (
        "CPU, stream job",
        f"{run.job_cores:.2f} cores",
        f"{per_1000_ms:,.0f} ms per 1,000 events in; of the cores, the JVM {jvm} (its driver "
        f"and, on a local master, every task), the rest the Python driver and workers; "
        f"{os.cpu_count()} cores here",
    )


def _jvm_threads_row(run: Run) -> tuple[str, str, str]:
    """The JVM's CPU over the measured window by what its threads do, as shares.

    Tasks run the micro-batches' work; query threads plan them and commit offsets, state
    and Delta tables; the JIT compiler turns hot code, Spark's own and the code it
    generates, into machine code (a quarter of the JVM over 15 minutes at 2,000 events/s,
    more in the first minutes).
    """
    total = sum(run.jvm_groups.values())
    if total <= 0:
        return ("CPU, JVM threads", "n/a", "the JVM's threads could not be read")
    order = [group for group, _ in JVM_THREAD_GROUPS] + ["other", "ended threads"]
    shares = ", ".join(
        f"{group} {100 * run.jvm_groups.get(group, 0.0) / total:.0f} %" for group in order
    )
    return (
        "CPU, JVM threads",
        f"{total:,.0f} core-s",
        f"{shares} (tasks: the micro-batches' work; query threads: planning, offsets, "
        "commits; JIT compiler: machine code for Spark's code and the code it generates, "
        "and the code cache's sweeper; ended threads: threads gone by the end)",
    )


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} MiB"


def kept_up(fig: Figures) -> bool:
    return all(rate >= KEPT_UP * fig.query_input[q] for q, rate in fig.processed.items())


def rate_table(run: Run, fig: Figures, args: argparse.Namespace) -> str:
    """One run's figures as a table: what, how much, details."""
    first, last = run.sent.window_start, run.window_end
    topics = run.conf.kafka.topics
    fixes, payments = (
        last.topics[t] - first.topics[t] for t in (topics.device_locations, topics.transactions)
    )
    rows = [
        (
            "input",
            f"{fig.input_rate:,.0f} ev/s",
            f"{fixes:,} fixes + {payments:,} payments in the measured window; producers "
            f"at most {run.sent.max_behind_s:.2f} s behind schedule, using "
            f"{run.sent.producer_cores:.2f} cores",
        ),
        *[
            (
                f"processed by {query}",
                f"{rate:,.0f} ev/s",
                f"of {fig.query_input[query]:,.0f} into its topics; Kafka backlog "
                f"{first.backlog(query):,} -> {last.backlog(query):,} records "
                "from the start to the end of the window",
            )
            for query, rate in fig.processed.items()
        ],
        ("kept up", "yes" if kept_up(fig) else "NO", f"each processed >= {KEPT_UP:.0%} of input"),
        (
            "frauds alerted on Kafka",
            f"{fig.kafka_alerted:,} of {fig.frauds:,}",
            f"{fig.other_alerts} impossible-travel alerts on other payments; "
            f"{run.alert_messages:,} messages: "
            + "".join(f"{n:,} {kind}, " for kind, n in sorted(run.alerts_by_type.items()))
            + f"{run.alert_messages - sum(run.alerts_by_type.values()):,} repeated ids",
        ),
        ("frauds alerted in Delta", f"{fig.delta_alerted:,} of {fig.frauds:,}", ""),
        ("alert latency, Kafka (s)", _latency(fig.kafka), "alert timestamp - payment sent"),
        ("  frauds of the first third", _latency(fig.kafka_thirds[0]), ""),
        ("  frauds of the last third", _latency(fig.kafka_thirds[1]), ""),
        ("alert latency, Delta (s)", _latency(fig.delta), "alerts commit - payment sent"),
    ]
    for query, per_third in fig.durations.items():
        for name, durations in zip(("first", "last"), per_third, strict=True):
            label = f"{query} batches, {name} third (s)"
            rows.append((label, _durations(durations), f"{len(durations)} batches"))
    rows += [
        (f"{query} state rows", f"{early:,} -> {late:,}", "max in the first -> last minute")
        for query, (early, late) in fig.state_rows.items()
    ]
    rows += [
        ("peak RSS, driver JVM", _mib(run.jvm_rss_mib), f"Python: {_mib(run.python_rss_mib)}"),
        _cpu_row(run, fig.input_rate),
        _jvm_threads_row(run),
        ("job exit code", str(run.exit_code), "after SIGTERM"),
    ]
    label_w, value_w = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    job_conf = load_conf(LAT_DIR / f"conf-{run.rate}.yaml")
    stream = job_conf.stream
    header = (
        f"txwatch latency at {run.rate:,} events/s ({args.conf.name}: "
        f"{job_conf.kafka.partitions} partitions per topic, {job_conf.spark.shuffle_partitions} "
        f"shuffle partitions): alert trigger {stream.alert_trigger_interval}, "
        f"table trigger {stream.trigger_interval}, scoring trigger "
        f"{stream.scoring_trigger_interval}, enrich trigger {stream.enrich_trigger_interval}, "
        f"{args.minutes:g} min measured after "
        f"{args.warmup_s:g} s of warm-up, {os.cpu_count()} cores; machine index "
        f"{run.cpu_index_s:.2f} s (a fixed Python loop's CPU time before the run)"
        + (f"; JVM options {args.java_options}" if args.java_options else "")
    )
    lines = [header, "-" * len(header)]
    lines += [f"{a:<{label_w}}  {b:>{value_w}}  {c}".rstrip() for a, b, c in rows]
    return "\n".join(lines)


def summary_markdown(runs: list[tuple[Run, Figures]]) -> str:
    lines = [
        "| events/s | input | processed | Kafka backlog at end | kept up | frauds alerted "
        "| alert latency on Kafka, p50 / p95 / p99 / max (s) | in Delta, p50 / p95 / p99 / max (s) "
        "| median batch, last third (s) | driver JVM peak RSS |",
        "|" + "---:|" * 10,
    ]
    for run, fig in runs:
        medians = {q: percentiles(d[1]) for q, d in fig.durations.items()}
        cells = [
            f"{run.rate:,}",
            f"{fig.input_rate:,.0f}",
            ", ".join(f"{q} {rate:,.0f}" for q, rate in fig.processed.items()),
            ", ".join(f"{q} {run.window_end.backlog(q):,}" for q in fig.processed),
            "yes" if kept_up(fig) else "no",
            f"{fig.kafka_alerted:,} / {fig.frauds:,}",
            " / ".join(f"{v:.2f}" for v in fig.kafka) if fig.kafka else "n/a",
            " / ".join(f"{v:.2f}" for v in fig.delta) if fig.delta else "n/a",
            ", ".join(f"{q} {m[0]:.1f}" for q, m in medians.items() if m),
            _mib(run.jvm_rss_mib),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rates",
        type=lambda text: [int(r) for r in text.split(",")],
        default=[2000, 10000],
        help="events per second (fixes + payments), comma-separated (default 2000,10000)",
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="measured minutes per rate")
    parser.add_argument("--warmup-s", type=float, default=30.0, help="unmeasured traffic first")
    parser.add_argument("--grace-s", type=float, default=60.0, help="wait for alerts after")
    parser.add_argument("--queries", help="run only these queries (jobs.stream --queries)")
    parser.add_argument(
        "--alert-trigger", help="override stream.alert_trigger_interval (the travel query)"
    )
    parser.add_argument(
        "--table-trigger", help="override stream.trigger_interval (the ingest query)"
    )
    parser.add_argument(
        "--alert-table-trigger",
        help="override stream.alert_table_trigger_interval (the alerts query)",
    )
    parser.add_argument(
        "--scoring-trigger",
        help="override stream.scoring_trigger_interval (the payment_scoring query)",
    )
    parser.add_argument(
        "--enrich-trigger", help="override stream.enrich_trigger_interval (the enrich query)"
    )
    parser.add_argument(
        "--conf",
        type=Path,
        default=BASE_CONF,
        help="the conf the job's conf extends (default conf/local.yaml): settings to compare",
    )
    parser.add_argument(
        "--model-registry",
        help="MLflow registry the payment_scoring query loads its model from, e.g. the demo's "
        "sqlite:///$PWD/lake/_mlflow/mlflow.db (default: the bench lake's own, which holds "
        "no model: payments pass unscored)",
    )
    parser.add_argument(
        "--java-options",
        help="more JVM options for the stream job's JVMs (as JAVA_TOOL_OPTIONS; spark-submit's "
        "launcher gets them too), e.g. --java-options=-Xlog:gc (with '=': the value starts with "
        "'-'). They come before the conf's spark.driver.extraJavaOptions: to try another "
        "collector than its -XX:+UseParallelGC, give a --conf that sets that key instead",
    )
    args = parser.parse_args(argv)
    if not args.conf.is_file():
        parser.error(f"--conf {args.conf}: no such file")
    if min(args.rates) < 20 or args.minutes <= 0 or args.warmup_s < 0:
        parser.error("rates must be >= 20 events/s, --minutes positive, --warmup-s >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    LAT_DIR.mkdir(parents=True, exist_ok=True)
    runs = []
    with local_broker(load_conf(args.conf).kafka.bootstrap_servers):
        for rate in args.rates:
            runs.append(run_rate(rate, args))
        delete_topics(runs[-1].conf)  # the lakes stay
    log("reading the lakes (Spark, local[1])")
    spark = create_session(runs[0].conf, "bench-latency", master="local[1]")
    try:
        results = [(run, analyse(spark, run)) for run in runs]
    finally:
        spark.stop()
    for run, figures in results:
        print(f"\n{rate_table(run, figures, args)}")
    print(f"\n{summary_markdown(results)}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
