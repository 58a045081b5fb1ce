"""Each payment's place in its customer's history: velocity and new tokens, one operator.

Two detectors need what a customer did just before a payment: the outlier model its
velocity (``udfs.velocity``: payments and declines in the last minutes and hour) and the
known-fraud matching its account's new tokens (``udfs.fraud_patterns``: merchants, devices
and places first used in the last ``similarity.new_window``). One
``transformWithStateInPandas`` operator keyed by a bucket of customers
(``udfs.bucket_state``) keeps both in one map state by customer, so a micro-batch of
payments makes one pass through Python per bucket, and one state read and write per
customer of the batch: its cost follows the batch, not how many customers there are.

A customer's state is their last hour of payments and the tokens they used within
``similarity.habit_window`` of event time (both windows are applied to event times, as
before). A customer whose state has not changed for ``STATE_TTL_HABIT_WINDOWS`` habit
windows of processing time is forgotten (the map state's TTL), so the state holds the
customers active lately, not every customer ever seen. The TTL runs on processing time, so
it is longer than the habit window: a job stopped for up to a habit window (Kafka's
retention is usually shorter) catches up without forgetting anyone the habit window still
covers; after a longer stop such customers start over, their tokens new again.
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

# What a query that runs this operator must be started with (``RunContext.start``'s
# sql_conf). A TTL needs the operator's processing-time mode, in which Spark runs a
# micro-batch without new input after every micro-batch, to expire state: back to back,
# and an availableNow query never ends. Expired customers go at the next micro-batch with
# input instead.
QUERY_SQL_CONF = {"spark.sql.streaming.noDataMicroBatches.enabled": "false"}

STATE_TTL_HABIT_WINDOWS = 2

CUSTOMER_KEY_SCHEMA = T.StructType([T.StructField("user_id", T.StringType())])
# One customer's history: payments (event time in ms, declined) in time order, and tokens
# with the event times they were first and last used.
CUSTOMER_STATE_SCHEMA = T.StructType(
    [
        T.StructField("payment_ms", T.ArrayType(T.LongType())),
        T.StructField("payment_declined", T.ArrayType(T.BooleanType())),
        T.StructField("tokens", T.ArrayType(T.StringType())),
        T.StructField("token_first_ms", T.ArrayType(T.LongType())),
        T.StructField("token_last_ms", T.ArrayType(T.LongType())),
    ]
)


class PaymentHistory(StatefulProcessor):
    """Adds the velocity columns and ``new_tokens`` to each payment (see module doc)."""

    def __init__(self, new_s: float, habit_s: float) -> None:
        self.new_ms = int(new_s * 1000)
        self.habit_ms = int(habit_s * 1000)

    def init(self, handle: StatefulProcessorHandle) -> None:
        # TTL: processing time since the customer's state last changed (module doc); the
        # habit window is the longest either part looks back.
        ttl_ms = STATE_TTL_HABIT_WINDOWS * max(self.habit_ms, velocity.KEEP_S * 1000)
        self.customers = handle.getMapState(
            "customers", CUSTOMER_KEY_SCHEMA, CUSTOMER_STATE_SCHEMA, ttl_ms
        )

    def handleInputRows(  # noqa: N802 (Spark's API names)
        self,
        key: Any,
        rows: Iterator[Any],
        timerValues: Any,  # noqa: N803
    ) -> Iterator[Any]:
        df = batch_rows(rows, BUCKET_COLUMN)
        accounts = df["user_id"].unique().tolist()
        payments, known = unpack_customers(
            {account: self.customers.getValue((account,)) for account in accounts}
        )
        df, payments = velocity.add_velocity(df, payments)
        df, known = fraud_patterns.add_new_tokens(df, known, self.new_ms, self.habit_ms)
        for account, value in pack_customers(accounts, payments, known).items():
            if value is None:
                self.customers.removeKey((account,))
            else:
                self.customers.updateValue((account,), value)
        yield df[_OUTPUT_NAMES]


def unpack_customers(
    stored: dict[str, tuple[Any, ...] | None],
) -> tuple[dict[str, Any], fraud_patterns.KnownTokens]:
    """Customers' states (``CUSTOMER_STATE_SCHEMA`` rows, None for a new customer) -> the
    kept payments of ``velocity.add_velocity`` and the known tokens of
    ``fraud_patterns.add_new_tokens``."""
    import numpy as np

    user_ids: list[str] = []
    times: list[int] = []
    declined: list[bool] = []
    known: fraud_patterns.KnownTokens = {}
    for account, value in stored.items():
        if value is None:
            continue
        payment_ms, payment_declined, tokens, first_ms, last_ms = value
        user_ids.extend([account] * len(payment_ms))
        times.extend(payment_ms)
        declined.extend(payment_declined)
        for token, first, last in zip(tokens, first_ms, last_ms, strict=True):
            known[(account, token)] = [first, last]
    payments = {
        "user_id": np.array(user_ids, dtype=object),
        "time_ms": np.array(times, dtype="int64"),
        "declined": np.array(declined, dtype="int64"),
    }
    return payments, known


def pack_customers(
    accounts: list[str], payments: dict[str, Any], known: fraud_patterns.KnownTokens
) -> dict[str, tuple[list[Any], ...] | None]:
    """What to keep of each customer of the batch: a ``CUSTOMER_STATE_SCHEMA`` row, or None
    when nothing is left (then the customer is removed)."""
    parts: dict[str, tuple[list[Any], ...]] = {a: ([], [], [], [], []) for a in accounts}
    for account, t_ms, is_declined in zip(
        payments["user_id"].tolist(),
        payments["time_ms"].tolist(),
        payments["declined"].tolist(),
        strict=True,
    ):
        part = parts[account]
        part[0].append(t_ms)
        part[1].append(bool(is_declined))
    for (account, token), (first, last) in known.items():
        part = parts[account]
        part[2].append(token)
        part[3].append(first)
        part[4].append(last)
    return {a: (part if part[0] or part[2] else None) for a, part in parts.items()}


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
            # The map state's TTL runs on processing time (Spark allows TTL in no other mode).
            timeMode="ProcessingTime",
        )
    )
