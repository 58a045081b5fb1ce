"""Throughput benchmark: how fast the stream job drains a Kafka backlog, next to the ceiling.

    .venv/bin/python -m bench.throughput [--transactions 1000000] [--hours H] [--keep-data]
                                         [--skip-baseline] [--skip-cost-report]
    make bench BENCH_ARGS="--transactions 200000"
    make bench BENCH_ARGS="--transactions 200000 --hours 24"

1. Start the local broker (``scripts/kafka-local.sh start``) unless one already answers; stop
   it at the end only if this run started it.
2. Load a backlog: ``--transactions`` simulated payments and about two location fixes per
   payment (``txwatch.simulator`` records, no ground truth) into the topics ``bench-*``, produced
   by two processes that each simulate half of the users and are kept in step by simulated
   time, so every partition holds the records in roughly event-time order, as one simulator
   would have published them. By default the payments span about 4 hours of event time
   (11:00 to 15:00 UTC, every user active); with ``--hours H`` fewer users pay over a longer
   span: the payments span at least about H hours and the location fixes H x 1.05 + 10
   minutes, and every user pays at the same rate around the clock (no nights), so every
   part of the backlog has the same mix of payments and fixes.
3. Ceiling: Spark reads the two topics from the earliest offset into the ``noop`` sink with
   the job's own Kafka source (``txwatch.queries.ingest.read``: same maxOffsetsPerTrigger),
   availableNow.
4. End to end: ``txwatch.queries.runner.run_available_now`` on a fresh lake ``.bench/lake``,
   exactly what ``./spark-submit.sh stream --available-now`` runs: ingest, travel, alerts,
   enrich.
5. Baseline (unless ``--skip-baseline``): the plain Python loop of ``bench.baseline`` (one
   kafka-python consumer, ``json.loads``, a dict of the latest fix per device, the
   impossible-travel rule) on the same backlog.
6. Print the results, with per-phase times from ``pipeline_progress`` and table row counts,
   then the three rates side by side and whether the bar is met: end to end at least 25 %
   of the ceiling and faster than the baseline.
7. Unless ``--skip-cost-report``, the cost over time (``bench.cost``): for every stream
   table, the first third of its commits against the last third (execution time, bytes
   rewritten and added per commit, from the Delta history; OPTIMIZE commits and live files),
   the same for every query's micro-batches (``pipeline_progress``), and a verdict per sink
   and query: "flat", or "GROWS (x.x times)" when the cost per micro-batch grows with the
   table. A longer ``--hours`` backlog makes a growth easier to see.

The settings come from ``conf/bench.yaml`` (larger micro-batches than a laptop's live run);
the lake and topic names are always the benchmark's own. Without ``--keep-data`` the topics
are recreated before loading and, after a successful run, deleted with the bench lake. With
``--keep-data`` both are kept, and a later ``--keep-data`` run with the same
``--transactions`` and ``--hours`` reuses the backlog instead of loading it again (the
topics the job itself writes, potential-fraud and enrichment-candidates, are emptied before
every end-to-end run either way). The card-token key is ``$TXWATCH_TOKEN_KEY`` when set,
else a fixed benchmark key.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import SparkSession

from bench.baseline import BaselineResult, run_baseline
from bench.cost import CostInputs, read_cost_inputs
from txwatch.infra import tables
from txwatch.infra.config import Conf, Topics, load_conf
from txwatch.infra.kafka_admin import (
    admin_client,
    ensure_topics,
    local_broker,
    topic_names,
)
from txwatch.infra.progress import ProgressRecorder, WatermarkBounds
from txwatch.infra.session import create_session
from txwatch.queries import PIPELINE, ingest, travel
from txwatch.queries.base import RunContext
from txwatch.queries.runner import run_available_now
from txwatch.simulator import Record, SimulationParams, Simulator, TruthRow, User, produce

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Barrier

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / ".bench"
LAKE_ROOT = BENCH_DIR / "lake"
NOOP_CHECKPOINT = BENCH_DIR / "noop-checkpoint"
MANIFEST = BENCH_DIR / "backlog.json"
DEFAULT_CONF = REPO_ROOT / "conf" / "bench.yaml"

BENCH_TOPICS = Topics(
    transactions="bench-transactions",
    device_locations="bench-device-locations",
    potential_fraud="bench-potential-fraud",
    enrichment_candidates="bench-enrichment-candidates",
    metrics="bench-metrics",
)
BENCH_TOKEN_KEY = b"txwatch-bench-token-key (not a secret)"
PRODUCERS = 2
PROGRESS_EVERY_S = 5.0
# The bar: end to end reaches this share of the ceiling and beats the baseline.
BAR_SHARE_OF_CEILING = 0.25
REPORTED_TABLES = (
    tables.BRONZE_TRANSACTIONS,
    tables.BRONZE_DEVICE_LOCATIONS,
    tables.QUARANTINE,
    tables.TRANSACTIONS_ENRICHED,
    tables.ALERTS,
)


# --------------------------------------------------------------------------- config


def bench_conf(path: str | os.PathLike[str]) -> Conf:
    """``path`` loaded as usual, with the benchmark's own lake and topics."""
    conf = load_conf(path)
    kafka = replace(conf.kafka, topics=BENCH_TOPICS)
    return replace(conf, lake_root=str(LAKE_ROOT), kafka=kafka)


