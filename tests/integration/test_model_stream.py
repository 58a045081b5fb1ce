"""The model and similarity paths end to end: history streamed, a model trained and
registered and the history's known fraud turned into patterns, the next period scored in
the stream (model outliers, repeats of known fraud), then the period's ring found."""

from __future__ import annotations

import itertools

import pyspark.sql.functions as F
import pytest

from tests.conftest import TEST_TOKEN_KEY
from tests.integration.kafka_helpers import run_pipeline
from txwatch import quality
from txwatch.evaluation import pattern_hits
from txwatch.infra import tables
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.lake import read_table, table_exists
from txwatch.similarity import find_rings
from txwatch.simulator import (
    LAST_NAMES,
    MODEL_SCENARIOS,
    PATTERN_REPEAT_SCENARIO,
    RING_SCENARIO,
    SimulationParams,
    Simulator,
    produce,
    write_ground_truth,
)
from txwatch.training import train
from udfs.privacy import id_token_py

pytestmark = pytest.mark.kafka


def test_model_trained_on_history_scores_the_next_period_in_the_stream(spark, kafka_conf):
    conf = kafka_conf
    ensure_topics(conf)
    params = SimulationParams(
        seed=21,
        users=200,
        duration_min=40,
        history_min=240,
        ping_interval_s=60,
        tx_per_hour=5,
        amount_outlier_rate=0.03,
        card_testing_per_hour=6,
        account_takeover_per_hour=10,
        known_frauds=2,
        pattern_repeats_per_hour=16,
        fraud_rings=1,
    )
    sim = Simulator(params, conf)
    records = sim.records()
    produce(itertools.takewhile(lambda item: item[0] < 0, records), conf.kafka.bootstrap_servers)

    # No model yet: the scoring query passes payments unscored, and nothing fails.
    run_pipeline(spark, conf)
    alerts = read_table(spark, conf, tables.ALERTS)
    assert alerts.filter(F.col("alert_type") == "model_outlier").count() == 0

    result = train(spark, conf, None, params.start)
    assert result.version == 1
    assert 0.003 <= result.flagged_share <= 0.007  # the 99.5 % quantile

    # The history's labelled fraud becomes known patterns; no ring in the history.
    write_ground_truth(conf, [t for t in sim.truth if t.event_time < params.start])
    history_rings = find_rings(spark, conf, until=params.start)
    assert history_rings.rings == []
    patterns = read_table(spark, conf, tables.FRAUD_PATTERNS)
    assert patterns.filter(F.col("source").startswith("label known_fraud")).count() == 2

    produce((item for item in records if item[0] >= 0), conf.kafka.bootstrap_servers)
    write_ground_truth(conf, [t for t in sim.truth if t.event_time >= params.start])
    run_pipeline(spark, conf)

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

    found = find_rings(spark, conf)
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
