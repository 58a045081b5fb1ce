"""The schema of every Delta table: the contract between the pipeline and its readers.

Declared here once. The transforms that write a table end in a ``select`` giving exactly
this schema (tests check it), the job creates the tables from it before any query starts,
and readers (notebooks, SQL, the evaluation) can rely on it.
"""

from __future__ import annotations

import pyspark.sql.types as T

from udfs.alerts import ALERT_SCHEMA


def _schema(*columns: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(name, data_type) for name, data_type in columns])


STRING, DOUBLE, LONG, INT = T.StringType(), T.DoubleType(), T.LongType(), T.IntegerType()
TIMESTAMP, BOOLEAN = T.TimestampType(), T.BooleanType()

KAFKA_COLUMNS = (
    ("kafka_topic", STRING),
    ("kafka_partition", INT),
    ("kafka_offset", LONG),
    ("kafka_timestamp", TIMESTAMP),
)

# A transaction as the pipeline carries it: the input fields, the card number replaced by
# its token and last four digits.
TRANSACTION_COLUMNS = (
    ("transaction_id", STRING),
    ("user_id", STRING),
    ("card_token", STRING),
    ("card_last4", STRING),
    ("device_id", STRING),
    ("name", STRING),
    ("merchant_id", STRING),
    ("merchant", STRING),
    ("merchant_category", STRING),
    ("amount", DOUBLE),
    ("currency", STRING),
    ("status", STRING),
    ("channel", STRING),
    ("latitude", DOUBLE),
    ("longitude", DOUBLE),
    ("event_time", TIMESTAMP),
)

BRONZE_TRANSACTIONS = _schema(*TRANSACTION_COLUMNS, *KAFKA_COLUMNS, ("ingested_at", TIMESTAMP))

BRONZE_DEVICE_LOCATIONS = _schema(
    ("device_id", STRING),
    ("latitude", DOUBLE),
    ("longitude", DOUBLE),
    ("altitude", DOUBLE),
    ("speed_mps", DOUBLE),
    ("horizontal_accuracy_m", DOUBLE),
    ("event_time", TIMESTAMP),
    *KAFKA_COLUMNS,
    ("ingested_at", TIMESTAMP),
)

QUARANTINE = _schema(
    *KAFKA_COLUMNS,
    ("kafka_key", STRING),
    ("raw_value", STRING),
    ("reason", STRING),
    ("quarantined_at", TIMESTAMP),
)

TRANSACTIONS_ENRICHED = _schema(
    *[c for c in TRANSACTION_COLUMNS if c[0] != "name"],
    ("has_location", BOOLEAN),
    ("location_event_time", TIMESTAMP),
    ("location_latitude", DOUBLE),
    ("location_longitude", DOUBLE),
    ("location_accuracy_m", DOUBLE),
    ("location_speed_mps", DOUBLE),
    ("distance_m", DOUBLE),
    ("gap_s", DOUBLE),
    ("implied_speed_mps", DOUBLE),
    ("max_implied_speed_mps", DOUBLE),
)

# Not a table: the messages of the internal enrichment-candidates topic. What the travel
# query found for each transaction in one micro-batch (its nearest fix in that batch, the
# highest speed): the input of enrich's MERGE into transactions_enriched.
ENRICHMENT_CANDIDATES = TRANSACTIONS_ENRICHED

ALERTS = ALERT_SCHEMA

PIPELINE_PROGRESS = _schema(
    ("query_name", STRING),
    ("run_id", STRING),
    ("batch_id", LONG),
    ("batch_time", STRING),
    ("num_input_rows", LONG),
    ("input_rows_per_second", DOUBLE),
    ("processed_rows_per_second", DOUBLE),
    ("batch_duration_ms", LONG),
    ("state_rows", LONG),
    ("rows_dropped_by_watermark", LONG),
    ("watermark", STRING),
    # Wall clock at the batch minus its watermark, in seconds (negative: ahead of the clock).
    ("watermark_lag_s", DOUBLE),
    # ahead_of_wall_clock / behind_wall_clock when the lag is outside the configured bounds.
    ("watermark_warning", STRING),
)

