"""The streaming pipeline: Kafka -> bronze + quarantine, alerts, enriched transactions.

Runs the queries of ``txwatch.queries.PIPELINE`` (``ingest``, ``travel``,
``metric_windows``, ``metric_points``, ``payment_scoring``, ``alerts``, ``enrich``, and
``webhooks`` when the conf names a webhook; see each module for what it does).

    ./spark-submit.sh stream [--conf conf/local.yaml] [--available-now] [--duration '10 minutes']
"""

from __future__ import annotations

import argparse
import sys
import time

from txwatch.infra.config import DEFAULT_CONF, duration_s, load_conf
from txwatch.infra.errors import UserError, run_entry_point
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.infra.progress import ProgressRecorder, WatermarkBounds
from txwatch.infra.session import create_session
from txwatch.queries import PIPELINE
from txwatch.queries.base import QuerySpec, RunContext
from txwatch.queries.runner import QueryFailedError, run_available_now, run_continuously
from udfs.privacy import token_key_from_env

PROG = "stream"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh stream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    parser.add_argument(
        "--available-now", action="store_true", help="process what is in Kafka now, then stop"
    )
    parser.add_argument(
        "--duration",
        help="continuous mode: stop after this long (e.g. '10 minutes'); default: run until "
        "Ctrl-C or SIGTERM",
    )
    parser.add_argument(
        "--queries",
        help=f"comma-separated subset of the queries to run (default all: "
        f"{','.join(q.name for q in PIPELINE)}), e.g. 'travel' for the alert path alone",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-batch progress lines")
    return parser.parse_args(argv)


def select_queries(names: str | None) -> tuple[QuerySpec, ...]:
    """The queries of ``PIPELINE`` named in ``names`` (all when None), in pipeline order."""
    if not names:
        return PIPELINE
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    unknown = wanted - {q.name for q in PIPELINE}
    if unknown:
        raise UserError(
            f"unknown query {', '.join(sorted(unknown))}; the queries are "
            f"{', '.join(q.name for q in PIPELINE)}"
        )
    return tuple(q for q in PIPELINE if q.name in wanted)


def run(args: argparse.Namespace) -> int:
    conf = load_conf(args.conf)
    token_key_from_env(conf.privacy.token_key_env)  # stop now, in one line, without a key
    run_for_s = duration_s(args.duration) if args.duration else None
    # A query the conf does not ask for (webhooks without a URL) does not run.
    selected = select_queries(args.queries)
    queries = tuple(q for q in selected if q.enabled(conf))
    if args.queries and len(queries) < len(selected):
        off = ", ".join(q.name for q in selected if q not in queries)
        raise UserError(f"--queries names {off}, which {conf.source} does not turn on")
    if run_for_s is not None and args.available_now:
        raise UserError("--duration applies to continuous runs, not with --available-now")
    if conf.kafka.create_topics:
        ensure_topics(conf)
    spark = create_session(conf, "stream")
    recorder = ProgressRecorder(
        WatermarkBounds.from_conf(conf), quiet=args.quiet, buffer=not args.available_now
    )
    spark.streams.addListener(recorder)
    ctx = RunContext(spark, conf, available_now=args.available_now)
    s = conf.stream
    mode = (
        "available-now"
        if args.available_now
        else (
            f"continuous (triggers: travel {s.alert_trigger_interval}, alerts "
            f"{s.alert_table_trigger_interval}, ingest {s.trigger_interval}, payment_scoring "
            f"{s.scoring_trigger_interval}, enrich {s.enrich_trigger_interval}, metrics "
            f"{conf.metrics.trigger_interval})"
        )
    )
    print(
        f"stream: {mode}, queries {', '.join(q.name for q in queries)}, "
        f"Kafka {conf.kafka.bootstrap_servers}, lake {conf.lake_root}",
        flush=True,
    )
    started = time.monotonic()
    try:
        if args.available_now:
            run_available_now(ctx, queries)
        else:
            run_continuously(ctx, queries, recorder, run_for_s=run_for_s)
    except QueryFailedError:
        # Stop Spark first, so the one-line report is the last thing the user sees.
        spark.streams.removeListener(recorder)
        spark.stop()
        raise
    print(f"stream: done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_entry_point(PROG, lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
