"""The token key never reaches Spark's plans: the UI, the event log and explain() show them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import TEST_KEY_VARIABLE, TEST_TOKEN_KEY
from tests.integration.kafka_helpers import produce, run_pipeline
from tests.leaks import leaked_key_material
from txwatch.infra import tables
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.lake import read_table
from udfs.privacy import card_token_py

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


def _sql_executions(spark) -> list:
    """Every SQL execution of the session so far (the Spark UI's SQL tab; the event log
    records the same plan descriptions)."""
    executions = spark._jsparkSession.sharedState().statusStore().executionsList()
    return [executions.apply(i) for i in range(executions.size())]


def test_no_plan_the_pipeline_runs_holds_the_key_or_its_pads(spark, kafka_conf):
    conf = kafka_conf
    topics = conf.kafka.topics
    ensure_topics(conf)
    before = {e.executionId() for e in _sql_executions(spark)}
    card = "4111 1111 1111 1111"
    payments = [
        {
            "transaction_id": f"t{i}",
            "user_id": "u1",
            "name": "Ada Lovelace",
            "card_number": card,
            "amount": 12.5,
            "currency": "EUR",
            "merchant_id": "m1",
            "merchant": "Café",
            "merchant_category": "grocery",
            "status": "approved",
            "latitude": 48.8566,
            "longitude": 2.3522,
            "device_id": "d1",
            "event_time": (T0 + timedelta(minutes=i)).isoformat(),
        }
        for i in range(3)
    ]
    fixes = [
        {
            "device_id": "d1",
            "latitude": 48.8566,
            "longitude": 2.3522,
            "horizontal_accuracy": 10.0,
            "event_time": (T0 + timedelta(seconds=30 * i)).isoformat(),
        }
        for i in range(6)
    ]
    produce(conf, topics.transactions, payments, key_field="user_id")
    produce(conf, topics.device_locations, fixes, key_field="device_id")
    run_pipeline(spark, conf)

    # The tokens were computed with the key, so the plans below did the work.
    bronze = read_table(spark, conf, tables.BRONZE_TRANSACTIONS).collect()
    assert {r.card_token for r in bronze} == {card_token_py(card, TEST_TOKEN_KEY)}
    executions = [e for e in _sql_executions(spark) if e.executionId() not in before]
    plans = [f"{e.description()}\n{e.details()}\n{e.physicalPlanDescription()}" for e in executions]
    tokenizing = [p for p in plans if TEST_KEY_VARIABLE in p]
    assert tokenizing, "no plan computed a card token"
    leaks = {
        i: found
        for i, plan in enumerate(plans)
        if (found := leaked_key_material(plan, TEST_TOKEN_KEY))
    }
    assert not leaks, f"{len(leaks)} of {len(plans)} plans give the key away: {leaks}"
