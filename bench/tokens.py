"""Benchmark card tokenization: the JVM function against the old in-plan expression.

    .venv/bin/python -m bench.tokens [--rows 2000000] [--runs 3]
    (or: make bench-tokens BENCH_ARGS="--rows 500000")

Tokenizes ``--rows`` card numbers (written as in the simulator's JSON, with spaces) into
a ``noop`` sink, ``--runs`` times each way, and prints the best and median rows per second:

- ``txwatch_hmac_sha256``: today's ``udfs.privacy.card_token``, the Java function that reads
  the key from the executor's environment (the plan holds the variable's name);
- ``sha2 on pads``: what ``card_token`` was until the key was taken out of the plans,
  Spark's ``sha2`` twice over the key's HMAC pads written into the plan as literals
  (reproduced here for the comparison only: those literals give the key away).

Both digit-strip the card number the same way (``card_digits``); the check at the end
asserts they give the same tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import pyspark.sql.functions as F
from pyspark.sql import DataFrame

from tests.leaks import sha2_on_pads
from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.session import create_session
from udfs.privacy import card_token

KEY_VARIABLE = "TXWATCH_BENCH_TOKEN_KEY"
KEY = "txwatch-bench-token-key (not a secret)"


def timed(df: DataFrame, runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.monotonic()
        df.write.format("noop").mode("overwrite").save()
        seconds.append(time.monotonic() - started)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ[KEY_VARIABLE] = KEY  # before the JVM starts: its tasks read it
    spark = create_session(load_conf(DEFAULT_CONF), "bench-tokens")
    cards_df = (
        spark.range(args.rows)
        .select(
            F.format_string(
                "4%03d %04d %04d %04d",
                F.col("id") % 1000,
                F.floor(F.col("id") / 1000) % 10000,
                F.col("id") % 9973,
                F.col("id") % 7919,
            ).alias("card_number")
        )
        .cache()
    )
    print(f"bench-tokens: {cards_df.count():,} card numbers cached", flush=True)
    ways = {
        "txwatch_hmac_sha256 (key on the executor)": card_token(F.col("card_number"), KEY_VARIABLE),
        "sha2 on pads (key in the plan)": sha2_on_pads(F.col("card_number"), KEY.encode()),
    }
    for name, token in ways.items():
        seconds = timed(cards_df.select(token.alias("t")), args.runs)
        print(
            f"bench-tokens: {name}: best {args.rows / min(seconds):,.0f} rows/s, median "
            f"{args.rows / statistics.median(seconds):,.0f} rows/s ({args.runs} runs)",
            flush=True,
        )
    tokens = list(ways.values())
    differ = cards_df.filter(tokens[0] != tokens[1]).count()
    print(f"bench-tokens: tokens that differ between the two: {differ}", flush=True)
    spark.stop()
    return 0 if differ == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
