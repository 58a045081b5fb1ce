"""The declared table schemas are what the transforms that write the tables produce."""

from __future__ import annotations

import pyspark.sql.types as T

from tests.conftest import TEST_KEY_VARIABLE
from txwatch.infra import tables
from txwatch.queries import ingest, travel
from udfs import schemas
from udfs.records import RAW_KAFKA_SCHEMA
from udfs.travel import impossible_travel_alerts, nearest_location_per_transaction


def shape(schema: T.StructType) -> list[tuple[str, str]]:
    return [(f.name, f.dataType.simpleString()) for f in schema.fields]


def test_every_stream_table_has_the_declared_schema(spark, conf):
    raw_df = spark.createDataFrame([], RAW_KAFKA_SCHEMA)
    outputs = ingest.build(ingest.parse_batch(raw_df, conf), TEST_KEY_VARIABLE)
    assert shape(outputs.bronze_transactions_df.schema) == shape(schemas.BRONZE_TRANSACTIONS)
    assert shape(outputs.bronze_device_locations_df.schema) == shape(
        schemas.BRONZE_DEVICE_LOCATIONS
    )
    assert shape(outputs.quarantine_df.schema) == shape(schemas.QUARANTINE)

    metrics_df = travel.build_pairs(
        outputs.bronze_transactions_df, outputs.bronze_device_locations_df, conf
    )
    assert shape(nearest_location_per_transaction(metrics_df).schema) == shape(
        schemas.TRANSACTIONS_ENRICHED
    )
    alerts_df = impossible_travel_alerts(metrics_df, conf.impossible_travel)
    assert shape(alerts_df.schema) == shape(schemas.ALERTS)


def test_tables_are_created_from_the_declared_schemas_and_gain_new_columns(spark, conf):
    tables.ensure_tables(spark, conf)
    for name in tables.STREAM_TABLES:
        df = spark.read.format("delta").load(conf.table_path(name))
        assert shape(df.schema) == shape(tables.TABLES[name].schema), name
        assert df.count() == 0
    # A lake written by an older version: pipeline_progress without the watermark columns.
    path = conf.table_path(tables.PIPELINE_PROGRESS)
    old = T.StructType(schemas.PIPELINE_PROGRESS.fields[:-2])
    spark.createDataFrame([], old).write.format("delta").mode("overwrite").option(
        "overwriteSchema", "true"
    ).save(path)
    tables.ensure_tables(spark, conf)
    df = spark.read.format("delta").load(path)
    assert shape(df.schema) == shape(schemas.PIPELINE_PROGRESS)
