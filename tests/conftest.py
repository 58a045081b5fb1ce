"""Shared fixtures: one Spark session, one real Kafka broker, a fresh config per test."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from txwatch.infra.config import Conf, load_conf
from txwatch.infra.session import create_session

REPO = Path(__file__).resolve().parent.parent
TEST_TOKEN_KEY = b"txwatch-test-key"
# Spark's tasks read token keys from the environment (udfs.privacy.keyed_hash), and the shared
# session's JVM gets its environment when it starts: every key a test uses is set here.
TEST_KEY_VARIABLE = "TXWATCH_TEST_TOKEN_KEY"
TEST_KEYS = {
    TEST_KEY_VARIABLE: TEST_TOKEN_KEY.decode(),
    "TXWATCH_TEST_KEY_SHORT": "k",
    "TXWATCH_TEST_KEY_BLOCK": "0123456789abcdef" * 4,  # exactly SHA-256's 64-byte block
    "TXWATCH_TEST_KEY_LONG": "a much longer key " * 8,  # longer: hashed first (RFC 2104)
    "TXWATCH_TEST_KEY_SYMBOLS": 'k3y with spaces, "quotes" & symbols!',
}
os.environ.update(TEST_KEYS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def base_conf() -> Conf:
    conf = load_conf(REPO / "conf" / "local.yaml")
    spark_conf = dataclasses.replace(
        conf.spark,
        shuffle_partitions=2,
        options={
            **conf.spark.options,
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.databricks.delta.snapshotPartitions": "1",
            "spark.driver.memory": "2g",
        },
    )
    privacy = dataclasses.replace(conf.privacy, token_key_env=TEST_KEY_VARIABLE)
    return dataclasses.replace(conf, spark=spark_conf, privacy=privacy)


@pytest.fixture(scope="session")
def spark(base_conf: Conf) -> Iterator[SparkSession]:
    session = create_session(base_conf, "tests", master="local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Apache Kafka broker (KRaft) on loopback, started by scripts/kafka-local.sh."""
    port = _free_port()
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(_free_port()),
        "KAFKA_DATA_DIR": str(tmp_path_factory.mktemp("kafka")),
    }
    script = str(REPO / "scripts" / "kafka-local.sh")
    subprocess.run([script, "start"], env=env, check=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([script, "stop"], env=env, check=False, timeout=60)


@pytest.fixture
def conf(base_conf: Conf, tmp_path: Path) -> Conf:
    """A config with its own lake under ``tmp_path`` (no Kafka)."""
    return dataclasses.replace(base_conf, lake_root=str(tmp_path / "lake"))


@pytest.fixture
def kafka_conf(conf: Conf, kafka_bootstrap: str) -> Conf:
    """``conf`` pointed at the test broker, with topics of its own."""
    return with_own_topics(conf, kafka_bootstrap)


def with_own_topics(conf: Conf, kafka_bootstrap: str) -> Conf:
    """``conf`` pointed at the test broker, with topics no other test uses."""
    suffix = uuid.uuid4().hex[:8]
    topics = dataclasses.replace(
        conf.kafka.topics,
        transactions=f"transactions-{suffix}",
        device_locations=f"device-locations-{suffix}",
        potential_fraud=f"potential-fraud-{suffix}",
        enrichment_candidates=f"enrichment-candidates-{suffix}",
        metrics=f"metrics-{suffix}",
    )
    kafka = dataclasses.replace(
        conf.kafka, bootstrap_servers=kafka_bootstrap, topics=topics, partitions=2
    )
    return dataclasses.replace(conf, kafka=kafka)


@pytest.fixture(scope="session")
def model_lake(
    spark: SparkSession,
    base_conf: Conf,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
):  # -> tests.integration.model_lake.ModelLake
    """A lake with every table the stream, train and similarity write, built once."""
    from tests.integration import model_lake

    conf = dataclasses.replace(
        with_own_topics(base_conf, kafka_bootstrap),
        lake_root=str(tmp_path_factory.mktemp("model-lake") / "lake"),
    )
    return model_lake.build(spark, conf)
