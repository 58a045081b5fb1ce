"""Topics the job writes for itself (alerts, enrichment candidates): publish, read back.

Values are whole rows as JSON (``udfs.messages``). A message read back that does not parse
goes to ``quarantine`` with its reason, like a bad input record.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyspark.sql.functions as F
import pyspark.sql.types as T
from pyspark.sql import DataFrame

from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.delta import append_once
from udfs.messages import parse_messages, to_messages
from udfs.records import to_quarantine


def publish(df: DataFrame, conf: Conf, topic: str, key: str) -> None:
    """Send ``df``'s rows to ``topic`` as JSON, keyed by column ``key`` (at least once)."""
    (
        to_messages(df, key)
        .write.format("kafka")
        .options(**conf.kafka_options())
        .option("topic", topic)
        .save()
    )


@contextmanager
def valid_messages(
    batch_df: DataFrame,
    schema: T.StructType,
    required: tuple[str, ...],
    conf: Conf,
    writer_id: str,
    batch_id: int,
) -> Iterator[DataFrame]:
    """A micro-batch of messages -> its valid ones, as ``schema``'s columns and Kafka's.

    The invalid ones are appended to ``quarantine`` (idempotently, as ``writer_id``) first.
    The parsed batch is cached while the ``with`` block runs.
    """
    messages_df = parse_messages(batch_df, schema, required).persist()
    try:
        invalid_df = to_quarantine(messages_df, conf.privacy.token_key_env)
        if not invalid_df.isEmpty():
            append_once(invalid_df, conf, tables.QUARANTINE, writer_id, batch_id)
        yield messages_df.filter(F.col("quarantine_reason").isNull())
    finally:
        messages_df.unpersist()
