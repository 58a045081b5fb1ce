"""Detection quality per alert type and scenario, against ``ground_truth``.

For every alert type and the scenarios it is meant to catch (``TARGETS``):

- transaction scenarios: how many labelled payments, how many got an alert of the type
  (recall), and the median delay from the payment reaching Kafka to the alert
  (``detected_at`` minus the bronze ``kafka_timestamp``);
- metric incidents: how many incidents, how many alerted within 5 minutes of the start,
  and the median delay from the start to the first alert, in event time;
- fraud rings (the similarity job): how many ring accounts, how many are members of a
  ring in ``account_clusters`` (recall), and the share of ring members that are ring
  accounts (precision): counted in accounts, not payments;
- per alert type: its precision (alerts on an injected fraud or inside an incident, over
  all its alerts) and, for transaction alerts, the share of ordinary payments it flagged.

For the model, the PR-AUC of its raw score over the labelled payments it scores (the newest
registered version, with the profiles it was trained with) and a figure of the score
distribution with the threshold. Each evaluation is appended to the Delta table
``evaluation`` with the time, the code version and the model version.
"""

from __future__ import annotations

import os
import statistics
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from txwatch.evaluation import metric_incident_results
from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.lake import read_pseudonymized, table_exists
from txwatch.simulator import (
    KNOWN_FRAUD_SCENARIO,
    METRIC_SCENARIOS,
    MODEL_SCENARIOS,
    PATTERN_REPEAT_SCENARIO,
    RING_SCENARIO,
)
from udfs import schemas
from udfs.fraud_patterns import ALERT_TYPE_SIMILAR_TO_FRAUD
from udfs.model_alerts import ALERT_TYPE as MODEL_OUTLIER
from udfs.similarity import ALERT_TYPE_FRAUD_RING
from udfs.travel import ALERT_TYPE_IMPOSSIBLE_TRAVEL

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from txwatch.model_scorer import LoadedModel

# Injected fraud, labelled per payment.
FRAUD_SCENARIOS = (
    "impossible_travel",
    *MODEL_SCENARIOS,
    RING_SCENARIO,
    KNOWN_FRAUD_SCENARIO,
    PATTERN_REPEAT_SCENARIO,
)
# Payments with nothing wrong (as far as fraud goes): what no fraud alert should flag.
ORDINARY_SCENARIOS = ("legit", "no_location", "out_of_order", "late", *METRIC_SCENARIOS)
TARGETS = {
    ALERT_TYPE_IMPOSSIBLE_TRAVEL: ("impossible_travel",),
    MODEL_OUTLIER: MODEL_SCENARIOS,
    "metric alerts": tuple(METRIC_SCENARIOS),
    ALERT_TYPE_SIMILAR_TO_FRAUD: (PATTERN_REPEAT_SCENARIO,),
    ALERT_TYPE_FRAUD_RING: (RING_SCENARIO,),
}
ANY = "(all alerts)"


@dataclass(frozen=True)
class QualityRow:
    alert_type: str
    scenario: str  # a target scenario, or ANY for the alert type's own precision
    labelled: int | None
    detected: int | None
    recall: float | None
    median_delay_s: float | None
    alerts: int | None = None
    precision: float | None = None
    ordinary_flagged_share: float | None = None
    pr_auc: float | None = None


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def transaction_rows(
    alerts_df: DataFrame, truth_df: DataFrame, bronze_df: DataFrame, alert_type: str
) -> list[QualityRow]:
    typed = (
        alerts_df.filter(F.col("alert_type") == alert_type)
        .groupBy("transaction_id")
        .agg(F.min("detected_at").alias("detected_at"))
    )
    labels = truth_df.filter(F.col("transaction_id").isNotNull()).select(
        "transaction_id", "scenario"
    )
    published = bronze_df.select("transaction_id", "kafka_timestamp")
    joined = (
        labels.join(typed, "transaction_id", "left")
        .join(published, "transaction_id", "left")
        .withColumn(
            "delay_s",
            F.col("detected_at").cast("double") - F.col("kafka_timestamp").cast("double"),
        )
        .groupBy("scenario")
        .agg(
            F.count("*").alias("labelled"),
            F.count("detected_at").alias("detected"),
            F.percentile("delay_s", 0.5).alias("median_delay_s"),
        )
        .collect()
    )
    by_scenario = {r.scenario: r for r in joined}
    rows = []
    for scenario in TARGETS[alert_type]:
        r = by_scenario.get(scenario)
        labelled, detected = (r.labelled, r.detected) if r else (0, 0)
        delay = r.median_delay_s if r and r.detected else None
        rows.append(
            QualityRow(alert_type, scenario, labelled, detected, _ratio(detected, labelled), delay)
        )
    alerts = typed.count()
    on_fraud = sum(by_scenario[s].detected for s in FRAUD_SCENARIOS if s in by_scenario)
    ordinary = [by_scenario[s] for s in ORDINARY_SCENARIOS if s in by_scenario]
    flagged = _ratio(sum(r.detected for r in ordinary), sum(r.labelled for r in ordinary))
    rows.append(
        QualityRow(
            alert_type, ANY, None, None, None, None, alerts, _ratio(on_fraud, alerts), flagged
        )
    )
    return rows


