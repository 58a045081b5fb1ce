"""Replay: publish records from JSON Lines or CSV files to a Kafka topic.

Records go out unchanged (their event times stay in the record), in file order, at full
speed or at ``--rate`` records per second, keyed by ``--key-field``. Use it to backfill or to
feed real data to the stream job. A missing topic is created with the conf's partitions.

    ./spark-submit.sh replay --topic transactions --key-field user_id data/tx.jsonl
    python -m jobs.replay --topic device-locations --key-field device_id --rate 500 fixes.csv

CSV cells arrive as strings (empty cells are left out); the stream job casts them. A line
that is not valid JSON (or not valid UTF-8) is still sent as it is, so the job quarantines
it with a reason instead of it vanishing here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.errors import run_entry_point
from txwatch.replay import replay


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", type=Path, help="JSON Lines (.jsonl/.json) or .csv")
    parser.add_argument("--topic", required=True, help="Kafka topic to publish to")
    parser.add_argument("--key-field", help="record field whose value becomes the Kafka key")
    parser.add_argument("--rate", type=float, help="records per second (default: full speed)")
    parser.add_argument("--format", choices=("jsonl", "csv"), help="default: from the extension")
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    return args


def run(args: argparse.Namespace) -> int:
    conf = load_conf(args.conf)
    started = time.monotonic()
    sent = replay(args.files, args.topic, conf, args.key_field, args.rate, args.format)
    print(
        f"replay: sent {sent:,} records to {args.topic} in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("replay", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
