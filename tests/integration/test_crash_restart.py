"""A crash mid-stream (SIGKILL of the whole job) and a restart lose and duplicate nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyspark.sql.functions as F
import pytest

from tests.conftest import REPO, TEST_TOKEN_KEY
from tests.integration.kafka_helpers import TRAVEL_PATH, travel_only_params
from tests.leaks import leaked_key_material
from txwatch.evaluation import card_number_hits
from txwatch.infra import tables
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.lake import read_table
from txwatch.simulator import SimulationParams, Simulator, produce
from udfs.privacy import HMAC_FUNCTION

pytestmark = pytest.mark.kafka


# The crashed run reads in small micro-batches, so the kill lands mid-backlog; the restart
# drains the rest in few, larger ones (a replayed batch keeps the offsets it logged).
CRASHED_RUN_BATCH = 200
RESTART_BATCH = 2000


def write_conf(conf, path: Path, events_dir: Path, max_offsets: int = CRASHED_RUN_BATCH) -> Path:
    """The job's conf; Spark's event log on (uncompressed, to be read back: the token key
    that the session hands to executors as a Spark setting must be redacted there)."""
    topics = conf.kafka.topics
    events_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""extends: {REPO / "conf" / "base.yaml"}
lake_root: {conf.lake_root}
kafka:
  bootstrap_servers: {conf.kafka.bootstrap_servers}
  topics:
    transactions: {topics.transactions}
    device_locations: {topics.device_locations}
    potential_fraud: {topics.potential_fraud}
    enrichment_candidates: {topics.enrichment_candidates}
    metrics: {topics.metrics}
  partitions: 2
  max_offsets_per_trigger: {max_offsets}
stream:
  trigger_interval: 1 second
  enrich_trigger_interval: 1 second
spark:
  shuffle_partitions: 2
  options:
    spark.ui.enabled: "false"
    spark.driver.memory: 1g
    spark.databricks.delta.snapshotPartitions: "1"
    spark.eventLog.enabled: "true"
    spark.eventLog.dir: "file://{events_dir}"
    spark.eventLog.compress: "false"
"""
    )
    return path


