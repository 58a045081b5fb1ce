"""Records the pipeline passes to itself through Kafka: JSON values keyed by an id.

Timestamps keep their microseconds (Spark's JSON default keeps milliseconds), so a row read
back equals the row sent.
"""

from __future__ import annotations

import pyspark.sql.functions as F
import pyspark.sql.types as T
from pyspark.sql import DataFrame

from udfs.records import KAFKA_COLUMNS

JSON_OPTIONS = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"}


def to_messages(df: DataFrame, key: str) -> DataFrame:
    """``df``'s rows as Kafka ``key``/``value`` pairs: the value is the whole row as JSON."""
    return df.select(
        F.col(key).cast("string").alias("key"),
        F.to_json(F.struct(*[F.col(c) for c in df.columns]), JSON_OPTIONS).alias("value"),
    )


def parse_messages(raw_df: DataFrame, schema: T.StructType, required: tuple[str, ...]) -> DataFrame:
    """Kafka rows (``records.with_kafka_columns``) -> ``schema``'s columns and the Kafka columns.

    ``quarantine_reason`` names what is wrong with a message that is not JSON or lacks a
    ``required`` field (null when the message is valid), as ``records.to_quarantine`` expects.
    """
    message = F.from_json(F.col("raw_value"), schema, JSON_OPTIONS)
    problems = [F.when(F.col(f"_m.{name}").isNull(), F.lit(f"{name} missing")) for name in required]
    reason = F.when(F.col("_m").isNull(), F.lit("not a JSON object")).otherwise(
        F.nullif(F.concat_ws("; ", *problems), F.lit(""))
    )
    return raw_df.withColumn("_m", message).select(
        *KAFKA_COLUMNS,
        "kafka_key",
        "raw_value",
        *[F.col(f"_m.{f.name}").alias(f.name) for f in schema.fields],
        reason.alias("quarantine_reason"),
    )
