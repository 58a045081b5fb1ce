"""Train the outlier model on past payments and register it.

    ./spark-submit.sh train [--conf conf/local.yaml] [--since 2026-01-05T07:00Z] [--until ...]

Reads the valid transactions of ``bronze_transactions`` with an event time in
``[--since, --until)`` (default: all), writes every customer's profile (sums of their
payments: amounts, hours, places, categories, devices) to ``customer_profiles``, fits the
pipeline of ``txwatch/model.py`` with each payment judged against its customer's other
payments, calibrates the threshold on those scores, and logs the run (parameters, window,
metrics, the Spark model, the profiles' Delta version) to the MLflow registry of
``model.registry_uri`` as a new version of ``model.name``. A running stream picks it up
within ``model.refresh_interval``.
"""

from __future__ import annotations

import argparse
import sys
import time

from jobs import utc_time
from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.errors import UserError, run_entry_point
from txwatch.infra.session import create_session
from udfs.privacy import token_key_from_env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    parser.add_argument("--since", type=utc_time, help="first event time (ISO-8601, with zone)")
    parser.add_argument("--until", type=utc_time, help="end of the window (exclusive)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from txwatch.training import train

    if args.since and args.until and args.since >= args.until:
        raise UserError("--since must be before --until")
    conf = load_conf(args.conf)
    token_key_from_env(conf.privacy.token_key_env)  # it tokenizes the ids it reads
    spark = create_session(conf, "train")
    started = time.monotonic()
    result = train(spark, conf, args.since, args.until)
    print(
        f"train: registered {conf.model.name} version {result.version} in "
        f"{time.monotonic() - started:.0f} s: {result.summary()}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("train", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
