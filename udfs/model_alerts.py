"""``model_outlier`` alerts from scored payments (``txwatch.model.score``)."""

from __future__ import annotations

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame

from udfs.alerts import severity_from_score, to_alerts
from udfs.model_features import FEATURES

ALERT_TYPE = "model_outlier"
# Severity by the score's multiple of the threshold.
MEDIUM_AT, HIGH_AT = 1.5, 3.0


def model_outlier_alerts(
    scored_df: DataFrame,
    threshold: float,
    version: int,
    reason_detail: Column,
    features: tuple[str, ...] = FEATURES,
) -> DataFrame:
    """Payments scored above ``threshold`` as alerts; ``reason_detail``: what stood out;
    ``features``: the model's (each goes into the evidence)."""
    flagged_df = scored_df.filter(F.col("outlier_score") > F.lit(threshold))
    ratio = F.col("outlier_score") / F.lit(threshold)
    reason = F.concat(
        F.lit("payment does not fit the customer's habits (score "),
        F.format_number(F.col("outlier_score"), 1),
        F.lit(f", threshold {threshold:.1f}, model v{version}): "),
        reason_detail,
    )
    evidence = {
        "outlier_score": F.col("outlier_score"),
        "threshold": F.lit(threshold),
        "model_version": F.lit(version),
        **{name: F.col(name) for name in features},
    }
    return to_alerts(
        flagged_df,
        ALERT_TYPE,
        F.col("transaction_id"),
        ratio,
        severity_from_score(ratio, MEDIUM_AT, HIGH_AT),
        reason,
        evidence,
    )
