from __future__ import annotations

import pyspark.sql.functions as F
import pytest
from pyspark.testing import assertDataFrameEqual

from tests.conftest import TEST_KEY_VARIABLE, TEST_KEYS, TEST_TOKEN_KEY
from tests.leaks import leaked_key_material, sha2_on_pads
from udfs.privacy import (
    MissingTokenKeyError,
    card_last4,
    card_token,
    card_token_py,
    id_token_py,
    mask_card_numbers,
    pseudonymize,
    token_key_from_env,
)

CARDS = ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"]


@pytest.mark.parametrize("variable", sorted(TEST_KEYS))
def test_card_token_matches_python_hmac(spark, variable):
    key = TEST_KEYS[variable].encode("utf-8")
    df = spark.createDataFrame([(c,) for c in CARDS], "card_number string")
    result = df.select("card_number", card_token(F.col("card_number"), variable).alias("token"))
    expected = spark.createDataFrame(
        [(c, card_token_py(c, key)) for c in CARDS], "card_number string, token string"
    )
    assertDataFrameEqual(result, expected)


def test_card_token_ignores_formatting_and_depends_on_key(spark):
    df = spark.createDataFrame([(c,) for c in CARDS[:2]], "card_number string")
    one = card_token(F.col("card_number"), "TXWATCH_TEST_KEY_SHORT")
    tokens = df.select(one.alias("t")).distinct().collect()
    assert len(tokens) == 1
    other = df.select(card_token(F.col("card_number"), TEST_KEY_VARIABLE).alias("t")).first()
    assert other.t != tokens[0].t


def test_the_plan_names_the_key_variable_never_the_key(spark):
    df = spark.createDataFrame([(c,) for c in CARDS], "card_number string")
    tokens_df = df.select(card_token(F.col("card_number"), TEST_KEY_VARIABLE).alias("t"))
    plan = tokens_df._jdf.queryExecution().toString()
    assert TEST_KEY_VARIABLE in plan
    assert not leaked_key_material(plan, TEST_TOKEN_KEY)
    # The check finds the key where it was once written: the HMAC pads as plan literals.
    old_df = df.select(sha2_on_pads(F.col("card_number"), TEST_TOKEN_KEY).alias("t"))
    assert leaked_key_material(old_df._jdf.queryExecution().toString(), TEST_TOKEN_KEY)
    assertDataFrameEqual(old_df, tokens_df)


def test_a_key_missing_where_the_task_runs_fails_with_what_to_do(spark):
    df = spark.createDataFrame([(CARDS[0],)], "card_number string")
    with pytest.raises(Exception, match=r"spark\.executorEnv\.TXWATCH_TEST_UNSET_KEY"):
        df.select(card_token(F.col("card_number"), "TXWATCH_TEST_UNSET_KEY")).collect()


def test_card_last4(spark):
    df = spark.createDataFrame([(c,) for c in CARDS], "card_number string")
    result = df.select(card_last4(F.col("card_number")).alias("last4"))
    expected = spark.createDataFrame([("1111",), ("1111",), ("0004",), ("0005",)], "last4 string")
    assertDataFrameEqual(result, expected)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ('{"card_number": "4111111111111111"}', '{"card_number": "****1111"}'),
        ('{"card_number": "4111 1111 1111 1111", "x": 1}', '{"card_number": "****1111", "x": 1}'),
        ('{"card_number": 4111111111111111}', '{"card_number": ****1111}'),
        # not a valid card number, still masked because of the field name
        ('{"card_number": "41111111111111112222"}', '{"card_number": "****2222"}'),
        ('{"note": "paid with 5500-0000-0000-0004"}', '{"note": "paid with ****0004"}'),
        # UUIDs, dates and amounts are left alone
        (
            '{"transaction_id": "0f3a1234-5678-4234-9234-123456789012"}',
            '{"transaction_id": "0f3a1234-5678-4234-9234-123456789012"}',
        ),
        (
            '{"event_time": "2026-01-05T08:00:00Z", "amount": 1234.5}',
            '{"event_time": "2026-01-05T08:00:00Z", "amount": 1234.5}',
        ),
        (
            '{"transaction_id": "t1", "card_number": "4111111111111111", ',
            '{"transaction_id": "t1", "card_number": "****1111", ',
        ),
    ],
)
def test_mask_card_numbers(spark, text, masked):
    df = spark.createDataFrame([(text,)], "raw string")
    assert df.select(mask_card_numbers(F.col("raw")).alias("m")).first().m == masked


def test_token_key_from_env(monkeypatch):
    monkeypatch.delenv("TXWATCH_TEST_KEY", raising=False)
    with pytest.raises(MissingTokenKeyError, match="TXWATCH_TEST_KEY is not set"):
        token_key_from_env("TXWATCH_TEST_KEY")
    monkeypatch.setenv("TXWATCH_TEST_KEY", "s3cret")
    assert token_key_from_env("TXWATCH_TEST_KEY") == b"s3cret"
    monkeypatch.setenv("TXWATCH_TEST_KEY", "clé")  # executors would decode it by locale
    with pytest.raises(MissingTokenKeyError, match="must be ASCII"):
        token_key_from_env("TXWATCH_TEST_KEY")


def test_identifiers_become_tokens_of_their_kind(spark):
    df = spark.createDataFrame(
        [("t1", "u-1", "u-1", "Ana Silva"), ("t2", "u-2", None, None)],
        "transaction_id string, user_id string, device_id string, name string",
    )
    rows = {r.transaction_id: r for r in pseudonymize(df, TEST_KEY_VARIABLE).collect()}
    key = TEST_TOKEN_KEY
    assert rows["t1"].user_id == id_token_py("u-1", "user_id", key)
    assert rows["t1"].device_id == id_token_py("u-1", "device_id", key)
    assert rows["t1"].user_id != rows["t1"].device_id  # one value, two kinds: two tokens
    assert rows["t1"].name == id_token_py("Ana Silva", "name", key)
    assert rows["t1"].user_id.startswith("u_") and len(rows["t1"].user_id) == 18
    assert rows["t2"].device_id is None and rows["t2"].name is None
    assert rows["t2"].transaction_id == "t2"  # other columns as they were
