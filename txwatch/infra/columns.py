"""What every column of every table means: the comments the tables carry in their schema.

``txwatch.infra.tables`` writes them into each Delta table's schema, where ``DESCRIBE``
in SQL, the catalog, notebooks and other engines reading the lake find them. A column
name means the same in every table unless ``BY_TABLE`` says otherwise for one table.
"""

from __future__ import annotations

COMMENTS = {
    # A transaction
    "transaction_id": "the transaction's id, as the payment system sent it",
    "user_id": "the customer: a keyed token (HMAC) of their id",
    "card_token": "keyed hash (HMAC-SHA256) of the card number; the number itself is never stored",
    "card_last4": "the card number's last four digits",
    "device_id": "the customer's phone: a keyed token (HMAC) of its id",
    "name": "the card holder's name as sent (bronze only; masked in quarantine)",
    "merchant_id": "the merchant's id",
    "merchant": "the merchant's name",
    "merchant_category": "the merchant's category, e.g. grocery, fuel, electronics",
    "amount": "the payment's amount, in currency",
    "currency": "ISO 4217 code of the amount",
    "status": "approved, denied, failed, reversed, backend_reversed, refunded or processing",
    "channel": "how the card was used, e.g. contactless, chip, mobile_wallet, online",
    "latitude": "where it happened, degrees (WGS84); null when unknown",
    "longitude": "where it happened, degrees (WGS84); null when unknown",
    "event_time": "when it happened (UTC), by the sender's clock",
    # Kafka provenance
    "kafka_topic": "the Kafka topic the record came from",
    "kafka_partition": "its Kafka partition",
    "kafka_offset": "its offset in that partition: (topic, partition, offset) is unique",
    "kafka_timestamp": "when Kafka received it (UTC)",
    "ingested_at": "when the stream wrote it (UTC)",
    # Location fixes
    "altitude": "metres above the WGS84 ellipsoid",
    "speed_mps": "the phone's own speed estimate, m/s",
    "horizontal_accuracy_m": "radius of the fix's 68 % confidence circle, metres",
    # Quarantine
    "kafka_key": "the record's Kafka key (user and device ids tokenized)",
    "raw_value": "the record as received, card numbers and names masked, ids tokenized",
    "reason": "why: every check the record failed",
    "quarantined_at": "when the stream quarantined it (UTC)",
    # Enrichment
    "has_location": "a location fix of the customer's phone was found near the payment",
    "location_event_time": "time of the nearest fix",
    "location_latitude": "the nearest fix's latitude",
    "location_longitude": "the nearest fix's longitude",
    "location_accuracy_m": "the nearest fix's accuracy radius, metres",
    "location_speed_mps": "the phone's speed at the nearest fix, m/s",
    "distance_m": "metres between the payment and the nearest fix",
    "gap_s": "seconds from the payment to the nearest fix (negative: the fix came first)",
    "implied_speed_mps": "distance / gap: how fast the customer would have moved, m/s",
    "max_implied_speed_mps": "the highest implied speed over every fix seen near the payment",
    # Alerts
    "alert_id": "stable id: the same subject and alert type always give the same id",
    "alert_type": "impossible_travel, metric_spike, metric_dip, metric_outage, model_outlier, "
    "similar_to_fraud or fraud_ring",
    "score": "the detector's score (travel: implied speed / max plausible speed; metrics: "
    "anomaly score; model: score / threshold)",
    "severity": "low, medium or high",
    "detected_at": "when the alert was published (UTC)",
    "evidence": "the numbers behind the decision, by name",
    # Metrics
    "series": "the series' name, e.g. tx_count:status=failed",
    "metric": "tx_count or tx_amount",
    "dimension": "status or merchant_category",
    "dimension_value": "the status or category the series counts",
    "window_start": "start of the event-time window (UTC, inclusive)",
    "window_end": "end of the event-time window (UTC, exclusive)",
    "value": "the series' value at that point",
    "is_filled": "a minute without events: the zero was filled in",
    "computed_at": "when the row was computed (UTC)",
    "source": "where the series comes from: transactions (derived) or metrics (the topic)",
    "expected": "the detector's expected value",
    "lower": "lower end of the band of normal values",
    "upper": "upper end of the band of normal values",
    "anomaly_score": "how unusual the point is, 0 to 1",
    "is_anomaly": "a detection: the start of an incident (one alert each)",
    "direction": "+1 above the band, -1 below, 0 inside",
    "incident_start": "first point of the current run outside the band",
    "incident_points": "points in that run so far, this one included",
    "is_late": "came after a later point of its series: stored, not scored",
    "scored_at": "when the detector scored it (UTC)",
    # Pipeline progress
    "query_name": "the streaming query",
    "run_id": "the query's run (changes at every restart)",
    "batch_id": "the micro-batch",
    "batch_time": "when the micro-batch started (UTC, ISO 8601)",
    "num_input_rows": "rows the micro-batch read",
    "input_rows_per_second": "rows arriving per second",
    "processed_rows_per_second": "rows processed per second",
    "batch_duration_ms": "how long the micro-batch took, ms",
    "state_rows": "rows held in the query's state stores",
    "rows_dropped_by_watermark": "rows dropped as later than the watermark",
    "watermark": "the event-time watermark after the micro-batch",
    "watermark_lag_s": "wall clock minus watermark, seconds (negative: ahead of the clock)",
    "watermark_warning": "ahead_of_wall_clock or behind_wall_clock when the lag is out of bounds",
    # Customer profiles
    "p_n": "the customer's past payments",
    "p_sum_log_amount": "sum of ln(1 + amount) over them",
    "p_sumsq_log_amount": "sum of ln(1 + amount) squared",
    "p_last_event_time": "the newest of them",
    "p_categories": "payments per merchant category",
    "p_places": "payments per place cell (0.1 degree), keyed lat:lon of its centre",
    "p_devices": "payments per device token",
    "p_hours": "payments per hour of the day (UTC), keyed 0 to 23",
    # Evaluation
    "evaluated_at": "when the evaluation ran (UTC)",
    "code_version": "git describe of the code that evaluated",
    "model_version": "the newest registered outlier model then",
    "scenario": "the simulated scenario, or (all alerts) for the alert type's precision",
    "labelled": "labelled cases of the scenario",
    "detected": "of those, alerted",
    "recall": "detected / labelled",
    "median_delay_s": "median seconds from the labelled start to the alert",
    "alerts": "alerts of the type",
    "precision": "share of the type's alerts that match a labelled case",
    "ordinary_flagged_share": "share of payments without fraud the type flagged",
    "pr_auc": "area under the precision-recall curve of the model's raw score",
    # Similarity
    "account_a": "one account of the pair (token; account_a < account_b)",
    "account_b": "the other account (token)",
    "estimated_jaccard": "MinHash estimate of the two token sets' Jaccard similarity",
    "exact_jaccard": "the two token sets' Jaccard similarity, computed exactly",
    "shared_tokens": "behaviour tokens the accounts share",
    "cluster_id": "stable id derived from the sorted members",
    "size": "accounts in the cluster",
    "members": "the accounts (tokens)",
    "pairs": "similar pairs inside the cluster",
    "mean_jaccard": "mean exact Jaccard over those pairs",
    "is_ring": "size >= similarity.min_ring_size: raised as a fraud_ring alert",
    "last_event_time": "the newest payment involved",
    "pattern_id": "the pattern's id",
    "tokens": "the pattern's behaviour tokens (merchant:, device:, cell:, category tokens)",
    "payments": "payments behind the pattern",
    "first_event_time": "the oldest payment involved",
    "token": "a behaviour token",
    "accounts": "accounts holding it",
    # Anonymized release
    "location_cell": "geohash prefix of where it happened, * for anywhere",
    "time_slot": "when, generalized: hour, part of day, day, week or a range of days",
    "amount_range": "the amount's range in EUR, e.g. [20, 50)",
    "merchant_category_group": "the category, a group of categories, or *",
    "is_flagged": "an alert was raised on the payment (the sensitive attribute)",
    "run_at": "when the anonymize run ran (UTC)",
    "k_requested": "the k asked for",
    "k_reached": "the smallest equivalence class released",
    "rows_in": "transactions read",
    "rows_released": "rows written to transactions_anonymized",
    "suppressed": "rows left out to reach k",
    "suppression_rate": "suppressed / rows_in",
    "classes": "equivalence classes released",
    "average_class_size": "rows per class",
    "discernibility": "sum of squared class sizes, |D| per suppressed row (Bayardo & Agrawal)",
    "ncp": "normalized certainty penalty of the released rows, 0 exact .. 1 nothing left",
    "full_domain_ncp": "the same for the naive full-domain generalization",
    "l_diversity": "distinct is_flagged values in the least diverse class",
    "l_diverse_share": "share of classes holding both values",
    "quasi_identifiers": "the generalized columns",
    "sensitive_attribute": "the column kept as it is and checked for diversity",
    "algorithm": "the generalization algorithm",
    "rounds": "generalization rounds run",
    # Webhooks
    "target": "the webhook's name in conf",
    "alert": "the alert as JSON, kept to send later",
    "recorded_at": "when the row was written (UTC)",
    "error": "why the alert is pending",
    # Ground truth
    "detail": "what was done, in words",
    "topic": "the Kafka topic the simulated record went to",
    "delay_s": "seconds the record was held back before it was sent (late data)",
    "end_time": "end of a metric incident (event_time is its start)",
}

