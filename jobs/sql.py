"""Run SQL against the lake: every table under ``lake_root`` is a view named after it.

./spark-submit.sh sql "SELECT severity, count(*) FROM alerts GROUP BY severity"
./spark-submit.sh sql --file sql/impossible_travel_top.sql
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.config import DEFAULT_CONF, load_conf
from jobs.lake import register_views
from jobs.session import create_session


def split_statements(text: str) -> list[str]:
    """Statements separated by ``;`` (comment lines starting with ``--`` dropped)."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def main(argv: list[str] | None = None) -> int:
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
    text = Path(args.file).read_text() if args.file else args.query
    conf = load_conf(args.conf)
    spark = create_session(conf, "sql")
    views = register_views(spark, conf)
    if not views:
        print(f"sql: no tables under {conf.lake_root}; run the stream job first", file=sys.stderr)
        return 1
    for statement in split_statements(text):
        spark.sql(statement).show(args.limit, truncate=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
