"""Find rings of near-identical accounts in the payments of a window.

    ./spark-submit.sh similarity [--conf conf/local.yaml] [--since ...] [--until ...]

Reads the valid payments of ``bronze_transactions`` in ``[--since, --until]`` (default:
``similarity.window`` up to the newest payment), compares every account's behaviour set
(merchants, devices, geohash cells, category by part of day) with MinHash LSH, and
replaces ``similar_accounts`` (pairs with the estimated and the exact Jaccard similarity
and the tokens they share) and ``account_clusters`` (connected components). Clusters of at
least ``similarity.min_ring_size`` accounts are raised as ``fraud_ring`` alerts: published
to the potential-fraud topic and stored in ``alerts``.
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
        prog="spark-submit.sh similarity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    parser.add_argument("--since", type=utc_time, help="first event time (ISO-8601, with zone)")
    parser.add_argument("--until", type=utc_time, help="last event time (ISO-8601, with zone)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from txwatch.similarity import find_rings

    if args.since and args.until and args.since >= args.until:
        raise UserError("--since must be before --until")
    conf = load_conf(args.conf)
    token_key_from_env(conf.privacy.token_key_env)  # it tokenizes the ids it reads
    spark = create_session(conf, "similarity")
    started = time.monotonic()
    result = find_rings(spark, conf, args.since, args.until)
    print(f"similarity: {result.summary()} in {time.monotonic() - started:.0f} s", flush=True)
    for cluster_id, members, shared in result.rings:
        print(
            f"similarity: ring {cluster_id}: {len(members)} accounts ({', '.join(members)}) "
            f"share {', '.join(shared[:6]) or 'no single token'}",
            flush=True,
        )
    if result.rings:
        print(f"similarity: {result.alerts_published} new fraud_ring alerts published", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_entry_point("similarity", lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
