"""Table upkeep: small files compacted, removed files vacuumed after the retention."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

from txwatch.infra import tables
from txwatch.infra.maintenance import live_files, maintain_tables
from udfs import schemas


def test_maintain_compacts_small_files_and_keeps_every_row(spark, conf):
    # No auto compaction here, so the small files stay until maintenance.
    properties = {
        **conf.delta.table_properties,
        "delta.autoOptimize.autoCompact": "false",
        "delta.deletedFileRetentionDuration": "interval 0 hours",
    }
    conf = dataclasses.replace(
        conf, delta=dataclasses.replace(conf.delta, table_properties=properties)
    )
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        tables.ensure_table(spark, conf, tables.QUARANTINE)
        path = conf.table_path(tables.QUARANTINE)
        for batch in range(5):
            row = (
                "transactions",
                0,
                batch,
                datetime(2026, 1, 5),
                None,
                "x",
                "malformed_json",
                None,
            )
            spark.createDataFrame([row], schemas.QUARANTINE).write.format("delta").mode(
                "append"
            ).save(path)
        assert live_files(spark, path) == 5

        results = {r.table: r for r in maintain_tables(spark, conf, (tables.QUARANTINE,))}

        result = results[tables.QUARANTINE]
        assert (result.files_before, result.files_after) == (5, 1)
        assert spark.read.format("delta").load(path).count() == 5
        # The five original files were removed from the table and, past the (zero)
        # retention, deleted from storage.
        parquet = list(Path(path).glob("*.parquet"))
        assert len(parquet) == 1
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")
