"""The model path end to end: history streamed, a model trained and registered, the next
period scored in the stream, every scenario caught, the evaluation's table written."""

from __future__ import annotations

import itertools

import pyspark.sql.functions as F
import pytest

from tests.integration.kafka_helpers import run_pipeline
from txwatch import quality
from txwatch.infra import tables
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.lake import read_table
from txwatch.simulator import (
    MODEL_SCENARIOS,
    SimulationParams,
    Simulator,
    produce,
    write_ground_truth,
)
from txwatch.training import train

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
        account_takeover_per_hour=6,
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

    produce((item for item in records if item[0] >= 0), conf.kafka.bootstrap_servers)
    write_ground_truth(conf, sim.truth)
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