# Where a column means something else in one table: (table, column) -> comment.
# Bronze and the simulator's labels keep identifiers as they arrived; every other table
# holds their tokens.
_AS_SENT = {
    "user_id": "the customer's id as sent (tokenized in every table outside bronze)",
    "device_id": "the phone's id as sent (tokenized in every table outside bronze)",
}
BY_TABLE = {
    **{
        (table, column): text
        for table in ("bronze_transactions", "ground_truth")
        for column, text in _AS_SENT.items()
    },
    ("bronze_device_locations", "device_id"): _AS_SENT["device_id"],
    ("bronze_device_locations", "latitude"): "where the phone was, degrees (WGS84)",
    ("bronze_device_locations", "longitude"): "where the phone was, degrees (WGS84)",
    ("bronze_device_locations", "event_time"): "when the phone took the fix (UTC)",
    ("alerts", "reason"): "why, in words and numbers",
    ("alerts", "event_time"): "when what the alert is about happened (UTC)",
    ("alerts", "latitude"): "where the payment happened, when the alert is about one",
    ("alerts", "longitude"): "where the payment happened, when the alert is about one",
    ("metric_scores", "event_time"): "the point's time (a window's start for derived series)",
    ("webhook_deliveries", "status"): "sent, or pending while the webhook is down or at its "
    "rate limit",
    ("webhook_deliveries", "event_time"): "the alert's event time",
    ("webhook_deliveries", "batch_id"): "the webhooks query's micro-batch (null: a retry "
    "between batches)",
    ("transactions_anonymized", "currency"): "ISO 4217 code of the amount",
    ("fraud_patterns", "source"): "where it comes from: label <scenario>: <account> or ring "
    "<cluster_id>",
    ("ground_truth", "scenario"): "legit, or the simulated fraud, metric incident or data "
    "fault behind the record",
    ("ground_truth", "event_time"): "the record's event time; a metric incident's start",
    ("customer_profiles", "user_id"): "the customer (token)",
    ("similar_accounts", "window_start"): "start of the payments' event-time window",
    ("similar_accounts", "window_end"): "end of the payments' event-time window",
    ("account_clusters", "window_start"): "start of the payments' event-time window",
    ("account_clusters", "window_end"): "end of the payments' event-time window",
}


def comment(table: str, column: str) -> str:
    """What ``column`` of ``table`` means (KeyError: a column nobody described)."""
    return BY_TABLE.get((table, column)) or COMMENTS[column]
