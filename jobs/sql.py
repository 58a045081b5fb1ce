"""Run SQL on the catalog: every table under ``lake_root`` by its name.

./spark-submit.sh sql "SELECT severity, count(*) FROM alerts GROUP BY severity"
./spark-submit.sh sql -f sql/impossible_travel_top.sql --format csv > top.csv

When a Thrift server answers (./spark-submit.sh thriftserver), the statements go to it and
the answer comes in about a second; otherwise this starts Spark itself (15-30 s).
Statements in a file are separated by ";"; each one that returns rows is shown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from txwatch.infra.config import DEFAULT_CONF, Conf, load_conf
from txwatch.infra.errors import UserError, run_entry_point
from txwatch.lake import split_statements
from txwatch.sql_client import FORMATS, connect_server, run_in_spark, run_on_server, show

DEFAULT_TABLE_ROWS = 50


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("sql", lambda: run(argv))


def run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh sql",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("query", nargs="?", help="SQL to run")
    parser.add_argument("-f", "--file", help="a .sql file to run instead")
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    parser.add_argument(
        "--format", choices=FORMATS, default="table", help="output (default %(default)s)"
    )
    parser.add_argument(
        "--limit",
        type=int,
        help=f"rows to show per statement (default {DEFAULT_TABLE_ROWS} for a table, all "
        "for csv and json)",
    )
    parser.add_argument(
        "--no-server",
        action="store_true",
        help="run in a Spark session of its own even when a Thrift server answers",
    )
    args = parser.parse_args(argv)
    if bool(args.query) == bool(args.file):
        parser.error("give either a query or --file")
    if args.file and not Path(args.file).is_file():
        raise UserError(f"no such file: {args.file} (saved queries are in sql/)")
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be >= 0")
    statements = split_statements(Path(args.file).read_text() if args.file else args.query)
    if not statements:
        raise UserError("no SQL statement given")
    limit = args.limit
    if limit is None and args.format == "table":
        limit = DEFAULT_TABLE_ROWS
    conf = load_conf(args.conf)
    started = time.monotonic()
    connection, why_not = (None, None) if args.no_server else connect_server(conf)
    if connection is not None:
        via = f"the Thrift server at {conf.catalog.thrift_host}:{conf.catalog.thrift_port}"
        shown = show(run_on_server(connection, statements, limit), args.format, sys.stdout)
    else:
        if why_not:
            print(f"sql: {why_not}; starting Spark here instead", file=sys.stderr, flush=True)
        via = "a Spark session of its own (start ./spark-submit.sh thriftserver for speed)"
        shown = _run_in_own_session(conf, statements, limit, args.format)
    if args.format == "table":
        print(
            f"sql: {shown} result(s) in {time.monotonic() - started:.1f} s, via {via}",
            file=sys.stderr,
        )
    return 0


def _run_in_own_session(conf: Conf, statements: list[str], limit: int | None, output: str) -> int:
    from txwatch.catalog import open_catalog, table_names

    spark = open_catalog(conf, "sql")
    return show(
        run_in_spark(spark, statements, limit, lambda: table_names(spark, conf)),
        output,
        sys.stdout,
    )


if __name__ == "__main__":
    sys.exit(main())
