"""Topic administration with kafka-python (the Spark job itself reads and writes with Spark)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from txwatch.infra.config import Conf
from txwatch.infra.errors import UserError

KAFKA_LOCAL_SCRIPT = Path("scripts") / "kafka-local.sh"


def kafka_local_script() -> Path:
    """``scripts/kafka-local.sh`` of the checkout (under spark-submit.sh the code runs from a
    zip: the script exports ``TXWATCH_ROOT``)."""
    roots = [Path(__file__).resolve().parents[2], Path.cwd()]
    if checkout := os.environ.get("TXWATCH_ROOT"):
        roots.insert(0, Path(checkout))
    for root in roots:
        if (root / KAFKA_LOCAL_SCRIPT).is_file():
            return root / KAFKA_LOCAL_SCRIPT
    raise UserError(
        f"no broker answers and {KAFKA_LOCAL_SCRIPT} is not here to start one: run from the "
        "txwatch checkout, or start a broker and point kafka.bootstrap_servers at it"
    )


class BrokerUnavailableError(UserError):
    """No Kafka bootstrap server accepts connections."""


def wait_for_broker(bootstrap_servers: str, timeout_s: float = 30.0) -> None:
    """Return once a bootstrap server accepts TCP connections; clear error if none does."""
    addresses = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        addresses.append((host.strip("[]") or "localhost", int(port)))
    deadline = time.monotonic() + timeout_s
    while True:
        for address in addresses:
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=2.0):
                return
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(
                f"no Kafka broker answers at {bootstrap_servers}; start the local one with "
                "`scripts/kafka-local.sh start` or point TXWATCH_KAFKA_BOOTSTRAP at yours"
            )
        time.sleep(0.5)


def broker_answers(bootstrap_servers: str) -> bool:
    try:
        wait_for_broker(bootstrap_servers, timeout_s=0.0)
    except RuntimeError:
        return False
    return True


@contextlib.contextmanager
def local_broker(bootstrap_servers: str, who: str = "txwatch") -> Iterator[None]:
    """Use the broker that answers, else start the local one and stop it afterwards."""
    if broker_answers(bootstrap_servers):
        print(f"{who}: using the running broker at {bootstrap_servers}", flush=True)
        yield
        return
    script = kafka_local_script()
    subprocess.run([str(script), "start"], check=True)
    try:
        yield
    finally:
        subprocess.run([str(script), "stop"], check=False)


def admin_client(bootstrap_servers: str) -> KafkaAdminClient:
    wait_for_broker(bootstrap_servers)
    return KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="txwatch-admin")


def topic_names(conf: Conf) -> list[str]:
    topics = conf.kafka.topics
    return [
        topics.transactions,
        topics.device_locations,
        topics.potential_fraud,
        topics.enrichment_candidates,
        topics.metrics,
    ]


def ensure_topics(conf: Conf, recreate: bool = False, names: list[str] | None = None) -> list[str]:
    """Create the topics (default: the job's) that are missing; all anew if ``recreate``.

    New topics get the conf's ``kafka.partitions`` and ``kafka.replication_factor``.
    """
    admin = admin_client(conf.kafka.bootstrap_servers)
    wanted = names if names is not None else topic_names(conf)
    try:
        if recreate:
            existing = set(admin.list_topics()) & set(wanted)
            if existing:
                admin.delete_topics(sorted(existing))
                _wait_until(lambda: not (set(admin.list_topics()) & existing), "topic deletion")
        missing = [t for t in wanted if t not in set(admin.list_topics())]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(t, conf.kafka.partitions, conf.kafka.replication_factor)
                        for t in missing
                    ]
                )
            _wait_until(lambda: set(missing) <= set(admin.list_topics()), "topic creation")
        return missing
    except KafkaError as err:
        raise UserError(f"could not create Kafka topics {wanted}: {err}") from err
    finally:
        admin.close()


def _wait_until(condition, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka {what} did not finish within {timeout_s:.0f} s")
        time.sleep(0.2)
