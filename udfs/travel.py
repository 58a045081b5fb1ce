"""Impossible travel: transactions joined to their device's location fixes.

``join_transactions_to_locations`` is the stream-stream join (watermarks on both sides, an
event-time range in the condition). The other functions are plain transforms, so tests can
run them on small batch DataFrames exactly as the stream runs them on micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame, Window

from udfs import schemas
from udfs.alerts import severity_from_score, to_alerts
from udfs.eventtime import WATERMARK_TIME
from udfs.geo import haversine_m

ALERT_TYPE_IMPOSSIBLE_TRAVEL = "impossible_travel"

ENRICHED_COLUMNS = tuple(schemas.TRANSACTIONS_ENRICHED.fieldNames())
# What the join carries of each transaction: its columns in the enriched table, no name.
TRANSACTION_COLUMNS = ENRICHED_COLUMNS[: ENRICHED_COLUMNS.index("has_location")]


@dataclass(frozen=True)
class TravelJoin:
    """Which fixes a transaction is compared with, and how late each side may arrive.

    Durations are Spark interval strings ("5 minutes"); why they have their values is
    explained under ``stream`` in conf/base.yaml.
    """

    transactions_watermark: str
    device_locations_watermark: str
    join_before: str
    join_after: str


@dataclass(frozen=True)
class ImpossibleTravelRule:
    """The impossible-travel rule; see ``impossible_travel`` in conf/base.yaml."""

    max_plausible_speed_mps: float
    min_gap_s: float
    merchant_location_uncertainty_m: float
    min_distance_m: float
    default_location_accuracy_m: float
    high_severity_score: float
    medium_severity_score: float


def _seconds(ts: Column) -> Column:
    return F.unix_micros(ts) / F.lit(1_000_000.0)


def join_transactions_to_locations(
    transactions_df: DataFrame, locations_df: DataFrame, join: TravelJoin
) -> DataFrame:
    """Pair each transaction with every fix of its device in ``[t - before, t + after]``.

    Both inputs carry ``watermark_time`` (``udfs.eventtime``): the claimed event time, capped
    near the record's Kafka timestamp. The watermarks and the time range use it, so one
    record with a clock far ahead cannot move the watermark past what the broker has seen
    and make everyone else's records late. For every record with a sane clock it equals
    ``event_time``. Why these delays: see ``stream`` in conf/base.yaml. Both inputs get a
    watermark so Spark can drop join state once no partner can arrive any more; the left
    outer join keeps a transaction that found no fix (all ``location_*`` columns null) once
    the watermark passes its range.
    """
    tx_df = transactions_df.withWatermark(WATERMARK_TIME, join.transactions_watermark).alias("tx")
    loc_df = (
        locations_df.withWatermark(WATERMARK_TIME, join.device_locations_watermark)
        .select(
            F.col("device_id").alias("location_device_id"),
            F.col(WATERMARK_TIME).alias("location_watermark_time"),
            F.col("event_time").alias("location_event_time"),
            F.col("latitude").alias("location_latitude"),
            F.col("longitude").alias("location_longitude"),
            F.col("horizontal_accuracy_m").alias("location_accuracy_m"),
            F.col("speed_mps").alias("location_speed_mps"),
        )
        .alias("loc")
    )
    is_same_device = F.col("tx.device_id") == F.col("loc.location_device_id")
    is_in_time_range = F.col("loc.location_watermark_time").between(
        F.col(f"tx.{WATERMARK_TIME}") - F.expr(f"INTERVAL {join.join_before}"),
        F.col(f"tx.{WATERMARK_TIME}") + F.expr(f"INTERVAL {join.join_after}"),
    )
    return tx_df.join(loc_df, is_same_device & is_in_time_range, how="left_outer").select(
        *[F.col(f"tx.{c}") for c in TRANSACTION_COLUMNS],
        F.col("loc.location_event_time"),
        F.col("loc.location_latitude"),
        F.col("loc.location_longitude"),
        F.col("loc.location_accuracy_m"),
        F.col("loc.location_speed_mps"),
    )


def with_travel_metrics(pairs_df: DataFrame, rule: ImpossibleTravelRule) -> DataFrame:
    """Distance, time gap and the implied speed of each transaction/fix pair.

    The implied speed is deliberately conservative: the distance loses the fix's reported
    accuracy and the merchant's location uncertainty, and the gap is floored at
    ``min_gap_s``. GPS jitter then never looks like travel.
    """
    has_location = F.col("location_event_time").isNotNull()
    distance_m = haversine_m(
        F.col("latitude"),
        F.col("longitude"),
        F.col("location_latitude"),
        F.col("location_longitude"),
    )
    accuracy_m = F.coalesce(F.col("location_accuracy_m"), F.lit(rule.default_location_accuracy_m))
    gap_s = _seconds(F.col("location_event_time")) - _seconds(F.col("event_time"))
    # greatest() skips nulls: guard it so a transaction without a fix gets null metrics.
    effective_distance_m = F.when(
        has_location,
        F.greatest(
            distance_m - accuracy_m - F.lit(rule.merchant_location_uncertainty_m), F.lit(0.0)
        ),
    )
    implied_speed_mps = effective_distance_m / F.greatest(F.abs(gap_s), F.lit(rule.min_gap_s))
    return pairs_df.select(
        *TRANSACTION_COLUMNS,
        has_location.alias("has_location"),
        "location_event_time",
        "location_latitude",
        "location_longitude",
        "location_accuracy_m",
        "location_speed_mps",
        distance_m.alias("distance_m"),
        gap_s.alias("gap_s"),
        effective_distance_m.alias("effective_distance_m"),
        implied_speed_mps.alias("implied_speed_mps"),
    )


def is_impossible_travel(rule: ImpossibleTravelRule) -> Column:
    """True for a pair no traveller could have produced."""
    is_too_fast = F.col("implied_speed_mps") > F.lit(rule.max_plausible_speed_mps)
    is_far = F.col("effective_distance_m") >= F.lit(rule.min_distance_m)
    return F.coalesce(is_too_fast & is_far, F.lit(False))


def nearest_location_per_transaction(metrics_df: DataFrame) -> DataFrame:
    """One row per transaction: its fix nearest in time, plus the highest implied speed.

    A transaction matches every fix in its range, possibly over several micro-batches; the
    enriched table keeps the nearest fix (the best estimate of where the phone was) and the
    largest implied speed seen, which is what the rule acts on.
    """
    with_max_df = metrics_df.withColumn(
        "max_implied_speed_mps",
        F.max("implied_speed_mps").over(Window.partitionBy("transaction_id")),
    )
    return combine_enriched(with_max_df)


def combine_enriched(enriched_df: DataFrame) -> DataFrame:
    """Enriched rows of the same transactions (from several batches) combined into one each.

    Keeps the row with the nearest fix and the highest ``max_implied_speed_mps`` of all.
    """
    by_transaction = Window.partitionBy("transaction_id")
    nearest_first = by_transaction.orderBy(
        F.abs(F.col("gap_s")).asc_nulls_last(), F.col("location_event_time").asc_nulls_last()
    )
    return (
        enriched_df.withColumn(
            "max_implied_speed_mps", F.max("max_implied_speed_mps").over(by_transaction)
        )
        .withColumn("_rank", F.row_number().over(nearest_first))
        .filter(F.col("_rank") == 1)
        .select(*ENRICHED_COLUMNS)
    )


def impossible_travel_alerts(metrics_df: DataFrame, rule: ImpossibleTravelRule) -> DataFrame:
    """One ``impossible_travel`` alert per offending transaction, from its strongest pair."""
    strongest_first = Window.partitionBy("transaction_id").orderBy(
        F.col("implied_speed_mps").desc(), F.col("location_event_time").asc()
    )
    offending_df = (
        metrics_df.filter(is_impossible_travel(rule))
        .withColumn("_rank", F.row_number().over(strongest_first))
        .filter(F.col("_rank") == 1)
    )
    score = F.round(F.col("implied_speed_mps") / F.lit(rule.max_plausible_speed_mps), 3)
    direction = F.when(F.col("gap_s") < 0, F.lit("before")).otherwise(F.lit("after"))
    reason = F.format_string(
        "card ending %s used %.1f km from device %s's position %.0f s %s the payment "
        "(fix accuracy %.0f m): %.1f km beyond the uncertainty in at least %.0f s implies "
        "%.0f m/s, above the plausible maximum of %.0f m/s",
        F.col("card_last4"),
        F.col("distance_m") / 1000,
        F.col("device_id"),
        F.abs(F.col("gap_s")),
        direction,
        F.coalesce(F.col("location_accuracy_m"), F.lit(rule.default_location_accuracy_m)),
        F.col("effective_distance_m") / 1000,
        F.greatest(F.abs(F.col("gap_s")), F.lit(rule.min_gap_s)),
        F.col("implied_speed_mps"),
        F.lit(rule.max_plausible_speed_mps),
    )
    return to_alerts(
        offending_df,
        ALERT_TYPE_IMPOSSIBLE_TRAVEL,
        subject_id=F.col("transaction_id"),
        score=score,
        severity=severity_from_score(score, rule.medium_severity_score, rule.high_severity_score),
        reason=reason,
        evidence={
            "distance_m": F.col("distance_m"),
            "gap_s": F.col("gap_s"),
            "implied_speed_mps": F.col("implied_speed_mps"),
            "location_accuracy_m": F.col("location_accuracy_m"),
            # Where the phone was: the other end of the trip (the alert's latitude and
            # longitude are the payment's).
            "location_latitude": F.col("location_latitude"),
            "location_longitude": F.col("location_longitude"),
        },
    )
