"""Replay: publish records from JSON Lines or CSV files to a Kafka topic.

Records go out unchanged (their event times stay in the record), in file order, at full
speed or at ``rate`` records per second, keyed by ``key_field``. CSV cells arrive as
strings (empty cells are left out); the stream job casts them. A line that is not valid
JSON, or not even valid UTF-8, is still sent byte for byte, so the job quarantines it with
a reason instead of it vanishing here.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

from txwatch.infra.config import Conf
from txwatch.infra.errors import UserError
from txwatch.infra.kafka_admin import ensure_topics

# How long a send may wait for the topic's metadata before failing (kafka-python's default
# is 60 s of silence); the topic exists by then, so this only trips on a broker outage.
MAX_BLOCK_MS = 10_000


def read_records(path: Path, file_format: str | None = None) -> Iterator[tuple[dict | None, bytes]]:
    """Yield ``(parsed record or None, value bytes)`` for each record in ``path``."""
    fmt = file_format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    with path.open("rb") as handle:
        if fmt == "csv":
            # surrogateescape keeps bytes that are not UTF-8 as they are, both ways.
            text = io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline="")
            for row in csv.DictReader(text):
                record = {k: v for k, v in row.items() if k and v not in (None, "")}
                value = json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogateescape")
                yield record, value
            return
        for line in handle:
            raw = line.strip()
            if not raw:
                continue
            try:
                parsed = json.loads(raw)
            except ValueError:  # not JSON, or not UTF-8
                parsed = None
            yield (parsed if isinstance(parsed, dict) else None), raw


def replay(
    paths: list[Path],
    topic: str,
    conf: Conf,
    key_field: str | None = None,
    rate: float | None = None,
    file_format: str | None = None,
    progress_every: int = 50_000,
) -> int:
    """Publish every record of ``paths`` to ``topic``; return how many were sent.

    A missing topic is created with the conf's ``kafka.partitions``.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    created = ensure_topics(conf, names=[topic])
    if created:
        print(f"replay: created topic {topic} ({conf.kafka.partitions} partitions)", flush=True)
    producer = KafkaProducer(
        bootstrap_servers=conf.kafka.bootstrap_servers,
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_block_ms=MAX_BLOCK_MS,
    )
    sent = 0
    try:
        # Fetch the topic's metadata now, so the first send does not eat into the rate.
        producer.partitions_for(topic)
        started = time.monotonic()
        for path in paths:
            for record, value in read_records(path, file_format):
                key = None
                if key_field and record is not None and record.get(key_field) is not None:
                    key = str(record[key_field]).encode("utf-8", "surrogateescape")
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
    except KafkaError as err:
        raise UserError(
            f"could not publish to topic {topic} at {conf.kafka.bootstrap_servers} after "
            f"{sent:,} records: {err}"
        ) from err
    finally:
        producer.close()
    return sent