def token_key_variable(conf: Conf) -> str:
    """The variable holding the card-token key, set to the benchmark's key when unset (before
    the session starts: Spark's tasks read it from their environment)."""
    variable = conf.privacy.token_key_env
    if not os.environ.get(variable):
        os.environ[variable] = BENCH_TOKEN_KEY.decode()
    return variable


# --------------------------------------------------------------------------- broker


def topic_record_counts(conf: Conf) -> dict[str, int]:
    """Records each input topic holds now (end minus beginning offsets over its partitions)."""
    topics = (conf.kafka.topics.transactions, conf.kafka.topics.device_locations)
    consumer = KafkaConsumer(bootstrap_servers=conf.kafka.bootstrap_servers)
    try:
        counts = {}
        for topic in topics:
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            ends = consumer.end_offsets(partitions)
            starts = consumer.beginning_offsets(partitions)
            counts[topic] = sum(ends[tp] - starts[tp] for tp in partitions)
        return counts
    finally:
        consumer.close()


def delete_topics(conf: Conf) -> None:
    admin = admin_client(conf.kafka.bootstrap_servers)
    try:
        existing = sorted(set(admin.list_topics()) & set(topic_names(conf)))
        if existing:
            admin.delete_topics(existing)
    finally:
        admin.close()


# --------------------------------------------------------------------------- backlog


@dataclass(frozen=True)
class BacklogShape:
    """How the simulated population is sized for a number of transactions.

    Between 11:00 and 15:00 UTC every simulated user is inside their active hours, so each
    pays ``tx_per_hour`` times a week (plus 3 % injected impossible-travel payments) and
    every phone reports every ``ping_interval_s``: 12 fixes/h for ~6.2 payments/h, about two
    fixes per payment. There are 5 % more users than needed, so ``max_transactions`` (not
    the clock) ends the payments; the phones keep reporting until the end.
    """

    seed: int = 7
    duration_min: float = 240.0
    tx_per_hour: float = 6.0
    ping_interval_s: float = 300.0
    user_margin: float = 1.05
    # Producers wait for each other every this many simulated seconds.
    sync_step_s: float = 60.0


def backlog_shape(hours: float | None = None) -> BacklogShape:
    """The default shape, or one whose payments span at least about ``hours`` of event time.

    With ``hours`` the simulation lasts ``hours * user_margin`` plus the simulator's tail, and
    ``plan_shards`` sizes the population for that span: as the users are ``user_margin``
    more than needed, ``max_transactions`` ends the payments after about ``hours``, and the
    phones report until the end. Longer spans mean fewer users for the same transactions.
    """
    shape = BacklogShape()
    if hours is None:
        return shape
    payment_hours = hours * shape.user_margin
    tail_h = SimulationParams().tail_s / 3600.0
    return replace(shape, duration_min=round((payment_hours + tail_h) * 60.0, 3))


