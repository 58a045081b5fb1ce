from __future__ import annotations

import json
from datetime import datetime

from pyspark.testing import assertDataFrameEqual

from tests.conftest import TEST_KEY_VARIABLE, TEST_TOKEN_KEY
from udfs.privacy import card_token_py, id_token_py
from udfs.records import (
    RAW_KAFKA_SCHEMA,
    filter_valid_records,
    parse_device_locations,
    parse_transactions,
    to_bronze_device_locations,
    to_bronze_transactions,
    to_quarantine,
)

KAFKA_TS = datetime(2026, 1, 5, 12, 0, 0)
GOOD_TX = {
    "transaction_id": "t-1",
    "user_id": "u-1",
    "card_number": "4111 1111 1111 1111",
    "device_id": "d-1",
    "merchant": "Cafe",
    "amount": 12.5,
    "currency": "EUR",
    "status": "approved",
    "latitude": 48.85,
    "longitude": 2.35,
    "event_time": "2026-01-05T11:59:00.250Z",
}


def raw_df(spark, values, topic="transactions", key=None):
    rows = [(topic, 0, i, KAFKA_TS, key, v) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, RAW_KAFKA_SCHEMA)


def test_valid_transaction_is_typed_and_tokenized(spark):
    parsed = parse_transactions(raw_df(spark, [json.dumps(GOOD_TX)]), TEST_KEY_VARIABLE, "1 day")
    bronze = to_bronze_transactions(parsed).drop("ingested_at")
    row = bronze.first().asDict()
    assert row["card_token"] == card_token_py("4111111111111111", TEST_TOKEN_KEY)
    assert row["card_last4"] == "1111"
    assert row["amount"] == 12.5
    assert row["event_time"] == datetime(2026, 1, 5, 11, 59, 0, 250000)
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (
        "transactions",
        0,
        0,
    )
    assert "card_number" not in bronze.columns
    assert to_quarantine(parsed, TEST_KEY_VARIABLE).count() == 0


def test_invalid_transactions_get_every_reason(spark):
    def variant(**changes):
        record = {**GOOD_TX, **changes}
        return json.dumps({k: v for k, v in record.items() if v is not ...})

    values = [
        '{"transaction_id": "t-2", "card_number": "4111111111111111", ',  # truncated JSON
        variant(amount=...),  # missing field
        variant(amount="twelve", latitude=123.0),  # wrong type and out of range
        variant(amount=-5),  # negative amount
        variant(status="stolen"),
        variant(card_number="1234"),
        variant(event_time="2026-03-01T00:00:00Z"),  # far ahead of the broker's clock
        "[1, 2, 3]",
        variant(amount="7.25"),  # a number sent as a string is fine
        variant(amount=""),  # blank, null or an object where a number belongs
        variant(amount=None),
        variant(amount={"value": 7}),
    ]
    parsed = parse_transactions(raw_df(spark, values), TEST_KEY_VARIABLE, "1 day")
    result = to_quarantine(parsed, TEST_KEY_VARIABLE).select("kafka_offset", "reason", "raw_value")
    expected = spark.createDataFrame(
        [
            (0, "malformed_json", '{"transaction_id": "t-2", "card_number": "****1111", '),
            (1, "missing_field:amount", None),
            (2, "invalid_type:amount; out_of_range:latitude", None),
            (3, "out_of_range:amount", None),
            (4, "invalid_value:status", None),
            (5, "invalid_value:card_number", None),
            (6, "future_event_time", None),
            (7, "malformed_json", "[1, 2, 3]"),
            (9, "missing_field:amount", None),
            (10, "missing_field:amount", None),
            (11, "invalid_type:amount", None),
        ],
        "kafka_offset long, reason string, raw_value string",
    )
    assertDataFrameEqual(
        result.select("kafka_offset", "reason"), expected.select("kafka_offset", "reason")
    )
    assert to_bronze_transactions(parsed).select("amount").first().amount == 7.25
    raw_by_offset = {r.kafka_offset: r.raw_value for r in result.collect()}
    assert raw_by_offset[0] == '{"transaction_id": "t-2", "card_number": "****1111", '
    assert all(
        "4111 1111 1111 1111" not in r and "4111111111111111" not in r
        for r in raw_by_offset.values()
    )


