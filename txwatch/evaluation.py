"""Summary of a run: rows per table, alerts, detection quality against ``ground_truth``.

Printed by ``./spark-submit.sh evaluate`` (``jobs/evaluate.py``) and at the end of the demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, Row, SparkSession

from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.lake import read_pseudonymized, read_table, table_exists
from txwatch.simulator import METRIC_SCENARIOS
from udfs.metrics import METRIC_ALERT_TYPES
from udfs.privacy import CARD_NUMBER_PATTERN
from udfs.travel import ALERT_TYPE_IMPOSSIBLE_TRAVEL

EXAMPLE_QUERY = (
    "SELECT severity, count(*) AS alerts, round(avg(score), 1) AS avg_score "
    "FROM alerts GROUP BY severity ORDER BY alerts DESC"
)


@dataclass(frozen=True)
class DetectionQuality:
    alerts: int
    positives: int
    true_positives: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.alerts if self.alerts else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.positives if self.positives else 0.0


def impossible_travel_quality(alerts_df: DataFrame, truth_df: DataFrame) -> DetectionQuality:
    """Precision and recall of impossible-travel alerts against the labelled transactions."""
    alerted_df = (
        alerts_df.filter(F.col("alert_type") == ALERT_TYPE_IMPOSSIBLE_TRAVEL)
        .select("transaction_id")
        .distinct()
    )
    positives_df = (
        truth_df.filter(F.col("scenario") == "impossible_travel")
        .select("transaction_id")
        .distinct()
    )
    return DetectionQuality(
        alerts=alerted_df.count(),
        positives=positives_df.count(),
        true_positives=alerted_df.join(positives_df, "transaction_id", how="inner").count(),
    )


# A metric alert counts for an incident when it comes at most this long after its start.
INCIDENT_DETECTION_DELAY = timedelta(minutes=5)


@dataclass(frozen=True)
class IncidentResult:
    scenario: str
    detail: str
    start: datetime
    end: datetime
    first_alert: datetime | None  # the first metric alert in [start, start + 5 min]
    alerts: int  # metric alerts between the start and 5 minutes after the end

    @property
    def is_detected(self) -> bool:
        return self.first_alert is not None


def metric_incident_results(
    alerts_df: DataFrame, truth_df: DataFrame
) -> tuple[list[IncidentResult], list[Row]]:
    """Each labelled metric incident with its alerts, and the metric alerts outside all of them.

    An alert belongs to an incident from the incident's start to 5 minutes after its end
    (a series' alert time is the minute it describes); it detects the incident when it
    comes within 5 minutes of the start.
    """
    metric_alerts = (
        alerts_df.filter(F.col("alert_type").isin(*METRIC_ALERT_TYPES))
        .select("alert_type", "event_time", "reason")
        .orderBy("event_time")
        .collect()
    )
    incidents = (
        truth_df.filter(F.col("scenario").isin(*METRIC_SCENARIOS) & F.col("end_time").isNotNull())
        .select("scenario", "detail", "event_time", "end_time")
        .orderBy("event_time")
        .collect()
    )
    results, explained = [], set()
    for incident in incidents:
        inside = [
            i
            for i, a in enumerate(metric_alerts)
            if incident.event_time <= a.event_time <= incident.end_time + INCIDENT_DETECTION_DELAY
        ]
        explained.update(inside)
        early = [
            metric_alerts[i].event_time
            for i in inside
            if metric_alerts[i].event_time <= incident.event_time + INCIDENT_DETECTION_DELAY
        ]
        results.append(
            IncidentResult(
                incident.scenario,
                incident.detail,
                incident.event_time,
                incident.end_time,
                min(early) if early else None,
                len(inside),
            )
        )
    outside = [a for i, a in enumerate(metric_alerts) if i not in explained]
    return results, outside


def print_metric_incidents(alerts_df: DataFrame, truth_df: DataFrame) -> bool:
    """Print the metric incidents beside their alerts; True when every one was detected in
    time and no metric alert came outside them."""
    results, outside = metric_incident_results(alerts_df, truth_df)
    if not results and not outside:
        return True
    print("\nMetric incidents vs ground truth (alerted within 5 minutes of the start?):")
    for r in results:
        found = (
            f"first alert +{(r.first_alert - r.start).total_seconds() / 60:.0f} min"
            if r.first_alert
            else "NOT alerted in time"
        )
        print(
            f"  {r.scenario:<16} {r.start:%H:%M}-{r.end:%H:%M}  {found:<20} "
            f"{r.alerts} alerts  ({r.detail})"
        )
    print(f"  metric alerts outside every incident: {len(outside)}")
    for alert in outside[:10]:
        print(f"    {alert.event_time:%H:%M} {alert.alert_type:<14} {alert.reason}")
    return all(r.is_detected for r in results) and not outside


def card_number_hits(df: DataFrame) -> int:
    """Rows of ``df`` with a card-number-shaped digit run in any string (or array of
    strings) column."""
    return pattern_hits(df, CARD_NUMBER_PATTERN)


def pattern_hits(df: DataFrame, pattern: str) -> int:
    """Rows of ``df`` where any string column, array of strings or string map key matches
    ``pattern``."""
    texts = []
    for f in df.schema.fields:
        kind = f.dataType.simpleString()
        if kind == "string":
            texts.append(F.col(f.name))
        elif kind == "array<string>":
            texts.append(F.array_join(F.col(f.name), " "))
        elif kind.startswith("map<string,"):
            texts.append(F.array_join(F.map_keys(F.col(f.name)), " "))
    matches = F.lit(False)
    for text in texts:
        matches = matches | F.coalesce(text.rlike(pattern), F.lit(False))
    return df.filter(matches).count() if texts else 0


def print_anonymization(spark: SparkSession, conf: Conf) -> None:
    """The newest ``anonymization_report`` row."""
    if not table_exists(spark, conf, tables.ANONYMIZATION_REPORT):
        print("\nNo anonymization_report: ./spark-submit.sh anonymize publishes a release.")
        return
    r = (
        read_table(spark, conf, tables.ANONYMIZATION_REPORT)
        .orderBy(F.desc("run_at"))
        .limit(1)
        .collect()[0]
    )
    print(
        f"\nk-anonymous release (transactions_anonymized, {r.run_at:%Y-%m-%d %H:%M}): k "
        f"{r.k_requested} requested, {r.k_reached} reached; {r.rows_released:,} of "
        f"{r.rows_in:,} rows released ({r.suppression_rate:.2%} suppressed) in "
        f"{r.classes:,} classes of {r.average_class_size:.1f} rows on average\n"
        f"  information loss: NCP {r.ncp:.3f} (full-domain generalization to the same k: "
        f"{r.full_domain_ncp:.3f}), discernibility {r.discernibility:,.0f}\n"
        f"  l-diversity of {r.sensitive_attribute}: {r.l_diversity} "
        f"({r.l_diverse_share:.0%} of the classes hold both values); quasi-identifiers: "
        f"{', '.join(r.quasi_identifiers)}"
    )


def print_rings(spark: SparkSession, conf: Conf, shown: int = 5) -> None:
    """The rings of the newest similarity run (``account_clusters``), largest first."""
    if not table_exists(spark, conf, tables.ACCOUNT_CLUSTERS):
        print("\nNo account_clusters table: ./spark-submit.sh similarity finds fraud rings.")
        return
    clusters_df = read_table(spark, conf, tables.ACCOUNT_CLUSTERS)
    rings = clusters_df.filter(F.col("is_ring")).orderBy(F.desc("size")).collect()
    total = clusters_df.count()
    print(
        f"\nFraud rings (newest similarity run): {len(rings)} of {total} clusters of "
        "similar accounts"
    )
    for ring in rings[:shown]:
        print(
            f"  {ring.cluster_id}: {ring.size} accounts, mean Jaccard {ring.mean_jaccard:.2f}: "
            f"{', '.join(ring.members)}\n    share {', '.join(ring.shared_tokens[:6])}"
        )


def summarize(spark: SparkSession, conf: Conf, min_precision: float, min_recall: float) -> bool:
    """Print the run's summary; return whether it meets the quality bar."""
    ok = True
    print(f"\n=== txwatch summary: lake at {conf.lake_root}")
    print("\nRows per table:")
    card_hits = 0
    for table in tables.ALL_TABLES:
        if table_exists(spark, conf, table):
            df = read_table(spark, conf, table)
            hits = card_number_hits(df) if table != tables.PIPELINE_PROGRESS else 0
            card_hits += hits
            print(
                f"  {table:<26} {df.count():>10,}"
                + (f"   !! {hits} rows with a card number" if hits else "")
            )
        else:
            print(f"  {table:<26} {'(none)':>10}")
    print(f"\nFull card numbers found in the lake: {card_hits}")
    ok &= card_hits == 0

    alerts_df = read_table(spark, conf, tables.ALERTS)
    print("\nAlerts by type and severity:")
    for row in (
        alerts_df.groupBy("alert_type", "severity")
        .count()
        .orderBy("alert_type", "severity")
        .collect()
    ):
        print(f"  {row.alert_type:<20} {row.severity:<8} {row['count']:>8,}")
    repeated = alerts_df.groupBy("alert_id").count().filter("count > 1").count()
    print(f"  alert_id values that repeat: {repeated}")
    ok &= repeated == 0

    enriched_df = read_table(spark, conf, tables.TRANSACTIONS_ENRICHED)
    unlocated = enriched_df.filter(~F.col("has_location")).count()
    print(f"\nEnriched transactions without a location fix in range: {unlocated:,}")
    waiting = (
        read_table(spark, conf, tables.BRONZE_TRANSACTIONS)
        .join(enriched_df, "transaction_id", how="left_anti")
        .count()
    )
    print(
        f"Transactions in bronze but not enriched: {waiting:,} (later than the watermark, or "
        "without a fix and still inside the watermark: they are emitted when newer data "
        "moves it on)"
    )
    if table_exists(spark, conf, tables.PIPELINE_PROGRESS):
        progress_df = read_table(spark, conf, tables.PIPELINE_PROGRESS)
        dropped = progress_df.agg(F.sum("rows_dropped_by_watermark").alias("n")).collect()[0].n or 0
        print(f"Rows too late for the join (kept in bronze, dropped by the watermark): {dropped:,}")
    quarantine_df = read_table(spark, conf, tables.QUARANTINE)
    reasons = (
        quarantine_df.withColumn("reason", F.explode(F.split("reason", "; ")))
        .groupBy("reason")
        .count()
        .orderBy(F.desc("count"))
        .limit(8)
        .collect()
    )
    if reasons:
        print("Quarantined records by reason:")
        for row in reasons:
            print(f"  {row.reason:<36} {row['count']:>8,}")

    print_rings(spark, conf)
    print_anonymization(spark, conf)

    if table_exists(spark, conf, tables.GROUND_TRUTH):
        truth_df = read_pseudonymized(spark, conf, tables.GROUND_TRUTH)
        quality = impossible_travel_quality(alerts_df, truth_df)
        bar_met = quality.precision >= min_precision and quality.recall >= min_recall
        print(
            f"\nImpossible travel vs ground truth: {quality.alerts} alerts, {quality.positives} "
            f"injected, {quality.true_positives} caught\n"
            f"  precision {quality.precision:.3f}   recall {quality.recall:.3f}   "
            f"(bar: >= {min_precision} and >= {min_recall}: {'met' if bar_met else 'NOT met'})"
        )
        ok &= bar_met
        if "end_time" in truth_df.columns:  # labels from before metric incidents have none
            ok &= print_metric_incidents(alerts_df, truth_df)
        late_truth = truth_df.filter(F.col("scenario") == "late").select("transaction_id")
        late_total = late_truth.count()
        if late_total:
            late_enriched = late_truth.join(enriched_df, "transaction_id", how="inner").count()
            print(
                f"  late transactions (published 30-60 min after their event): {late_total}, "
                f"of which joined anyway: {late_enriched}"
            )
    else:
        print("\nNo ground_truth table: run the simulator to measure detection quality.")

    print(
        f"\nQuery the lake in SQL (every table by name in the catalog; start "
        f"./spark-submit.sh thriftserver and each query answers in about a second):\n"
        f'  ./spark-submit.sh sql "{EXAMPLE_QUERY}"\n'
        f"  ./spark-submit.sh sql -f sql/impossible_travel_top.sql\n"
        f"or with plots: notebooks/ (alerts, monitoring, model, privacy, similarity); from "
        f"Python: spark.read.format('delta').load('{conf.table_path(tables.ALERTS)}')"
    )
    return ok
