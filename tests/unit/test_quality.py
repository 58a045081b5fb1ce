"""Detection quality per alert type and scenario, on a hand-made ground truth."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from txwatch import quality
from txwatch.infra import tables

T0 = datetime(2026, 1, 5, 12, 0, 0)
SCENARIOS = {
    "t1": "impossible_travel",
    "t2": "impossible_travel",
    "t3": "amount_outlier",
    "t4": "card_testing",
    "t5": "legit",
    "t6": "legit",
    "t7": "legit",
    "t8": "account_takeover",
}
# (transaction, alert type, seconds after the payment reached Kafka)
ALERTS = [
    ("t1", "impossible_travel", 2.0),
    ("t5", "impossible_travel", 3.0),  # a false alarm
    ("t3", "model_outlier", 4.0),
    ("t4", "model_outlier", 6.0),
    ("t4", "model_outlier", 9.0),  # the same payment twice: counted once, first time
    ("t6", "model_outlier", 1.0),  # a false alarm
    ("t1", "model_outlier", 8.0),  # fraud of another scenario: a true alert all the same
]


def frames(spark):
    truth_df = spark.createDataFrame(
        [(tx, scenario) for tx, scenario in SCENARIOS.items()],
        "transaction_id string, scenario string",
    )
    bronze_df = spark.createDataFrame(
        [(tx, T0) for tx in SCENARIOS], "transaction_id string, kafka_timestamp timestamp"
    )
    alerts_df = spark.createDataFrame(
        [(tx, kind, T0 + timedelta(seconds=s)) for tx, kind, s in ALERTS],
        "transaction_id string, alert_type string, detected_at timestamp",
    )
    return alerts_df, truth_df, bronze_df


def by_scenario(rows):
    return {r.scenario: r for r in rows}


def test_counts_recall_precision_and_delay_per_alert_type(spark):
    alerts_df, truth_df, bronze_df = frames(spark)

    travel = by_scenario(
        quality.transaction_rows(alerts_df, truth_df, bronze_df, "impossible_travel")
    )
    assert set(travel) == {"impossible_travel", quality.ANY}
    row = travel["impossible_travel"]
    assert (row.labelled, row.detected, row.recall, row.median_delay_s) == (2, 1, 0.5, 2.0)
    summary = travel[quality.ANY]
    assert (summary.alerts, summary.precision) == (2, 0.5)
    assert summary.ordinary_flagged_share == pytest.approx(1 / 3)

    model = by_scenario(quality.transaction_rows(alerts_df, truth_df, bronze_df, "model_outlier"))
    assert (model["amount_outlier"].detected, model["amount_outlier"].recall) == (1, 1.0)
    assert model["amount_outlier"].median_delay_s == 4.0
    assert model["card_testing"].median_delay_s == 6.0  # the first of its two alerts
    assert (model["account_takeover"].labelled, model["account_takeover"].detected) == (1, 0)
    assert model["account_takeover"].recall == 0.0
    assert model["account_takeover"].median_delay_s is None
    summary = model[quality.ANY]
    assert (summary.alerts, summary.precision) == (4, 0.75)
    assert summary.ordinary_flagged_share == pytest.approx(1 / 3)


def test_each_evaluation_is_appended_with_its_versions(spark, conf):
    alerts_df, truth_df, bronze_df = frames(spark)
    rows = quality.transaction_rows(alerts_df, truth_df, bronze_df, "model_outlier")
    quality.record(spark, conf, rows, None)
    quality.record(spark, conf, rows, None)
    stored = spark.read.format("delta").load(conf.table_path(tables.EVALUATION))
    assert stored.count() == 2 * len(rows)
    assert stored.select("evaluated_at").distinct().count() == 2
    first = stored.filter("scenario = 'amount_outlier'").first()
    assert first.code_version and first.model_version is None
    assert (first.labelled, first.detected, first.recall) == (1, 1, 1.0)
