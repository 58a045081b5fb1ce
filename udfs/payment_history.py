"""Each payment's place in its customer's history: velocity and new tokens, one operator.

Two detectors need what a customer did just before a payment: the outlier model its
velocity (``udfs.velocity``: payments and declines in the last minutes and hour) and the
known-fraud matching its account's new tokens (``udfs.fraud_patterns``: merchants, devices
and places first used in the last ``similarity.new_window``). One
``transformWithStateInPandas`` operator keyed by a bucket of customers
(``udfs.bucket_state``) keeps both states, one value each per bucket, so a micro-batch of
payments makes one pass through Python and one state read and write per bucket for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyspark.sql.types as T
from pyspark.sql import DataFrame
from pyspark.sql.streaming.stateful_processor import StatefulProcessor, StatefulProcessorHandle

from udfs import fraud_patterns, velocity
from udfs.bucket_state import batch_rows, customer_bucket
from udfs.similarity import BehaviourTokens, behaviour_tokens

BUCKET_COLUMN = "payment_bucket"

OUTPUT_SCHEMA = T.StructType(
    [T.StructField(name, data_type) for name, data_type in velocity.PAYMENT_COLUMNS]
    + [
        T.StructField("tokens", T.ArrayType(T.StringType())),
        *[T.StructField(name, T.LongType()) for name in velocity.VELOCITY_COLUMNS],
        T.StructField("new_tokens", T.ArrayType(T.StringType())),
    ]
)
_OUTPUT_NAMES = [f.name for f in OUTPUT_SCHEMA.fields]


class PaymentHistory(StatefulProcessor):
    """Adds the velocity columns and ``new_tokens`` to each payment (see module doc)."""

    def __init__(self, new_s: float, habit_s: float) -> None:
        self.new_ms = int(new_s * 1000)
        self.habit_ms = int(habit_s * 1000)

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.recent_payments = handle.getValueState("recent_payments", velocity.STATE_SCHEMA)
        self.account_tokens = handle.getValueState("account_tokens", fraud_patterns.STATE_SCHEMA)

    def handleInputRows(  # noqa: N802 (Spark's API names)
        self,
        key: Any,
        rows: Iterator[Any],
        timerValues: Any,  # noqa: N803
    ) -> Iterator[Any]:
        df = batch_rows(rows, BUCKET_COLUMN)
        df, recent = velocity.add_velocity(df, _stored(self.recent_payments))
        df, tokens = fraud_patterns.add_new_tokens(
            df, _stored(self.account_tokens), self.new_ms, self.habit_ms
        )
        self.recent_payments.update((recent,))
        self.account_tokens.update((tokens,))
        yield df[_OUTPUT_NAMES]


def _stored(state: Any) -> bytes | None:
    return state.get()[0] if state.exists() else None


def payment_history_stream(
    payments_df: DataFrame, tokens: BehaviourTokens, new_s: float, habit_s: float
) -> DataFrame:
    """Streaming valid payments -> with ``tokens``, the velocity columns and ``new_tokens``."""
    return (
        payments_df.select(
            *[name for name, _ in velocity.PAYMENT_COLUMNS],
            behaviour_tokens(tokens).alias("tokens"),
            customer_bucket(BUCKET_COLUMN),
        )
        .groupBy(BUCKET_COLUMN)
        .transformWithStateInPandas(
            statefulProcessor=PaymentHistory(new_s, habit_s),
            outputStructType=OUTPUT_SCHEMA,
            outputMode="Append",
            timeMode="None",
        )
    )
