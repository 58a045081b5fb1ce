"""Running SQL on the catalog and showing the answer: through a running Thrift server when
one answers (about a second), else in a Spark session of our own.

Both paths return ``Result``s of plain Python values, shown the same way (a table, CSV or
JSON lines), so an answer does not depend on which path gave it.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import getpass
import io
import json
import math
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from txwatch.infra.config import Conf
from txwatch.infra.errors import UserError

# The database property naming the lake its tables were registered from (txwatch.catalog).
LAKE_ROOT_PROPERTY = "txwatch.lake_root"

FORMATS = ("table", "csv", "json")
_JAVA_EXCEPTION = re.compile(r"\b(?:[a-z]\w*\.)+[A-Z]\w*(?:Exception|Error): ?")
_NOT_FOUND = re.compile(r"TABLE_OR_VIEW_NOT_FOUND\]\s*The table or view (\S+) cannot be found")


@dataclass(frozen=True)
class Result:
    """The answer to one statement: its columns and (up to the limit) its rows."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows than the limit


def server_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def recorded_lake_root(describe_database: Sequence[Sequence[Any]]) -> str | None:
    """The ``lake_root`` a database's tables were registered from, read from the rows of
    ``DESCRIBE DATABASE EXTENDED`` (None: not recorded)."""
    properties = next((r[1] for r in describe_database if r[0] == "Properties"), "") or ""
    found = re.search(rf"\({re.escape(LAKE_ROOT_PROPERTY)},(.*?)\)(?:, \(|\)$)", properties)
    return found.group(1) if found else None


def connect_server(conf: Conf) -> tuple[Any, str | None]:
    """A connection to the Thrift server at ``catalog.thrift_host:thrift_port`` if it
    serves this config's lake, else None and why not (None and None: no server runs)."""
    from pyhive import hive
    from thrift.transport.TTransport import TTransportException

    catalog = conf.catalog
    if not server_answers(catalog.thrift_host, catalog.thrift_port):
        return None, None
    where = f"the Thrift server at {catalog.thrift_host}:{catalog.thrift_port}"
    try:
        connection = hive.connect(
            host=catalog.thrift_host,
            port=catalog.thrift_port,
            database=catalog.database,
            username=getpass.getuser(),
        )
        cursor = connection.cursor()
        cursor.execute(f"DESCRIBE DATABASE EXTENDED {catalog.database}")
        recorded = recorded_lake_root(cursor.fetchall())
    except (TTransportException, OSError, EOFError) as err:
        return None, f"{where} refused the connection ({err or type(err).__name__})"
    except Exception as err:
        return None, f"{where} cannot serve the catalog: {_server_message(err)[:200]}"
    if recorded != conf.lake_root:
        connection.close()
        return None, f"{where} serves another lake, not {conf.lake_root}"
    return connection, None


def run_on_server(
    connection: Any, statements: Sequence[str], limit: int | None
) -> Iterator[Result]:
    """Run ``statements`` in the server session ``connection`` (``connect_server``), then
    close it."""
    from pyhive import exc

    try:
        cursor = connection.cursor()
        for statement in statements:
            try:
                cursor.execute(statement)
            except exc.OperationalError as err:
                raise _sql_error(_server_message(err), lambda: _server_tables(cursor)) from None
            if cursor.description is None:
                continue
            columns = [d[0] for d in cursor.description]
            rows = cursor.fetchmany(limit + 1) if limit is not None else cursor.fetchall()
            if columns == ["Result"] and not rows:
                # A statement without a result (DECLARE VARIABLE, SET...): the server
                # answers with an empty "Result" column where Spark gives no columns.
                continue
            yield _result(columns, rows, limit)
    finally:
        connection.close()


def run_in_spark(
    spark: Any, statements: Sequence[str], limit: int | None, tables: Callable[[], list[str]]
) -> Iterator[Result]:
    """Run ``statements`` in ``spark`` (a session on the catalog)."""
    from pyspark.errors import PySparkException

    for statement in statements:
        try:
            df = spark.sql(statement)
            if not df.columns:
                continue
            df = _as_the_server_sends(df)
            rows = df.limit(limit + 1).collect() if limit is not None else df.collect()
        except PySparkException as err:
            raise _sql_error(str(err), tables) from None
        yield _result(df.columns, [tuple(r) for r in rows], limit)


