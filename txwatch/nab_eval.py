"""NAB through the streaming job: replay a corpus into the metrics topic, score, write, grade.

``./spark-submit.sh evaluate nab --data DIR [--labels FILE] --out OUT`` (``jobs/evaluate.py``):

1. uses the Kafka broker that answers at ``kafka.bootstrap_servers``, or starts the local
   one (``scripts/kafka-local.sh``) and stops it afterwards;
2. sends every ``DIR/<category>/<name>.csv`` to a topic of its own, one JSON point per
   row (``series`` = ``<category>/<name>``, keyed by series so each series stays in order);
3. runs the ``metric_points`` query with ``--available-now`` on a lake of its own (the
   same detector and code path as the streaming job) and reads ``metric_scores``;
4. writes ``OUT/<category>/<name>.csv`` (``timestamp,value,anomaly_score,is_anomaly``, one
   row per input row, in the input's order) and, with labels, prints the NAB score per
   profile (``txwatch.nab``);
5. deletes its topics and lake: the broker and the user's lake are left as they were.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from kafka import KafkaProducer
from pyspark.sql import SparkSession

from txwatch import nab
from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.errors import UserError
from txwatch.infra.kafka_admin import admin_client, ensure_topics, local_broker
from txwatch.queries import metrics
from txwatch.queries.base import RunContext
from txwatch.queries.runner import run_available_now

# NAB's published scoring profiles, used when no profiles file is found beside the labels.
DEFAULT_PROFILES = (
    nab.Profile("standard", 1.0, 0.11, 1.0),
    nab.Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    nab.Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SPARK_TIME_FORMAT = "yyyy-MM-dd HH:mm:ss"
# A replay is one backlog: large micro-batches (results do not depend on them).
REPLAY_POINTS_PER_TRIGGER = 1_000_000


@dataclass(frozen=True)
class SeriesResult:
    """One file's rows as the job scored them, in the input's order."""

    series: nab.Series
    anomaly_scores: tuple[float, ...]
    is_anomaly: tuple[bool, ...]


def replay_conf(conf: Conf, work_dir: Path) -> Conf:
    """``conf`` with a lake and topics of the replay's own."""
    suffix = uuid.uuid4().hex[:8]
    topics = dataclasses.replace(
        conf.kafka.topics,
        metrics=f"nab-metrics-{suffix}",
        potential_fraud=f"nab-alerts-{suffix}",
    )
    kafka = dataclasses.replace(
        conf.kafka,
        topics=topics,
        starting_offsets="earliest",
        max_offsets_per_trigger=REPLAY_POINTS_PER_TRIGGER,
    )
    return dataclasses.replace(conf, lake_root=str(work_dir / "lake"), kafka=kafka)


def send_corpus(conf: Conf, corpus: Sequence[nab.Series]) -> int:
    """Every row of every series to the metrics topic, keyed by series; returns the count."""
    producer = KafkaProducer(
        bootstrap_servers=conf.kafka.bootstrap_servers,
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
    )
    sent = 0
    try:
        for series in corpus:
            key = series.key.encode()
            for timestamp, value in zip(series.timestamps, series.values, strict=True):
                point = {
                    "series": series_name(series.key),
                    "event_time": timestamp.replace(tzinfo=UTC).isoformat(),
                    "value": value,
                }
                producer.send(conf.kafka.topics.metrics, key=key, value=json.dumps(point).encode())
                sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def series_name(key: str) -> str:
    """``<category>/<name>.csv`` -> the series name on the topic: ``<category>/<name>``."""
    return key.removesuffix(".csv")


def read_results(
    spark: SparkSession, conf: Conf, corpus: Sequence[nab.Series]
) -> list[SeriesResult]:
    """Each file's scores from ``metric_scores``, matched to its rows by timestamp."""
    # Timestamps as text on both sides: the session's time zone is UTC, Python's may not be.
    rows = (
        spark.read.format("delta")
        .load(conf.table_path(tables.METRIC_SCORES))
        .filter("source = 'metrics' AND NOT is_late")
        .selectExpr(
            "series",
            f"date_format(event_time, '{SPARK_TIME_FORMAT}') AS t",
            "anomaly_score",
            "is_anomaly",
        )
        .collect()
    )
    by_point = {(r.series, r.t): (r.anomaly_score, r.is_anomaly) for r in rows}
    results = []
    for series in corpus:
        name = series_name(series.key)
        # A repeated timestamp is scored once (the repeat came late); each row gets it.
        scored = [by_point.get((name, t.strftime(TIME_FORMAT))) for t in series.timestamps]
        missing = sum(1 for s in scored if s is None)
        if missing:
            raise UserError(
                f"{series.key}: {missing} of {len(scored)} rows have no score in metric_scores"
            )
        results.append(
            SeriesResult(
                series,
                tuple(float(s[0]) for s in scored if s is not None),
                tuple(bool(s[1]) for s in scored if s is not None),
            )
        )
    return results


