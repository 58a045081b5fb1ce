"""MinHash LSH similarity: geohash cells, tokens, estimates against exact Jaccard, rings."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime

import pyspark.sql.functions as F
import pytest
from datasketch import MinHash

from txwatch.infra.config import Conf
from txwatch.simulator import RING_SCENARIO, SimulationParams, Simulator
from udfs.geo import geohash, geohash_py
from udfs.similarity import (
    BehaviourTokens,
    SimilarityParams,
    account_token_sets,
    behaviour_tokens,
    connected_components,
    filter_common,
    similar_pairs,
)

PAYMENT_COLUMNS = (
    "user_id string, merchant_id string, device_id string, merchant_category string, "
    "latitude double, longitude double, event_time timestamp"
)


def test_geohash_matches_the_textbook_algorithm(spark):
    rng = random.Random(3)
    points = [(57.64911, 10.40744), (90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)] + [
        (rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(200)
    ]
    df = spark.createDataFrame(points, "lat double, lon double")
    for precision in (1, 2, 5, 6, 11, 12):
        got = [
            r.h
            for r in df.select(geohash(F.col("lat"), F.col("lon"), precision).alias("h")).collect()
        ]
        assert got == [geohash_py(lat, lon, precision) for lat, lon in points]
    assert geohash_py(57.64911, 10.40744, 11) == "u4pruydqqvj"  # the example on Wikipedia
    null_df = spark.createDataFrame([(None, 1.0)], "lat double, lon double")
    assert null_df.select(geohash(F.col("lat"), F.col("lon"), 5)).first()[0] is None


def test_behaviour_tokens_of_a_payment(spark):
    df = spark.createDataFrame(
        [("u1", "m-01-002", "d-abc", "grocery", 48.8566, 2.3522, datetime(2026, 1, 5, 13, 5))],
        PAYMENT_COLUMNS,
    )
    tokens = df.select(behaviour_tokens(BehaviourTokens(5, 6)).alias("t")).first().t
    assert tokens == [
        "merchant:m-01-002",
        "device:d-abc",
        f"cell:{geohash_py(48.8566, 2.3522, 5)}",
        "category_hours:grocery@12-18h",
    ]


def test_behaviour_tokens_leave_out_missing_parts(spark):
    df = spark.createDataFrame(
        [("u1", "m-01-002", "d-abc", None, None, 2.3522, datetime(2026, 1, 5, 13, 5))],
        PAYMENT_COLUMNS,
    )
    tokens = df.select(behaviour_tokens(BehaviourTokens(5, 6)).alias("t")).first().t
    assert tokens == ["merchant:m-01-002", "device:d-abc"]


def _sets_with_known_jaccard(rng: random.Random, pairs: int) -> tuple[list, dict]:
    """Pairs of token sets (a, b) with Jaccard similarities spread over [0.1, 0.9]."""
    rows, exact = [], {}
    for i in range(pairs):
        union = 30
        shared = max(1, round(union * rng.uniform(0.1, 0.9)))
        only = union - shared
        common = [f"s{i}:{k}" for k in range(shared)]
        a = common + [f"a{i}:{k}" for k in range(only // 2)]
        b = common + [f"b{i}:{k}" for k in range(only - only // 2)]
        rows += [(f"p{i:03d}a", sorted(a)), (f"p{i:03d}b", sorted(b))]
        exact[(f"p{i:03d}a", f"p{i:03d}b")] = shared / union
    return rows, exact


def test_spark_and_datasketch_estimates_agree_with_exact_jaccard(spark):
    rng = random.Random(11)
    rows, exact = _sets_with_known_jaccard(rng, 60)
    sets_df = spark.createDataFrame(rows, "account_id string, tokens array<string>")
    num_hashes = 20
    # min_jaccard 0: every pair LSH makes a candidate is returned, with both figures.
    params = SimilarityParams(1000, 1, num_hashes, 0.0, seed=5)
    got = {
        (r.account_a, r.account_b): r
        for r in similar_pairs(sets_df, params).collect()
        if (r.account_a, r.account_b) in exact
    }
    # 1 - (1 - J)^20 >= 0.88 at J = 0.1: nearly every planted pair is a candidate.
    assert len(got) >= 55
    spark_errors = []
    for key, r in got.items():
        j = exact[key]
        assert r.exact_jaccard == pytest.approx(j)
        sd = math.sqrt(j * (1 - j) / num_hashes)
        assert abs(r.estimated_jaccard - j) <= 4 * sd + 1e-9, (key, j, r.estimated_jaccard)
        spark_errors.append((r.estimated_jaccard - j) / sd)
    # Unbiased, with the spread the number of hashes implies (not tighter, not looser).
    assert abs(sum(spark_errors) / len(spark_errors)) < 0.5
    assert 0.6 < math.sqrt(sum(e * e for e in spark_errors) / len(spark_errors)) < 1.4

    num_perm = 128
    sketch_errors = []
    by_id = dict(rows)
    for (a, b), j in exact.items():
        ma, mb = MinHash(num_perm=num_perm, seed=1), MinHash(num_perm=num_perm, seed=1)
        ma.update_batch([t.encode() for t in by_id[a]])
        mb.update_batch([t.encode() for t in by_id[b]])
        sd = math.sqrt(j * (1 - j) / num_perm)
        assert abs(ma.jaccard(mb) - j) <= 4 * sd + 1e-9
        sketch_errors.append((ma.jaccard(mb) - j) / sd)
    assert abs(sum(sketch_errors) / len(sketch_errors)) < 0.5
    assert 0.6 < math.sqrt(sum(e * e for e in sketch_errors) / len(sketch_errors)) < 1.4


def test_connected_components():
    component = connected_components([("c", "d"), ("a", "b"), ("d", "e"), ("b", "c"), ("x", "y")])
    assert component == {"a": "a", "b": "a", "c": "a", "d": "a", "e": "a", "x": "x", "y": "x"}


def _simulated_payments(spark, base_conf: Conf, rings: int):
    params = SimulationParams(
        seed=21, users=400, duration_min=60.0, history_min=240.0, fraud_rings=rings
    )
    sim = Simulator(params, base_conf)
    rows = []
    for _, record in sim.records():
        if record.topic != base_conf.kafka.topics.transactions:
            continue
        try:
            tx = json.loads(record.value)
            row = (
                tx["user_id"],
                tx["merchant_id"],
                tx["device_id"],
                tx["merchant_category"],
                float(tx["latitude"]),
                float(tx["longitude"]),
                datetime.fromisoformat(tx["event_time"].replace("Z", "+00:00")).replace(
                    tzinfo=None
                ),
            )
        except (ValueError, KeyError, TypeError):
            continue  # the malformed records the simulator injects
        rows.append(row)
    ring_accounts = {t.user_id for t in sim.truth if t.scenario == RING_SCENARIO}
    return spark.createDataFrame(rows, PAYMENT_COLUMNS), ring_accounts


def _clusters(payments_df, conf: Conf) -> list[set[str]]:
    cfg = conf.similarity
    sets_df = filter_common(account_token_sets(payments_df, cfg.tokens()), cfg.params())
    pairs = [(r.account_a, r.account_b) for r in similar_pairs(sets_df, cfg.params()).collect()]
    by_root: dict[str, set[str]] = {}
    for account, root in connected_components(pairs).items():
        by_root.setdefault(root, set()).add(account)
    return [members for members in by_root.values() if len(members) >= cfg.min_ring_size]


def test_a_planted_ring_is_found_and_ordinary_customers_form_none(spark, base_conf):
    payments_df, ring_accounts = _simulated_payments(spark, base_conf, rings=1)
    assert len(ring_accounts) >= 4
    assert _clusters(payments_df, base_conf) == [ring_accounts]

    ordinary_df, none = _simulated_payments(spark, base_conf, rings=0)
    assert not none
    assert _clusters(ordinary_df, base_conf) == []