def _as_the_server_sends(df: Any) -> Any:
    """``df`` with the values the Thrift server sends as text made text the same way:
    timestamps in the session's time zone (Python would convert them to the local one),
    maps (sorted by key), arrays and structs as JSON."""
    import pyspark.sql.functions as F
    import pyspark.sql.types as T

    columns = []
    for field in df.schema.fields:
        column = F.col(f"`{field.name}`")
        if isinstance(field.dataType, T.TimestampType | T.TimestampNTZType):
            column = column.cast("string")
        elif isinstance(field.dataType, T.MapType):
            # The server writes a map's entries sorted by key.
            column = F.to_json(F.map_from_entries(F.array_sort(F.map_entries(column))))
        elif isinstance(field.dataType, T.ArrayType | T.StructType):
            column = F.to_json(column)
        elif isinstance(field.dataType, T.BinaryType):
            column = F.base64(column)
        columns.append(column.alias(field.name))
    return df.select(*columns)


def _result(columns: list[str], rows: list[Any], limit: int | None) -> Result:
    truncated = limit is not None and len(rows) > limit
    kept = rows[:limit] if limit is not None else rows
    return Result(columns, [tuple(map(_plain, r)) for r in kept], truncated)


def _plain(value: Any) -> Any:
    """One value as both paths give it: timestamps as Spark writes them (PyHive turns the
    server's text into datetimes), dates and decimals as text."""
    if isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return f"{text}.{value.microsecond:06d}".rstrip("0") if value.microsecond else text
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def _server_message(err: Exception) -> str:
    status = getattr(err.args[0], "status", None) if err.args else None
    return getattr(status, "errorMessage", None) or str(err)


def _server_tables(cursor: Any) -> list[str]:
    cursor.execute("SHOW TABLES")
    return sorted(row[1] for row in cursor.fetchall())


def _sql_error(message: str, tables: Callable[[], list[str]]) -> UserError:
    """A clear error: an unknown table lists the tables there are."""
    if found := _NOT_FOUND.search(message):
        names = tables()
        there = ", ".join(names) if names else "none yet: run the stream job first"
        return UserError(f"no table or view {found.group(1)} in the catalog; tables: {there}")
    # Spark's message without the Java exception names the server adds, up to the plan or
    # the SQL it quotes.
    text = _JAVA_EXCEPTION.sub("", message.removeprefix("Error running query: "))
    text = re.sub(r"(\[[A-Z_.]+\])\s+\1", r"\1", text)  # "[CLASS] [CLASS] message"
    lines: list[str] = []
    for line in text.strip().splitlines():
        if not line.strip() or line.startswith(("== SQL", "'", "+-", ":")):
            if lines:
                break
            continue
        if line.strip() not in lines:
            lines.append(line.strip())
    # The server repeats the error class alone on the first line: keep the line saying it.
    if len(lines) > 1 and re.fullmatch(r"\[[A-Z_.]+\]", lines[0]):
        lines = lines[1:]
    return UserError(f"the query failed: {' '.join(lines) or 'unknown error'}")


def show(results: Iterator[Result], output_format: str, out: io.TextIOBase | Any) -> int:
    """Print every result in ``output_format``; return how many were printed."""
    printed = 0
    for result in results:
        if output_format == "csv":
            if printed:
                print(file=out)  # a blank line between the results of two statements
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(result.columns)
            writer.writerows(result.rows)
        elif output_format == "json":
            for row in result.rows:
                values = [None if _is_nan_or_infinite(v) else v for v in row]
                print(json.dumps(dict(zip(result.columns, values, strict=True))), file=out)
        else:
            if printed:
                print(file=out)
            print(format_table(result), file=out)
        printed += 1
    return printed


def _is_nan_or_infinite(value: Any) -> bool:
    """JSON has no NaN or infinity: such a value is written as null."""
    return isinstance(value, float) and not math.isfinite(value)


def format_table(result: Result) -> str:
    """A readable table: aligned columns, numbers to the right, NULL for null."""
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [len(c) for c in result.columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        bool(result.rows)
        and all(isinstance(r[i], int | float) or r[i] is None for r in result.rows)
        and any(r[i] is not None for r in result.rows)
        for i in range(len(result.columns))
    ]

    def line(values: list[str]) -> str:
        padded = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ]
        return " | ".join(padded).rstrip()

    lines = [line(result.columns), "-+-".join("-" * w for w in widths)]
    lines += [line(row) for row in cells]
    count = len(result.rows)
    more = " shown; more not shown (--limit)" if result.truncated else ""
    lines.append(f"({count} row{'s' if count != 1 else ''}{more})")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        # Money and distances in full, six decimals at most; tiny and huge ones as Python
        # writes them.
        if not math.isfinite(value) or abs(value) >= 1e15 or 0 < abs(value) < 1e-4:
            return repr(value)
        return f"{value:.6f}".rstrip("0").rstrip(".")
    return str(value).replace("\n", " ")
