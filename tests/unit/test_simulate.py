from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from txwatch.simulator import SimulationParams, Simulator, luhn_card_number
from udfs.geo import haversine_m_py

NO_MODEL = {
    "amount_outlier_rate": 0.0,
    "card_testing_per_hour": 0.0,
    "account_takeover_per_hour": 0.0,
}


# The similarity scenarios (tested in test_similarity and the model/similarity stream test).
NO_SIMILARITY = {"fraud_rings": 0, "known_frauds": 0, "pattern_repeats_per_hour": 0.0}


def run(conf, **overrides):
    params = SimulationParams(users=60, duration_min=30, **{**NO_SIMILARITY, **overrides})
    sim = Simulator(params, conf)
    return sim, list(sim.records())


def test_same_seed_same_records_other_seed_other_records(conf):
    _, first = run(conf, seed=3)
    _, again = run(conf, seed=3)
    _, other = run(conf, seed=4)
    assert first == again
    assert first != other


def test_records_come_in_publication_order_and_labels_match(conf):
    sim, records = run(conf, impossible_travel_rate=0.05, malformed_rate=0.02, late_rate=0.02)
    times = [t for t, _ in records]
    assert times == sorted(times)
    topics = Counter(r.topic for _, r in records)
    scenarios = Counter(t.scenario for t in sim.truth)
    tx_truth = sum(n for s, n in scenarios.items() if s != "malformed_location")
    assert topics[conf.kafka.topics.transactions] == tx_truth
    assert topics[conf.kafka.topics.device_locations] == sim.counts["device_locations"]
    for scenario in ("legit", "impossible_travel", "malformed", "late", "malformed_location"):
        assert scenarios[scenario] > 0, scenario


def test_legit_payments_happen_where_the_phone_is_and_fraud_far_away(conf):
    sim, records = run(conf, impossible_travel_rate=0.05, malformed_rate=0.0, **NO_MODEL)
    by_device: dict[str, list] = {}
    for _, record in records:
        if record.topic == conf.kafka.topics.device_locations:
            fix = json.loads(record.value)
            by_device.setdefault(fix["device_id"], []).append(fix)
    scenario = {t.transaction_id: t.scenario for t in sim.truth}
    checked = Counter()
    for _, record in records:
        if record.topic != conf.kafka.topics.transactions:
            continue
        tx = json.loads(record.value)
        fixes = by_device.get(tx["device_id"])
        if not fixes:
            continue
        nearest = min(
            fixes, key=lambda f: abs(_seconds(f["event_time"]) - _seconds(tx["event_time"]))
        )
        distance = haversine_m_py(
            tx["latitude"], tx["longitude"], nearest["latitude"], nearest["longitude"]
        )
        kind = scenario[tx["transaction_id"]]
        if kind == "impossible_travel":
            assert distance > 250_000
        elif kind == "legit":
            # within a minute's drive plus GPS error: the phone is with its owner
            assert distance < 3_500
        checked[kind] += 1
    assert checked["legit"] > 50 and checked["impossible_travel"] > 3


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("seed", range(5))
def test_card_numbers_pass_luhn(seed):
    number = luhn_card_number(random.Random(seed))
    digits = [int(d) for d in number]
    total = sum(
        d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2)
        for i, d in enumerate(reversed(digits))
    )
    assert len(number) == 16 and total % 10 == 0


def test_payments_that_do_not_fit_the_customer(conf):
    sim, records = run(
        conf,
        amount_outlier_rate=0.05,
        card_testing_per_hour=6.0,
        account_takeover_per_hour=6.0,
        history_min=60.0,
    )
    scenario = {t.transaction_id: t.scenario for t in sim.truth}
    payments = [
        json.loads(r.value) for _, r in records if r.topic == conf.kafka.topics.transactions
    ]
    users = {u.user_id: u for u in sim.users}
    by_kind: dict[str, list[dict]] = {}
    for tx in payments:
        by_kind.setdefault(scenario.get(tx.get("transaction_id"), "?"), []).append(tx)
    start = sim.p.start.isoformat().replace("+00:00", "")
    for kind in ("amount_outlier", "card_testing", "account_takeover"):
        assert by_kind.get(kind), kind
        # only in the period: the history (the model's training data) has none
        assert all(tx["event_time"] >= start for tx in by_kind[kind]), kind
    for tx in by_kind["card_testing"] + by_kind["account_takeover"]:
        assert tx["device_id"] != users[tx["user_id"]].device_id  # a new device
        assert tx["card_number"] in users[tx["user_id"]].cards
    for tx in by_kind["card_testing"]:
        assert 0.5 <= tx["amount"] <= 3.0 and tx["channel"] == "online"
    declined = [tx for tx in by_kind["card_testing"] if tx["status"] in ("denied", "failed")]
    assert len(declined) > len(by_kind["card_testing"]) / 2
    for tx in by_kind["account_takeover"]:
        user = users[tx["user_id"]]
        home = (user.home[0], user.home[1])
        assert haversine_m_py(*home, tx["latitude"], tx["longitude"]) > 250_000
    # an outlier amount is 20-60 times what the same payment would have cost
    legit_amounts = [tx["amount"] for tx in by_kind["legit"]]
    assert (
        min(tx["amount"] for tx in by_kind["amount_outlier"])
        > sorted(legit_amounts)[len(legit_amounts) // 2]
    )
