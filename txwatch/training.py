"""``jobs/train.py``'s work: profiles, fit, threshold, registry."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyspark.sql.functions as F
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from txwatch import model, registry
from txwatch.infra import tables
from txwatch.infra.config import Conf, duration_s
from txwatch.infra.errors import UserError
from txwatch.lake import read_pseudonymized, table_exists
from udfs import schemas
from udfs.model_features import FEATURES, customer_profiles, leave_one_out
from udfs.velocity import with_velocity

SCORE_QUANTILES = (0.5, 0.9, 0.99, 0.995, 0.999)


@dataclass(frozen=True)
class TrainResult:
    version: int
    threshold: float
    rows: int
    customers: int
    flagged_share: float

    def summary(self) -> str:
        return (
            f"{self.rows:,} payments of {self.customers:,} customers, threshold "
            f"{self.threshold:.2f} (flags {self.flagged_share:.2%} of them)"
        )


def history(
    spark: SparkSession, conf: Conf, since: datetime | None, until: datetime | None
) -> DataFrame:
    """Valid past payments in ``[since, until)``."""
    if not table_exists(spark, conf, tables.BRONZE_TRANSACTIONS):
        raise UserError(
            f"no {tables.BRONZE_TRANSACTIONS} table under {conf.lake_root}: run the stream "
            "on some transactions first"
        )
    df = read_pseudonymized(spark, conf, tables.BRONZE_TRANSACTIONS)
    if since is not None:
        df = df.filter(F.col("event_time") >= F.lit(since))
    if until is not None:
        df = df.filter(F.col("event_time") < F.lit(until))
    return df


def features_for_span(span_s: float, hour_min_history_s: float) -> tuple[str, ...]:
    """The features to fit on a history spanning ``span_s`` seconds: all of them, but the
    hour of the day only when the history spans at least ``hour_min_history_s``."""
    if span_s >= hour_min_history_s:
        return FEATURES
    return tuple(f for f in FEATURES if f != "unusual_hour")


def write_profiles(spark: SparkSession, conf: Conf, profiles_df: DataFrame) -> int:
    """Replace ``customer_profiles``; return the Delta version written."""
    tables.ensure_table(spark, conf, tables.CUSTOMER_PROFILES)
    path = conf.table_path(tables.CUSTOMER_PROFILES)
    columns = [F.col(f.name).cast(f.dataType) for f in schemas.CUSTOMER_PROFILES.fields]
    profiles_df.select(*columns).write.format("delta").mode("overwrite").save(path)
    return int(DeltaTable.forPath(spark, path).history(1).collect()[0]["version"])


def train(
    spark: SparkSession, conf: Conf, since: datetime | None, until: datetime | None
) -> TrainResult:
    cfg = conf.model
    payments_df = history(spark, conf, since, until).persist()
    try:
        print("train: customer profiles", flush=True)
        profiles_version = write_profiles(spark, conf, customer_profiles(payments_df))
        profiles_df = (
            spark.read.format("delta")
            .option("versionAsOf", profiles_version)
            .load(conf.table_path(tables.CUSTOMER_PROFILES))
        )
        seen_df = leave_one_out(with_velocity(payments_df), profiles_df).persist()
        rows = seen_df.count()
        if rows == 0:
            raise UserError(
                "no payment in the window has a customer with enough other payments to "
                "learn from: widen --since/--until"
            )
        window = payments_df.agg(F.min("event_time"), F.max("event_time")).collect()[0]
        span_s = (window[1] - window[0]).total_seconds()
        features = features_for_span(span_s, duration_s(cfg.hour_min_history))
        if "unusual_hour" not in features:
            print(
                f"train: the hour of the day is left out: the payments span {span_s / 3600:.1f} h,"
                f" less than model.hour_min_history ({cfg.hour_min_history})",
                flush=True,
            )
        print(f"train: fitting on {rows:,} payments", flush=True)
        fitted = model.fit_model(seen_df, cfg.clusters, cfg.seed, features)
        scores_df = model.score(fitted, seen_df).select("outlier_score").persist()
        threshold = model.calibrate_threshold(scores_df, cfg.threshold_quantile)
        quantiles = scores_df.agg(
            *[F.percentile("outlier_score", q).alias(f"q{q}") for q in SCORE_QUANTILES]
        ).collect()[0]
        flagged = scores_df.filter(F.col("outlier_score") > threshold).count()
        customers = profiles_df.count()
        with tempfile.TemporaryDirectory(prefix="txwatch-model-") as tmp:
            model_dir = str(Path(tmp) / "model")
            fitted.write().overwrite().save(model_dir)
            version = registry.register(
                conf,
                model_dir,
                params={
                    "features": ",".join(features),
                    "clusters": cfg.clusters,
                    "threshold_quantile": cfg.threshold_quantile,
                    "threshold": repr(threshold),
                    "since": str(since or window[0]),
                    "until": str(until or window[1]),
                    "profiles_table": conf.table_path(tables.CUSTOMER_PROFILES),
                    "profiles_version": profiles_version,
                },
                metrics={
                    "threshold": threshold,
                    "training_rows": float(rows),
                    "customers": float(customers),
                    "flagged_share": flagged / rows,
                    **{f"score_q{q}": float(quantiles[f"q{q}"]) for q in SCORE_QUANTILES},
                },
            )
        scores_df.unpersist()
        seen_df.unpersist()
        return TrainResult(version.version, threshold, rows, customers, flagged / rows)
    finally:
        payments_df.unpersist()
