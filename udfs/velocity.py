"""Velocity: how many payments (and declines) a customer made just before this one.

For a payment at time t: ``prior_payments_10m`` and ``prior_declines_10m``, the customer's
other payments (declined ones) with an event time in [t - 10 min, t], and
``prior_payments_1h`` the same over the hour. Training computes them over the history with
window functions (``with_velocity``); the stream keeps each customer's last hour of
payments in state (``add_velocity``, a step of ``udfs.payment_history``'s stateful operator)
and counts the same way, so a payment sees the same numbers in both as long as the earlier
payments arrived before it.
"""

from __future__ import annotations

from typing import Any

import pyspark.sql.functions as F
import pyspark.sql.types as T
from pyspark.sql import DataFrame, Window, WindowSpec

from udfs.model_features import DECLINED_STATUSES

WINDOWS_S = {"prior_payments_10m": 600, "prior_payments_1h": 3600}
DECLINES_WINDOW_S = 600
KEEP_S = max(WINDOWS_S.values())
VELOCITY_COLUMNS = ("prior_payments_10m", "prior_declines_10m", "prior_payments_1h")

# The payment columns the scoring path needs (the operator passes them through).
PAYMENT_COLUMNS = (
    ("transaction_id", T.StringType()),
    ("user_id", T.StringType()),
    ("card_token", T.StringType()),
    ("card_last4", T.StringType()),
    ("device_id", T.StringType()),
    ("merchant", T.StringType()),
    ("merchant_category", T.StringType()),
    ("amount", T.DoubleType()),
    ("currency", T.StringType()),
    ("status", T.StringType()),
    ("latitude", T.DoubleType()),
    ("longitude", T.DoubleType()),
    ("event_time", T.TimestampType()),
)
OUTPUT_SCHEMA = T.StructType(
    [T.StructField(name, data_type) for name, data_type in PAYMENT_COLUMNS]
    + [T.StructField(name, T.LongType()) for name in VELOCITY_COLUMNS]
)


def _is_declined() -> F.Column:
    return F.col("status").isin(*DECLINED_STATUSES)


def with_velocity(payments_df: DataFrame) -> DataFrame:
    """``payments_df`` with the velocity columns, from the payments it holds (training)."""
    seconds = F.col("event_time").cast("double")
    declined = _is_declined().cast("long")

    def window(span_s: int) -> WindowSpec:
        return Window.partitionBy("user_id").orderBy(seconds).rangeBetween(-span_s, 0)

    return payments_df.withColumns(
        {
            **{
                name: F.count("*").over(window(span)) - 1  # the others: not itself
                for name, span in WINDOWS_S.items()
            },
            "prior_declines_10m": F.sum(declined).over(window(DECLINES_WINDOW_S)) - declined,
        }
    )


# Composite sort key: customer code * 2**42 + event time in ms (2**42 ms is 139 years).
_TIME_BITS = 42


def count_prior(
    old_codes: Any, old_ms: Any, old_declined: Any, new_codes: Any, new_ms: Any, new_declined: Any
) -> tuple[dict[str, Any], Any]:
    """Velocity of each new payment against the kept ones and the new ones before it.

    Payments are (customer code, event time ms, declined); the old ones sorted by code and
    time, the new ones too. Returns the counts (in ``new`` order) and the order that sorts
    old + new by (code, time), for the caller to keep.
    """
    import numpy as np

    old_key = (old_codes.astype("int64") << _TIME_BITS) + old_ms
    new_key = (new_codes.astype("int64") << _TIME_BITS) + new_ms
    old_cum = np.concatenate([[0], np.cumsum(old_declined)])
    new_cum = np.concatenate([[0], np.cumsum(new_declined)])
    index = np.arange(len(new_key))
    counts: dict[str, Any] = {}
    for name, span_s in {**WINDOWS_S, "prior_declines_10m": DECLINES_WINDOW_S}.items():
        since = new_key - span_s * 1000
        old_lo = np.searchsorted(old_key, since, side="left")
        old_hi = np.searchsorted(old_key, new_key, side="right")
        new_lo = np.searchsorted(new_key, since, side="left")
        if name == "prior_declines_10m":
            counts[name] = (old_cum[old_hi] - old_cum[old_lo]) + (new_cum[index] - new_cum[new_lo])
        else:
            counts[name] = (old_hi - old_lo) + (index - new_lo)
    order = np.argsort(np.concatenate([old_key, new_key]), kind="stable")
    return counts, order


def add_velocity(df: Any, kept: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """New payments (pandas) with the velocity columns, and the payments to keep.

    ``kept`` holds the earlier payments of these payments' customers: ``user_id``,
    ``time_ms`` and ``declined`` arrays (empty for none), grouped by customer and in time
    order within one. The payments to keep are the same arrays, old and new together in
    that order, without what is older than an hour before the newest.
    """
    import numpy as np
    import pandas as pd

    users = pd.Index(pd.unique(np.concatenate([kept["user_id"], df["user_id"].to_numpy()])))
    df["_code"] = users.get_indexer(df["user_id"])
    df["_ms"] = df["event_time"].to_numpy(dtype="datetime64[ms]").astype("int64")
    df = df.sort_values(["_code", "_ms"], kind="stable").reset_index(drop=True)
    old_codes = users.get_indexer(kept["user_id"])
    new_declined = df["status"].isin(DECLINED_STATUSES).to_numpy(dtype="int64")
    counts, order = count_prior(
        old_codes,
        kept["time_ms"],
        kept["declined"],
        df["_code"].to_numpy(),
        df["_ms"].to_numpy(),
        new_declined,
    )
    times = np.concatenate([kept["time_ms"], df["_ms"].to_numpy()])[order]
    declined = np.concatenate([kept["declined"], new_declined])[order]
    user_ids = np.concatenate([kept["user_id"], df["user_id"].to_numpy()])[order]
    recent = times >= times.max() - KEEP_S * 1000
    for name in VELOCITY_COLUMNS:
        df[name] = counts[name].astype("int64")
    return df.drop(columns=["_code", "_ms"]), {
        "user_id": user_ids[recent],
        "time_ms": times[recent],
        "declined": declined[recent],
    }
