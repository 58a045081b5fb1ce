"""Compact small files and vacuum old ones in every table the stream writes.

    ./spark-submit.sh maintain [--conf conf/local.yaml]

The continuous stream does this itself every ``delta.maintenance_interval``; run it by hand
after a large backfill, or from a scheduler when the stream runs elsewhere. Retention is
the table property ``delta.deletedFileRetentionDuration`` (conf ``delta.table_properties``).
"""

from __future__ import annotations

import argparse
import sys
import time

from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.errors import run_entry_point
from txwatch.infra.maintenance import maintain_tables
from txwatch.infra.session import create_session


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh maintain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    conf = load_conf(args.conf)
    spark = create_session(conf, "maintain")
    started = time.monotonic()
    for result in maintain_tables(spark, conf):
        files = f"{result.files_before:>6} -> {result.files_after:>6} files"
        print(f"maintain: {result.table:<26} {files}", flush=True)
    print(f"maintain: done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("maintain", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
