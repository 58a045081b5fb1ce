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

from txwatch.infra import columns
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
    written_by: str
    stats_columns: tuple[str, ...] = ("event_time",)
    # Rows are changed in place (MERGE): mark them deleted in deletion vectors rather than
    # rewrite their files. Readers that cannot read deletion vectors (delta-rs) cannot read
    # such a table, so only the tables that need them have them.
    deletion_vectors: bool = False

    @property
    def properties(self) -> dict[str, str]:
        """Table properties of this table alone (``delta.table_properties`` apply to all):
        which job writes it, and what Delta keeps statistics on."""
        properties = {
            "txwatch.written_by": self.written_by,
            "delta.dataSkippingStatsColumns": ",".join(self.stats_columns),
        }
        if self.deletion_vectors:
            properties["delta.enableDeletionVectors"] = "true"
        return properties

    @property
    def commented_schema(self) -> T.StructType:
        """The schema with every column's comment (``txwatch.infra.columns``)."""
        return T.StructType(
            [
                T.StructField(
                    f.name,
                    f.dataType,
                    f.nullable,
                    {**f.metadata, "comment": columns.comment(self.name, f.name)},
                )
                for f in self.schema.fields
            ]
        )


TABLES = {
    spec.name: spec
    for spec in (
        TableSpec(
            BRONZE_TRANSACTIONS,
            schemas.BRONZE_TRANSACTIONS,
            "valid transactions as they arrived, card number replaced by card_token/card_last4",
            "stream: query ingest",
        ),
        TableSpec(
            BRONZE_DEVICE_LOCATIONS,
            schemas.BRONZE_DEVICE_LOCATIONS,
            "valid phone location fixes as they arrived",
            "stream: query ingest",
        ),
        TableSpec(
            QUARANTINE,
            schemas.QUARANTINE,
            "records that failed parsing or validation, with every reason; card numbers and "
            "names masked",
            "stream: queries ingest, alerts and enrich",
            ("kafka_timestamp", "quarantined_at"),
        ),
        TableSpec(
            TRANSACTIONS_ENRICHED,
            schemas.TRANSACTIONS_ENRICHED,
            "one row per transaction: its nearest location fix, distance, gap, implied speed",
            "stream: query enrich",
            deletion_vectors=True,
        ),
        TableSpec(
            ALERTS,
            schemas.ALERTS,
            "every detector's alerts, one row per alert_id",
            "stream: query alerts (every detector, through the potential-fraud topic); "
            "similarity (fraud_ring)",
            ("event_time", "detected_at"),
        ),
        TableSpec(
            METRIC_VALUES,
            schemas.METRIC_VALUES,
            "per-minute count and amount of transactions per status and merchant category, "
            "zeros included (minutes without transactions are filled)",
            "stream: query metric_windows",
            ("series", "window_start"),
        ),
        TableSpec(
            METRIC_SCORES,
            schemas.METRIC_SCORES,
            "every point of every watched series with the detector's expected value, band, "
            "anomaly score and detections",
            "stream: queries metric_windows and metric_points",
            ("series", "event_time"),
        ),
        TableSpec(
            PIPELINE_PROGRESS,
            schemas.PIPELINE_PROGRESS,
            "one row per streaming micro-batch: rows, durations, state, watermark",
            "stream: every query",
            ("query_name", "batch_id"),
        ),
        TableSpec(
            CUSTOMER_PROFILES,
            schemas.CUSTOMER_PROFILES,
            "every customer's habits (sums over past payments), written by train",
            "train",
            ("user_id",),
        ),
        TableSpec(
            EVALUATION,
            schemas.EVALUATION,
            "detection quality per alert type and scenario, one set of rows per evaluate run",
            "evaluate",
            ("evaluated_at",),
        ),
        TableSpec(
            SIMILAR_ACCOUNTS,
            schemas.SIMILAR_ACCOUNTS,
            "pairs of accounts with alike behaviour sets (MinHash LSH), written by similarity",
            "similarity",
            ("account_a",),
        ),
        TableSpec(
            ACCOUNT_CLUSTERS,
            schemas.ACCOUNT_CLUSTERS,
            "connected components of similar accounts; rings are raised as fraud_ring alerts",
            "similarity",
            ("cluster_id",),
        ),
        TableSpec(
            FRAUD_PATTERNS,
            schemas.FRAUD_PATTERNS,
            "known fraud as token sets, which the stream compares recent activity with",
            "similarity",
            ("pattern_id",),
        ),
        TableSpec(
            COMMON_TOKENS,
            schemas.COMMON_TOKENS,
            "behaviour tokens too many accounts share to say anything; left out of comparisons",
            "similarity",
            ("token",),
        ),
        TableSpec(
            TRANSACTIONS_ANONYMIZED,
            schemas.TRANSACTIONS_ANONYMIZED,
            "k-anonymous release of the transactions: no identifier, place, time, amount and "
            "category generalized so that every combination holds at least k rows",
            "anonymize",
            ("time_slot",),
        ),
        TableSpec(
            ANONYMIZATION_REPORT,
            schemas.ANONYMIZATION_REPORT,
            "one row per anonymize run: k reached, suppression, information loss, l-diversity",
            "anonymize",
            ("run_at",),
        ),
        TableSpec(
            WEBHOOK_DELIVERIES,
            schemas.WEBHOOK_DELIVERIES,
            "alerts posted to webhooks (sent) and waiting for a webhook that was down or at "
            "its rate limit (pending), per target",
            "stream: query webhooks",
            ("target", "recorded_at", "batch_id"),
        ),
        TableSpec(
            GROUND_TRUTH,
            schemas.GROUND_TRUTH,
            "the simulator's labels: the scenario behind every simulated transaction",
            "simulate",
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


def ensure_table(spark: SparkSession, conf: Conf, name: str, upgrade: bool = True) -> None:
    """Create table ``name`` from its declared schema if it is missing.

    With ``upgrade``, a table made by an older version is brought up to date: declared
    (nullable) columns it lacks are added, and its description, column comments and
    properties are set, so a lake survives an upgrade. Each change is a metadata commit,
    which would fail a concurrent writer's commit: only a table's own writer upgrades it,
    before it starts writing.
    """
    spec = TABLES[name]
    path = conf.table_path(name)
    schema = spec.commented_schema
    properties = {**conf.delta.table_properties, **spec.properties}
    exists = DeltaTable.isDeltaTable(spark, path)
    if exists and not upgrade:
        return
    if not exists:
        builder = (
            DeltaTable.createIfNotExists(spark)
            .location(path)
            .addColumns(schema)
            .comment(spec.description)
        )
        for key, value in properties.items():
            builder = builder.property(key, value)
        builder.execute()
        return
    table = DeltaTable.forPath(spark, path)
    existing = {f.name: f for f in table.toDF().schema.fields}
    missing = [f for f in schema.fields if f.name not in existing]
    if missing:
        added = ", ".join(
            f"`{f.name}` {f.dataType.simpleString()} COMMENT '{sql_quote(f.metadata['comment'])}'"
            for f in missing
        )
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({added})")
    for f in schema.fields:
        if f.name in existing and existing[f.name].metadata.get("comment") != f.metadata["comment"]:
            spark.sql(
                f"ALTER TABLE delta.`{path}` ALTER COLUMN `{f.name}` "
                f"COMMENT '{sql_quote(f.metadata['comment'])}'"
            )
    detail = table.detail().collect()[0]
    changed = {k: v for k, v in properties.items() if detail.properties.get(k) != v}
    if detail.description != spec.description:
        changed["comment"] = spec.description  # Delta keeps it as the table's description
    if changed:
        settings = ", ".join(f"'{k}' = '{sql_quote(v)}'" for k, v in changed.items())
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({settings})")


def sql_quote(text: str) -> str:
    """``text`` inside a SQL string literal."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def ensure_tables(spark: SparkSession, conf: Conf, names: tuple[str, ...] = STREAM_TABLES) -> None:
    """Create every table in ``names`` that is missing (see ``ensure_table``)."""
    for name in names:
        ensure_table(spark, conf, name)
