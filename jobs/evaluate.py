"""Summary of a run, or the NAB benchmark through the metrics detector.

    ./spark-submit.sh evaluate [--conf conf/local.yaml] [--check]
    ./spark-submit.sh evaluate nab --data DIR [--labels FILE] [--profiles FILE] --out OUT

Without a command: rows per table, alerts and detection quality against ``ground_truth``:
precision, recall and median delay per alert type and scenario, appended to the Delta
table ``evaluation`` (with the code and model versions), the model's PR-AUC and a figure
of its score distribution (``lake_root/evaluation_figures/``).
With ``--check`` the job exits 1 when impossible-travel precision or recall is below the
bar, an ``alert_id`` repeats, or a table holds something shaped like a full card number.

``nab``: replays every ``DIR/<category>/<name>.csv`` (``timestamp,value``) through a
metrics topic into the ``metric_points`` query, writes ``OUT/<category>/<name>.csv``
(``timestamp,value,anomaly_score,is_anomaly``) and, with ``--labels``
(``combined_windows.json``), prints the NAB score for each profile (``--profiles``,
default ``profiles.json`` beside the labels, else NAB's three). It starts the local broker
if none answers and stops it afterwards; its topics and lake are deleted at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from txwatch.evaluation import summarize
from txwatch.infra import tables
from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.errors import UserError, run_entry_point
from txwatch.infra.session import create_session
from txwatch.lake import read_pseudonymized, read_table, table_exists
from txwatch.quality import evaluate as evaluate_quality
from udfs.privacy import token_key_from_env


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
    commands = parser.add_subparsers(dest="command", metavar="{nab}")
    nab = commands.add_parser("nab", help="score the metrics detector on a NAB-format corpus")
    nab.add_argument("--data", required=True, type=Path, help="corpus: <category>/<name>.csv")
    nab.add_argument("--labels", type=Path, help="combined_windows.json: score the results")
    nab.add_argument("--profiles", type=Path, help="profiles.json (default: beside --labels)")
    nab.add_argument("--out", required=True, type=Path, help="where the scored files go")
    nab.add_argument("--conf", dest="nab_conf", default=None, help="YAML config")
    return parser.parse_args(argv)


def run_nab(args: argparse.Namespace) -> int:
    from txwatch.nab_eval import evaluate_nab

    conf = load_conf(args.nab_conf or args.conf)
    # Points that fail validation are quarantined with their Kafka key tokenized.
    token_key_from_env(conf.privacy.token_key_env)
    if not args.data.is_dir():
        raise UserError(f"--data {args.data}: not a directory")
    if args.labels is not None and not args.labels.is_file():
        raise UserError(f"--labels {args.labels}: no such file")
    profiles = args.profiles
    if profiles is None and args.labels is not None:
        beside = args.labels.parent / "profiles.json"
        profiles = beside if beside.is_file() else None
    evaluate_nab(
        lambda run_conf: create_session(run_conf, "evaluate-nab"),
        conf,
        args.data,
        args.out,
        args.labels,
        profiles,
    )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.command == "nab":
        return run_nab(args)
    conf = load_conf(args.conf)
    token_key_from_env(conf.privacy.token_key_env)  # truth's ids are tokenized to compare
    spark = create_session(conf, "evaluate")
    ok = summarize(spark, conf, args.min_precision, args.min_recall)
    if table_exists(spark, conf, tables.GROUND_TRUTH):
        evaluate_quality(
            spark,
            conf,
            read_table(spark, conf, tables.ALERTS),
            read_pseudonymized(spark, conf, tables.GROUND_TRUTH),
        )
    return 0 if ok or not args.check else 1


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("evaluate", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
