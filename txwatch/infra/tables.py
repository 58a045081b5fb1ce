"""The Delta tables under ``lake_root``: names, what each holds, and how they are created.

Schemas are declared in ``udfs.schemas`` (the contract); this module adds where each table
lives and creates the missing ones before any query starts, from the declared schema,
without running the pipeline on an empty DataFrame.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyspark.sql.types as T
from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from txwatch.infra.config import Conf
from udfs import schemas

BRONZE_TRANSACTIONS = "bronze_transactions"
BRONZE_DEVICE_LOCATIONS = "bronze_device_locations"
QUARANTINE = "quarantine"
TRANSACTIONS_ENRICHED = "transactions_enriched"
ALERTS = "alerts"
GROUND_TRUTH = "ground_truth"
PIPELINE_PROGRESS = "pipeline_progress"
METRIC_VALUES = "metric_values"
METRIC_SCORES = "metric_scores"
CUSTOMER_PROFILES = "customer_profiles"
EVALUATION = "evaluation"
SIMILAR_ACCOUNTS = "similar_accounts"
ACCOUNT_CLUSTERS = "account_clusters"
FRAUD_PATTERNS = "fraud_patterns"
COMMON_TOKENS = "common_tokens"
TRANSACTIONS_ANONYMIZED = "transactions_anonymized"
ANONYMIZATION_REPORT = "anonymization_report"
WEBHOOK_DELIVERIES = "webhook_deliveries"


@dataclass(frozen=True)
class TableSpec:
    """A table: its name, schema, what it holds and the columns Delta keeps statistics on.

    ``stats_columns`` are the columns readers filter on (event time ranges). Delta keeps
    min/max statistics for them only: every write task builds code to compute the
    statistics of each listed column, a cost paid per task and per micro-batch, and
    statistics on the other columns (ids, names, amounts) would never skip a file.
    """

    name: str
    schema: T.StructType
    description: str
    stats_columns: tuple[str, ...] = ("event_time",)

    @property
    def properties(self) -> dict[str, str]:
        """Table properties of this table alone (``delta.table_properties`` apply to all)."""
        return {"delta.dataSkippingStatsColumns": ",".join(self.stats_columns)}


TABLES = {
    spec.name: spec
    for spec in (
        TableSpec(
            BRONZE_TRANSACTIONS,
            schemas.BRONZE_TRANSACTIONS,
            "valid transactions as they arrived, card number replaced by card_token/card_last4",
        ),
        TableSpec(
            BRONZE_DEVICE_LOCATIONS,
            schemas.BRONZE_DEVICE_LOCATIONS,
            "valid phone location fixes as they arrived",
        ),
        TableSpec(
            QUARANTINE,
            schemas.QUARANTINE,
            "records that failed parsing or validation, with every reason; card numbers and "
            "names masked",
            ("kafka_timestamp", "quarantined_at"),
        ),
        TableSpec(
            TRANSACTIONS_ENRICHED,
            schemas.TRANSACTIONS_ENRICHED,
            "one row per transaction: its nearest location fix, distance, gap, implied speed",
        ),
        TableSpec(
            ALERTS,
            schemas.ALERTS,
            "every detector's alerts, one row per alert_id",
            ("event_time", "detected_at"),
        ),
        TableSpec(
            METRIC_VALUES,
            schemas.METRIC_VALUES,
            "per-minute count and amount of transactions per status and merchant category, "
            "zeros included (minutes without transactions are filled)",
            ("series", "window_start"),
        ),
        TableSpec(
            METRIC_SCORES,
            schemas.METRIC_SCORES,
            "every point of every watched series with the detector's expected value, band, "
            "anomaly score and detections",
            ("series", "event_time"),
        ),
        TableSpec(
            PIPELINE_PROGRESS,
            schemas.PIPELINE_PROGRESS,
            "one row per streaming micro-batch: rows, durations, state, watermark",
            ("query_name", "batch_id"),
        ),
        TableSpec(
            CUSTOMER_PROFILES,
            schemas.CUSTOMER_PROFILES,
            "every customer's habits (sums over past payments), written by train",
            ("user_id",),
        ),
        TableSpec(
            EVALUATION,
            schemas.EVALUATION,
            "detection quality per alert type and scenario, one set of rows per evaluate run",
            ("evaluated_at",),
        ),
        TableSpec(
            SIMILAR_ACCOUNTS,
            schemas.SIMILAR_ACCOUNTS,
            "pairs of accounts with alike behaviour sets (MinHash LSH), written by similarity",
            ("account_a",),
        ),
        TableSpec(
            ACCOUNT_CLUSTERS,
            schemas.ACCOUNT_CLUSTERS,
            "connected components of similar accounts; rings are raised as fraud_ring alerts",
            ("cluster_id",),
        ),
        TableSpec(
            FRAUD_PATTERNS,
            schemas.FRAUD_PATTERNS,
            "known fraud as token sets, which the stream compares recent activity with",
            ("pattern_id",),
        ),
        TableSpec(
            COMMON_TOKENS,
            schemas.COMMON_TOKENS,
            "behaviour tokens too many accounts share to say anything; left out of comparisons",
            ("token",),
        ),
        TableSpec(
            TRANSACTIONS_ANONYMIZED,
            schemas.TRANSACTIONS_ANONYMIZED,
            "k-anonymous release of the transactions: no identifier, place, time, amount and "
            "category generalized so that every combination holds at least k rows",
            ("time_slot",),
        ),
        TableSpec(
            ANONYMIZATION_REPORT,
            schemas.ANONYMIZATION_REPORT,
            "one row per anonymize run: k reached, suppression, information loss, l-diversity",
            ("run_at",),
        ),
        TableSpec(
            WEBHOOK_DELIVERIES,
            schemas.WEBHOOK_DELIVERIES,
            "alerts posted to webhooks (sent) and waiting for a webhook that was down or at "
            "its rate limit (pending), per target",
            ("target", "recorded_at", "batch_id"),
        ),
        TableSpec(
            GROUND_TRUTH,
            schemas.GROUND_TRUTH,
            "the simulator's labels: the scenario behind every simulated transaction",
        ),
    )
}

STREAM_TABLES = (
    BRONZE_TRANSACTIONS,
    BRONZE_DEVICE_LOCATIONS,
    QUARANTINE,
    TRANSACTIONS_ENRICHED,
    ALERTS,
    METRIC_VALUES,
    METRIC_SCORES,
    PIPELINE_PROGRESS,
    WEBHOOK_DELIVERIES,
)
ALL_TABLES = tuple(TABLES)


def ensure_table(spark: SparkSession, conf: Conf, name: str) -> None:
    """Create table ``name`` from its declared schema if it is missing.

    A table made by an older version that lacks some declared (nullable) columns gets them
    added, so a lake survives an upgrade that adds columns.
    """
    spec = TABLES[name]
    path = conf.table_path(name)
    properties = {**conf.delta.table_properties, **spec.properties}
    if not DeltaTable.isDeltaTable(spark, path):
        builder = (
            DeltaTable.createIfNotExists(spark)
            .location(path)
            .addColumns(spec.schema)
            .comment(spec.description)
        )
        for key, value in properties.items():
            builder = builder.property(key, value)
        builder.execute()
        return
    table = DeltaTable.forPath(spark, path)
    existing = set(table.toDF().columns)
    missing = [f for f in spec.schema.fields if f.name not in existing]
    if missing:
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")
    current = table.detail().collect()[0].properties
    changed = {k: v for k, v in properties.items() if current.get(k) != v}
    if changed:
        settings = ", ".join(f"'{k}' = '{v}'" for k, v in changed.items())
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({settings})")


def ensure_tables(spark: SparkSession, conf: Conf, names: tuple[str, ...] = STREAM_TABLES) -> None:
    """Create every table in ``names`` that is missing (see ``ensure_table``)."""
    for name in names:
        ensure_table(spark, conf, name)
