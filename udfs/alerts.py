"""The one shape every detector's alerts take, and the helpers that give it.

A detector is a transform that ends in ``to_alerts``: it names the alert type, a score, a
severity, a human-readable reason and the numbers behind the decision (``evidence``), and
keeps whatever subject columns it knows (transaction, user, card, device, place). The
alert sink (``txwatch.infra.alert_sink``) stores and publishes every such DataFrame the
same way, so a new alert type is a new transform and nothing else.
"""

from __future__ import annotations

import pyspark.sql.functions as F
import pyspark.sql.types as T
from pyspark.sql import Column, DataFrame

ALERT_SCHEMA = T.StructType(
    [
        T.StructField("alert_id", T.StringType(), False),
        T.StructField("alert_type", T.StringType(), False),
        T.StructField("score", T.DoubleType()),
        T.StructField("severity", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("event_time", T.TimestampType()),
        T.StructField("detected_at", T.TimestampType()),
        # The subject, as far as the detector knows it (null otherwise).
        T.StructField("transaction_id", T.StringType()),
        T.StructField("user_id", T.StringType()),
        T.StructField("card_token", T.StringType()),
        T.StructField("card_last4", T.StringType()),
        T.StructField("device_id", T.StringType()),
        T.StructField("merchant", T.StringType()),
        T.StructField("amount", T.DoubleType()),
        T.StructField("currency", T.StringType()),
        T.StructField("latitude", T.DoubleType()),
        T.StructField("longitude", T.DoubleType()),
        # The numbers behind the decision, by name (e.g. implied_speed_mps for travel).
        T.StructField("evidence", T.MapType(T.StringType(), T.DoubleType())),
    ]
)
ALERT_COLUMNS = tuple(f.name for f in ALERT_SCHEMA.fields)
SUBJECT_COLUMNS = ALERT_COLUMNS[ALERT_COLUMNS.index("transaction_id") : -1]


def alert_id(subject_id: Column, alert_type: Column) -> Column:
    """Stable id: the same subject and type always give the same alert."""
    return F.substring(F.sha2(F.concat_ws("|", alert_type, subject_id), 256), 1, 32)


def severity_from_score(score: Column, medium_at: float, high_at: float) -> Column:
    """``low``, ``medium`` or ``high`` by thresholds on the detector's score."""
    return (
        F.when(score >= high_at, F.lit("high"))
        .when(score >= medium_at, F.lit("medium"))
        .otherwise(F.lit("low"))
    )


def to_alerts(
    df: DataFrame,
    alert_type: str | Column,
    subject_id: Column,
    score: Column,
    severity: Column,
    reason: Column,
    evidence: dict[str, Column],
) -> DataFrame:
    """``df`` shaped as alerts: the common columns, subject columns ``df`` lacks as null.

    ``alert_type`` is one type for every row, or a column when it depends on the row.
    """
    type_column = F.lit(alert_type) if isinstance(alert_type, str) else alert_type
    subject = [
        F.col(name).cast(ALERT_SCHEMA[name].dataType).alias(name)
        if name in df.columns
        else F.lit(None).cast(ALERT_SCHEMA[name].dataType).alias(name)
        for name in SUBJECT_COLUMNS
    ]
    evidence_map = F.create_map(
        *[part for name, value in evidence.items() for part in (F.lit(name), value.cast("double"))]
    )
    return df.select(
        alert_id(subject_id, type_column).alias("alert_id"),
        type_column.alias("alert_type"),
        score.cast("double").alias("score"),
        severity.alias("severity"),
        reason.alias("reason"),
        F.col("event_time").cast("timestamp").alias("event_time"),
        F.current_timestamp().alias("detected_at"),
        *subject,
        evidence_map.alias("evidence"),
    )
