"""Simulate a population of card holders and their phones, produced to Kafka.

Each user has cards, a phone, a home city, a workplace, favourite merchants and habits;
payments happen where the phone is, and labelled scenarios are injected at their own rates
(impossible travel, malformed, late and out-of-order records, phones that report nothing,
and payments that do not fit the customer: amounts far above their habits, card testing,
account takeover).
By default four hours of payments precede the period (``--history``) and the period holds
three metric incidents: a surge of failed payments, a surge of reversals and an outage of
approvals (``--no-metric-incidents`` leaves them out). Every transaction and incident gets
a row in the Delta table ``ground_truth``. The same ``--seed`` gives the same records. See
``txwatch/simulator.py`` for the model.

    ./spark-submit.sh simulate [--users 1500] [--duration 60m] [--seed 7] ...
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from datetime import datetime

from jobs import utc_time
from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.errors import UserError, run_entry_point
from txwatch.infra.kafka_admin import ensure_topics
from txwatch.simulator import (
    DEMO_METRIC_INCIDENTS,
    SimulationParams,
    Simulator,
    iso,
    produce,
    write_ground_truth,
)

# The metrics detector's warm-up is 150 points (minutes): four hours leave it time.
DEFAULT_HISTORY_MIN = 240.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = SimulationParams()
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--users", type=int, default=d.users)
    parser.add_argument(
        "--duration",
        "--duration-min",
        dest="duration_min",
        type=_positive_duration_min,
        default=d.duration_min,
        help="simulated time: minutes, or with a unit: 90s, 45m, 2h (default %(default)s min)",
    )
    parser.add_argument("--count", type=int, default=None, help="stop after this many transactions")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="publish at most this many records per second (default: full speed)",
    )
    parser.add_argument(
        "--start",
        type=utc_time,
        default=iso(d.start),
        help="simulated start time, ISO-8601 (default %(default)s)",
    )
    parser.add_argument("--ping-interval-s", type=float, default=d.ping_interval_s)
    parser.add_argument(
        "--tx-per-hour",
        type=float,
        default=d.tx_per_hour,
        help="payments per user per active hour (default %(default)s)",
    )
    for name in (
        "impossible_travel_rate",
        "malformed_rate",
        "out_of_order_rate",
        "late_rate",
        "no_location_rate",
        "amount_outlier_rate",
        "card_testing_per_hour",
        "account_takeover_per_hour",
    ):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    parser.add_argument(
        "--fraud-rings",
        type=int,
        default=d.fraud_rings,
        help="rings of accounts sharing devices and shops in the period (default %(default)s)",
    )
    parser.add_argument(
        "--known-frauds",
        type=int,
        default=d.known_frauds,
        help="takeovers in the history whose device and shops the period repeats "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--pattern-repeats-per-hour",
        type=float,
        default=d.pattern_repeats_per_hour,
        help="repeats of a known fraud on other accounts per hour (default %(default)s)",
    )
    parser.add_argument(
        "--history",
        dest="history_min",
        type=parse_duration_min,
        default=DEFAULT_HISTORY_MIN,
        help="payments (no phones) for this long before --start, so the per-minute metric "
        "series have a past to learn from: the metrics detector alerts after 150 points "
        f"(default {DEFAULT_HISTORY_MIN:g} min; 0 for none)",
    )
    parser.add_argument(
        "--no-metric-incidents",
        action="store_true",
        help="do not inject the failed-payment surge, reversal surge and approval outage "
        "(they need a period of at least 50 minutes)",
    )
    parser.add_argument(
        "--phase",
        choices=("all", "history", "period"),
        default="all",
        help="publish only the payments before --start (history) or only the period from "
        "--start on (the same records as with all: the simulation runs whole, so the same "
        "--seed gives the same users and habits in both); `make demo` trains the model "
        "between the two (default %(default)s)",
    )
    parser.add_argument(
        "--no-ground-truth",
        action="store_true",
        help="do not write lake/ground_truth (no Spark needed)",
    )
    return parser.parse_args(argv)


def parse_duration_min(text: str) -> float:
    if text.strip() in ("0", "0m", "0s", "0h"):
        return 0.0
    return _positive_duration_min(text)


def _positive_duration_min(text: str) -> float:
    """``"90s"``, ``"45m"``, ``"2h"`` or plain minutes, as minutes."""
    units = {"s": 1 / 60, "m": 1.0, "h": 60.0}
    value, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "m")
    try:
        minutes = float(value) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 90s, 45m or 2h)") from None
    if minutes <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return minutes


def params_from_args(args: argparse.Namespace) -> SimulationParams:
    incidents = () if args.no_metric_incidents else DEMO_METRIC_INCIDENTS
    last_end = max((i.start_min + i.duration_min for i in incidents), default=0.0)
    if incidents and args.duration_min < last_end + SimulationParams.tail_s / 60.0:
        raise UserError(
            f"--duration {args.duration_min:g} min is too short for the metric incidents (they "
            f"end at minute {last_end:g} and payments stop 10 minutes before the end): use "
            "--duration 60 or more, or --no-metric-incidents"
        )
    return SimulationParams(
        seed=args.seed,
        users=args.users,
        duration_min=args.duration_min,
        max_transactions=args.count,
        start=args.start,
        ping_interval_s=args.ping_interval_s,
        tx_per_hour=args.tx_per_hour,
        impossible_travel_rate=args.impossible_travel_rate,
        malformed_rate=args.malformed_rate,
        out_of_order_rate=args.out_of_order_rate,
        late_rate=args.late_rate,
        no_location_rate=args.no_location_rate,
        amount_outlier_rate=args.amount_outlier_rate,
        card_testing_per_hour=args.card_testing_per_hour,
        account_takeover_per_hour=args.account_takeover_per_hour,
        fraud_rings=args.fraud_rings,
        known_frauds=args.known_frauds,
        pattern_repeats_per_hour=args.pattern_repeats_per_hour,
        history_min=args.history_min,
        metric_incidents=incidents,
    )


def in_phase(event_time: datetime, start: datetime, phase: str) -> bool:
    """Whether a label with this event time belongs to the ``--phase`` published."""
    if phase == "history":
        return event_time < start
    if phase == "period":
        return event_time >= start
    return True


def run(args: argparse.Namespace) -> int:
    conf = load_conf(args.conf)
    params = params_from_args(args)
    ensure_topics(conf)
    sim = Simulator(params, conf)
    started = time.monotonic()
    print(
        f"simulate: {params.users} users, {params.duration_min:g} simulated minutes from "
        f"{iso(params.start)}, seed {params.seed} -> Kafka {conf.kafka.bootstrap_servers}",
        flush=True,
    )

    def progress(sent: int) -> None:
        elapsed = time.monotonic() - started
        print(f"simulate: {sent:,} records sent ({sent / elapsed:,.0f}/s)", flush=True)

    records = sim.records()
    if args.phase == "history":
        records = itertools.takewhile(lambda item: item[0] < 0, records)
    elif args.phase == "period":
        records = (item for item in records if item[0] >= 0)
    sent = produce(records, conf.kafka.bootstrap_servers, args.rate, progress)
    elapsed = time.monotonic() - started
    print(f"simulate: sent {sent:,} records in {elapsed:.1f} s", flush=True)
    if args.phase != "all":
        print(f"simulate: published the {args.phase} only; counts of the whole simulation:")
    for name, count in sorted(sim.counts.items()):
        print(f"  {name:<32} {count:>10,}")
    if not args.no_ground_truth:
        truth = [t for t in sim.truth if in_phase(t.event_time, params.start, args.phase)]
        write_ground_truth(conf, truth)
        print(f"simulate: {len(truth):,} labels in {conf.table_path('ground_truth')}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("simulate", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
