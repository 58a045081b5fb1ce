from __future__ import annotations

import json

import pytest

from jobs.kafka_admin import ensure_topics
from jobs.replay import replay
from tests.kafka_helpers import consume_all

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
    sent = replay([jsonl, csv_file], topic, conf.kafka.bootstrap_servers, key_field="user_id")
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
    import time

    conf = kafka_conf
    ensure_topics(conf)
    path = tmp_path / "fixes.jsonl"
    path.write_text("".join(json.dumps({"device_id": f"d{i}"}) + "\n" for i in range(20)))
    started = time.monotonic()
    replay([path], conf.kafka.topics.device_locations, conf.kafka.bootstrap_servers, rate=40)
    assert time.monotonic() - started >= 0.45  # 20 records at 40/s
