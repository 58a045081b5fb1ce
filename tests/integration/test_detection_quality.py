"""The simulator's scenarios through the alert path: the issue's quality bar, smaller."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyspark.sql.functions as F
import pytest

from tests.integration.kafka_helpers import TRAVEL_PATH, run_pipeline
from txwatch.evaluation import card_number_hits, impossible_travel_quality
from txwatch.infra import tables
from txwatch.infra.config import duration_s
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.lake import read_table
from txwatch.simulator import SimulationParams, Simulator, produce, write_ground_truth

pytestmark = pytest.mark.kafka


def test_impossible_travel_precision_and_recall_on_simulated_traffic(spark, kafka_conf):
    conf = kafka_conf
    ensure_topics(conf)
    # Travel only: payments from new devices (card testing, takeovers, rings, repeats of
    # known fraud) have no fixes.
    params = SimulationParams(
        seed=5,
        users=300,
        duration_min=45,
        impossible_travel_rate=0.05,
        amount_outlier_rate=0.0,
        card_testing_per_hour=0.0,
        account_takeover_per_hour=0.0,
        fraud_rings=0,
        pattern_repeats_per_hour=0.0,
    )
    sim = Simulator(params, conf)
    produce(sim.records(), conf.kafka.bootstrap_servers)
    write_ground_truth(conf, sim.truth)

    run_pipeline(spark, conf, TRAVEL_PATH)

    alerts = read_table(spark, conf, tables.ALERTS)
    quality = impossible_travel_quality(alerts, read_table(spark, conf, tables.GROUND_TRUTH))
    assert quality.positives >= 30
    assert quality.precision >= 0.95, quality
    assert quality.recall >= 0.95, quality
    assert alerts.select("alert_id").distinct().count() == alerts.count()
    enriched = read_table(spark, conf, tables.TRANSACTIONS_ENRICHED)
    assert enriched.select("transaction_id").distinct().count() == enriched.count()
    # Users whose phone reports nothing are kept and marked: every such payment the final
    # watermark has passed (its join range closed) is in the table without a location, and
    # nothing else is marked but those and late payments.
    final_watermark = max(
        datetime.fromisoformat(r.watermark.replace("Z", "+00:00"))
        for r in read_table(spark, conf, tables.PIPELINE_PROGRESS)
        .filter(F.col("query_name") == "travel")
        .collect()
        if r.watermark
    )
    closed_before = final_watermark - timedelta(seconds=duration_s(conf.stream.join_after))
    unlocated = {t.transaction_id for t in sim.truth if t.scenario == "no_location"}
    due = {
        t.transaction_id
        for t in sim.truth
        if t.scenario == "no_location" and t.event_time < closed_before
    }
    marked = {r.transaction_id for r in enriched.filter("NOT has_location").collect()}
    assert len(due) >= 10, "the simulation should hold payments without a location"
    assert due <= marked
    assert marked <= unlocated | {t.transaction_id for t in sim.truth if t.scenario == "late"}
    for table in (tables.BRONZE_TRANSACTIONS, tables.QUARANTINE, tables.ALERTS):
        assert card_number_hits(read_table(spark, conf, table)) == 0
