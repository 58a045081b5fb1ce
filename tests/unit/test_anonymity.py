"""k-anonymity: Mondrian partitions, generalization, suppression, information loss."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from txwatch.anonymize import PAYLOAD, full_domain_ncp, measure, release
from udfs.anonymity import DIMENSIONS, QUASI_IDENTIFIERS, generalized, with_dimensions

T0 = datetime(2026, 1, 5, 0, 0)
CITIES = ((48.8566, 2.3522), (52.52, 13.405), (41.3874, 2.1686), (45.4642, 9.19))
CATEGORIES = (
    "grocery", "pharmacy", "fuel", "transport", "restaurant", "cafe", "entertainment",
    "clothing", "electronics",
)  # fmt: skip
COLUMNS = (
    "latitude double, longitude double, event_time timestamp, amount double, "
    "merchant_category string, currency string, status string, channel string, "
    "has_location boolean, is_flagged boolean"
)


@pytest.fixture(scope="module")
def rows_df(spark, base_conf):
    rng = random.Random(8)
    rows = []
    for _ in range(4000):
        lat, lon = rng.choice(CITIES)
        rows.append(
            (
                lat + rng.gauss(0, 0.04),
                lon + rng.gauss(0, 0.06),
                T0 + timedelta(seconds=rng.uniform(0, 2 * 86400)),
                round(rng.lognormvariate(3.2, 0.9), 2),
                rng.choice(CATEGORIES),
                "EUR",
                "approved",
                "chip",
                True,
                rng.random() < 0.05,
            )
        )
    df = spark.createDataFrame(rows, COLUMNS)
    hierarchies = base_conf.anonymize.hierarchies()
    return (
        with_dimensions(df, hierarchies).select(*DIMENSIONS, "_geohash", *PAYLOAD).localCheckpoint()
    )


@pytest.mark.parametrize("k", [5, 25, 100])
def test_every_class_holds_k_rows_and_mondrian_loses_less_than_full_domain(
    spark, base_conf, rows_df, k
):
    hierarchies = base_conf.anonymize.hierarchies()
    released_df, suppressed, rounds = release(rows_df, k, hierarchies, min_location_precision=2)
    n = rows_df.count()
    assert released_df.count() + suppressed == n
    assert suppressed / n <= base_conf.anonymize.max_suppression
    # Recount the classes from the released columns alone.
    sizes = [r["count"] for r in released_df.groupBy(*QUASI_IDENTIFIERS).count().collect()]
    assert min(sizes) >= k
    report = measure(released_df, n, suppressed, k, rounds)
    assert report.k_reached == min(sizes) and report.classes == len(sizes)
    assert report.discernibility == sum(s * s for s in sizes) + suppressed * n
    assert rounds > 1
    level, naive = full_domain_ncp(rows_df, k, hierarchies, base_conf.anonymize.max_suppression)
    assert level >= 0
    assert 0 <= report.ncp < naive


def test_a_partition_is_published_with_the_most_specific_nodes(spark, base_conf):
    hierarchies = base_conf.anonymize.hierarchies()
    stats = spark.createDataFrame(
        [
            # one hour, one category, amounts 12-18 (one band), cells u09tv.. / u09tw..
            (1, "u09tvw", "u09twx", 1767607200.0, 1767609000.0, 12.0, 18.0, 0.0, 0.0, 86400.0),
            # two days of one week, the first two categories (one group), amounts 3-70
            (2, "u09tvw", "u0abcd", 1767571200.0, 1767700000.0, 3.0, 70.0, 0.0, 1.0, 86400.0),
        ],
        "partition_id long, min_geohash string, max_geohash string, min_epoch_s double, "
        "max_epoch_s double, min_amount double, max_amount double, min_category_rank double, "
        "max_category_rank double, total_time_span_s double",
    )
    got = {r.partition_id: r for r in generalized(stats, hierarchies).collect()}
    order = hierarchies.category_order()
    assert got[1].location_cell == "u09t"
    assert got[1].time_slot == "hour 2026-01-05 10:00"
    assert got[1].amount_range == "[10, 20)"
    assert got[1].merchant_category_group == order[0]
    assert got[2].location_cell == "u0"
    assert got[2].time_slot == "week 2026-01-01 00:00"  # weeks from Thursdays, as epoch days
    assert got[2].amount_range == "[0, 100)"
    assert got[2].merchant_category_group == f"group {hierarchies.category_groups[order[0]]}"
    assert got[1].ncp < got[2].ncp


def test_distinct_l_diversity_on_a_hand_made_table(spark):
    released = spark.createDataFrame(
        [
            ("u09t", "hour x", "[0, 5)", "cafe", "EUR", "approved", "chip", True, True, 0.1),
            ("u09t", "hour x", "[0, 5)", "cafe", "EUR", "approved", "chip", True, False, 0.1),
            ("u09t", "hour x", "[0, 5)", "cafe", "EUR", "approved", "chip", True, False, 0.1),
            ("u0ab", "day y", "[5, 10)", "*", "EUR", "approved", "chip", True, False, 0.5),
            ("u0ab", "day y", "[5, 10)", "*", "EUR", "denied", "chip", True, False, 0.5),
        ],
        "location_cell string, time_slot string, amount_range string, "
        "merchant_category_group string, currency string, status string, channel string, "
        "has_location boolean, is_flagged boolean, ncp double",
    )
    report = measure(released, rows_in=6, suppressed=1, k=2, rounds=1)
    assert report.classes == 2 and report.k_reached == 2
    assert report.l_diversity == 1  # the second class is all unflagged
    assert report.l_diverse_share == 0.5
    assert report.discernibility == 3 * 3 + 2 * 2 + 1 * 6
    assert report.ncp == pytest.approx((3 * 0.1 + 2 * 0.5) / 5)
