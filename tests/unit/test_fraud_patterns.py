"""Known fraud patterns in the stream: the accounts' new tokens and the datasketch index."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pyspark.sql.functions as F

from txwatch.queries.base import query_sql_conf
from udfs.fraud_patterns import (
    MATCH_SCHEMA,
    Pattern,
    PatternIndex,
    match_batches,
    similar_to_fraud_alerts,
)
from udfs.payment_history import QUERY_SQL_CONF, payment_history_stream
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


def test_new_tokens_alike_a_pattern_match_and_a_customer_trying_a_shop_does_not():
    index = _index(common=frozenset({"category_hours:grocery@06-12h"}))
    attack = {"device:d-fraud", "merchant:m-09-001", "cell:u0abc"}
    common = {"category_hours:grocery@06-12h"}
    found = index.best_match(attack | common, attack | common)
    assert found is not None
    pattern, estimated, exact = found
    assert pattern.pattern_id == "p-fraud"
    assert exact == 3 / 5  # the common token counts for neither side
    assert abs(estimated - exact) < 4 * (exact * (1 - exact) / 128) ** 0.5
    # The account's new tokens match, but this payment brings none of them: no alert.
    assert index.best_match(attack, {"merchant:m-01-005"}) is None
    # A customer trying one of the pattern's shops for the first time: 1 / 5.
    assert index.best_match({"merchant:m-09-001"}, {"merchant:m-09-001"}) is None
    # New places alone, however alike, are a trip, not a fraud (one kind of token).
    places = frozenset({"cell:u0abc", "cell:u0abd", "cell:u0abe"})
    by_place = PatternIndex(
        [Pattern("p-places", "label x", places | {"device:d-y"})], frozenset(), 128, 0.3
    )
    assert by_place.best_match(set(places), set(places)) is None
    assert by_place.best_match(set(places) | {"device:d-y"}, {"device:d-y"}) is not None
    # One of the pattern's shops among many new ones is not enough either.
    many = {f"merchant:m-01-{i:03d}" for i in range(20, 30)} | {"merchant:m-09-001"}
    assert index.best_match(many, {"merchant:m-09-001"}) is None


def _payment(tx_id: str, user: str, minutes: float, merchant: str, device: str) -> tuple:
    return (
        tx_id, user, "tok", "1111", device, merchant, f"shop {merchant}", "grocery", 10.0,
        "EUR", 48.85, 2.35, T0 + timedelta(minutes=minutes),
    )  # fmt: skip


def test_new_tokens_over_micro_batches_equal_a_brute_force_count(spark, tmp_path):
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
        .withColumn("status", F.lit("approved"))
    )
    with query_sql_conf(spark, QUERY_SQL_CONF):
        query = (
            payment_history_stream(stream_df, TOKENS, new_s=1800.0, habit_s=3600.0)
            .writeStream.format("memory")
            .queryName("new_tokens_test")
            .option("checkpointLocation", str(tmp_path / "ck"))
            .trigger(availableNow=True)
            .start()
        )
    query.awaitTermination()
    assert len([p for p in query.recentProgress if p.numInputRows]) > 1
    got = {r.transaction_id: sorted(r.new_tokens) for r in spark.table("new_tokens_test").collect()}
    tokens_of = {
        r.transaction_id: set(r.tokens)
        for r in spark.createDataFrame(payments, PAYMENT_DDL)
        .select("transaction_id", behaviour_tokens(TOKENS).alias("tokens"))
        .collect()
    }
    expected = {}
    for p in payments:  # in time order, so every earlier payment arrived before it
        t = p[-1]
        first_use: dict[str, datetime] = {}  # since the token was last forgotten
        last_use: dict[str, datetime] = {}
        for q in payments:
            if q[1] != p[1] or q[-1] > t:
                continue
            for token in tokens_of[q[0]]:
                if token not in last_use or last_use[token] < q[-1] - timedelta(hours=1):
                    first_use[token] = q[-1]
                last_use[token] = q[-1]
        expected[p[0]] = sorted(
            token for token, first in first_use.items() if first >= t - timedelta(minutes=30)
        )
    assert got == expected


def test_matching_payments_become_similar_to_fraud_alerts(spark):
    index = _index()
    rows = [
        # the victim's own payment at a usual shop: nothing new
        (*_payment("t1", "u-7", 0, "m-01-005", "d-victim"), ["merchant:m-01-005"], []),
        # the fraudster's purchase from the known device at a known shop: all new
        (*_payment("t2", "u-7", 5, "m-09-001", "d-fraud"),
         ["device:d-fraud", "merchant:m-09-001", "cell:u0abc"],
         ["device:d-fraud", "merchant:m-09-001", "cell:u0abc"]),
    ]  # fmt: skip
    ddl = PAYMENT_DDL.replace("merchant_id string, ", "").replace("merchant_category string, ", "")
    payments_df = spark.createDataFrame(
        [(*r[:5], *r[6:7], *r[8:13], r[13], r[14]) for r in rows],
        ddl + ", tokens array<string>, new_tokens array<string>",
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
    assert alert.evidence["exact_jaccard"] == 3 / 5


def test_the_matcher_picks_up_new_patterns_without_a_restart(spark, conf):
    from txwatch.infra import tables
    from txwatch.pattern_matcher import PatternMatcher

    matcher = PatternMatcher(spark, conf)
    assert matcher.refresh(force=True) is None  # no patterns yet: nothing to match

    def write_patterns(rows: list[tuple[str, list[str]]]) -> None:
        tables.ensure_table(spark, conf, tables.FRAUD_PATTERNS)
        df = spark.createDataFrame(
            [(pid, "label known_fraud: u-1", tokens, 2, T0, T0, T0) for pid, tokens in rows],
            tables.TABLES[tables.FRAUD_PATTERNS].schema,
        )
        df.write.format("delta").mode("overwrite").save(conf.table_path(tables.FRAUD_PATTERNS))

    write_patterns([("p1", sorted(FRAUD))])
    first = matcher.refresh(force=True)
    assert first is not None and [p.pattern_id for p in first.value.patterns] == ["p1"]
    assert matcher.refresh() is first  # within refresh_interval: not looked up again
    write_patterns([("p1", sorted(FRAUD)), ("p2", ["device:d-z", "merchant:m-1", "cell:x"])])
    second = matcher.refresh(force=True)
    assert second is not first
    assert sorted(p.pattern_id for p in second.value.patterns) == ["p1", "p2"]
    assert second.value.best_match(set(FRAUD), set(FRAUD)) is not None
