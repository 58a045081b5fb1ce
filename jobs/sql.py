"""Run SQL against the lake: every table under ``lake_root`` is a view named after it.

./spark-submit.sh sql "SELECT severity, count(*) FROM alerts GROUP BY severity"
./spark-submit.sh sql --file sql/impossible_travel_top.sql
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.errors import UserError, run_entry_point
from txwatch.infra.session import create_session
from txwatch.lake import register_views, split_statements


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("sql", lambda: run(argv))


def run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh sql",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("query", nargs="?", help="SQL to run")
    parser.add_argument("--file", help="a .sql file to run instead")
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    parser.add_argument("--limit", type=int, default=50, help="rows to show (default %(default)s)")
    args = parser.parse_args(argv)
    if bool(args.query) == bool(args.file):
        parser.error("give either a query or --file")
    if args.file and not Path(args.file).is_file():
        raise UserError(f"no such file: {args.file} (saved queries are in sql/)")
    text = Path(args.file).read_text() if args.file else args.query
    conf = load_conf(args.conf)
    spark = create_session(conf, "sql")
    views = register_views(spark, conf)
    if not views:
        print(f"sql: no tables under {conf.lake_root}; run the stream job first", file=sys.stderr)
        return 1
    for statement in split_statements(text):
        result = spark.sql(statement)
        if result.columns:  # a query, not a statement such as DECLARE VARIABLE
            result.show(args.limit, truncate=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
