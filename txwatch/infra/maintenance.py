"""Table upkeep: compact small files and delete files no version needs any more.

Streaming writers commit a few small files per micro-batch. Auto compaction (a table
property, see ``delta`` in conf/base.yaml) merges them after the writer's own commits;
``OPTIMIZE`` does it for whatever is left, and ``VACUUM`` deletes files that were removed
from the table longer ago than the table's ``delta.deletedFileRetentionDuration``.

The continuous stream vacuums every ``delta.maintenance_interval`` (safe next to running
writers). ``./spark-submit.sh maintain`` also compacts; an OPTIMIZE that rewrites files a
running MERGE also changes makes one of the two fail, so run it while the stream is
stopped, or accept that it may have to be retried.
"""

from __future__ import annotations

from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from txwatch.infra.config import Conf
from txwatch.infra.tables import STREAM_TABLES


@dataclass(frozen=True)
class MaintenanceResult:
    table: str
    files_before: int
    files_after: int


def live_files(spark: SparkSession, path: str) -> int:
    detail = DeltaTable.forPath(spark, path).detail().collect()[0]
    return int(detail.numFiles)


def maintain_tables(
    spark: SparkSession,
    conf: Conf,
    tables: tuple[str, ...] = STREAM_TABLES,
    compact: bool = True,
) -> list[MaintenanceResult]:
    """Compact (if ``compact``) and vacuum ``tables``; return live file counts per table."""
    results = []
    for table in tables:
        path = conf.table_path(table)
        if not DeltaTable.isDeltaTable(spark, path):
            continue
        before = live_files(spark, path)
        delta_table = DeltaTable.forPath(spark, path)
        if compact:
            delta_table.optimize().executeCompaction()
        # No argument: the table's own delta.deletedFileRetentionDuration applies.
        delta_table.vacuum()
        results.append(MaintenanceResult(table, before, live_files(spark, path)))
    return results
