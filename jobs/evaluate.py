"""Summary of a run: rows per table, alerts, detection quality against ``ground_truth``.

    ./spark-submit.sh evaluate [--conf conf/local.yaml] [--check]

With ``--check`` the job exits 1 when impossible-travel precision or recall is below the
bar, an ``alert_id`` repeats, or a table holds something shaped like a full card number.
"""

from __future__ import annotations

import argparse
import sys

from txwatch.evaluation import summarize
from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.errors import run_entry_point
from txwatch.infra.session import create_session


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the quality bar is not met")
    parser.add_argument("--min-precision", type=float, default=0.95)
    parser.add_argument("--min-recall", type=float, default=0.95)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    conf = load_conf(args.conf)
    spark = create_session(conf, "evaluate")
    ok = summarize(spark, conf, args.min_precision, args.min_recall)
    return 0 if ok or not args.check else 1


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("evaluate", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
