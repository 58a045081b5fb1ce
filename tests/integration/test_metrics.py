"""The metrics queries end to end: real broker, real Spark streaming, real Delta tables.

- transaction series: one row per series and minute, zeros real, values as counted
  independently, an outage of approvals alerted once;
- metrics-topic series: the same scores in one micro-batch and in many, equal to the
  detector run directly in Python;
- bad metric records quarantined with their reason;
- ``evaluate nab`` on a small corpus: one output row per input row, in order.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pyspark.sql.functions as F
import pytest

from tests.integration.kafka_helpers import produce, series_with_spike
from txwatch import nab
from txwatch.infra import tables
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.nab_eval import evaluate_nab
from txwatch.queries import alerts, ingest, metrics
from txwatch.queries.base import RunContext
from txwatch.queries.runner import run_available_now
from udfs.metric_detector import SeriesState, score_point
from udfs.metrics import ALERT_TYPE_OUTAGE

pytestmark = pytest.mark.kafka

# Long enough ago that nothing is in the future, aligned to the minute.
START = (datetime.now(UTC) - timedelta(hours=10)).replace(second=0, microsecond=0)
MINUTES = 300
OUTAGE = range(220, 232)  # minutes without approved transactions
SCORE_COLUMNS = (
    "series",
    "event_time",
    "value",
    "expected",
    "lower",
    "upper",
    "anomaly_score",
    "is_anomaly",
    "direction",
    "incident_start",
    "incident_points",
    "is_late",
)


def run(spark, conf, *queries) -> None:
    run_available_now(RunContext(spark, conf, available_now=True), queries)


def transaction(tx_id: str, at: datetime, status: str, category: str, amount: float) -> dict:
    return {
        "transaction_id": tx_id,
        "user_id": "u-1",
        "card_number": "4111111111111111",
        "device_id": "d-1",
        "merchant_category": category,
        "amount": amount,
        "currency": "EUR",
        "status": status,
        "latitude": 48.85,
        "longitude": 2.35,
        "event_time": at.isoformat(),
    }


def simulated_transactions() -> list[dict]:
    """4-6 approvals a minute (none during OUTAGE), a failure every third minute."""
    records = []
    for minute in range(MINUTES):
        at = START + timedelta(minutes=minute)
        approvals = 0 if minute in OUTAGE else 4 + minute % 3
        for i in range(approvals):
            records.append(
                transaction(
                    f"a{minute}-{i}", at + timedelta(seconds=7 * i), "approved", "grocery", 10.0 + i
                )
            )
        if minute % 3 == 0:
            records.append(
                transaction(f"f{minute}", at + timedelta(seconds=50), "failed", "fuel", 60.0)
            )
    return records


def test_transaction_series_have_a_row_per_minute_with_real_zeros_and_an_outage_alert(
    spark, kafka_conf
):
    ensure_topics(kafka_conf)
    records = simulated_transactions()
    produce(kafka_conf, kafka_conf.kafka.topics.transactions, records)

    run(spark, kafka_conf, metrics.WINDOWS_QUERY, alerts.QUERY)

    values_df = spark.read.format("delta").load(kafka_conf.table_path(tables.METRIC_VALUES))
    # one row per series and minute, never two
    assert values_df.groupBy("series", "window_start").count().filter("count > 1").count() == 0
    approved = (
        values_df.filter(F.col("series") == "tx_count:status=approved")
        .select(
            F.date_format("window_start", "yyyy-MM-dd'T'HH:mm:ssXXX").alias("minute"),
            "value",
            "is_filled",
        )
        .collect()
    )
    got = {r.minute.replace("Z", "+00:00"): (r.value, r.is_filled) for r in approved}
    expected_counts = Counter(
        datetime.fromisoformat(r["event_time"]).replace(second=0).isoformat()
        for r in records
        if r["status"] == "approved"
    )
    minutes = sorted(got)
    # every minute from the first to the last emitted one, the outage's included
    first = datetime.fromisoformat(minutes[0])
    assert minutes == [(first + timedelta(minutes=i)).isoformat() for i in range(len(minutes))]
    assert len(minutes) >= MINUTES - 5
    for minute in minutes:
        assert got[minute] == (float(expected_counts.get(minute, 0)), minute not in expected_counts)
    outage_minutes = {(START + timedelta(minutes=m)).isoformat() for m in OUTAGE}
    assert {m for m in minutes if got[m] == (0.0, True)} == outage_minutes

    alerts_df = spark.read.format("delta").load(kafka_conf.table_path(tables.ALERTS))
    outages = alerts_df.filter(
        (F.col("alert_type") == ALERT_TYPE_OUTAGE)
        & (F.col("reason").startswith("tx_count:status=approved"))
    ).collect()
    assert len(outages) == 1
    alerted_at = outages[0].event_time.replace(tzinfo=UTC)
    assert (
        START + timedelta(minutes=OUTAGE[0])
        <= alerted_at
        <= START + timedelta(minutes=OUTAGE[0] + 5)
    )


def metric_points() -> list[dict]:
    """A noisy daily-ish series with a spike, every 5 minutes for 3 days."""
    return series_with_spike(START - timedelta(days=3), 3 * 288, spike_at=700)


def _scores(spark, conf) -> list[tuple]:
    df = spark.read.format("delta").load(conf.table_path(tables.METRIC_SCORES))
    return sorted(tuple(r) for r in df.select(*SCORE_COLUMNS).collect())


def test_scores_do_not_depend_on_micro_batches_and_equal_the_detector(spark, kafka_conf, tmp_path):
    ensure_topics(kafka_conf)
    points = metric_points()
    produce(kafka_conf, kafka_conf.kafka.topics.metrics, points, key_field="series")

    one_batch = dataclasses.replace(kafka_conf, lake_root=str(tmp_path / "one"))
    many = dataclasses.replace(
        kafka_conf,
        lake_root=str(tmp_path / "many"),
        kafka=dataclasses.replace(kafka_conf.kafka, max_offsets_per_trigger=97),
    )
    run(spark, one_batch, metrics.POINTS_QUERY)
    run(spark, many, metrics.POINTS_QUERY)

    batches = spark.read.format("delta").load(many.table_path(tables.PIPELINE_PROGRESS))
    assert batches.filter("query_name = 'metric_points' AND num_input_rows > 0").count() >= 8
    in_one, in_many = _scores(spark, one_batch), _scores(spark, many)
    assert len(in_one) == len(points)
    assert in_one == in_many

    state = SeriesState.new()
    direct = [
        score_point(
            state, datetime.fromisoformat(p["event_time"]).timestamp(), p["value"], metrics.DETECTOR
        )
        for p in points
    ]
    by_time = sorted(in_one, key=lambda r: r[1])
    assert [r[6] for r in by_time] == [s.anomaly_score for s in direct]
    assert [r[7] for r in by_time] == [s.is_anomaly for s in direct]
    # the spike is found, so the comparison above covers a detection
    assert by_time[700][7]


def test_bad_metric_records_are_quarantined_with_their_reason(spark, kafka_conf):
    ensure_topics(kafka_conf)
    at = START.isoformat()
    bad = [
        {"series": "s", "event_time": at},
        {"series": "s", "event_time": at, "value": "fast"},
        {"series": "s", "event_time": at, "value": "NaN"},
        "{not json",
    ]
    produce(
        kafka_conf,
        kafka_conf.kafka.topics.metrics,
        [*bad, {"series": "s", "event_time": at, "value": 1}],
    )
    run(spark, kafka_conf, ingest.QUERY)
    quarantine_df = spark.read.format("delta").load(kafka_conf.table_path(tables.QUARANTINE))
    reasons = sorted(r.reason for r in quarantine_df.collect())
    assert reasons == sorted(
        ["missing_field:value", "invalid_type:value", "invalid_value:value", "malformed_json"]
    )


def test_evaluate_nab_writes_one_scored_row_per_input_row_and_grades_them(
    spark, kafka_conf, tmp_path
):
    data = tmp_path / "nab" / "data"
    (data / "demo").mkdir(parents=True)
    series_points = metric_points()
    rows = [(p["event_time"][:19].replace("T", " "), p["value"]) for p in series_points]
    for name in ("a", "b"):
        with (data / "demo" / f"{name}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["timestamp", "value"])
            writer.writerows(rows if name == "a" else rows[:500])
    spike_at = datetime.fromisoformat(rows[700][0])
    labels = tmp_path / "nab" / "combined_windows.json"
    window = [str(spike_at - timedelta(hours=2)), str(spike_at + timedelta(hours=2))]
    labels.write_text(json.dumps({"demo/a.csv": [window], "demo/b.csv": []}))
    out = tmp_path / "out"

    scores = evaluate_nab(lambda _conf: spark, kafka_conf, data, out, labels, None)

    for name, expected_rows in (("a", rows), ("b", rows[:500])):
        with (out / "demo" / f"{name}.csv").open() as f:
            written = list(csv.DictReader(f))
        assert [(r["timestamp"], float(r["value"])) for r in written] == [
            (t, float(v)) for t, v in expected_rows
        ]
        assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in written)

    def flagged(name: str) -> list[str]:
        with (out / "demo" / f"{name}.csv").open() as f:
            return [r["timestamp"] for r in csv.DictReader(f) if r["is_anomaly"] == "1"]

    assert rows[700][0] in flagged("a")
    standard = next(s for s in scores if s.profile.name == "standard")
    assert standard.windows == 1 and standard.windows_detected == 1
    regraded = nab.score_corpus(
        [
            (
                [datetime.fromisoformat(t) for t, _ in file_rows],
                [t in flagged(name) for t, _ in file_rows],
                nab.read_labels(labels)[f"demo/{name}.csv"],
            )
            for name, file_rows in (("a", rows), ("b", rows[:500]))
        ],
        standard.profile,
    )
    assert standard.normalized == pytest.approx(regraded.normalized)
