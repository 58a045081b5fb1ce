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
    """The statements of a SQL script: split at each ``;`` outside quotes ('', "", ``) and
    comments (``--`` to the end of the line, ``/* */``); comments dropped."""
    statements, current = [], []
    i, quote = 0, ""
    while i < len(text):
        char, pair = text[i], text[i : i + 2]
        if quote:
            current.append(char)
            if char == "\\" and quote != "`":  # Spark's string escape: \' is a quote
                current.append(text[i + 1 : i + 2])
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
            current.append(char)
        elif pair == "--":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif pair == "/*":
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
            current.append(" ")
            continue
        elif char == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current))
    return [statement.strip() for statement in statements if statement.strip()]
