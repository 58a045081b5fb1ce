"""Publish a k-anonymous release of the transactions, and report what it cost.

    ./spark-submit.sh anonymize [--conf conf/local.yaml] [--k N]

Reads ``transactions_enriched`` (and ``alerts``, for the sensitive attribute
``is_flagged``), drops every direct identifier, generalizes place, time, amount and
merchant category along the hierarchies of ``anonymize`` in the conf with Mondrian
partitioning until every combination is shared by at least k rows (``--k``, default
``anonymize.k``), suppresses what would need coarser values than allowed (at most
``anonymize.max_suppression`` of the rows), replaces ``transactions_anonymized`` and
appends a row to ``anonymization_report``: k reached, suppression, classes, information
loss (discernibility, NCP, and the NCP of the naive full-domain alternative) and the
distinct l-diversity of ``is_flagged``.
"""

from __future__ import annotations

import argparse
import sys
import time

from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.errors import run_entry_point
from txwatch.infra.session import create_session


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh anonymize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    parser.add_argument("--k", type=int, help="every class at least this large (default: conf)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from txwatch.anonymize import anonymize

    conf = load_conf(args.conf)
    spark = create_session(conf, "anonymize")
    started = time.monotonic()
    report = anonymize(spark, conf, args.k)
    print(
        f"anonymize: released {report.rows_released:,} of {report.rows_in:,} transactions in "
        f"{time.monotonic() - started:.0f} s: k {report.k_requested} requested, "
        f"{report.k_reached} reached; {report.classes:,} classes of "
        f"{report.average_class_size:.1f} rows on average; suppressed "
        f"{report.suppression_rate:.2%}; NCP {report.ncp:.3f}; "
        f"discernibility {report.discernibility:,.0f}; l-diversity of is_flagged "
        f"{report.l_diversity} ({report.l_diverse_share:.0%} of the classes hold both values)",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("anonymize", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