def start_job(conf_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "TXWATCH_TOKEN_KEY": TEST_TOKEN_KEY.decode(), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.stream", "--conf", str(conf_path), *extra],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def committed_batches(checkpoint: Path) -> int:
    commits = checkpoint / "commits"
    return len([p for p in commits.iterdir() if p.name.isdigit()]) if commits.is_dir() else 0


def delta_versions(table: Path) -> int:
    log = table / "_delta_log"
    return len(list(log.glob("*.json"))) if log.is_dir() else 0


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(spark, kafka_conf, tmp_path):
    conf = kafka_conf
    ensure_topics(conf)
    params = travel_only_params(
        seed=11,
        users=40,
        duration_min=40,
        ping_interval_s=30,
        tx_per_hour=6,
        impossible_travel_rate=0.1,
        malformed_rate=0.01,
    )
    sim = Simulator(params, conf)
    sent = produce(sim.records(), conf.kafka.bootstrap_servers)
    events_dir = tmp_path / "events"
    conf_path = write_conf(conf, tmp_path / "crash.yaml", events_dir)

    job = start_job(conf_path)
    try:
        deadline = time.monotonic() + 240
        # Kill once enrich has MERGEd data (version 0 is the empty table) and ingest has
        # committed a micro-batch and is mid-backlog.
        while (
            delta_versions(Path(conf.table_path(tables.TRANSACTIONS_ENRICHED))) < 2
            or committed_batches(Path(conf.checkpoint_path("ingest"))) < 1
        ):
            assert job.poll() is None, job.stdout.read()
            assert time.monotonic() < deadline, "the job made no progress in 240 s"
            time.sleep(0.5)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    ingest_batches_at_kill = committed_batches(Path(conf.checkpoint_path("ingest")))
    assert 0 < ingest_batches_at_kill < sent / CRASHED_RUN_BATCH, "the crash should hit mid-backlog"

    restart_conf = write_conf(conf, tmp_path / "restart.yaml", events_dir, RESTART_BATCH)
    restarted = start_job(restart_conf, "--available-now", "--quiet")
    output, _ = restarted.communicate(timeout=600)
    assert restarted.returncode == 0, output

    truth = sim.truth
    valid_tx = {
        t.transaction_id
        for t in truth
        if t.topic == conf.kafka.topics.transactions and t.scenario != "malformed"
    }
    fraud_tx = {t.transaction_id for t in truth if t.scenario == "impossible_travel"}
    malformed = [t for t in truth if t.scenario in ("malformed", "malformed_location")]
    pings = sim.counts["device_locations"] - sim.counts["malformed_locations"]

    bronze_tx = read_table(spark, conf, tables.BRONZE_TRANSACTIONS)
    bronze_loc = read_table(spark, conf, tables.BRONZE_DEVICE_LOCATIONS)
    quarantine = read_table(spark, conf, tables.QUARANTINE)
    enriched = read_table(spark, conf, tables.TRANSACTIONS_ENRICHED)
    alerts = read_table(spark, conf, tables.ALERTS)

    # bronze and quarantine: every Kafka record exactly once
    offsets = F.struct("kafka_topic", "kafka_partition", "kafka_offset")
    for df in (bronze_tx, bronze_loc, quarantine):
        assert df.count() == df.select(offsets).distinct().count()
    assert {r.transaction_id for r in bronze_tx.collect()} == valid_tx
    assert bronze_tx.count() == len(valid_tx)
    assert bronze_loc.count() == pings
    assert quarantine.count() == len(malformed)
    assert bronze_tx.count() + bronze_loc.count() + quarantine.count() == sent
    # enriched: one row per transaction, all placed (every phone reports)
    enriched_ids = [r.transaction_id for r in enriched.collect()]
    assert len(enriched_ids) == len(set(enriched_ids))
    assert set(enriched_ids) <= valid_tx
    missing = valid_tx - set(enriched_ids)
    # every phone reports throughout and nothing is late, so every payment finds its fixes
    assert not missing, f"{len(missing)} transactions never enriched"
    # alerts: exactly the injected impossible travel, each once
    alert_ids = [r.alert_id for r in alerts.collect()]
    assert len(alert_ids) == len(set(alert_ids))
    assert {r.transaction_id for r in alerts.collect()} == fraud_tx

    # No full card number anywhere under the lake: not in tables, logs or checkpoints.
    cards = {card for user in sim.users for card in user.cards}
    for path in Path(conf.lake_root).rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            leaked = [c for c in cards if c.encode() in content]
            assert not leaked, f"{path} holds a full card number"
    assert card_number_hits(bronze_tx) == card_number_hits(quarantine) == 0

    # Spark's event logs of both runs record every plan and setting: the tokenizing function
    # by name, the key nowhere (the spark.executorEnv setting that create_session adds to
    # hand it to executors on a cluster is redacted).
    logs = {  # one per run: a folder of rolling files (Spark 4's event log v2)
        app.name: "\n".join(
            f.read_text(errors="replace") for f in sorted(app.rglob("*")) if f.is_file()
        )
        for app in events_dir.iterdir()
    }
    assert len(logs) == 2 and any(HMAC_FUNCTION in text for text in logs.values())
    assert any("spark.executorEnv.TXWATCH_TOKEN_KEY" in text for text in logs.values())
    leaks = {n: found for n, t in logs.items() if (found := leaked_key_material(t, TEST_TOKEN_KEY))}
    assert not leaks, leaks
    assert card_number_hits(enriched) == card_number_hits(alerts) == 0


def test_sigterm_stops_the_queries_between_batches_and_exits_cleanly(kafka_conf, tmp_path):
    """What docker stop or a Kubernetes shutdown sends: the job stops its queries and
    exits 0, whatever py4j call the signal lands in."""
    conf = kafka_conf
    ensure_topics(conf)
    params = SimulationParams(seed=3, users=5, duration_min=5, fraud_rings=0)
    produce(Simulator(params, conf).records(), conf.kafka.bootstrap_servers)
    conf_path = write_conf(conf, tmp_path / "job.yaml", tmp_path / "events")
    # The alert path's queries: several, so the signal finds more than one to stop.
    job = start_job(conf_path, "--queries", ",".join(q.name for q in TRAVEL_PATH))
    try:
        deadline = time.monotonic() + 240
        while committed_batches(Path(conf.checkpoint_path("travel"))) < 1:
            assert job.poll() is None, job.stdout.read()
            assert time.monotonic() < deadline, "the job made no progress in 240 s"
            time.sleep(0.5)
        time.sleep(5)  # the queries run on: the runner waits for them (in a py4j call)
        job.send_signal(signal.SIGTERM)
        output, _ = job.communicate(timeout=180)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
    assert job.returncode == 0, output
    assert "stream: stopping the queries" in output and "Traceback" not in output
