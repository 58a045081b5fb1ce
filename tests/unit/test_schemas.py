"""The declared table schemas are what the transforms that write the tables produce."""

from __future__ import annotations

import pyspark.sql.types as T
from delta.tables import DeltaTable

from tests.conftest import TEST_KEY_VARIABLE
from txwatch.infra import columns, tables
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


def comments(spark, path: str) -> dict[str, str | None]:
    schema = spark.read.format("delta").load(path).schema
    return {f.name: f.metadata.get("comment") for f in schema.fields}


def test_tables_carry_their_description_column_comments_and_writer(spark, conf):
    tables.ensure_table(spark, conf, tables.ALERTS)
    path = conf.table_path(tables.ALERTS)
    assert comments(spark, path) == {
        f.name: columns.comment(tables.ALERTS, f.name) for f in schemas.ALERTS.fields
    }
    detail = DeltaTable.forPath(spark, path).detail().first()
    assert detail.description == tables.TABLES[tables.ALERTS].description
    assert detail.properties["txwatch.written_by"].startswith("stream: query alerts")
    # Only the table updated in place has deletion vectors (delta-rs cannot read them).
    assert "delta.enableDeletionVectors" not in detail.properties
    tables.ensure_table(spark, conf, tables.TRANSACTIONS_ENRICHED)
    enriched = DeltaTable.forPath(spark, conf.table_path(tables.TRANSACTIONS_ENRICHED))
    assert enriched.detail().first().properties["delta.enableDeletionVectors"] == "true"

    # A table made before comments existed gets them, its rows untouched.
    old_path = conf.table_path(tables.EVALUATION)
    spark.createDataFrame([], schemas.EVALUATION).write.format("delta").save(old_path)
    assert set(comments(spark, old_path).values()) == {None}
    tables.ensure_table(spark, conf, tables.EVALUATION)
    assert comments(spark, old_path)["recall"] == "detected / labelled"
    assert None not in comments(spark, old_path).values()
    assert DeltaTable.forPath(spark, old_path).detail().first().description == (
        tables.TABLES[tables.EVALUATION].description
    )


def test_every_column_of_every_table_is_described():
    described = {
        (name, f.name): columns.comment(name, f.name)
        for name, spec in tables.TABLES.items()
        for f in spec.schema.fields
    }
    assert all(text.strip() for text in described.values())
    # No override for a column a table does not have (a typo would go unnoticed).
    assert set(columns.BY_TABLE) <= set(described)
