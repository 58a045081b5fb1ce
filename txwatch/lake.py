"""Reading the lake: each table under ``lake_root`` as a DataFrame or a SQL view."""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from txwatch.infra import tables
from txwatch.infra.config import Conf
from udfs.privacy import pseudonymize


def table_exists(spark: SparkSession, conf: Conf, table: str) -> bool:
    return DeltaTable.isDeltaTable(spark, conf.table_path(table))


def read_table(spark: SparkSession, conf: Conf, table: str) -> DataFrame:
    if not table_exists(spark, conf, table):
        raise FileNotFoundError(
            f"no Delta table {table!r} at {conf.table_path(table)}: run the stream job first"
        )
    return spark.read.format("delta").load(conf.table_path(table))


def read_pseudonymized(spark: SparkSession, conf: Conf, table: str) -> DataFrame:
    """A table that holds identifiers in the clear (the bronze tables, ``ground_truth``) as
    every other table holds them: tokenized (``udfs.privacy.pseudonymize``). What a job
    derives from it then matches what the stream writes, and names no one."""
    return pseudonymize(read_table(spark, conf, table), conf.privacy.token_key_env)


def register_views(spark: SparkSession, conf: Conf) -> list[str]:
    """Make every existing table queryable by name in SQL (``SELECT * FROM alerts``)."""
    registered = []
    for table in tables.ALL_TABLES:
        if table_exists(spark, conf, table):
            read_table(spark, conf, table).createOrReplaceTempView(table)
            registered.append(table)
    return registered


def split_statements(text: str) -> list[str]:
    """Statements separated by ``;`` (comment lines starting with ``--`` dropped)."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