def metric_rows(alerts_df: DataFrame, truth_df: DataFrame) -> list[QualityRow]:
    if "end_time" not in truth_df.columns:
        return []
    results, outside = metric_incident_results(alerts_df, truth_df)
    rows = []
    for scenario in METRIC_SCENARIOS:
        mine = [r for r in results if r.scenario == scenario]
        detected = [r for r in mine if r.is_detected]
        delays = [(r.first_alert - r.start).total_seconds() for r in detected if r.first_alert]
        rows.append(
            QualityRow(
                "metric alerts",
                scenario,
                len(mine),
                len(detected),
                _ratio(len(detected), len(mine)),
                statistics.median(delays) if delays else None,
            )
        )
    inside = sum(r.alerts for r in results)
    rows.append(
        QualityRow(
            "metric alerts",
            ANY,
            None,
            None,
            None,
            None,
            inside + len(outside),
            _ratio(inside, inside + len(outside)),
        )
    )
    return rows


def ring_rows(
    spark: SparkSession, conf: Conf, alerts_df: DataFrame, truth_df: DataFrame
) -> list[QualityRow]:
    """Ring accounts found by the newest similarity run (accounts, not payments)."""
    labelled = {
        r.user_id
        for r in truth_df.filter(F.col("scenario") == RING_SCENARIO)
        .select("user_id")
        .distinct()
        .collect()
    }
    if not table_exists(spark, conf, tables.ACCOUNT_CLUSTERS):
        return []
    flagged = {
        r.account_id
        for r in spark.read.format("delta")
        .load(conf.table_path(tables.ACCOUNT_CLUSTERS))
        .filter(F.col("is_ring"))
        .select(F.explode("members").alias("account_id"))
        .collect()
    }
    alerts = alerts_df.filter(F.col("alert_type") == ALERT_TYPE_FRAUD_RING).count()
    found = len(labelled & flagged)
    return [
        QualityRow(
            ALERT_TYPE_FRAUD_RING,
            RING_SCENARIO,
            len(labelled),
            found,
            _ratio(found, len(labelled)),
            None,
        ),
        QualityRow(
            ALERT_TYPE_FRAUD_RING, ANY, None, None, None, None, alerts, _ratio(found, len(flagged))
        ),
    ]