def test_quarantined_raw_value_masks_the_holder_and_tokenizes_ids(spark):
    values = [
        json.dumps({**GOOD_TX, "name": "Ana Silva", "amount": "lots"}),
        '{"transaction_id": "t-3", "name": "Jean Dupont", "card_number": "4111',
        '{"transaction_id": "t-4", "user_id": 42, "device_id": "d-12',  # cut short
    ]
    parsed = parse_transactions(raw_df(spark, values, key="u-1"), TEST_KEY_VARIABLE, "1 day")
    rows = to_quarantine(parsed, TEST_KEY_VARIABLE).collect()
    raw_by_offset = {r.kafka_offset: r.raw_value for r in rows}
    assert set(raw_by_offset) == {0, 1, 2}
    cut = raw_by_offset[2]  # an id sent as a number, an id cut short: tokens all the same
    assert f'"user_id": {id_token_py("42", "user_id", TEST_TOKEN_KEY)},' in cut
    assert cut.endswith(f'"device_id": "{id_token_py("d-12", "device_id", TEST_TOKEN_KEY)}')
    user, device = (id_token_py(GOOD_TX[f], f, TEST_TOKEN_KEY) for f in ("user_id", "device_id"))
    assert f'"user_id": "{user}"' in raw_by_offset[0] and '"u-1"' not in raw_by_offset[0]
    assert f'"device_id": "{device}"' in raw_by_offset[0] and '"d-1"' not in raw_by_offset[0]
    assert {r.kafka_key for r in rows} == {id_token_py("u-1", "kafka_key", TEST_TOKEN_KEY)}
    assert '"name": "****"' in raw_by_offset[0] and "Ana" not in raw_by_offset[0]
    assert "Silva" not in raw_by_offset[0]
    assert raw_by_offset[1].startswith('{"transaction_id": "t-3", "name": "****"')
    assert "Jean" not in raw_by_offset[1] and "Dupont" not in raw_by_offset[1]


def test_device_location_validation(spark):
    good = {
        "device_id": "d-1",
        "latitude": 1.0,
        "longitude": 2.0,
        "horizontal_accuracy": 8,
        "speed": 1.5,
        "event_time": "2026-01-05T11:00:00Z",
    }
    values = [
        json.dumps(good),
        json.dumps({**good, "horizontal_accuracy": -1}),
        json.dumps({**good, "longitude": 200}),
        json.dumps({k: v for k, v in good.items() if k != "device_id"}),
        json.dumps({**good, "event_time": "yesterday"}),
    ]
    parsed = parse_device_locations(raw_df(spark, values, "device-locations"), "1 day")
    result = parsed.select("kafka_offset", "quarantine_reason")
    expected = spark.createDataFrame(
        [
            (0, None),
            (1, "out_of_range:horizontal_accuracy"),
            (2, "out_of_range:longitude"),
            (3, "missing_field:device_id"),
            (4, "invalid_type:event_time"),
        ],
        "kafka_offset long, quarantine_reason string",
    )
    assertDataFrameEqual(result, expected)


def test_each_record_is_parsed_once(spark):
    """The validity filter must not take a copy of the JSON parse with it (see
    ``udfs.records._filter_by_reason``), and unread columns are still pruned."""
    values = [json.dumps({"device_id": "d-1", "latitude": 1.0, "longitude": 2.0})]
    parsed = parse_device_locations(raw_df(spark, values, "device-locations"), "1 day")
    bronze = to_bronze_device_locations(parsed)
    plan = bronze._jdf.queryExecution().optimizedPlan().toString()
    assert plan.count("from_json(") == 1
    assert filter_valid_records(parsed).schema == parsed.schema  # names, types, nullability
    # A column nobody reads is not computed: no card token for a query of amounts.
    tx_df = parse_transactions(raw_df(spark, [json.dumps(GOOD_TX)]), TEST_KEY_VARIABLE, "1 day")
    amounts_df = to_bronze_transactions(tx_df).select("amount")
    assert "card_token" not in amounts_df._jdf.queryExecution().optimizedPlan().toString()
