"""Features of a payment against its customer's own habits, for the outlier model.

A customer's habits are a profile of sums over their past payments (``customer_profiles``):
count, sums of log amounts and their squares, and counts per merchant category, per place
cell, per device and per hour of the day (UTC). What a payment is compared
with is that profile, *as seen by the payment*:

- in training, each past payment is compared with the profile of the customer's other
  payments (its own contribution subtracted: ``leave_one_out``), so a training payment is
  judged as a new one would be;
- in the stream, a new payment is compared with the profile as trained (``as_seen``).

Both then go through the same ``FEATURES_SQL`` (a ``SQLTransformer``, the first stage of
the model's ``pyspark.ml`` pipeline, saved with it): train and stream compute the features
with one statement. Every feature is a native Spark expression.
"""

from __future__ import annotations

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame

from udfs.geo import haversine_m

# Statuses that mean the payment was refused.
DECLINED_STATUSES = ("denied", "failed")
# A customer needs this many past payments (the payment itself excluded) to be scored.
MIN_HISTORY = 3

# The model's features, in the order of its vector; each has a readable description.
FEATURES = (
    "amount_z",
    "amount_category_z",
    "category_novelty",
    "distance_log_km",
    "new_device",
    "declined",
    "payments_10m",
    "declines_10m",
    "payments_1h",
    "unusual_hour",
)
# A customer who always pays the same amount still varies by about a third in log amount:
# standard deviations of ln(1 + amount) are taken as at least this.
MIN_LOG_AMOUNT_SD = 0.3

# A payment's clock hour of the day is compared with the customer's payments in that hour
# and this many clock hours either side (around midnight too): 23:00-01:59 for 00:30.
HOUR_WINDOW = 1

# Places are counted per cell of this many degrees (about 11 km north-south): a payment's
# distance from the customer's usual places is the distance to the nearest cell they used.
PLACE_CELL_DEG = 0.1


def _log_amount(amount: Column) -> Column:
    return F.log1p(F.greatest(amount, F.lit(0.0)))


def customer_profiles(transactions_df: DataFrame) -> DataFrame:
    """One row per ``user_id``: the sums of its payments, categories and devices counted.

    ``transactions_df``: valid transactions (bronze columns).
    """
    log_amount = _log_amount(F.col("amount"))
    per_user = transactions_df.groupBy("user_id").agg(
        F.count("*").alias("p_n"),
        F.sum(log_amount).alias("p_sum_log_amount"),
        F.sum(log_amount * log_amount).alias("p_sumsq_log_amount"),
        F.max("event_time").alias("p_last_event_time"),
    )
    categories = (
        transactions_df.groupBy("user_id", "merchant_category")
        .count()
        .groupBy("user_id")
        .agg(
            F.map_from_entries(F.collect_list(F.struct("merchant_category", "count"))).alias(
                "p_categories"
            )
        )
    )
    places = (
        transactions_df.groupBy("user_id", _place_cell().alias("cell"))
        .count()
        .groupBy("user_id")
        .agg(F.map_from_entries(F.collect_list(F.struct("cell", "count"))).alias("p_places"))
    )
    devices = (
        transactions_df.groupBy("user_id", "device_id")
        .count()
        .groupBy("user_id")
        .agg(F.map_from_entries(F.collect_list(F.struct("device_id", "count"))).alias("p_devices"))
    )
    hours = (
        transactions_df.groupBy("user_id", _hour_key(F.hour("event_time")).alias("hour"))
        .count()
        .groupBy("user_id")
        .agg(F.map_from_entries(F.collect_list(F.struct("hour", "count"))).alias("p_hours"))
    )
    return (
        per_user.join(categories, "user_id")
        .join(places, "user_id")
        .join(devices, "user_id")
        .join(hours, "user_id")
    )


def _hour_key(hour: Column) -> Column:
    """An hour of the day (0-23) as the profile's map key."""
    return hour.cast("string")


def _near_hour_count(hours: Column) -> Column:
    """The payments of ``hours`` (a profile's counts per clock hour) in the payment's own
    clock hour of the day and the HOUR_WINDOW ones either side (wrapping at midnight)."""
    hour = F.hour("event_time")
    near = [
        F.coalesce(hours[_hour_key(F.pmod(hour + k, F.lit(24)))], F.lit(0))
        for k in range(-HOUR_WINDOW, HOUR_WINDOW + 1)
    ]
    return sum(near[1:], near[0])


def _place_cell() -> Column:
    """The payment's place cell as text, ``"48.9:2.4"`` (cell centre, PLACE_CELL_DEG)."""
    return F.concat_ws(
        ":",
        *[
            F.format_number(F.round(F.col(c) / PLACE_CELL_DEG) * PLACE_CELL_DEG, 1)
            for c in ("latitude", "longitude")
        ],
    )


def _nearest_place_km(places: Column, own_cell_discount: int) -> Column:
    """Distance (km) from the payment to the nearest cell of ``places`` still counted.

    ``own_cell_discount`` is subtracted from the count of the payment's own cell (1 in
    leave-one-out: a cell only this payment used does not count).
    """
    own = _place_cell()
    entries = F.filter(
        F.map_entries(places),
        lambda e: e["value"] - F.when(e["key"] == own, own_cell_discount).otherwise(0) > 0,
    )

    def distance(e: Column) -> Column:
        lat_lon = F.split(e["key"], ":")
        cell_lat, cell_lon = lat_lon[0].cast("double"), lat_lon[1].cast("double")
        return haversine_m(F.col("latitude"), F.col("longitude"), cell_lat, cell_lon) / 1000.0

    return F.array_min(F.transform(entries, distance))


