from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from txwatch.simulator import SimulationParams, Simulator, luhn_card_number
from udfs.geo import haversine_m_py


def run(conf, **overrides):
    sim = Simulator(SimulationParams(users=60, duration_min=30, **overrides), conf)
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
    sim, records = run(conf, impossible_travel_rate=0.05, malformed_rate=0.0)
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
