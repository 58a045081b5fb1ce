from __future__ import annotations

import json

import pytest
from kafka import KafkaConsumer

from tests.integration.kafka_helpers import consume_all
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.replay import replay

pytestmark = pytest.mark.kafka


def test_replay_jsonl_and_csv_keep_records_and_keys(kafka_conf, tmp_path):
    conf = kafka_conf
    ensure_topics(conf)
    topic = conf.kafka.topics.transactions
    jsonl = tmp_path / "tx.jsonl"
    jsonl.write_text(
        '{"transaction_id": "a", "user_id": "u1", "event_time": "2026-01-05T10:00:00Z"}\n'
        "\n"
        "not json\n"
        '{"transaction_id": "b", "user_id": "u2", "event_time": "2026-01-05T09:00:00Z"}\n'
    )
    csv_file = tmp_path / "tx.csv"
    csv_file.write_text("transaction_id,user_id,amount,channel\nc,u3,12.50,\n")
    sent = replay([jsonl, csv_file], topic, conf, key_field="user_id")
    assert sent == 4
    records = sorted(consume_all(conf, topic, expected=4), key=lambda r: r.value)
    key_by_value = {r.value.decode(): r.key for r in records}
    assert "not json" in key_by_value  # sent as it is, for the job to quarantine
    record_b = next(v for v in key_by_value if '"b"' in v)
    record_c = next(v for v in key_by_value if '"c"' in v)
    assert json.loads(record_c) == {"transaction_id": "c", "user_id": "u3", "amount": "12.50"}
    assert key_by_value[record_b] == b"u2"
    # event times are left exactly as they were
    assert '"2026-01-05T09:00:00Z"' in record_b


def test_replay_rate_limits(kafka_conf, tmp_path):
    conf = kafka_conf
    ensure_topics(conf)
    topic = conf.kafka.topics.device_locations
    path = tmp_path / "fixes.jsonl"
    path.write_text("".join(json.dumps({"device_id": f"d{i}"}) + "\n" for i in range(20)))
    sent = replay([path], topic, conf, key_field="device_id", rate=40)
    assert sent == 20
    records = consume_all(conf, topic, expected=20)
    assert sorted(json.loads(r.value)["device_id"] for r in records) == sorted(
        f"d{i}" for i in range(20)
    )
    # The producer stamps each record when it is sent: 20 records at 40/s span 475 ms.
    stamps = sorted(r.timestamp for r in records)
    assert stamps[-1] - stamps[0] >= 400


def test_replay_creates_a_missing_topic_and_sends_bytes_that_are_not_utf8(kafka_conf, tmp_path):
    conf = kafka_conf
    topic = f"{conf.kafka.topics.transactions}-backfill"
    path = tmp_path / "latin1.jsonl"
    latin1_line = '{"transaction_id": "é", "name": "Zoë"}'.encode("latin-1")
    path.write_bytes(b'{"transaction_id": "ok"}\n' + latin1_line + b"\n")
    sent = replay([path], topic, conf)
    assert sent == 2
    values = sorted(r.value for r in consume_all(conf, topic, expected=2))
    assert values == sorted([b'{"transaction_id": "ok"}', latin1_line])
    consumer = KafkaConsumer(bootstrap_servers=conf.kafka.bootstrap_servers)
    try:
        assert len(consumer.partitions_for_topic(topic)) == conf.kafka.partitions
    finally:
        consumer.close()