def _seen(
    df: DataFrame,
    n: Column,
    sum_log: Column,
    sumsq_log: Column,
    place_km: Column,
    category_count: Column,
    device_count: Column,
    hour_count: Column,
) -> DataFrame:
    """The profile summaries ``FEATURES_SQL`` reads, from (possibly adjusted) sums."""
    mean = sum_log / n
    variance = F.greatest(sumsq_log / n - mean * mean, F.lit(0.0))
    return df.withColumns(
        {
            "usual_n": n,
            "usual_log_amount": mean,
            "usual_log_amount_sd": F.sqrt(variance),
            "distance_from_usual_km": place_km,
            "usual_category_count": F.coalesce(category_count, F.lit(0)),
            "usual_device_count": F.coalesce(device_count, F.lit(0)),
            "usual_hour_count": hour_count,
        }
    )


def as_seen(transactions_df: DataFrame, profiles_df: DataFrame) -> DataFrame:
    """New payments with their customer's profile (inner join: no profile, no score)."""
    df = transactions_df.join(profiles_df, "user_id")
    return _seen(
        df,
        F.col("p_n"),
        F.col("p_sum_log_amount"),
        F.col("p_sumsq_log_amount"),
        _nearest_place_km(F.col("p_places"), 0),
        F.col("p_categories")[F.col("merchant_category")],
        F.col("p_devices")[F.col("device_id")],
        _near_hour_count(F.col("p_hours")),
    ).filter(F.col("usual_n") >= MIN_HISTORY)


def leave_one_out(transactions_df: DataFrame, profiles_df: DataFrame) -> DataFrame:
    """Past payments, each with the profile of its customer's *other* payments."""
    df = transactions_df.join(profiles_df, "user_id")
    log_amount = _log_amount(F.col("amount"))
    return _seen(
        df,
        F.col("p_n") - 1,
        F.col("p_sum_log_amount") - log_amount,
        F.col("p_sumsq_log_amount") - log_amount * log_amount,
        _nearest_place_km(F.col("p_places"), 1),
        F.col("p_categories")[F.col("merchant_category")] - 1,
        F.col("p_devices")[F.col("device_id")] - 1,
        _near_hour_count(F.col("p_hours")) - 1,
    ).filter(F.col("usual_n") >= MIN_HISTORY)


# unusual_hour: how far the customer's payments near this hour of the day (its clock hour
# and HOUR_WINDOW either side) fall short of what a customer paying at any hour would have,
# in Poisson standard deviations: max(0, expected - count) / sqrt(expected + 1), expected =
# usual_n x (2 HOUR_WINDOW + 1) / 24. A customer with 42 daytime payments paying at 00:30
# scores 2.1; at their usual hours, or with few payments, about 0. It needs a history that covers
# every hour of the day (training leaves it out otherwise: model.hour_min_history).
_HOURS_EXPECTED = f"(usual_n * {(2 * HOUR_WINDOW + 1) / 24!r}D)"

# The features from a payment, its ``usual_*`` columns and its velocity (``prior_*``, from
# ``udfs.velocity``). ``distance_from_usual_km`` is to the nearest place cell the customer
# paid in; ``amount_category_z`` comes from the next stage (``category_amount_sql``, fitted
# on the training payments). Standard deviations are floored at MIN_LOG_AMOUNT_SD.
FEATURES_SQL = f"""
SELECT *,
  (log1p(greatest(amount, 0D)) - usual_log_amount)
    / greatest(usual_log_amount_sd, {MIN_LOG_AMOUNT_SD!r}D) AS amount_z,
  1D - usual_category_count / usual_n AS category_novelty,
  log1p(distance_from_usual_km) AS distance_log_km,
  CASE WHEN usual_device_count = 0 THEN 1D ELSE 0D END AS new_device,
  CASE WHEN status IN ({", ".join(f"'{s}'" for s in DECLINED_STATUSES)}) THEN 1D ELSE 0D END
    AS declined,
  log1p(prior_payments_10m) AS payments_10m,
  log1p(prior_declines_10m) AS declines_10m,
  log1p(prior_payments_1h) AS payments_1h,
  greatest({_HOURS_EXPECTED} - usual_hour_count, 0D) / sqrt({_HOURS_EXPECTED} + 1D)
    AS unusual_hour
FROM __THIS__
"""


def category_amount_sql(stats: dict[str, tuple[float, float]]) -> str:
    """``amount_category_z``: the amount against what payments of its category usually cost.

    ``stats``: category -> (mean, standard deviation) of ``ln(1 + amount)`` over all
    customers' training payments; a category not seen in training scores 0.
    """
    log_amount = "log1p(greatest(amount, 0D))"
    cases = " ".join(
        f"WHEN '{category}' THEN ({log_amount} - {mean!r}D) / {max(sd, MIN_LOG_AMOUNT_SD)!r}D"
        for category, (mean, sd) in sorted(stats.items())
        if "'" not in category
    )
    expression = f"CASE merchant_category {cases} ELSE 0D END" if cases else "0D"
    return f"SELECT *, {expression} AS amount_category_z FROM __THIS__"


def category_amount_stats(transactions_df: DataFrame) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of ``ln(1 + amount)`` per merchant category."""
    log_amount = _log_amount(F.col("amount"))
    rows = (
        transactions_df.filter(F.col("merchant_category").isNotNull())
        .groupBy("merchant_category")
        .agg(F.avg(log_amount).alias("mean"), F.stddev_pop(log_amount).alias("sd"))
        .collect()
    )
    return {r.merchant_category: (float(r.mean), float(r.sd or 0.0)) for r in rows}
