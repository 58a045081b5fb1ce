"""Replay: publish records from JSON Lines or CSV files to a Kafka topic.

Records go out unchanged (their event times stay in the record), in file order, at full
speed or at ``--rate`` records per second, keyed by ``--key-field``. Use it to backfill or to
feed real data to the stream job.

    ./spark-submit.sh replay --topic transactions --key-field user_id data/tx.jsonl
    python -m jobs.replay --topic device-locations --key-field device_id --rate 500 fixes.csv

CSV cells arrive as strings (empty cells are left out); the stream job casts them. A line
that is not valid JSON is still sent as it is, so the job quarantines it with a reason
instead of it vanishing here.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from jobs.config import DEFAULT_CONF, load_conf


def read_records(path: Path, file_format: str | None = None) -> Iterator[tuple[dict | None, bytes]]:
    """Yield ``(parsed record or None, value bytes)`` for each record in ``path``."""
    fmt = file_format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    with path.open(newline="" if fmt == "csv" else None, encoding="utf-8") as handle:
        if fmt == "csv":
            for row in csv.DictReader(handle):
                record = {k: v for k, v in row.items() if k and v not in (None, "")}
                yield record, json.dumps(record).encode("utf-8")
            return
        for line in handle:
            text = line.strip()
            if not text:
                continue
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            yield (parsed if isinstance(parsed, dict) else None), text.encode("utf-8")


def replay(
    paths: list[Path],
    topic: str,
    bootstrap_servers: str,
    key_field: str | None = None,
    rate: float | None = None,
    file_format: str | None = None,
    progress_every: int = 50_000,
) -> int:
    """Publish every record of ``paths`` to ``topic``; return how many were sent."""
    from kafka import KafkaProducer

    from jobs.kafka_admin import wait_for_broker

    wait_for_broker(bootstrap_servers)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", linger_ms=20, batch_size=512 * 1024
    )
    sent = 0
    started = time.monotonic()
    try:
        for path in paths:
            for record, value in read_records(path, file_format):
                key = None
                if key_field and record is not None and record.get(key_field) is not None:
                    key = str(record[key_field]).encode("utf-8")
                producer.send(topic, key=key, value=value)
                sent += 1
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                if sent % progress_every == 0:
                    elapsed = time.monotonic() - started
                    print(f"replay: {sent:,} records ({sent / elapsed:,.0f}/s)", flush=True)
        producer.flush()
    finally:
        producer.close()
    return sent


def main(argv: list[str] | None = None) -> int:
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
    conf = load_conf(args.conf)
    started = time.monotonic()
    sent = replay(
        args.files, args.topic, conf.kafka.bootstrap_servers, args.key_field, args.rate, args.format
    )
    print(
        f"replay: sent {sent:,} records to {args.topic} in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
