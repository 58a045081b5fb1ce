"""Benchmark the batch similarity (MinHash LSH rings) on a large population.

    .venv/bin/python -m bench.similarity [--accounts 100000] [--rings 50] [--days 7]
    (or: make bench-similarity BENCH_ARGS="--accounts 20000")

Generates a week of payments of ``--accounts`` ordinary customers (the simulator's world
and density: cities of 60 shops with 125 customers each, so 800 cities for 100,000
customers, spread over Europe; 8 usual shops and a phone each, about 3 payments a day;
``--dense`` keeps the simulator's 12 cities instead, 1,100 customers per shop) plus
``--rings`` planted rings (4-7 new accounts sharing 2 devices and 4 shops, as the
simulator plants them), then runs what ``./spark-submit.sh similarity`` computes (tokens,
common tokens out, MinHash LSH self-join, connected components; nothing written) and
prints the time of each step, the driver JVM's peak RSS, the candidate pairs LSH produced
(pairs sharing a bucket in some hash table, counted per table), the similar pairs, and how
many planted rings were found whole, split or merged, and how many clusters hold no ring
account at all.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime

import numpy as np
import pandas as pd
import pyspark.sql.functions as F
from pyspark.ml.feature import CountVectorizer, MinHashLSH
from pyspark.ml.functions import vector_to_array

from bench.throughput import jvm_pid, peak_rss_mib
from txwatch.infra.config import DEFAULT_CONF, load_conf
from txwatch.infra.session import create_session
from txwatch.similarity import compare_accounts
from txwatch.simulator import CATEGORIES, CITIES, RING_ACCOUNTS, RING_DEVICES, RING_MERCHANTS

SHOPS_PER_CITY = 60
ACCOUNTS_PER_CITY = 125  # the simulator's: 1,500 users in 12 cities
USUAL_SHOPS = 8
PAYMENTS_PER_DAY = 3.0
RING_PAYMENTS_PER_DAY = 1.0
START = datetime(2026, 1, 1)
METRES_PER_DEGREE = 111_320.0


def population(
    accounts: int, rings: int, days: int, seed: int, dense: bool = False
) -> tuple[pd.DataFrame, list[set]]:
    """Payments (user_id, merchant_id, device_id, merchant_category, latitude, longitude,
    event_time) and the planted rings' account sets."""
    rng = np.random.default_rng(seed)
    if dense:
        cities = len(CITIES)
        centres = np.array([(c[1], c[2]) for c in CITIES])
    else:
        cities = max(len(CITIES), accounts // ACCOUNTS_PER_CITY)
        centres = np.column_stack([rng.uniform(36, 60, cities), rng.uniform(-9, 30, cities)])
    shop_city = np.repeat(np.arange(cities), SHOPS_PER_CITY)
    shop_pos = centres[shop_city] + rng.normal(0, 4000, (len(shop_city), 2)) / METRES_PER_DEGREE
    shop_category = rng.choice(list(CATEGORIES), len(shop_city))
    shop_id = np.array([f"m-{c:03d}-{i % SHOPS_PER_CITY:03d}" for i, c in enumerate(shop_city)])

    city = rng.integers(0, cities, accounts)
    usual = (
        np.stack([rng.choice(SHOPS_PER_CITY, USUAL_SHOPS, replace=False) for _ in range(accounts)])
        + (city * SHOPS_PER_CITY)[:, None]
    )
    per_account = rng.poisson(PAYMENTS_PER_DAY * days, accounts)
    owner = np.repeat(np.arange(accounts), per_account)
    shop = usual[owner, rng.integers(0, USUAL_SHOPS, len(owner))]
    user_ids = np.array([f"u-{i:07d}" for i in range(accounts)], dtype=object)
    devices = np.array([f"d-{i:07d}" for i in range(accounts)], dtype=object)
    frames = [
        pd.DataFrame(
            {
                "user_id": user_ids[owner],
                "merchant_id": shop_id[shop],
                "device_id": devices[owner],
                "shop": shop,
            }
        )
    ]
    planted = []
    for ring in range(rings):
        ring_city = rng.integers(0, cities)
        shops = (
            rng.choice(SHOPS_PER_CITY, RING_MERCHANTS, replace=False) + ring_city * SHOPS_PER_CITY
        )
        ring_devices = [f"d-ring{ring:03d}-{k}" for k in range(RING_DEVICES)]
        size = int(rng.integers(RING_ACCOUNTS[0], RING_ACCOUNTS[1] + 1))
        members = [f"u-ring{ring:03d}-{k}" for k in range(size)]
        planted.append(set(members))
        for member in members:
            n = max(int(rng.poisson(RING_PAYMENTS_PER_DAY * days)), 4)
            chosen = rng.choice(shops, n)
            frames.append(
                pd.DataFrame(
                    {
                        "user_id": member,
                        "merchant_id": shop_id[chosen],
                        "device_id": rng.choice(ring_devices, n),
                        "shop": chosen,
                    }
                )
            )
    df = pd.concat(frames, ignore_index=True)
    shops_of = df["shop"].to_numpy()
    jitter = rng.normal(0, 30, (len(df), 2)) / METRES_PER_DEGREE
    df["latitude"] = shop_pos[shops_of, 0] + jitter[:, 0]
    df["longitude"] = shop_pos[shops_of, 1] + jitter[:, 1]
    df["merchant_category"] = shop_category[shops_of]
    seconds = rng.uniform(0, days * 86400, len(df))
    # Microseconds, as Spark keeps them (Arrow refuses to drop nanoseconds silently).
    df["event_time"] = (pd.Timestamp(START) + pd.to_timedelta(seconds, unit="s")).floor("us")
    return df.drop(columns=["shop"]), planted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.similarity", description=__doc__)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--rings", type=int, default=50)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--dense", action="store_true", help="the simulator's 12 cities, however many accounts"
    )
    parser.add_argument("--conf", default=str(DEFAULT_CONF))
    args = parser.parse_args(argv)

    conf = load_conf(args.conf)
    started = time.monotonic()
    payments, planted = population(args.accounts, args.rings, args.days, args.seed, args.dense)
    print(
        f"bench.similarity: {len(payments):,} payments of {args.accounts:,} accounts and "
        f"{sum(len(r) for r in planted)} ring accounts in {len(planted)} rings, "
        f"{args.days} days (generated in {time.monotonic() - started:.1f} s)",
        flush=True,
    )
    spark = create_session(conf, "bench-similarity")
    pid = jvm_pid(spark)
    payments_df = spark.createDataFrame(payments).localCheckpoint()
    payments_df.count()
    rss_before = peak_rss_mib(pid)

    t0 = time.monotonic()
    found = compare_accounts(spark, conf, payments_df)
    pairs = found.pairs_df.count()
    clusters = found.clusters_df.select(
        "members", "is_ring", "mean_jaccard", "shared_tokens"
    ).collect()
    elapsed = time.monotonic() - t0

    # Candidate pairs: what the hash tables put in one bucket (the join's work).
    cfg = conf.similarity
    vectors_df = (
        CountVectorizer(inputCol="tokens", outputCol="features", binary=True)
        .fit(found.compared_df)
        .transform(found.compared_df)
    )
    lsh = MinHashLSH(
        inputCol="features", outputCol="hashes", numHashTables=cfg.num_hashes, seed=cfg.seed
    ).fit(vectors_df)
    buckets_df = (
        lsh.transform(vectors_df)
        .select(F.posexplode("hashes").alias("table", "h"))
        .select("table", vector_to_array(F.col("h"))[0].alias("h"))
        .groupBy("table", "h")
        .count()
    )
    bucket_stats = buckets_df.agg(
        F.sum(F.col("count") * (F.col("count") - 1) / 2).alias("candidates"),
        F.max("count").alias("largest"),
    ).collect()[0]
    candidates, largest = bucket_stats.candidates, bucket_stats.largest

    rings_found = [set(r.members) for r in clusters if r.is_ring]
    whole = sum(1 for ring in planted if ring in rings_found)
    ring_accounts = set().union(*planted) if planted else set()
    stray = [c for c in rings_found if not c & ring_accounts]
    print(
        f"\nbench.similarity: {args.accounts:,} accounts, one week\n"
        f"  accounts compared (enough uncommon tokens): {found.compared:,} "
        f"of {found.accounts:,}; common tokens left out: {found.common_df.count():,}\n"
        f"  candidate pairs (same bucket in a table, per table): {int(candidates or 0):,}; "
        f"largest bucket {largest}\n"
        f"  similar pairs (exact Jaccard >= {cfg.min_jaccard}): {pairs:,}; clusters "
        f"{len(clusters):,}, rings (>= {cfg.min_ring_size} accounts) {len(rings_found)}\n"
        f"  planted rings found whole: {whole} of {len(planted)}; rings without a planted "
        f"account: {len(stray)}\n"
        f"  time: {elapsed:.1f} s (tokens -> pairs -> clusters); driver JVM peak RSS "
        f"{peak_rss_mib(pid) or 0:,.0f} MiB (after loading the payments: "
        f"{rss_before or 0:,.0f} MiB)",
        flush=True,
    )
    sizes = found.compared_df.select("account_id", F.size("tokens").alias("n"))
    for cluster in [c for c in clusters if c.is_ring and not set(c.members) & ring_accounts][:5]:
        token_counts = [
            r.n for r in sizes.filter(F.col("account_id").isin(*cluster.members)).collect()
        ]
        print(
            f"  a ring without a planted account: {len(cluster.members)} accounts with "
            f"{sorted(token_counts)} uncommon tokens, mean Jaccard {cluster.mean_jaccard:.2f}, "
            f"sharing {', '.join(cluster.shared_tokens[:6])}"
        )
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
