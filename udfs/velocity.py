"""Velocity: how many payments (and declines) a customer made just before this one.

For a payment at time t: ``prior_payments_10m`` and ``prior_declines_10m``, the customer's
other payments (declined ones) with an event time in [t - 10 min, t], and
``prior_payments_1h`` the same over the hour. Training computes them over the history with
window functions (``with_velocity``); the stream keeps each customer's last hour of
payments in state (``VelocityCounter``, a ``transformWithStateInPandas`` processor keyed by
``user_id``) and counts the same way, so a payment sees the same numbers in both as long as
the earlier payments arrived before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyspark.sql.functions as F
import pyspark.sql.types as T
from pyspark.sql import DataFrame, Window, WindowSpec
from pyspark.sql.streaming.stateful_processor import StatefulProcessor, StatefulProcessorHandle

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
# Per customer: the event times (epoch ms, sorted) of their last hour of payments, and
# whether each was declined.
STATE_SCHEMA = T.StructType(
    [T.StructField("times_ms", T.BinaryType()), T.StructField("declined", T.BinaryType())]
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


def count_prior(
    old_ms: Any, old_declined: Any, new_ms: Any, new_declined: Any
) -> tuple[dict[str, Any], Any, Any]:
    """Velocity of each new payment (in ``new_ms`` order, sorted) against the kept ones and
    the new ones before it; and the merged, pruned state (times, declined)."""
    import numpy as np

    counts: dict[str, Any] = {}
    old_cum = np.concatenate([[0], np.cumsum(old_declined)])
    new_cum = np.concatenate([[0], np.cumsum(new_declined)])
    index = np.arange(len(new_ms))
    for name, span_s in {**WINDOWS_S, "prior_declines_10m": DECLINES_WINDOW_S}.items():
        since = new_ms - span_s * 1000
        old_lo = np.searchsorted(old_ms, since, side="left")
        old_hi = np.searchsorted(old_ms, new_ms, side="right")
        new_lo = np.searchsorted(new_ms, since, side="left")
        if name == "prior_declines_10m":
            counts[name] = (old_cum[old_hi] - old_cum[old_lo]) + (new_cum[index] - new_cum[new_lo])
        else:
            counts[name] = (old_hi - old_lo) + (index - new_lo)
    times = np.concatenate([old_ms, new_ms])
    declined = np.concatenate([old_declined, new_declined])
    order = np.argsort(times, kind="stable")
    times, declined = times[order], declined[order]
    keep = times >= times[-1] - KEEP_S * 1000
    return counts, times[keep], declined[keep]


class VelocityCounter(StatefulProcessor):
    """Counts each payment's prior payments and declines per customer (see module doc)."""

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.state = handle.getValueState("recent_payments", STATE_SCHEMA)

    def handleInputRows(  # noqa: N802 (Spark's API names)
        self,
        key: Any,
        rows: Iterator[Any],
        timerValues: Any,  # noqa: N803
    ) -> Iterator[Any]:
        import numpy as np
        import pandas as pd

        frames = list(rows)
        df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        df = df.sort_values("event_time", kind="stable").reset_index(drop=True)
        new_ms = df["event_time"].to_numpy(dtype="datetime64[ms]").astype("int64")
        new_declined = df["status"].isin(DECLINED_STATUSES).to_numpy(dtype="int64")
        stored = self.state.get() if self.state.exists() else None
        if stored is not None:
            old_ms = np.frombuffer(bytes(stored[0]), dtype="int64")
            old_declined = np.frombuffer(bytes(stored[1]), dtype="int8").astype("int64")
        else:
            old_ms = np.empty(0, dtype="int64")
            old_declined = np.empty(0, dtype="int64")
        counts, times, declined = count_prior(old_ms, old_declined, new_ms, new_declined)
        self.state.update((times.tobytes(), declined.astype("int8").tobytes()))
        for name in VELOCITY_COLUMNS:
            df[name] = counts[name].astype("int64")
        yield df[[f.name for f in OUTPUT_SCHEMA.fields]]


def velocity_stream(payments_df: DataFrame) -> DataFrame:
    """Streaming payments with the velocity columns (a stateful operator per customer)."""
    return (
        payments_df.select(*[name for name, _ in PAYMENT_COLUMNS])
        .groupBy("user_id")
        .transformWithStateInPandas(
            statefulProcessor=VelocityCounter(),
            outputStructType=OUTPUT_SCHEMA,
            outputMode="Append",
            timeMode="None",
        )
    )
