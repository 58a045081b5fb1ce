"""The model and similarity paths end to end: history streamed, a model trained and
registered and the history's known fraud turned into patterns, the next period scored in
the stream (model outliers, repeats of known fraud), then the period's ring found."""

from __future__ import annotations

import pyspark.sql.functions as F
import pytest

from tests.conftest import TEST_TOKEN_KEY
from txwatch import quality
from txwatch.evaluation import pattern_hits
from txwatch.infra import tables
from txwatch.lake import read_table, table_exists
from txwatch.similarity import find_rings
from txwatch.simulator import (
    LAST_NAMES,
    MODEL_SCENARIOS,
    PATTERN_REPEAT_SCENARIO,
    RING_SCENARIO,
)
from udfs.privacy import id_token_py

pytestmark = pytest.mark.kafka


def test_model_trained_on_history_scores_the_next_period_in_the_stream(spark, model_lake):
    conf, sim = model_lake.conf, model_lake.sim
    # No model yet: the scoring query passed payments unscored, and nothing failed.
    assert model_lake.outliers_before_any_model == 0
    assert model_lake.trained.version == 1
    assert 0.003 <= model_lake.trained.flagged_share <= 0.007  # the 99.5 % quantile
    # The history's labelled fraud became known patterns; no ring in the history.
    assert model_lake.history_rings.rings == []
    assert model_lake.known_fraud_patterns_from_history == 2

    alerts = read_table(spark, conf, tables.ALERTS)
    assert alerts.select("alert_id").distinct().count() == alerts.count()
    truth = read_table(spark, conf, tables.GROUND_TRUTH)
    rows = {
        r.scenario: r
        for r in quality.transaction_rows(
            alerts, truth, read_table(spark, conf, tables.BRONZE_TRANSACTIONS), "model_outlier"
        )
    }
    for scenario in MODEL_SCENARIOS:
        assert rows[scenario].labelled >= 5, scenario
        assert rows[scenario].recall >= 0.7, (scenario, rows[scenario])
    assert rows[quality.ANY].ordinary_flagged_share < 0.02
    model_alert = alerts.filter(F.col("alert_type") == "model_outlier").first()
    assert model_alert is not None
    assert "model v1" in model_alert.reason
    assert model_alert.evidence["model_version"] == 1.0

    similar = {
        r.scenario: r
        for r in quality.transaction_rows(
            alerts, truth, read_table(spark, conf, tables.BRONZE_TRANSACTIONS), "similar_to_fraud"
        )
    }
    assert similar[PATTERN_REPEAT_SCENARIO].labelled >= 4
    assert similar[PATTERN_REPEAT_SCENARIO].detected >= 1
    assert similar[quality.ANY].precision >= 0.5
    match = alerts.filter(F.col("alert_type") == "similar_to_fraud").first()
    assert "known fraud pattern" in match.reason and "label known_fraud" in match.reason

    found = model_lake.rings
    # Tables outside bronze name accounts by their tokens only.
    ring_accounts = {
        id_token_py(t.user_id, "user_id", TEST_TOKEN_KEY)
        for t in sim.truth
        if t.scenario == RING_SCENARIO
    }
    assert [set(members) for _, members, _ in found.rings] == [ring_accounts]
    ring_alert = (
        read_table(spark, conf, tables.ALERTS).filter(F.col("alert_type") == "fraud_ring").collect()
    )
    assert len(ring_alert) == 1
    assert all(account in ring_alert[0].reason for account in ring_accounts)

    # No table outside bronze and ground_truth names anyone: the simulator's user ids,
    # device ids and holders' last names, found in bronze, are nowhere else.
    clear = rf"\bu-\d{{6}}\b|\bd-[0-9a-f]{{12}}\b|\b(?:{'|'.join(LAST_NAMES)})\b"
    assert pattern_hits(read_table(spark, conf, tables.BRONZE_TRANSACTIONS), clear) > 0
    raw = {tables.BRONZE_TRANSACTIONS, tables.BRONZE_DEVICE_LOCATIONS, tables.GROUND_TRUTH}
    derived = [t for t in tables.ALL_TABLES if t not in raw and table_exists(spark, conf, t)]
    assert tables.CUSTOMER_PROFILES in derived and tables.ACCOUNT_CLUSTERS in derived
    hits = {t: pattern_hits(read_table(spark, conf, t), clear) for t in derived}
    assert not any(hits.values()), hits
    assert found.alerts_published == 1
    # Published once to the alert topic, and not again when the same ring is found again.
    assert find_rings(spark, conf).alerts_published == 0
    stored = read_table(spark, conf, tables.ALERTS).filter(F.col("alert_type") == "fraud_ring")
    assert stored.count() == 1
    topic_df = (
        spark.read.format("kafka")
        .options(**conf.kafka_options())
        .option("subscribe", conf.kafka.topics.potential_fraud)
        .option("startingOffsets", "earliest")
        .load()
    )
    keys = [bytes(r.key).decode() for r in topic_df.select("key").collect()]
    assert keys.count(ring_alert[0].alert_id) == 1
