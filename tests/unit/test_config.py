from __future__ import annotations

import re

import pytest

from tests.conftest import REPO
from txwatch.infra.config import ConfigError, load_conf


def test_local_and_cluster_configs_load(monkeypatch):
    monkeypatch.setenv("TXWATCH_KAFKA_USER", "txwatch-job")
    monkeypatch.setenv("TXWATCH_KAFKA_PASSWORD", "pw")
    local = load_conf(REPO / "conf" / "local.yaml")
    cluster = load_conf(REPO / "conf" / "cluster.yaml")
    assert local.kafka.topics.transactions == "transactions"
    assert local.impossible_travel.max_plausible_speed_mps == 250.0
    assert cluster.lake_root.startswith("s3a://")
    assert cluster.kafka.options["kafka.security.protocol"] == "SASL_SSL"
    assert (
        'username="txwatch-job" password="pw";' in cluster.kafka.options["kafka.sasl.jaas.config"]
    )
    assert not cluster.kafka.create_topics and local.kafka.create_topics
    assert local.checkpoint_path("ingest") == f"{local.lake_root}/_checkpoints/ingest"
    # a query whose state changed shape starts a checkpoint of its own
    assert local.checkpoint_path("payment_scoring").endswith("/_checkpoints/payment_scoring.v2")


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("TXWATCH_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("TXWATCH_KAFKA_BOOTSTRAP", "broker:9999")
    conf = load_conf(REPO / "conf" / "local.yaml")
    assert conf.lake_root == str(tmp_path / "lake")
    assert conf.kafka.bootstrap_servers == "broker:9999"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "extends: base.yaml\nstream:\n  trigger_intervall: 5 seconds\n",
            "unknown key.*trigger_intervall \\(did you mean trigger_interval\\?\\)",
        ),
        ("extends: base.yaml\nimpossible_travel:\n  min_gap_s: soon\n", "must be float"),
        ("extends: base.yaml\nstream:\n  join_state_format: 5\n", "one of 2, 3, 4, not 5"),
        ("extends: nowhere.yaml\n", "not found"),
        ("lake_root: [\n", "not valid YAML"),
    ],
)
def test_bad_config_gives_a_clear_error(tmp_path, text, message):
    (tmp_path / "base.yaml").write_text((REPO / "conf" / "base.yaml").read_text())
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_conf(path)


def test_an_unset_environment_variable_in_the_config_is_named(monkeypatch):
    monkeypatch.delenv("TXWATCH_KAFKA_PASSWORD", raising=False)
    monkeypatch.setenv("TXWATCH_KAFKA_USER", "txwatch-job")
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "kafka.options.kafka.sasl.jaas.config refers to "
            "environment variable TXWATCH_KAFKA_PASSWORD, which is not set"
        ),
    ):
        load_conf(REPO / "conf" / "cluster.yaml")
