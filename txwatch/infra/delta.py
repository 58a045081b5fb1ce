"""Writing Delta tables from ``foreachBatch``: exactly once across crashes and restarts."""

from __future__ import annotations

import pyspark.sql.functions as F
from pyspark.sql import DataFrame

from txwatch.infra.config import Conf


def append_once(df: DataFrame, conf: Conf, table: str, writer_id: str, batch_id: int) -> None:
    """Append ``df`` to ``table`` unless micro-batch ``batch_id`` of ``writer_id`` already did.

    Delta records ``txnAppId``/``txnVersion`` in the same commit as the data, so a batch
    replayed after a crash is skipped. ``writer_id`` must be stable across restarts and
    unique per (query, table).

    A micro-batch writes at most ``spark.shuffle_partitions`` files per table: its input
    may have a partition per Kafka partition and topic, and every file costs a write task
    (with its statistics code) now and a file to list and compact later.
    """
    (
        df.coalesce(conf.spark.shuffle_partitions)
        .write.format("delta")
        .mode("append")
        .option("txnAppId", f"txwatch-{writer_id}-{table}")
        .option("txnVersion", batch_id)
        .save(conf.table_path(table))
    )


def event_time_range(df: DataFrame, column: str = "event_time", alias: str = "t") -> str | None:
    """A SQL predicate on ``<alias>.<column>`` covering ``df``'s values (None if ``df`` is empty).

    MERGE only skips target files by predicates on the target alone, so each MERGE names
    the batch's event-time range: files of other hours and days are not even opened.
    """
    fmt = "yyyy-MM-dd HH:mm:ss.SSSSSS"
    bounds = df.agg(
        F.date_format(F.min(column), fmt).alias("first"),
        F.date_format(F.max(column), fmt).alias("last"),
    ).collect()[0]
    if bounds.first is None:
        return None
    return f"{alias}.{column} BETWEEN TIMESTAMP'{bounds.first}' AND TIMESTAMP'{bounds.last}'"
