"""Known fraud patterns in the stream: the recent-token operator and the datasketch index."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from udfs.fraud_patterns import (
    MATCH_SCHEMA,
    Pattern,
    PatternIndex,
    match_batches,
    recent_tokens_stream,
    similar_to_fraud_alerts,
    with_payment_tokens,
)
from udfs.similarity import BehaviourTokens, behaviour_tokens

T0 = datetime(2026, 1, 5, 9, 0)
TOKENS = BehaviourTokens(cell_precision=5, hour_bucket_hours=6)
PAYMENT_DDL = (
    "transaction_id string, user_id string, card_token string, card_last4 string, "
    "device_id string, merchant_id string, merchant string, merchant_category string, "
    "amount double, currency string, latitude double, longitude double, event_time timestamp"
)
FRAUD = frozenset(
    {"device:d-fraud", "merchant:m-09-001", "merchant:m-09-002", "merchant:m-09-003", "cell:u0abc"}
)


def _index(common: frozenset[str] = frozenset()) -> PatternIndex:
    other = frozenset({"device:d-x", "merchant:m-01-001", "merchant:m-01-002", "cell:zzzzz"})
    return PatternIndex(
        [Pattern("p-fraud", "label known_fraud: u-1", FRAUD), Pattern("p-other", "ring r", other)],
        common,
        num_perm=128,
        min_jaccard=0.3,
    )


def test_a_set_alike_a_pattern_matches_and_one_without_its_tokens_does_not():
    index = _index(common=frozenset({"category_hours:grocery@06-12h"}))
    victim = {"device:d-victim", "merchant:m-01-005", "merchant:m-01-006", "cell:u09tv"}
    attack = {"device:d-fraud", "merchant:m-09-001", "cell:u0abc"}
    common = {"category_hours:grocery@06-12h"}
    found = index.best_match(victim | attack | common, attack | common)
    assert found is not None
    pattern, estimated, exact = found
    assert pattern.pattern_id == "p-fraud"
    assert exact == 3 / 9  # the common token counts for neither side
    assert abs(estimated - exact) < 4 * (exact * (1 - exact) / 128) ** 0.5
    # The account's set matches, but this payment is one of the victim's own: no alert.
    assert index.best_match(victim | attack, {"merchant:m-01-005"}) is None
    # The victim's ordinary activity alone is nothing like the pattern.
    assert index.best_match(victim, victim) is None
    # One shared shop in a large set of the customer's own is not enough.
    many = victim | {f"merchant:m-01-{i:03d}" for i in range(20, 30)}
    assert index.best_match(many | {"merchant:m-09-001"}, {"merchant:m-09-001"}) is None


def _payment(tx_id: str, user: str, minutes: float, merchant: str, device: str) -> tuple:
    return (
        tx_id, user, "tok", "1111", device, merchant, f"shop {merchant}", "grocery", 10.0,
        "EUR", 48.85, 2.35, T0 + timedelta(minutes=minutes),
    )  # fmt: skip


def test_recent_tokens_over_micro_batches_equal_a_brute_force_window(spark, tmp_path):
    rng = random.Random(4)
    payments = sorted(
        (
            _payment(
                f"t{i:03d}",
                f"u{rng.randrange(6)}",
                rng.uniform(0, 120),
                f"m-01-{rng.randrange(15):03d}",
                f"d{rng.randrange(3)}",
            )
            for i in range(150)
        ),
        key=lambda p: p[-1],
    )
    schema_df = spark.createDataFrame([], PAYMENT_DDL)
    source = tmp_path / "payments"
    for i in range(3):
        spark.createDataFrame(payments[i * 50 : (i + 1) * 50], PAYMENT_DDL).write.parquet(
            str(source / f"part={i}")
        )
    stream_df = (
        spark.readStream.schema(schema_df.schema)
        .option("maxFilesPerTrigger", 2)
        .option("recursiveFileLookup", "true")
        .parquet(str(source))
    )
    query = (
        recent_tokens_stream(with_payment_tokens(stream_df, TOKENS), window_s=1800.0)
        .writeStream.format("memory")
        .queryName("recent_tokens_test")
        .option("checkpointLocation", str(tmp_path / "ck"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    assert len([p for p in query.recentProgress if p.numInputRows]) > 1
    got = {
        r.transaction_id: sorted(r.recent_tokens)
        for r in spark.table("recent_tokens_test").collect()
    }
    tokens_of = {
        r.transaction_id: set(r.tokens)
        for r in spark.createDataFrame(payments, PAYMENT_DDL)
        .select("transaction_id", behaviour_tokens(TOKENS).alias("tokens"))
        .collect()
    }
    expected = {}
    for p in payments:  # in time order, so every earlier payment arrived before it
        window = [
            q for q in payments if q[1] == p[1] and p[-1] - timedelta(minutes=30) <= q[-1] <= p[-1]
        ]
        expected[p[0]] = sorted(set().union(*[tokens_of[q[0]] for q in window]))
    assert got == expected


def test_matching_payments_become_similar_to_fraud_alerts(spark):
    index = _index()
    rows = [
        # the victim's own payment: nothing of the pattern
        (*_payment("t1", "u-7", 0, "m-01-005", "d-victim"), ["merchant:m-01-005"],
         ["device:d-victim", "merchant:m-01-005", "merchant:m-01-006", "cell:u09tv"]),
        # the fraudster's purchase from the known device at a known shop
        (*_payment("t2", "u-7", 5, "m-09-001", "d-fraud"),
         ["device:d-fraud", "merchant:m-09-001", "cell:u0abc"],
         ["device:d-victim", "merchant:m-01-005", "merchant:m-01-006", "cell:u09tv",
          "device:d-fraud", "merchant:m-09-001", "cell:u0abc"]),
    ]  # fmt: skip
    ddl = PAYMENT_DDL.replace("merchant_id string, ", "").replace("merchant_category string, ", "")
    payments_df = spark.createDataFrame(
        [(*r[:5], *r[6:7], *r[8:13], r[13], r[14]) for r in rows],
        ddl + ", tokens array<string>, recent_tokens array<string>",
    )
    broadcast = spark.sparkContext.broadcast(index)
    matches_df = payments_df.mapInPandas(
        lambda batches: match_batches(broadcast.value, batches), MATCH_SCHEMA
    )
    alerts = similar_to_fraud_alerts(matches_df, 0.3).collect()
    assert [a.transaction_id for a in alerts] == ["t2"]
    alert = alerts[0]
    assert alert.alert_type == "similar_to_fraud"
    assert "p-fraud" in alert.reason and "label known_fraud: u-1" in alert.reason
    assert alert.evidence["exact_jaccard"] == 3 / 9
