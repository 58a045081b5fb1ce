"""Benchmark the k-anonymous release (Mondrian in Spark) on a million transactions.

    .venv/bin/python -m bench.anonymize [--rows 1000000] [--k 10] [--days 7]
    (or: make bench-anonymize BENCH_ARGS="--rows 200000")

Generates ``--rows`` payments in the simulator's world (12 cities, shops about 4 km around
each centre, the simulator's merchant categories and amounts, ``--days`` of event time,
0.5 % flagged), runs what ``./spark-submit.sh anonymize`` computes (Mondrian partitions,
generalization, suppression, the report and the full-domain comparison; nothing written)
and prints the time of each step, the driver JVM's peak RSS and the report.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime

import numpy as np
import pandas as pd

from bench.throughput import jvm_pid, peak_rss_mib
from txwatch.anonymize import PAYLOAD, full_domain_ncp, measure, release
from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.session import create_session
from txwatch.simulator import CATEGORIES, CITIES
from udfs.anonymity import DIMENSIONS, with_dimensions

START = datetime(2026, 1, 5)
METRES_PER_DEGREE = 111_320.0


def payments(rows: int, days: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    city = rng.integers(0, len(CITIES), rows)
    centres = np.array([(c[1], c[2]) for c in CITIES])[city]
    offset = rng.normal(0, 4000, (rows, 2)) / METRES_PER_DEGREE
    categories = np.array(list(CATEGORIES))
    category = rng.integers(0, len(categories), rows)
    mu = np.array([CATEGORIES[c][0] for c in categories])[category]
    sigma = np.array([CATEGORIES[c][1] for c in categories])[category]
    seconds = rng.uniform(0, days * 86400, rows)
    return pd.DataFrame(
        {
            "latitude": centres[:, 0] + offset[:, 0],
            "longitude": centres[:, 1] + offset[:, 1],
            "event_time": (pd.Timestamp(START) + pd.to_timedelta(seconds, unit="s")).floor("us"),
            "amount": np.round(rng.lognormal(mu, sigma), 2),
            "merchant_category": categories[category],
            "currency": "EUR",
            "status": "approved",
            "channel": "chip",
            "has_location": True,
            "is_flagged": rng.random(rows) < 0.005,
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.anonymize", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=None, help="default: anonymize.k of the conf")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--conf", default=str(DEFAULT_CONF))
    args = parser.parse_args(argv)

    conf = load_conf(args.conf)
    cfg = conf.anonymize
    k = args.k or cfg.k
    hierarchies = cfg.hierarchies()
    started = time.monotonic()
    data = payments(args.rows, args.days, args.seed)
    print(
        f"bench.anonymize: {len(data):,} payments generated in {time.monotonic() - started:.1f} s"
    )
    spark = create_session(conf, "bench-anonymize")
    pid = jvm_pid(spark)
    rows_df = (
        with_dimensions(spark.createDataFrame(data), hierarchies)
        .select(*DIMENSIONS, "_geohash", *PAYLOAD)
        .localCheckpoint()
    )
    rows = rows_df.count()
    rss_loaded = peak_rss_mib(pid)

    t0 = time.monotonic()
    released_df, suppressed, rounds = release(rows_df, k, hierarchies, cfg.min_location_precision)
    report = measure(released_df, rows, suppressed, k, rounds)
    t_mondrian = time.monotonic() - t0
    t1 = time.monotonic()
    level, naive = full_domain_ncp(rows_df, k, hierarchies, cfg.max_suppression)
    t_naive = time.monotonic() - t1
    print(
        f"\nbench.anonymize: {rows:,} transactions, k = {k}\n"
        f"  Mondrian: {rounds} rounds, {t_mondrian:.1f} s (partitioning, generalizing, "
        f"measuring); full-domain comparison {t_naive:.1f} s (level {level})\n"
        f"  k reached {report.k_reached}; {report.classes:,} classes of "
        f"{report.average_class_size:.1f} rows on average; suppressed {report.suppressed:,} "
        f"({report.suppression_rate:.2%})\n"
        f"  NCP {report.ncp:.3f} (full-domain: {naive:.3f}); discernibility "
        f"{report.discernibility:,.0f}; l-diversity of is_flagged {report.l_diversity} "
        f"({report.l_diverse_share:.0%} of the classes hold both values)\n"
        f"  driver JVM peak RSS {peak_rss_mib(pid) or 0:,.0f} MiB (after loading the rows: "
        f"{rss_loaded or 0:,.0f} MiB)",
        flush=True,
    )
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
