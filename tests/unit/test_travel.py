from __future__ import annotations

from datetime import datetime, timedelta

import pyspark.sql.functions as F
import pytest
from pyspark.testing import assertDataFrameEqual

from udfs.alerts import alert_id
from udfs.geo import haversine_m_py
from udfs.travel import (
    combine_enriched,
    impossible_travel_alerts,
    is_impossible_travel,
    nearest_location_per_transaction,
    with_travel_metrics,
)

T0 = datetime(2026, 1, 5, 12, 0, 0)
PAIR_SCHEMA = (
    "transaction_id string, user_id string, card_token string, card_last4 string, "
    "device_id string, merchant_id string, merchant string, merchant_category string, "
    "amount double, currency string, status string, channel string, latitude double, "
    "longitude double, event_time timestamp, location_event_time timestamp, "
    "location_latitude double, location_longitude double, location_accuracy_m double, "
    "location_speed_mps double"
)


def pair(tx_id, tx_pos, fix_pos, gap_s, accuracy=10.0):
    fix_time = None if fix_pos is None else T0 + timedelta(seconds=gap_s)
    lat, lon = fix_pos if fix_pos else (None, None)
    return (
        tx_id,
        "u",
        "tok",
        "1111",
        "d",
        "m",
        "Shop",
        "grocery",
        10.0,
        "EUR",
        "approved",
        "chip",
        tx_pos[0],
        tx_pos[1],
        T0,
        fix_time,
        lat,
        lon,
        accuracy if fix_pos else None,
        0.0 if fix_pos else None,
    )


def metrics(spark, conf, rows):
    return with_travel_metrics(spark.createDataFrame(rows, PAIR_SCHEMA), conf.impossible_travel)


def test_gps_jitter_and_driving_are_not_impossible_travel(spark, conf):
    rows = [
        # same place, 40 m of jitter, fix 2 s away: tiny gap must not blow up the speed
        pair("jitter", (48.85, 2.35), (48.85036, 2.35), 2.0, accuracy=30.0),
        # a multipath outlier 2 km off with a claimed 5 m accuracy, 10 s apart
        pair("outlier", (48.85, 2.35), (48.868, 2.35), 10.0, accuracy=5.0),
        # driving on a motorway: 36 m/s for 5 minutes
        pair("driving", (48.85, 2.35), (48.85 + 36 * 300 / 111_320, 2.35), -300.0),
        # no fix in range
        pair("unlocated", (48.85, 2.35), None, None),
    ]
    df = metrics(spark, conf, rows).select(
        "transaction_id", is_impossible_travel(conf.impossible_travel).alias("flag")
    )
    expected = spark.createDataFrame(
        [("jitter", False), ("outlier", False), ("driving", False), ("unlocated", False)],
        "transaction_id string, flag boolean",
    )
    assertDataFrameEqual(df, expected)


def test_far_payment_within_minutes_is_flagged_with_evidence(spark, conf):
    paris, lyon = (48.8566, 2.3522), (45.7640, 4.8357)
    rows = [pair("fraud", lyon, paris, -120.0, accuracy=12.0), pair("fraud", lyon, paris, 30.0)]
    alerts = impossible_travel_alerts(metrics(spark, conf, rows), conf.impossible_travel)
    assert alerts.count() == 1  # one alert however many fixes matched
    alert = alerts.first()
    distance = haversine_m_py(*paris, *lyon)
    # the strongest pair is the one 30 s after: its gap is floored to min_gap_s (60 s)
    expected_speed = (
        distance - 10.0 - conf.impossible_travel.merchant_location_uncertainty_m
    ) / 60.0
    # Spark's and Python's trigonometry may differ in the last bits: compare, not equate.
    assert alert.evidence["implied_speed_mps"] == pytest.approx(expected_speed, rel=1e-9)
    assert alert.evidence["gap_s"] == 30.0
    # Both ends of the trip: the payment (the alert's position) and the phone's fix.
    assert (alert.latitude, alert.longitude) == lyon
    assert (alert.evidence["location_latitude"], alert.evidence["location_longitude"]) == paris
    assert alert.severity == "high"
    assert alert.score == pytest.approx(round(expected_speed / 250.0, 3), abs=1e-3)
    assert "391.5 km" in alert.reason and "30 s after" in alert.reason and "250 m/s" in alert.reason
    assert (
        alert.alert_id
        == spark.range(1).select(alert_id(F.lit("fraud"), F.lit("impossible_travel"))).first()[0]
    )


def test_nearest_location_per_transaction_keeps_nearest_fix_and_max_speed(spark, conf):
    here, far = (48.85, 2.35), (48.95, 2.35)  # ~11 km apart
    rows = [
        pair("t1", here, here, -200.0),
        pair("t1", here, here, 15.0),
        pair("t1", here, far, -100.0),
        pair("t2", here, None, None),
    ]
    result = nearest_location_per_transaction(metrics(spark, conf, rows)).select(
        "transaction_id", "has_location", "gap_s", F.round("max_implied_speed_mps", 1).alias("max")
    )
    max_speed = round((haversine_m_py(*here, *far) - 10.0 - 250.0) / 100.0, 1)
    expected = spark.createDataFrame(
        [("t1", True, 15.0, max_speed), ("t2", False, None, None)],
        "transaction_id string, has_location boolean, gap_s double, max double",
    )
    assertDataFrameEqual(result, expected)


def test_combine_enriched_keeps_the_nearest_fix_and_the_highest_speed_of_all_batches(spark, conf):
    here, far = (48.85, 2.35), (48.95, 2.35)
    batch_1 = nearest_location_per_transaction(
        metrics(spark, conf, [pair("t1", here, far, -100.0), pair("t2", here, None, None)])
    )
    batch_2 = nearest_location_per_transaction(metrics(spark, conf, [pair("t1", here, here, 15.0)]))
    result = combine_enriched(batch_1.unionByName(batch_2)).select(
        "transaction_id", "gap_s", F.round("max_implied_speed_mps", 1).alias("max")
    )
    max_speed = round((haversine_m_py(*here, *far) - 10.0 - 250.0) / 100.0, 1)
    expected = spark.createDataFrame(
        [("t1", 15.0, max_speed), ("t2", None, None)],
        "transaction_id string, gap_s double, max double",
    )
    assertDataFrameEqual(result, expected)