@dataclass(frozen=True)
class Shard:
    """One producer process's part of the population."""

    index: int
    first_user: int
    seed: int
    params: SimulationParams
    # Every user pays at their daytime rate around the clock (see ShardSimulator).
    all_day: bool = False


def plan_shards(
    transactions: int, shape: BacklogShape, count: int = PRODUCERS, all_day: bool = False
) -> list[Shard]:
    """Split ``transactions`` and the users that make them over ``count`` producers.

    The users are sized for every one of them to be active for the whole simulation: true
    of the default shape (11:00 to 15:00 UTC), and made true by ``all_day`` for longer ones.
    """
    defaults = SimulationParams()
    payment_hours = shape.duration_min / 60.0 - defaults.tail_s / 3600.0
    per_user = shape.tx_per_hour * (1.0 + defaults.impossible_travel_rate) * payment_hours
    users = max(math.ceil(transactions / per_user * shape.user_margin), count)
    shards, first_user = [], 0
    for index in range(count):
        shard_users = users // count + (index < users % count)
        shard_transactions = transactions // count + (index < transactions % count)
        params = SimulationParams(
            seed=shape.seed,
            users=shard_users,
            duration_min=shape.duration_min,
            max_transactions=shard_transactions,
            ping_interval_s=shape.ping_interval_s,
            tx_per_hour=shape.tx_per_hour,
        )
        shard_seed = shape.seed + 1000 * (index + 1)
        shards.append(Shard(index, first_user, shard_seed, params, all_day))
        first_user += shard_users
    return shards


class _Discarded(list[TruthRow]):
    """A ground-truth list that keeps nothing: the benchmark does not evaluate."""

    def append(self, item: TruthRow) -> None:
        pass


class ShardSimulator(Simulator):
    """The simulator for users ``first_user, first_user + 1, ...`` of a larger population.

    The merchants come from the common ``params.seed``, so all shards share them; the users
    and everything they do come from the shard's own seed, so the shards differ.
    """

    def __init__(self, shard: Shard, conf: Conf) -> None:
        self._shard = shard
        super().__init__(shard.params, conf)
        self.truth = _Discarded()

    def _make_user(self, i: int) -> User:
        if i == 0:  # the merchants are made; the users start here
            self.rng.seed(self._shard.seed)
        return super()._make_user(self._shard.first_user + i)

    def _next_tx_gap(self, user: User, t: float) -> float:
        """With ``all_day``, the user's daytime rate at every hour (one draw, as the parent's)."""
        if not self._shard.all_day:
            return super()._next_tx_gap(user, t)
        return self.rng.expovariate(user.tx_per_hour / 3600.0)


def in_step(
    records: Iterator[tuple[float, Record]],
    barrier: Barrier,
    step_s: float,
    horizon_s: float,
    sent: Synchronized[int],
) -> Iterator[tuple[float, Record]]:
    """``records``, waiting for the other producers at every ``step_s`` of simulated time.

    Every shard waits at the same points up to ``horizon_s`` (past its last record if need
    be), so no producer runs more than a step ahead of the others. ``sent`` counts records.
    """
    next_sync, n = step_s, 0
    for t, record in records:
        while t >= next_sync and next_sync <= horizon_s:
            barrier.wait()
            next_sync += step_s
        yield t, record
        n += 1
        if n % 2000 == 0:
            sent.value = n
    sent.value = n
    while next_sync <= horizon_s:
        barrier.wait()
        next_sync += step_s


def produce_shard(
    shard: Shard, conf: Conf, shape: BacklogShape, barrier: Barrier, sent: Synchronized[int]
) -> None:
    """Body of a producer process: simulate one shard and send it to Kafka."""
    params = shard.params
    horizon_s = params.duration_min * 60.0 + params.late_delay_s[1] + shape.sync_step_s
    records = ShardSimulator(shard, conf).records()
    paced = in_step(records, barrier, shape.sync_step_s, horizon_s, sent)
    produce(paced, conf.kafka.bootstrap_servers)


