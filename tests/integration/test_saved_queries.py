"""Every saved query in sql/ runs on a simulator-made lake and returns the rows computed
here independently, in plain Python over the collected tables."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from tests.conftest import REPO, with_own_topics
from tests.integration.kafka_helpers import produce as produce_values
from tests.integration.kafka_helpers import run_pipeline, series_with_spike
from txwatch.infra import tables
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.lake import read_table, register_views, split_statements
from txwatch.simulator import SimulationParams, Simulator, produce

pytestmark = pytest.mark.kafka

SQL = REPO / "sql"


def saved_query(spark, name: str, **variables: object) -> list:
    """The rows of ``sql/<name>.sql``, run the way ``spark-submit.sh sql -f`` runs it (every
    statement in turn), with its SQL ``variables`` set before the last statement."""
    *first, last = split_statements((SQL / f"{name}.sql").read_text())
    for statement in first:
        spark.sql(statement)
    for variable, value in variables.items():
        spark.sql(f"SET VAR {variable} = {value}")
    return spark.sql(last).collect()


@pytest.fixture(scope="module")
def lake(spark, kafka_bootstrap, base_conf, tmp_path_factory):
    """One stream run over simulated payments (impossible travel among them) and a metric
    series with a spike; the tables registered as views, as the sql job does."""
    conf = dataclasses.replace(
        with_own_topics(base_conf, kafka_bootstrap),
        lake_root=str(tmp_path_factory.mktemp("saved") / "lake"),
    )
    ensure_topics(conf)
    params = SimulationParams(
        seed=23, users=30, duration_min=60, ping_interval_s=60, tx_per_hour=40,
        impossible_travel_rate=0.08, malformed_rate=0.0,
    )  # fmt: skip
    sim = Simulator(params, conf)
    produce(sim.records(), kafka_bootstrap)
    # Two days of a series up to the end of the payments, a spike 20 points before its end.
    first = params.start + timedelta(minutes=60) - timedelta(days=2)
    series = series_with_spike(first, 2 * 288, spike_at=2 * 288 - 20)
    produce_values(conf, conf.kafka.topics.metrics, series)
    run_pipeline(spark, conf)
    register_views(spark, conf)
    return conf


def half_up(value: float, places: str) -> float:
    """Spark's ``round``: half up, on the double's shortest decimal form."""
    return float(Decimal(repr(value)).quantize(Decimal(places), ROUND_HALF_UP))


def rows(spark, conf, table) -> list:
    return read_table(spark, conf, table).collect()


def flagged_ids(spark, conf) -> dict[str, set[str]]:
    by_tx: dict[str, set[str]] = defaultdict(set)
    for a in rows(spark, conf, tables.ALERTS):
        if a.transaction_id:
            by_tx[a.transaction_id].add(a.alert_type)
    return by_tx


def test_flagged_transactions_of_the_last_hour(spark, lake):
    enriched = rows(spark, lake, tables.TRANSACTIONS_ENRICHED)
    alert_count = Counter(a.transaction_id for a in rows(spark, lake, tables.ALERTS))
    types = flagged_ids(spark, lake)
    newest = max(e.event_time for e in enriched)
    expected = sorted(
        (
            (e.event_time, e.transaction_id, ", ".join(sorted(types[e.transaction_id])),
             alert_count[e.transaction_id])
            for e in enriched
            if e.transaction_id in types and e.event_time > newest - timedelta(hours=1)
        ),
        key=lambda r: (-r[0].timestamp(), r[1]),
    )  # fmt: skip
    got = saved_query(spark, "flagged_last_hour")
    assert [(r.event_time, r.transaction_id, r.alert_types, r.alerts) for r in got] == expected
    assert expected, "the simulated hour should hold flagged payments"


def test_customers_with_high_value_flagged_payments(spark, lake):
    enriched = rows(spark, lake, tables.TRANSACTIONS_ENRICHED)
    threshold = float(np.percentile([e.amount for e in enriched], 95))
    flagged = flagged_ids(spark, lake)
    per_user: dict[str, list[float]] = defaultdict(list)
    for e in enriched:
        if e.transaction_id in flagged and e.amount >= threshold:
            per_user[e.user_id].append(e.amount)
    expected = sorted(
        ((u, len(a), round(sum(a), 2), max(a)) for u, a in per_user.items()),
        key=lambda r: (-r[2], r[0]),
    )
    got = saved_query(spark, "high_value_flagged_customers")
    assert [(r.user_id, r.high_value_flagged, r.largest) for r in got] == [
        (u, n, largest) for u, n, _, largest in expected
    ]
    # Sums of doubles in another order: equal to the cent.
    assert all(abs(r.amount_total - e[2]) <= 0.011 for r, e in zip(got, expected, strict=True))
    assert all(abs(r.threshold - threshold) <= 0.005 for r in got)
    assert expected, "some flagged payments should be high-value"


def test_alerts_per_type_per_hour(spark, lake):
    counts = Counter(
        (a.event_time.replace(minute=0, second=0, microsecond=0), a.alert_type)
        for a in rows(spark, lake, tables.ALERTS)
    )
    got = saved_query(spark, "alerts_per_type_per_hour")
    assert [(r.hour, r.alert_type, r.alerts) for r in got] == sorted(
        (hour, kind, n) for (hour, kind), n in counts.items()
    )
    assert len({r.alert_type for r in got}) >= 2  # travel and the metric spike at least


def test_merchants_with_the_highest_alert_rate(spark, lake):
    flagged = flagged_ids(spark, lake)
    payments: Counter = Counter()
    hits: Counter = Counter()
    for e in rows(spark, lake, tables.TRANSACTIONS_ENRICHED):
        payments[e.merchant] += 1
        hits[e.merchant] += e.transaction_id in flagged
    # The simulated hour has few payments per merchant: a lower minimum than the default.
    ranked = sorted(
        ((m, n, hits[m], half_up(hits[m] / n, "0.0001")) for m, n in payments.items() if n >= 5),
        key=lambda r: (-r[3], -r[2], r[0]),
    )[:20]
    got = saved_query(spark, "merchant_alert_rate", min_payments=5)
    assert [(r.merchant, r.payments, r.flagged, r.alert_rate) for r in got] == ranked
    assert ranked and ranked[0][2] > 0
    default = saved_query(spark, "merchant_alert_rate")
    assert all(r.payments >= 20 for r in default)


def test_newest_metric_anomalies(spark, lake):
    scores = [s for s in rows(spark, lake, tables.METRIC_SCORES) if s.is_anomaly]
    expected = sorted(scores, key=lambda s: (-s.event_time.timestamp(), s.series))[:50]
    got = saved_query(spark, "newest_metric_anomalies")
    assert [(r.event_time, r.series, r.value) for r in got] == [
        (s.event_time, s.series, s.value) for s in expected
    ]
    assert [r.side for r in got] == ["above" if s.direction > 0 else "below" for s in expected]
    assert any(r.series == "svc.latency_ms" for r in got), "the spike should be detected"


def test_alerts_by_severity(spark, lake):
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for a in rows(spark, lake, tables.ALERTS):
        scores[(a.alert_type, a.severity)].append(a.score)
    got = saved_query(spark, "alerts_by_severity")
    assert [(r.alert_type, r.severity, r.alerts) for r in got] == sorted(
        (t, s, len(v)) for (t, s), v in scores.items()
    )
    assert all(abs(r.avg_score - np.mean(scores[(r.alert_type, r.severity)])) <= 0.05 for r in got)


def test_impossible_travel_top(spark, lake):
    travel = [a for a in rows(spark, lake, tables.ALERTS) if a.alert_type == "impossible_travel"]
    top = sorted((a.score for a in travel), reverse=True)[:20]
    got = saved_query(spark, "impossible_travel_top")
    by_id = {(a.card_last4, a.event_time): a for a in travel}
    assert [by_id[(r.card_last4, r.event_time)].score for r in got] == top
    assert all(r.gap_s == by_id[(r.card_last4, r.event_time)].evidence["gap_s"] for r in got)


def test_unlocated_transactions(spark, lake):
    per_device: dict[str, list] = defaultdict(list)
    for e in rows(spark, lake, tables.TRANSACTIONS_ENRICHED):
        if not e.has_location:
            per_device[e.device_id].append(e.event_time)
    got = saved_query(spark, "unlocated_transactions")
    assert sorted((r.device_id, r.transactions, r.first_seen, r.last_seen) for r in got) == sorted(
        (d, len(t), min(t), max(t)) for d, t in per_device.items()
    )
    assert [r.transactions for r in got] == sorted((r.transactions for r in got), reverse=True)


def test_every_saved_query_is_tested():
    tested = {
        name.removeprefix("test_")
        for name in globals()
        if name.startswith("test_") and (SQL / f"{name.removeprefix('test_')}.sql").is_file()
    }
    renamed = {  # tests named for what they check
        "flagged_last_hour": "test_flagged_transactions_of_the_last_hour",
        "high_value_flagged_customers": "test_customers_with_high_value_flagged_payments",
        "merchant_alert_rate": "test_merchants_with_the_highest_alert_rate",
    }
    assert all(test in globals() for test in renamed.values())
    assert {p.stem for p in SQL.glob("*.sql")} == tested | set(renamed)