GROUND_TRUTH = _schema(
    ("transaction_id", STRING),
    ("user_id", STRING),
    ("device_id", STRING),
    ("scenario", STRING),
    ("detail", STRING),
    ("topic", STRING),
    ("event_time", TIMESTAMP),
    ("delay_s", DOUBLE),
    # Metric incidents (a row each, no transaction): event_time is the start, this the end.
    ("end_time", TIMESTAMP),
)

# Per-minute values of the series the stream derives from transactions (``udfs.metrics``):
# one row per series and minute, zeros included. ``series`` is
# ``<metric>:<dimension>=<dimension_value>``, e.g. ``tx_count:status=failed``.
METRIC_VALUES = _schema(
    ("series", STRING),
    ("metric", STRING),  # tx_count or tx_amount
    ("dimension", STRING),  # status or merchant_category
    ("dimension_value", STRING),
    ("window_start", TIMESTAMP),
    ("window_end", TIMESTAMP),
    ("value", DOUBLE),
    ("is_filled", BOOLEAN),  # a minute without events: the zero was filled in
    ("computed_at", TIMESTAMP),
)

# Every point the per-series detector saw, from the transaction series and the metrics topic.
METRIC_SCORES = _schema(
    ("series", STRING),
    ("source", STRING),  # transactions or metrics (the topic)
    ("event_time", TIMESTAMP),
    ("value", DOUBLE),
    ("expected", DOUBLE),
    ("lower", DOUBLE),
    ("upper", DOUBLE),
    ("anomaly_score", DOUBLE),  # in [0, 1]
    ("is_anomaly", BOOLEAN),  # a detection: the start of an incident (one alert each)
    ("direction", INT),  # +1 above the band, -1 below, 0 inside
    ("incident_start", TIMESTAMP),  # first point of the current run outside the band
    ("incident_points", INT),  # points in that run so far, this one included
    ("is_filled", BOOLEAN),
    ("is_late", BOOLEAN),  # came after a later point of its series: stored, not scored
    ("scored_at", TIMESTAMP),
)

# One row per customer: sums over their past payments (udfs/model_features.py), written by
# `train` (replaced each time; the model version names the Delta version it was fit with).
_COUNTS = T.MapType(STRING, LONG)
CUSTOMER_PROFILES = _schema(
    ("user_id", STRING),
    ("p_n", LONG),  # payments
    ("p_sum_log_amount", DOUBLE),  # of ln(1 + amount)
    ("p_sumsq_log_amount", DOUBLE),
    ("p_last_event_time", TIMESTAMP),
    ("p_categories", _COUNTS),  # payments per merchant category
    ("p_places", _COUNTS),  # payments per place cell, "lat:lon" of its centre
    ("p_devices", _COUNTS),  # payments per device
    ("p_hours", _COUNTS),  # payments per hour of the day (UTC), "0" to "23"
)

# One row per alert type and scenario per evaluation (`./spark-submit.sh evaluate`); the
# row with scenario "(all alerts)" holds the alert type's precision (txwatch/quality.py).
EVALUATION = _schema(
    ("evaluated_at", TIMESTAMP),
    ("code_version", STRING),  # git describe of the code that evaluated
    ("model_version", INT),  # the newest registered outlier model then
    ("alert_type", STRING),
    ("scenario", STRING),
    ("labelled", LONG),
    ("detected", LONG),
    ("recall", DOUBLE),
    ("median_delay_s", DOUBLE),
    ("alerts", LONG),
    ("precision", DOUBLE),
    ("ordinary_flagged_share", DOUBLE),  # payments without fraud flagged by the type
    ("pr_auc", DOUBLE),  # the model's raw score (model_outlier only)
)