def run_producers(conf: Conf, shards: list[Shard], shape: BacklogShape) -> None:
    """Run one process per shard, printing the records sent every few seconds."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(shards), timeout=600)
    counters = [ctx.Value("q", 0) for _ in shards]
    processes = [
        ctx.Process(
            target=produce_shard,
            args=(shard, conf, shape, barrier, counter),
            name=f"bench-producer-{shard.index}",
        )
        for shard, counter in zip(shards, counters, strict=True)
    ]
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY_S
    for process in processes:
        process.start()
    try:
        while any(p.is_alive() for p in processes):
            time.sleep(0.2)
            if any(p.exitcode not in (None, 0) for p in processes):
                barrier.abort()  # the others would wait for the dead one until the timeout
                break
            if time.monotonic() >= next_report:
                next_report += PROGRESS_EVERY_S
                sent = sum(c.value for c in counters)
                elapsed = time.monotonic() - started
                print(f"load: {sent:,} records sent ({sent / elapsed:,.0f}/s)", flush=True)
    finally:
        for process in processes:
            process.join()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"producer(s) {', '.join(failed)} failed; see their traceback above")


@dataclass(frozen=True)
class Backlog:
    transactions: int
    locations: int
    load_s: float | None  # None: reused from an earlier --keep-data run
    event_hours: float | None = None  # the simulated span (BacklogShape.duration_min)

    @property
    def records(self) -> int:
        return self.transactions + self.locations


def _manifest(
    conf: Conf, transactions: int, shape: BacklogShape, hours: float | None = None
) -> dict:
    """What identifies a backlog: stored next to the lake to recognise it on the next run.

    ``hours`` is only stored when given (it also means users active all day), so a backlog
    loaded without ``--hours`` keeps the manifest it had before the option existed.
    """
    manifest = {
        "bootstrap_servers": conf.kafka.bootstrap_servers,
        "topics": asdict(conf.kafka.topics),
        "transactions_requested": transactions,
        "shape": asdict(shape),
        "producers": PRODUCERS,
    }
    if hours is not None:
        manifest["hours"] = hours
    return manifest


def _reusable_backlog(conf: Conf, wanted: dict, event_hours: float) -> Backlog | None:
    if not MANIFEST.is_file():
        return None
    stored = json.loads(MANIFEST.read_text())
    counts = stored.pop("records", None)
    if stored != wanted or counts != topic_record_counts(conf):
        return None
    topics = conf.kafka.topics
    return Backlog(counts[topics.transactions], counts[topics.device_locations], None, event_hours)


def prepare_backlog(
    conf: Conf, transactions: int, keep_data: bool, hours: float | None = None
) -> Backlog:
    """Reuse the backlog of an earlier ``--keep-data`` run if it matches, else load anew.

    ``hours``: see ``backlog_shape``; None is the default 4-hour backlog.
    """
    shape = backlog_shape(hours)
    event_hours = shape.duration_min / 60.0
    wanted = _manifest(conf, transactions, shape, hours)
    if keep_data:
        ensure_topics(conf)
        backlog = _reusable_backlog(conf, wanted, event_hours)
        if backlog is not None:
            print(f"load: reusing the {backlog.records:,} records in the bench topics", flush=True)
            return backlog
    MANIFEST.unlink(missing_ok=True)
    ensure_topics(conf, recreate=True)
    shards = plan_shards(transactions, shape, all_day=hours is not None)
    users = sum(s.params.users for s in shards)
    span = (
        f"{shape.duration_min:g} simulated minutes"
        if hours is None
        else f"{event_hours:.1f} simulated hours (payments for about {hours:g} h, all day)"
    )
    print(
        f"load: {transactions:,} transactions from {users:,} users over {span}, "
        f"{len(shards)} producer processes -> {', '.join(topic_names(conf)[:2])}",
        flush=True,
    )
    started = time.monotonic()
    run_producers(conf, shards, shape)
    load_s = time.monotonic() - started
    counts = topic_record_counts(conf)
    MANIFEST.write_text(json.dumps({**wanted, "records": counts}, indent=2))
    topics = conf.kafka.topics
    backlog = Backlog(
        counts[topics.transactions], counts[topics.device_locations], load_s, event_hours
    )
    print(f"load: {backlog.records:,} records in {load_s:.0f} s", flush=True)
    return backlog


# --------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class Ceiling:
    records: int
    seconds: float
    batches: int

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def measure_ceiling(spark: SparkSession, conf: Conf) -> Ceiling:
    """Time the job's Kafka source draining both topics into the ``noop`` sink."""
    shutil.rmtree(NOOP_CHECKPOINT, ignore_errors=True)
    print("bench: ceiling (Kafka source -> noop sink)", flush=True)
    started = time.monotonic()
    query = (
        ingest.read(spark, conf)
        .writeStream.queryName("bench_noop")
        .format("noop")
        .option("checkpointLocation", str(NOOP_CHECKPOINT))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    seconds = time.monotonic() - started
    progress = [p for p in query.recentProgress if p.numInputRows]
    shutil.rmtree(NOOP_CHECKPOINT, ignore_errors=True)
    return Ceiling(sum(p.numInputRows for p in progress), seconds, len(progress))


@dataclass(frozen=True)
class QueryStats:
    """One query's micro-batches, from its ``pipeline_progress`` rows."""

    batches: int
    input_rows: int
    busy_s: float  # sum of the batches' durations
    span_s: float  # start of the first batch to the end of the last
    dropped_by_watermark: int
    peak_state_rows: int
    first_start: float = 0.0  # epoch seconds
    last_end: float = 0.0


def covered_s(stats: list[QueryStats]) -> float:
    """Seconds during which at least one of the queries had a batch running or pending."""
    spans = sorted((q.first_start, q.last_end) for q in stats if q.batches)
    total, reach = 0.0, float("-inf")
    for start, end in spans:
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _query_stats(rows: list) -> QueryStats:
    busy = [r for r in rows if r.num_input_rows]
    if not busy:
        return QueryStats(0, 0, 0.0, 0.0, 0, 0)
    starts = [datetime.fromisoformat(r.batch_time.replace("Z", "+00:00")) for r in busy]
    ends = [s.timestamp() + r.batch_duration_ms / 1000 for s, r in zip(starts, busy, strict=True)]
    return QueryStats(
        batches=len(busy),
        input_rows=sum(r.num_input_rows for r in busy),
        busy_s=sum(r.batch_duration_ms for r in busy) / 1000,
        span_s=max(ends) - min(starts).timestamp(),
        dropped_by_watermark=sum(r.rows_dropped_by_watermark or 0 for r in busy),
        peak_state_rows=max(r.state_rows or 0 for r in busy),
        first_start=min(starts).timestamp(),
        last_end=max(ends),
    )


@dataclass(frozen=True)
class Pipeline:
    seconds: float
    queries: dict[str, QueryStats]  # by query name, in pipeline order

    @property
    def ingest(self) -> QueryStats:
        return self.queries[ingest.NAME]

    @property
    def travel(self) -> QueryStats:
        return self.queries[travel.NAME]

    @property
    def events(self) -> int:
        """Transactions plus location fixes read from Kafka."""
        return self.ingest.input_rows

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def measure_pipeline(spark: SparkSession, conf: Conf) -> Pipeline:
    """Time ``run_available_now`` on a fresh lake; phase times from ``pipeline_progress``."""
    shutil.rmtree(LAKE_ROOT, ignore_errors=True)
    # A fresh lake reads the job's own topics from the start: empty them, or the alerts and
    # enrich queries would also drain what an earlier --keep-data run published there.
    topics = conf.kafka.topics
    ensure_topics(conf, recreate=True, names=[topics.potential_fraud, topics.enrichment_candidates])
    print(f"bench: end to end (run_available_now, lake {LAKE_ROOT})", flush=True)
    started = time.monotonic()
    run_available_now(RunContext(spark, conf, available_now=True), PIPELINE)
    seconds = time.monotonic() - started
    rows = spark.read.format("delta").load(conf.table_path(tables.PIPELINE_PROGRESS)).collect()
    by_query = {q.name: [r for r in rows if r.query_name == q.name] for q in PIPELINE}
    return Pipeline(seconds, {name: _query_stats(batches) for name, batches in by_query.items()})


def table_row_counts(spark: SparkSession, conf: Conf) -> dict[str, int]:
    return {t: spark.read.format("delta").load(conf.table_path(t)).count() for t in REPORTED_TABLES}


# --------------------------------------------------------------------------- memory


def jvm_pid(spark: SparkSession) -> int | None:
    """Process id of the driver JVM (local mode: the executors run in it too)."""
    jvm = spark.sparkContext._jvm
    if jvm is None:
        return None
    return int(jvm.java.lang.ProcessHandle.current().pid())


def peak_rss_mib(pid: int | None) -> float | None:
    """``VmHWM`` (peak resident set) of process ``pid`` in MiB, if Linux tells."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def reset_peak_rss(pid: int | None) -> bool:
    """Restart ``VmHWM`` from the current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def read_stat(path: Path) -> tuple[str, list[str], float] | None:
    """A process's or thread's ``stat`` file: its name, the fields after the name, and its
    user plus system CPU time so far; None if it exited while we looked."""
    try:
        head, rest = path.read_text().rsplit(")", 1)
        name, fields = head.split("(", 1)[1], rest.split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
    return name, fields, cpu_s


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU time process ``pid`` has used so far (all its threads)."""
    stat = read_stat(Path(f"/proc/{pid}/stat")) if pid is not None else None
    return None if stat is None else stat[2]


@dataclass(frozen=True)
class JvmUsage:
    """What the driver JVM used during one measurement."""

    peak_rss_mib: float | None
    cpu_cores: float | None  # CPU seconds per wall second: 2.0 is both cores busy

    @classmethod
    def since(cls, pid: int | None, cpu_before: float | None, seconds: float) -> JvmUsage:
        cpu_after = cpu_seconds(pid)
        cores = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before)
        return cls(peak_rss_mib(pid), None if cores is None else cores / seconds)


@dataclass(frozen=True)
class Measurements:
    ceiling: Ceiling
    pipeline: Pipeline
    jvm: tuple[JvmUsage, JvmUsage]  # during the ceiling, during the pipeline
    load_avg: float  # 1-minute load average right after the pipeline
    row_counts: dict[str, int]
    cost: CostInputs | None = None  # None: --skip-cost-report


# --------------------------------------------------------------------------- report


def _phase_row(name: str, stats: QueryStats) -> tuple[str, str, str]:
    rate = stats.input_rows / stats.span_s if stats.span_s else 0.0
    detail = (
        f"{stats.batches} batches, {stats.input_rows:,} rows in, {rate:,.0f} rows/s; "
        f"batches busy {stats.busy_s:.1f} s"
    )
    return f"  {name} time", f"{stats.span_s:,.1f} s", detail


def _jvm_row(name: str, usage: JvmUsage, note: str = "") -> tuple[str, str, str]:
    cores = "n/a" if usage.cpu_cores is None else f"{usage.cpu_cores:.2f} cores"
    rss = "n/a" if usage.peak_rss_mib is None else f"{usage.peak_rss_mib:,.0f} MiB"
    return f"driver JVM, {name}", cores, f"busy on average; peak RSS {rss}{note}"


def report(conf: Conf, backlog: Backlog, m: Measurements, baseline: BaselineResult | None) -> str:
    """The results as a table (what, how much, details), then the rates side by side."""
    ceiling, pipeline = m.ceiling, m.pipeline
    loaded = f"{backlog.transactions:,} transactions + {backlog.locations:,} locations; " + (
        f"loaded in {backlog.load_s:.0f} s ({backlog.records / backlog.load_s:,.0f} rec/s)"
        if backlog.load_s
        else "reused from an earlier --keep-data run"
    )
    if backlog.event_hours is not None:
        loaded += f"; {backlog.event_hours:.1f} h of event time"
    # Queries that do not read each other's output run side by side: their spans overlap.
    other_s = pipeline.seconds - covered_s(list(pipeline.queries.values()))
    cores = os.cpu_count()
    rows: list[tuple[str, str, str]] = [
        ("records loaded", f"{backlog.records:,}", loaded),
        (
            "noop ceiling",
            f"{ceiling.rate:,.0f} rec/s",
            f"{ceiling.records:,} records in {ceiling.seconds:.1f} s, {ceiling.batches} batches",
        ),
        (
            "end-to-end",
            f"{pipeline.rate:,.0f} events/s",
            f"{pipeline.events:,} events read from Kafka in {pipeline.seconds:.1f} s wall",
        ),
        ("end-to-end / ceiling", f"{pipeline.rate / ceiling.rate:.1%}", ""),
        *([("baseline", f"{baseline.rate:,.0f} events/s", baseline.summary())] if baseline else []),
        *[_phase_row(name, stats) for name, stats in pipeline.queries.items()],
        (
            "  other",
            f"{other_s:,.1f} s",
            "no query busy: table creation, query start-up and shutdown, "
            "pipeline_progress writes (the query spans above overlap: ingest runs beside "
            "travel, alerts beside enrich)",
        ),
        (
            "travel join state",
            f"{pipeline.travel.peak_state_rows:,} rows",
            f"at most; {pipeline.travel.dropped_by_watermark:,} rows dropped by the watermark",
        ),
        _jvm_row("ceiling", m.jvm[0], " (since JVM start)"),
        _jvm_row("end-to-end", m.jvm[1]),
        ("load average", f"{m.load_avg:.2f}", f"1 min, after the end-to-end run; {cores} cores"),
        *[(f"rows {table}", f"{count:,}", "") for table, count in m.row_counts.items()],
    ]
    label_w = max(len(r[0]) for r in rows)
    value_w = max(len(r[1]) for r in rows)
    header = (
        f"txwatch throughput: {cores} cores, master {_master()}, "
        f"{_relative(conf.source)}, maxOffsetsPerTrigger {conf.kafka.max_offsets_per_trigger:,}"
    )
    lines = [header, "-" * len(header)]
    lines += [f"{a:<{label_w}}  {b:>{value_w}}  {c}".rstrip() for a, b, c in rows]
    if pipeline.events != backlog.records:
        lines.append(
            f"WARNING: ingest read {pipeline.events:,} records, the topics hold {backlog.records:,}"
        )
    if baseline and baseline.records != backlog.records:
        lines.append(
            f"WARNING: the baseline read {baseline.records:,} records, "
            f"the topics hold {backlog.records:,}"
        )
    return "\n".join([*lines, "", *rates_section(ceiling, pipeline, baseline)])


def rates_section(
    ceiling: Ceiling, pipeline: Pipeline, baseline: BaselineResult | None
) -> list[str]:
    """Ceiling, end to end and baseline rates with their ratios, and the bar."""
    versus = f"({pipeline.rate / baseline.rate:.2f}x the baseline)" if baseline else ""
    rows = [
        ("ceiling", "Kafka -> noop", ceiling.rate, ""),
        ("txwatch", "end to end", pipeline.rate, versus),
    ]
    if baseline:
        rows.append(("baseline", "plain Python loop", baseline.rate, ""))
    name_w = max(len(r[0]) for r in rows)
    labels = [f"{name:<{name_w}} {what}" for name, what, _, _ in rows]
    values = [f"{rate:,.0f}" for _, _, rate, _ in rows]
    shares = [f"{rate / ceiling.rate:.1%}".replace("%", " %") for _, _, rate, _ in rows]
    label_w = max(len(x) for x in [*labels, "rates (events/s)"])
    value_w = max(len(x) for x in [*values, "value"])
    share_w = max(len(x) for x in shares)
    lines = [f"{'rates (events/s)':<{label_w}}  {'value':>{value_w}}  vs ceiling"]
    lines += [
        f"{label:<{label_w}}  {value:>{value_w}}  {share:>{share_w}}   {note}".rstrip()
        for label, value, share, (_, _, _, note) in zip(labels, values, shares, rows, strict=True)
    ]
    share_met = pipeline.rate >= BAR_SHARE_OF_CEILING * ceiling.rate
    bar = f"bar: end to end >= {BAR_SHARE_OF_CEILING:.0%} of the ceiling"
    if baseline is None:
        verdict = "met" if share_met else "NOT met"
        lines.append(f"{bar}: {verdict} (the baseline part not judged: --skip-baseline)")
    else:
        verdict = "met" if share_met and pipeline.rate > baseline.rate else "NOT met"
        lines.append(f"{bar} and faster than the baseline: {verdict}")
    return lines


def _relative(path: str) -> str:
    with suppress(ValueError):
        return str(Path(path).relative_to(REPO_ROOT))
    return path


def _master() -> str:
    return os.environ.get("SPARK_MASTER", "local[*]")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--transactions",
        type=int,
        default=1_000_000,
        help="transactions in the backlog (default %(default)s)",
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=None,
        metavar="H",
        help="spread the payments over at least about H hours of event time, users active "
        "all day (default: about 4 hours, 11:00 to 15:00 UTC)",
    )
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="reuse a matching backlog and keep the topics and bench lake afterwards",
    )
    parser.add_argument(
        "--skip-baseline",
        action="store_true",
        help="do not run the plain Python baseline (bench.baseline) after Spark",
    )
    parser.add_argument(
        "--skip-cost-report",
        action="store_true",
        help="do not print the cost over time (bench.cost) after the throughput report",
    )
    parser.add_argument(
        "--conf", default=str(DEFAULT_CONF), help="YAML config (default conf/bench.yaml)"
    )
    args = parser.parse_args(argv)
    if args.transactions < 1:
        parser.error("--transactions must be positive")
    if args.hours is not None:
        if not 0 < args.hours < math.inf:
            parser.error("--hours must be a positive number")
        end = SimulationParams().start + timedelta(minutes=backlog_shape(args.hours).duration_min)
        if end > datetime.now(UTC):
            parser.error(
                f"--hours {args.hours:g}: the simulated events would end at {end:%Y-%m-%d %H:%M} "
                "UTC, in the future (the job caps future event times at their Kafka time)"
            )
    return args


def run_spark_measurements(conf: Conf, cost_report: bool = True) -> Measurements:
    """Ceiling, then the pipeline, in one Spark session (the ceiling warms the JVM up).

    With ``cost_report``, the tables' Delta history and ``pipeline_progress`` are read
    before the session stops (for ``bench.cost``).
    """
    spark = create_session(conf, "bench")
    try:
        spark.streams.addListener(ProgressRecorder(WatermarkBounds.from_conf(conf)))
        pid = jvm_pid(spark)
        cpu_before = cpu_seconds(pid)
        ceiling = measure_ceiling(spark, conf)
        ceiling_jvm = JvmUsage.since(pid, cpu_before, ceiling.seconds)
        peak_was_reset = reset_peak_rss(pid)
        cpu_before = cpu_seconds(pid)
        pipeline = measure_pipeline(spark, conf)
        pipeline_jvm = JvmUsage.since(pid, cpu_before, pipeline.seconds)
        if not peak_was_reset:  # VmHWM still holds the ceiling's peak
            pipeline_jvm = replace(pipeline_jvm, peak_rss_mib=None)
        load_avg = os.getloadavg()[0]
        return Measurements(
            ceiling,
            pipeline,
            (ceiling_jvm, pipeline_jvm),
            load_avg,
            table_row_counts(spark, conf),
            read_cost_inputs(spark, conf) if cost_report else None,
        )
    finally:
        spark.stop()


def clean_up(conf: Conf) -> None:
    """Delete the bench topics and lake (runs without --keep-data)."""
    delete_topics(conf)
    MANIFEST.unlink(missing_ok=True)
    shutil.rmtree(LAKE_ROOT, ignore_errors=True)
    print("bench: deleted the bench topics and lake (--keep-data keeps them)", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    conf = bench_conf(args.conf)
    token_key_variable(conf)  # before the session: Spark's tasks read it
    BENCH_DIR.mkdir(exist_ok=True)
    with local_broker(conf.kafka.bootstrap_servers):
        backlog = prepare_backlog(conf, args.transactions, args.keep_data, args.hours)
        measurements = run_spark_measurements(conf, not args.skip_cost_report)
        baseline = None if args.skip_baseline else run_baseline(conf, backlog.records)
        print()
        print(report(conf, backlog, measurements, baseline), flush=True)
        print()
        if measurements.cost is not None:
            print(measurements.cost.report(), flush=True)
            print()
        if not args.keep_data:
            clean_up(conf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
