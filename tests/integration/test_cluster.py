"""The streaming job on a real Spark standalone cluster writes what it writes in local mode.

A master and two workers of one core each (``scripts/spark-cluster.sh``), the job submitted
with ``./spark-submit.sh`` (the master given after the job name), a simulated Kafka backlog
drained with ``--available-now`` in micro-batches of 600 records per source, so ingest
and travel take more than one and the join commits its RocksDB state to the checkpoint
more than once from executors on two workers. The same backlog is drained in local mode
(the tests' ``local[2]`` session) into a lake of its own; bronze, quarantine, enriched and
alerts must hold exactly the same rows (processing-time columns aside).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyspark.sql.functions as F
import pyspark.sql.types as T
import pytest
from pyspark.sql import DataFrame

from tests.conftest import REPO, TEST_TOKEN_KEY, _free_port
from tests.integration.kafka_helpers import run_pipeline, travel_only_params
from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.lake import read_table
from txwatch.simulator import Simulator, produce
from udfs.travel import ALERT_TYPE_IMPOSSIBLE_TRAVEL

pytestmark = pytest.mark.kafka

CLUSTER_SCRIPT = REPO / "scripts" / "spark-cluster.sh"
# Columns that say when a row was written, not what it holds.
PROCESSING_TIME_COLUMNS = ("ingested_at", "quarantined_at", "detected_at")
COMPARED_TABLES = (
    tables.BRONZE_TRANSACTIONS,
    tables.BRONZE_DEVICE_LOCATIONS,
    tables.QUARANTINE,
    tables.TRANSACTIONS_ENRICHED,
    tables.ALERTS,
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    """A standalone cluster on loopback: one master, two workers with one core each."""
    env = {
        **os.environ,
        "TXWATCH_CLUSTER_DIR": str(tmp_path / "cluster"),
        "SPARK_MASTER_PORT": str(_free_port()),
        "SPARK_MASTER_WEBUI_PORT": str(_free_port()),
    }

    def cluster_script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLUSTER_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=180
        )

    # The workers (and so the executors) must not inherit a token key: the job hands it to
    # its executors itself.
    env.pop("TXWATCH_TOKEN_KEY", None)
    try:
        started = cluster_script("start", "--workers", "2", "--cores", "1", "--memory", "1536m")
        assert started.returncode == 0, started.stdout + started.stderr
        status = cluster_script("status")
        assert status.returncode == 0 and "2 workers alive" in status.stdout, status.stdout
        yield f"spark://127.0.0.1:{env['SPARK_MASTER_PORT']}"
    finally:
        stopped = cluster_script("stop")
        left = cluster_script("status")
    # After the finally, so a failure above is reported as itself.
    assert left.returncode == 1 and "not running" in left.stdout, stopped.stdout + left.stdout


def write_conf(kafka_conf, path: Path, lake: Path) -> Path:
    """The cluster run's conf: its own lake and its own output topics, the shared input."""
    topics = kafka_conf.kafka.topics
    path.write_text(
        f"""extends: {REPO / "conf" / "base.yaml"}
lake_root: {lake}
kafka:
  bootstrap_servers: {kafka_conf.kafka.bootstrap_servers}
  topics:
    transactions: {topics.transactions}
    device_locations: {topics.device_locations}
    potential_fraud: {topics.potential_fraud}-cluster
    enrichment_candidates: {topics.enrichment_candidates}-cluster
    metrics: {topics.metrics}
  partitions: 2
  max_offsets_per_trigger: 600
spark:
  shuffle_partitions: 2
  options:
    spark.ui.enabled: "false"
    spark.driver.memory: 1g
    spark.executor.memory: 1g
    spark.databricks.delta.snapshotPartitions: "1"
"""
    )
    return path


def reference_conf(kafka_conf: Conf, lake: Path) -> Conf:
    """What ``write_conf`` gives the cluster run, for the local run in the tests' session:
    its own lake and output topics, the shared input, 600 records per micro-batch."""
    topics = kafka_conf.kafka.topics
    own_topics = dataclasses.replace(
        topics,
        potential_fraud=f"{topics.potential_fraud}-local",
        enrichment_candidates=f"{topics.enrichment_candidates}-local",
    )
    kafka = dataclasses.replace(kafka_conf.kafka, topics=own_topics, max_offsets_per_trigger=600)
    return dataclasses.replace(kafka_conf, lake_root=str(lake), kafka=kafka)


def submit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TXWATCH_TOKEN_KEY": TEST_TOKEN_KEY.decode()}
    env.pop("SPARK_MASTER", None)
    return subprocess.run(
        [str(REPO / "spark-submit.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def content(df: DataFrame) -> DataFrame:
    """What a row holds: processing times dropped, maps as sorted entries (set operations
    such as ``exceptAll`` refuse map columns)."""
    maps = [f.name for f in df.schema.fields if isinstance(f.dataType, T.MapType)]
    df = df.withColumns({name: F.array_sort(F.map_entries(name)) for name in maps})
    return df.drop(*PROCESSING_TIME_COLUMNS)


def test_standalone_cluster_writes_the_same_rows_as_local_mode(
    spark, kafka_conf, tmp_path, cluster
):
    ensure_topics(kafka_conf)
    params = travel_only_params(
        seed=5,
        users=30,
        duration_min=30,
        ping_interval_s=60,
        tx_per_hour=8,
        impossible_travel_rate=0.1,
        malformed_rate=0.02,
    )
    sim = Simulator(params, kafka_conf)
    produce(sim.records(), kafka_conf.kafka.bootstrap_servers)
    assert sim.counts["device_locations"] > 600, "travel should take more than one micro-batch"

    lakes = {run: tmp_path / f"lake-{run}" for run in ("local", "cluster")}
    cluster_conf = write_conf(kafka_conf, tmp_path / "cluster.yaml", lakes["cluster"])
    # The reference run in local mode, in the tests' own session: the same pipeline, the
    # settings that shape the output and the same key value, without a second JVM.
    local_conf = reference_conf(kafka_conf, lakes["local"])
    ensure_topics(local_conf)
    run_pipeline(spark, local_conf)
    # The master after the job name, as a user may type it.
    on_cluster = submit(
        "stream", "--conf", str(cluster_conf), "--available-now", "--quiet", "--master", cluster
    )
    assert on_cluster.returncode == 0, on_cluster.stdout[-3000:] + on_cluster.stderr[-3000:]

    # The tasks ran on the cluster's executors, not in the driver.
    worker_logs = list((tmp_path / "cluster").glob("work-*/app-*/*/stderr"))
    assert len(worker_logs) == 2, "one executor per worker"

    def table(run: str, name: str) -> DataFrame:
        conf = dataclasses.replace(kafka_conf, lake_root=str(lakes[run]))
        return content(read_table(spark, conf, name))

    for name in COMPARED_TABLES:
        local_df, cluster_df = table("local", name), table("cluster", name)
        assert local_df.count() > 0, f"{name} is empty"
        only_local = local_df.exceptAll(cluster_df).count()
        only_cluster = cluster_df.exceptAll(local_df).count()
        assert (only_local, only_cluster) == (0, 0), (
            f"{name}: {only_local} rows only in the local run, {only_cluster} only on the cluster"
        )
    fraud_tx = {t.transaction_id for t in sim.truth if t.scenario == "impossible_travel"}
    assert fraud_tx, "the backlog should hold impossible travel"
    alerts = table("cluster", tables.ALERTS)
    travel = alerts.filter(F.col("alert_type") == ALERT_TYPE_IMPOSSIBLE_TRAVEL).collect()
    assert {r.transaction_id for r in travel} == fraud_tx
