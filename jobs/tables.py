"""Names of the Delta tables under ``lake_root`` and the schemas the job creates them with."""

from __future__ import annotations

BRONZE_TRANSACTIONS = "bronze_transactions"
BRONZE_DEVICE_LOCATIONS = "bronze_device_locations"
QUARANTINE = "quarantine"
TRANSACTIONS_ENRICHED = "transactions_enriched"
ALERTS = "alerts"
GROUND_TRUTH = "ground_truth"
PIPELINE_PROGRESS = "pipeline_progress"

STREAM_TABLES = (
    BRONZE_TRANSACTIONS,
    BRONZE_DEVICE_LOCATIONS,
    QUARANTINE,
    TRANSACTIONS_ENRICHED,
    ALERTS,
    PIPELINE_PROGRESS,
)
ALL_TABLES = (*STREAM_TABLES, GROUND_TRUTH)
