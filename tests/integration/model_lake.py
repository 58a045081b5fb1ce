"""One lake with every table, shared by the tests that need a whole pipeline's output: a
history streamed, a model trained and registered, the history's known fraud indexed, the
next period streamed and scored, and its ring found (``tests/conftest.py``: ``model_lake``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pyspark.sql.functions as F
from pyspark.sql import SparkSession

from tests.integration.kafka_helpers import run_pipeline
from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.lake import read_table
from txwatch.similarity import RingResult, find_rings
from txwatch.simulator import SimulationParams, Simulator, produce, write_ground_truth
from txwatch.training import TrainResult, train

PARAMS = SimulationParams(
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


@dataclass(frozen=True)
class ModelLake:
    conf: Conf
    sim: Simulator
    # What the steps in between found, for the tests to check.
    outliers_before_any_model: int
    trained: TrainResult
    history_rings: RingResult
    known_fraud_patterns_from_history: int
    rings: RingResult


def build(spark: SparkSession, conf: Conf) -> ModelLake:
    ensure_topics(conf)
    params = PARAMS
    sim = Simulator(params, conf)
    records = sim.records()
    produce(itertools.takewhile(lambda item: item[0] < 0, records), conf.kafka.bootstrap_servers)

    # No model yet: the scoring query passes payments unscored.
    run_pipeline(spark, conf)
    outliers = (
        read_table(spark, conf, tables.ALERTS)
        .filter(F.col("alert_type") == "model_outlier")
        .count()
    )
    trained = train(spark, conf, None, params.start)

    # The history's labelled fraud becomes known patterns.
    write_ground_truth(conf, [t for t in sim.truth if t.event_time < params.start])
    history_rings = find_rings(spark, conf, until=params.start)
    known = (
        read_table(spark, conf, tables.FRAUD_PATTERNS)
        .filter(F.col("source").startswith("label known_fraud"))
        .count()
    )

    produce((item for item in records if item[0] >= 0), conf.kafka.bootstrap_servers)
    write_ground_truth(conf, [t for t in sim.truth if t.event_time >= params.start])
    run_pipeline(spark, conf)
    rings = find_rings(spark, conf)
    return ModelLake(conf, sim, outliers, trained, history_rings, known, rings)
