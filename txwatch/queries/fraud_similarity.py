"""Query ``fraud_similarity``: payments whose account suddenly behaves like known fraud.

Reads the transactions topic (the same parse and checks as ``ingest``), gives each payment
its behaviour tokens and what is new in its account's activity (``udfs.fraud_patterns``,
a stateful operator per bucket of accounts), and looks that up in a datasketch MinHash
LSH index of the known fraud patterns (``fraud_patterns``, written by the similarity job).
Matches go to the alert sink as ``similar_to_fraud`` alerts naming the pattern and the
estimated similarity.

The index is built on the driver from the newest ``fraud_patterns`` version and
``common_tokens``, broadcast to the executors, and rebuilt when a newer version appears
(looked for every ``similarity.refresh_interval``), without a restart. Until patterns
exist, payments only feed the accounts' tokens. No Delta table is written here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from delta.tables import DeltaTable
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra import tables
from txwatch.infra.alert_sink import AlertSink
from txwatch.infra.config import Conf, duration_s
from txwatch.queries import ingest
from txwatch.queries.base import TABLES_POOL, QuerySpec, RunContext
from udfs.fraud_patterns import (
    MATCH_SCHEMA,
    Pattern,
    PatternIndex,
    match_batches,
    new_tokens_stream,
    similar_to_fraud_alerts,
    with_payment_tokens,
)
from udfs.records import parse_transactions, to_bronze_transactions

NAME = "fraud_similarity"


def load_index(spark: SparkSession, conf: Conf, version: int) -> PatternIndex:
    """The patterns of ``fraud_patterns`` at ``version`` (and the common tokens) indexed."""
    cfg = conf.similarity
    rows = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(conf.table_path(tables.FRAUD_PATTERNS))
        .select("pattern_id", "source", "tokens")
        .collect()
    )
    common: frozenset[str] = frozenset()
    if DeltaTable.isDeltaTable(spark, conf.table_path(tables.COMMON_TOKENS)):
        common_df = spark.read.format("delta").load(conf.table_path(tables.COMMON_TOKENS))
        common = frozenset(r.token for r in common_df.select("token").collect())
    patterns = [Pattern(r.pattern_id, r.source, frozenset(r.tokens)) for r in rows]
    return PatternIndex(
        patterns, common, cfg.num_perm, cfg.pattern_min_jaccard, cfg.pattern_min_shared_kinds
    )


class PatternMatcher:
    """Keeps the newest patterns indexed and broadcast; matches micro-batches against them."""

    def __init__(self, spark: SparkSession, conf: Conf) -> None:
        self._spark = spark
        self._conf = conf
        self._refresh_s = duration_s(conf.similarity.refresh_interval)
        self._checked_at = float("-inf")
        self.version: int | None = None
        self.broadcast: Broadcast[PatternIndex] | None = None

    def refresh(self, force: bool = False) -> Broadcast[PatternIndex] | None:
        """Rebuild the index if ``fraud_patterns`` has a newer version (checked at most every
        ``refresh_interval``, or now with ``force``)."""
        now = time.monotonic()
        if not force and now - self._checked_at < self._refresh_s:
            return self.broadcast
        self._checked_at = now
        path = self._conf.table_path(tables.FRAUD_PATTERNS)
        if not DeltaTable.isDeltaTable(self._spark, path):
            return self.broadcast
        version = int(DeltaTable.forPath(self._spark, path).history(1).collect()[0]["version"])
        if version == self.version:
            return self.broadcast
        index = load_index(self._spark, self._conf, version)
        previous = self.broadcast
        self.broadcast = self._spark.sparkContext.broadcast(index)
        self.version = version
        if previous is not None:
            previous.unpersist()
        print(
            f"[{NAME}] matching against {len(index.patterns)} known fraud patterns "
            f"(fraud_patterns version {version}, {len(index.common_tokens)} common tokens "
            "left out)",
            flush=True,
        )
        return self.broadcast

    def matches(self, payments_df: DataFrame) -> DataFrame | None:
        """The batch's payments that match a pattern, or None while no pattern exists."""
        broadcast = self.refresh()
        if broadcast is None or not broadcast.value.patterns:
            return None

        def match(batches: Iterator[Any]) -> Iterator[Any]:
            return match_batches(broadcast.value, batches)

        return payments_df.mapInPandas(match, MATCH_SCHEMA)


def batch_writer(
    matcher: PatternMatcher, sink: AlertSink, conf: Conf
) -> Callable[[DataFrame, int], None]:
    def write_similarity_batch(payments_df: DataFrame, batch_id: int) -> None:
        # Run the batch once whatever happens next: the operator's state is committed only
        # when the batch's plan runs.
        payments_df = payments_df.persist()
        try:
            payments_df.count()
            matches_df = matcher.matches(payments_df)
            if matches_df is not None:
                sink.publish(
                    similar_to_fraud_alerts(matches_df, conf.similarity.pattern_min_jaccard)
                )
        finally:
            payments_df.unpersist()

    return write_similarity_batch


def build(raw_transactions_df: DataFrame, conf: Conf, token_key: bytes) -> DataFrame:
    """Raw Kafka rows of the transactions topic -> valid payments with their new tokens."""
    payments_df = to_bronze_transactions(
        parse_transactions(raw_transactions_df, token_key, conf.stream.max_future_skew)
    )
    cfg = conf.similarity
    return new_tokens_stream(
        with_payment_tokens(payments_df, cfg.tokens()),
        duration_s(cfg.new_window),
        duration_s(cfg.habit_window),
    )


def start(ctx: RunContext) -> StreamingQuery:
    spark, conf = ctx.spark, ctx.conf
    matcher = PatternMatcher(spark, conf)
    matcher.refresh(force=True)
    payments_df = build(
        ingest.read(spark, conf, (conf.kafka.topics.transactions,)), conf, ctx.token_key
    )
    writer = payments_df.writeStream.foreachBatch(
        batch_writer(matcher, AlertSink(spark, conf), conf)
    )
    writer = ctx.with_trigger(ctx.checkpoint(writer, NAME), conf.similarity.trigger_interval)
    return ctx.start(writer, TABLES_POOL)


QUERY = QuerySpec(NAME, start)
