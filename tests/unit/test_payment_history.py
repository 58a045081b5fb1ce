"""The payment_history operator's per-customer state, a query's own SQL settings, and the
notice for a checkpoint of an older state version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from txwatch.queries.base import RunContext, query_sql_conf
from udfs import fraud_patterns, velocity
from udfs.payment_history import pack_customers, unpack_customers

HOUR_MS = 3600_000


def _payments(rows: list[tuple[str, int, bool]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "event_time": pd.to_datetime([r[1] for r in rows], unit="ms"),
            "status": ["denied" if r[2] else "approved" for r in rows],
            "transaction_id": [f"t{i}" for i in range(len(rows))],
            "tokens": [["merchant:m1", f"device:{r[0]}"] for r in rows],
        }
    )


def test_customer_states_round_trip_through_the_operator_steps():
    t0 = 1_800_000_000_000
    first = _payments([("a", t0, False), ("b", t0 + 1000, True), ("a", t0 + 2000, False)])
    payments, known = unpack_customers({"a": None, "b": None})
    first, payments = velocity.add_velocity(first, payments)
    first, known = fraud_patterns.add_new_tokens(first, known, HOUR_MS, 24 * HOUR_MS)
    packed = pack_customers(["a", "b"], payments, known)
    assert packed["a"] is not None and packed["b"] is not None
    assert packed["a"][0] == [t0, t0 + 2000] and packed["a"][1] == [False, False]
    assert packed["b"][0] == [t0 + 1000] and packed["b"][1] == [True]
    assert sorted(packed["a"][2]) == ["device:a", "merchant:m1"]

    # A later batch of b alone sees b's state only, as if it had seen every batch.
    second = _payments([("b", t0 + 3000, False)])
    payments, known = unpack_customers({"b": packed["b"]})
    second, payments = velocity.add_velocity(second, payments)
    second, known = fraud_patterns.add_new_tokens(second, known, HOUR_MS, 24 * HOUR_MS)
    assert second["prior_payments_10m"].tolist() == [1]
    assert second["prior_declines_10m"].tolist() == [1]
    assert second["new_tokens"].tolist() == [["device:b", "merchant:m1"]]  # first used 2 s ago
    assert pack_customers(["b"], payments, known)["b"][0] == [t0 + 1000, t0 + 3000]


def test_a_customer_with_nothing_left_is_removed():
    t0 = 1_800_000_000_000
    stored = {
        "old": ([t0], [False], ["merchant:m1"], [t0], [t0]),
        "new": None,
    }
    batch = _payments([("new", t0 + 30 * 24 * HOUR_MS, False), ("old", t0 - HOUR_MS, False)])
    payments, known = unpack_customers(stored)
    assert list(payments["user_id"]) == ["old"] and known == {("old", "merchant:m1"): [t0, t0]}
    batch, payments = velocity.add_velocity(batch, payments)
    batch, known = fraud_patterns.add_new_tokens(batch, known, HOUR_MS, 24 * HOUR_MS)
    # "old" paid 30 days before the newest payment of the batch: past both windows.
    packed = pack_customers(["new", "old"], payments, known)
    assert packed["old"] is None
    assert packed["new"] is not None and np.array_equal(packed["new"][0], [t0 + 720 * HOUR_MS])


def test_query_sql_conf_is_set_for_the_block_and_restored(spark):
    key, other = "spark.sql.streaming.noDataMicroBatches.enabled", "spark.sql.shuffle.partitions"
    spark.conf.unset(key)
    before = spark.conf.get(other)
    with query_sql_conf(spark, {key: "false", other: "7"}):
        assert spark.conf.get(key) == "false" and spark.conf.get(other) == "7"
    assert spark.conf.get(key, None) is None  # unset again, as before
    assert spark.conf.get(other) == before


def test_a_checkpoint_of_an_older_state_version_is_named_once(spark, conf, capsys):
    ctx = RunContext(spark, conf, available_now=True)
    writer = spark.readStream.format("rate").load().writeStream
    ctx.checkpoint(writer, "payment_scoring")  # a fresh lake: nothing to say
    assert capsys.readouterr().out == ""
    old = Path(conf.checkpoint_path("payment_scoring", 1))
    old.mkdir(parents=True)
    ctx.checkpoint(writer, "payment_scoring")
    said = capsys.readouterr().out
    assert f"starts a new checkpoint in {conf.checkpoint_path('payment_scoring')}" in said
    assert f"{old} is no longer read" in said
    Path(conf.checkpoint_path("payment_scoring")).mkdir(parents=True)
    ctx.checkpoint(writer, "payment_scoring")  # the new one exists: said already
    assert capsys.readouterr().out == ""