def code_version() -> str:
    """``git describe`` of the checkout the job runs from, else ``unknown``."""
    root = os.environ.get("TXWATCH_ROOT") or str(Path(__file__).resolve().parents[1])
    try:
        out = subprocess.run(
            ["git", "-C", root, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


@dataclass(frozen=True)
class ModelScores:
    version: int
    threshold: float
    pr_auc: float | None
    figure: str | None


def model_scores(
    spark: SparkSession, conf: Conf, truth_df: DataFrame, bronze_df: DataFrame
) -> ModelScores | None:
    """PR-AUC of the newest model's raw score on the labelled payments, and its figure."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    from txwatch import registry
    from txwatch.model_scorer import load

    found = registry.newest(conf)
    if found is None:
        return None
    loaded = load(spark, found)
    try:
        scored = labelled_scores(loaded, truth_df, bronze_df).persist()
        positives = scored.filter(F.col("label") == 1.0).count()
        pr_auc = (
            BinaryClassificationEvaluator(
                rawPredictionCol="outlier_score", labelCol="label", metricName="areaUnderPR"
            ).evaluate(scored)
            if positives and positives < scored.count()
            else None
        )
        figure = score_figure(conf, scored, loaded.threshold, loaded.version)
        scored.unpersist()
        return ModelScores(loaded.version, loaded.threshold, pr_auc, figure)
    finally:
        loaded.release()


def labelled_scores(loaded: LoadedModel, truth_df: DataFrame, bronze_df: DataFrame) -> DataFrame:
    """The model's raw score of every labelled payment: scenario, outlier_score, label (1.0
    for the model's scenarios, 0.0 for ordinary payments)."""
    from txwatch import model
    from udfs.model_features import as_seen
    from udfs.velocity import with_velocity

    labelled = truth_df.filter(
        F.col("scenario").isin(*MODEL_SCENARIOS, *ORDINARY_SCENARIOS)
    ).select("transaction_id", "scenario")
    payments = with_velocity(bronze_df).join(labelled, "transaction_id")
    return model.score(loaded.pipeline, as_seen(payments, loaded.profiles_df)).select(
        "scenario",
        "outlier_score",
        F.col("scenario").isin(*MODEL_SCENARIOS).cast("double").alias("label"),
    )


def plot_scores(ax: Axes, scored_df: DataFrame, threshold: float, title: str) -> None:
    """A histogram of the model's scores on ``ax``, ordinary payments against each scenario,
    with the threshold (log scales: the scores span three orders of magnitude)."""
    import numpy as np

    rows = scored_df.select("scenario", "outlier_score").collect()
    groups: dict[str, list[float]] = {}
    for r in rows:
        name = r.scenario if r.scenario in MODEL_SCENARIOS else "ordinary payments"
        groups.setdefault(name, []).append(float(r.outlier_score))
    top = max((max(v) for v in groups.values()), default=threshold)
    bins = np.logspace(np.log10(0.1), np.log10(max(top, threshold) * 1.1), 60).tolist()
    for name, values in sorted(groups.items()):
        ax.hist(np.clip(values, 0.1, None), bins=bins, alpha=0.55, label=f"{name} ({len(values)})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("outlier score (distance to the nearest cluster, standardized units)")
    ax.set_ylabel("payments")
    ax.set_title(title)
    ax.legend(fontsize=8)


def score_figure(conf: Conf, scored_df: DataFrame, threshold: float, version: int) -> str | None:
    """``plot_scores`` saved as a PNG beside the ``evaluation`` table. None on a lake that
    is not local."""
    if "://" in conf.lake_root and not conf.lake_root.startswith("file://"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    plot_scores(
        ax, scored_df, threshold, f"{conf.model.name} v{version}: scores of labelled payments"
    )
    folder = Path(conf.lake_root.removeprefix("file://")) / "evaluation_figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"model_scores_v{version}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def evaluate(
    spark: SparkSession, conf: Conf, alerts_df: DataFrame, truth_df: DataFrame
) -> list[QualityRow]:
    """The quality rows (model PR-AUC on its ``ANY`` row), appended to ``evaluation``."""
    bronze_df = read_pseudonymized(spark, conf, tables.BRONZE_TRANSACTIONS)
    rows = transaction_rows(alerts_df, truth_df, bronze_df, ALERT_TYPE_IMPOSSIBLE_TRAVEL)
    rows += transaction_rows(alerts_df, truth_df, bronze_df, MODEL_OUTLIER)
    rows += transaction_rows(alerts_df, truth_df, bronze_df, ALERT_TYPE_SIMILAR_TO_FRAUD)
    rows += metric_rows(alerts_df, truth_df)
    rows += ring_rows(spark, conf, alerts_df, truth_df)
    scores = model_scores(spark, conf, truth_df, bronze_df)
    if scores is not None:
        rows = [
            QualityRow(**{**asdict(r), "pr_auc": scores.pr_auc})
            if r.alert_type == MODEL_OUTLIER and r.scenario == ANY
            else r
            for r in rows
        ]
    print_rows(rows, scores)
    record(spark, conf, rows, scores)
    return rows


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_rows(rows: list[QualityRow], scores: ModelScores | None) -> None:
    print("\nDetection quality per alert type and scenario (ground_truth):")
    print(
        f"  {'alert type':<18} {'scenario':<18} {'labelled':>8} {'caught':>7} {'recall':>7} "
        f"{'delay s':>8} {'alerts':>7} {'precision':>9} {'ordinary':>9}"
    )
    for r in rows:
        print(
            f"  {r.alert_type:<18} {r.scenario:<18} {_f(r.labelled, ','):>8} "
            f"{_f(r.detected, ','):>7} {_f(r.recall, '.3f'):>7} {_f(r.median_delay_s, '.1f'):>8} "
            f"{_f(r.alerts, ','):>7} {_f(r.precision, '.3f'):>9} "
            f"{_f(r.ordinary_flagged_share, '.2%'):>9}"
        )
    print(
        "  (delay: alert detected_at minus the payment's Kafka timestamp; metric incidents: "
        "first alert minus the incident's start, in event time. ordinary: share of the "
        "payments without fraud that the alert type flagged. fraud_ring: counted in "
        "accounts)"
    )
    if scores is not None:
        print(
            f"  model v{scores.version}: threshold {scores.threshold:.2f}, PR-AUC of the raw "
            f"score {_f(scores.pr_auc, '.3f')}"
            + (f", figure {scores.figure}" if scores.figure else "")
        )


def record(
    spark: SparkSession, conf: Conf, rows: list[QualityRow], scores: ModelScores | None
) -> None:
    evaluated_at = datetime.now(UTC).replace(tzinfo=None)
    version = code_version()
    model_version = scores.version if scores else None
    tables.ensure_table(spark, conf, tables.EVALUATION)
    records = [
        {
            "evaluated_at": evaluated_at,
            "code_version": version,
            "model_version": model_version,
            **asdict(r),
        }
        for r in rows
    ]
    df = spark.createDataFrame(records, schemas.EVALUATION)
    df.write.format("delta").mode("append").save(conf.table_path(tables.EVALUATION))
