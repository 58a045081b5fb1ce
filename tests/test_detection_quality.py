"""The simulator's scenarios through the whole pipeline: the issue's quality bar, smaller."""

from __future__ import annotations

import pytest

from jobs import stream, tables
from jobs.evaluate import card_number_hits, impossible_travel_quality
from jobs.kafka_admin import ensure_topics
from jobs.lake import read_table
from jobs.simulate import SimulationParams, Simulator, produce, write_ground_truth
from tests.conftest import TEST_TOKEN_KEY

pytestmark = pytest.mark.kafka


def test_impossible_travel_precision_and_recall_on_simulated_traffic(spark, kafka_conf):
    conf = kafka_conf
    ensure_topics(conf)
    params = SimulationParams(seed=5, users=300, duration_min=45, impossible_travel_rate=0.05)
    sim = Simulator(params, conf)
    produce(sim.records(), conf.kafka.bootstrap_servers)
    write_ground_truth(conf, sim.truth)

    stream.run_available_now(spark, conf, TEST_TOKEN_KEY)

    alerts = read_table(spark, conf, tables.ALERTS)
    quality = impossible_travel_quality(alerts, read_table(spark, conf, tables.GROUND_TRUTH))
    assert quality.positives >= 30
    assert quality.precision >= 0.95, quality
    assert quality.recall >= 0.95, quality
    assert alerts.select("alert_id").distinct().count() == alerts.count()
    enriched = read_table(spark, conf, tables.TRANSACTIONS_ENRICHED)
    assert enriched.select("transaction_id").distinct().count() == enriched.count()
    # users whose phone reports nothing are kept and marked
    unlocated = {t.transaction_id for t in sim.truth if t.scenario == "no_location"}
    marked = {r.transaction_id for r in enriched.filter("NOT has_location").collect()}
    assert unlocated and marked <= unlocated | {
        t.transaction_id for t in sim.truth if t.scenario == "late"
    }
    for table in (tables.BRONZE_TRANSACTIONS, tables.QUARANTINE, tables.ALERTS):
        assert card_number_hits(read_table(spark, conf, table)) == 0