def write_results(out_dir: Path, results: Sequence[SeriesResult]) -> None:
    """``OUT/<category>/<name>.csv``: ``timestamp,value,anomaly_score,is_anomaly``."""
    for result in results:
        path = out_dir / result.series.key
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["timestamp", "value", "anomaly_score", "is_anomaly"])
            for t, value, score, flagged in zip(
                result.series.timestamps,
                result.series.values,
                result.anomaly_scores,
                result.is_anomaly,
                strict=True,
            ):
                writer.writerow(
                    [t.strftime(TIME_FORMAT), f"{value:g}", f"{score:.6f}", int(flagged)]
                )


def score_results(
    results: Sequence[SeriesResult],
    labels: dict[str, list[tuple]],
    profiles: Sequence[nab.Profile],
) -> list[nab.CorpusScore]:
    unlabelled = [r.series.key for r in results if r.series.key not in labels]
    if unlabelled:
        raise UserError(f"the labels file has no entry for {', '.join(unlabelled[:5])}")
    files = [(r.series.timestamps, r.is_anomaly, labels[r.series.key]) for r in results]
    return [nab.score_corpus(files, profile) for profile in profiles]


def format_scores(scores: Sequence[nab.CorpusScore]) -> str:
    lines = [f"{'profile':<20} {'score':>6}  windows found  false positives"]
    for s in scores:
        lines.append(
            f"{s.profile.name:<20} {s.normalized:6.1f}  {s.windows_detected:>5} of {s.windows:<5}"
            f"  {s.false_positives:>15}"
        )
    return "\n".join(lines)


def _delete_topics(conf: Conf) -> None:
    admin = admin_client(conf.kafka.bootstrap_servers)
    try:
        topics = conf.kafka.topics
        existing = set(admin.list_topics()) & {topics.metrics, topics.potential_fraud}
        if existing:
            admin.delete_topics(sorted(existing))
    finally:
        admin.close()


def evaluate_nab(
    spark_factory: Callable[[Conf], SparkSession],
    conf: Conf,
    data_dir: Path,
    out_dir: Path,
    labels_path: Path | None,
    profiles_path: Path | None,
) -> list[nab.CorpusScore]:
    """The whole evaluation (see the module docstring); returns the scores (none without labels).

    ``spark_factory(conf)`` makes the session once the broker is up (the JVM costs seconds).
    """
    corpus = list(nab.iter_corpus(data_dir))
    if not corpus:
        raise UserError(f"no NAB files in {data_dir} (expected <category>/<name>.csv)")
    labels = nab.read_labels(labels_path) if labels_path else None
    profiles = list(DEFAULT_PROFILES)
    if profiles_path is not None:
        profiles = nab.read_profiles(profiles_path)
    with local_broker(conf.kafka.bootstrap_servers, "evaluate nab"):
        work_dir = Path(tempfile.mkdtemp(prefix="txwatch-nab-"))
        run_conf = replay_conf(conf, work_dir)
        try:
            ensure_topics(
                run_conf,
                names=[run_conf.kafka.topics.metrics, run_conf.kafka.topics.potential_fraud],
            )
            started = time.monotonic()
            sent = send_corpus(run_conf, corpus)
            seconds = time.monotonic() - started
            print(f"evaluate nab: {sent:,} points of {len(corpus)} series sent in {seconds:.1f} s")
            spark = spark_factory(run_conf)
            started = time.monotonic()
            run_available_now(
                RunContext(spark, run_conf, available_now=True),
                [metrics.POINTS_QUERY],
            )
            seconds = time.monotonic() - started
            print(f"evaluate nab: scored by the metric_points query in {seconds:.1f} s", flush=True)
            results = read_results(spark, run_conf, corpus)
        finally:
            _delete_topics(run_conf)
            shutil.rmtree(work_dir, ignore_errors=True)
    write_results(out_dir, results)
    print(f"evaluate nab: {len(results)} files written under {out_dir}", flush=True)
    if labels is None:
        return []
    scores = score_results(results, labels, profiles)
    print(format_scores(scores), flush=True)
    return scores