# `./spark-submit.sh similarity` (txwatch/similarity.py), each replaced by every run. Pairs
# of accounts whose behaviour sets (udfs/similarity.py) are alike, once each (a < b):
SIMILAR_ACCOUNTS = _schema(
    ("account_a", STRING),
    ("account_b", STRING),
    ("estimated_jaccard", DOUBLE),  # the MinHash estimate that made them a candidate pair
    ("exact_jaccard", DOUBLE),  # of the two token sets, computed exactly
    ("shared_tokens", T.ArrayType(STRING)),
    ("window_start", TIMESTAMP),  # the payments' event-time window
    ("window_end", TIMESTAMP),
    ("computed_at", TIMESTAMP),
)
# Connected components of similar accounts (two or more accounts each).
ACCOUNT_CLUSTERS = _schema(
    ("cluster_id", STRING),  # stable: derived from the sorted members
    ("size", INT),
    ("members", T.ArrayType(STRING)),
    # Tokens held by at least half of the members (and two), most shared first.
    ("shared_tokens", T.ArrayType(STRING)),
    ("pairs", LONG),  # similar pairs inside the cluster
    ("mean_jaccard", DOUBLE),  # exact, over those pairs
    ("is_ring", BOOLEAN),  # size >= similarity.min_ring_size: raised as a fraud_ring alert
    ("last_event_time", TIMESTAMP),  # the members' newest payment
    ("window_start", TIMESTAMP),
    ("window_end", TIMESTAMP),
    ("computed_at", TIMESTAMP),
)
# Known fraud as token sets, which the stream compares each account's recent activity with
# (udfs/fraud_patterns.py): a labelled incident's tokens less the account's own, or what a
# ring's accounts share. Replaced by every similarity run.
FRAUD_PATTERNS = _schema(
    ("pattern_id", STRING),
    ("source", STRING),  # e.g. "label known_fraud: u-000123", "ring 3f2a..."
    ("tokens", T.ArrayType(STRING)),
    ("payments", LONG),
    ("first_event_time", TIMESTAMP),
    ("last_event_time", TIMESTAMP),
    ("computed_at", TIMESTAMP),
)
# Tokens held by more than similarity.max_accounts_per_token accounts: left out of every
# comparison (batch and stream).
COMMON_TOKENS = _schema(
    ("token", STRING),
    ("accounts", LONG),
    ("computed_at", TIMESTAMP),
)

# `./spark-submit.sh anonymize` (txwatch/anonymize.py): the k-anonymous release, replaced by
# every run. No identifier; the four quasi-identifiers generalized; is_flagged sensitive.
TRANSACTIONS_ANONYMIZED = _schema(
    ("location_cell", STRING),  # geohash prefix, "*" for anywhere
    # "hour 2026-01-05 11:00", "part_of_day ...", "day ...", "week ...", "days A to B"
    ("time_slot", STRING),
    ("amount_range", STRING),  # "[20, 50)" (EUR)
    ("merchant_category_group", STRING),  # the category, "group <name>" or "*"
    ("currency", STRING),
    ("status", STRING),
    ("channel", STRING),
    ("has_location", BOOLEAN),
    ("is_flagged", BOOLEAN),  # an alert was raised on the payment (the sensitive attribute)
)
# One row per anonymize run.
ANONYMIZATION_REPORT = _schema(
    ("run_at", TIMESTAMP),
    ("k_requested", INT),
    ("k_reached", INT),  # the smallest equivalence class
    ("rows_in", LONG),
    ("rows_released", LONG),
    ("suppressed", LONG),
    ("suppression_rate", DOUBLE),
    ("classes", LONG),
    ("average_class_size", DOUBLE),
    ("discernibility", DOUBLE),  # Bayardo & Agrawal: sum of |E|^2, |D| per suppressed row
    ("ncp", DOUBLE),  # normalized certainty penalty of the released rows, 0 exact .. 1 none
    ("full_domain_ncp", DOUBLE),  # the same for the naive full-domain generalization
    ("l_diversity", INT),  # distinct is_flagged values in the least diverse class
    ("l_diverse_share", DOUBLE),  # share of classes holding both values
    ("quasi_identifiers", T.ArrayType(STRING)),
    ("sensitive_attribute", STRING),
    ("algorithm", STRING),
    ("rounds", INT),
)

# What the webhooks query did with each alert for each target: "pending" when it could not
# deliver it yet (the alert kept as JSON, to send later), "sent" once a webhook took it.
WEBHOOK_DELIVERIES = _schema(
    ("target", STRING),
    ("alert_id", STRING),
    ("status", STRING),
    ("alert", STRING),
    ("event_time", TIMESTAMP),
    ("recorded_at", TIMESTAMP),
    ("error", STRING),
    ("batch_id", LONG),  # the webhooks query's micro-batch (null: a retry between batches)
)
