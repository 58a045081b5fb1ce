"""Known fraud in the stream: the patterns of ``fraud_patterns``, indexed and refreshed.

``PatternMatcher`` builds a datasketch MinHash LSH index (``udfs.fraud_patterns``) of the
newest ``fraud_patterns`` version (written by the similarity job), leaving out the tokens of
``common_tokens``, on the driver, and broadcasts it to the executors. It looks for a newer
version every ``similarity.refresh_interval`` and rebuilds the index without a restart. Its
``alerts`` looks up each payment's account's new tokens (``udfs.payment_history``) in the
index and returns the ``similar_to_fraud`` alerts of the matches, naming the pattern and the
estimated similarity. The ``payment_scoring`` query calls it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from delta.tables import DeltaTable
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession

from txwatch.infra import tables
from txwatch.infra.config import Conf, duration_s
from udfs.fraud_patterns import (
    MATCH_SCHEMA,
    Pattern,
    PatternIndex,
    match_batches,
    similar_to_fraud_alerts,
)

NAME = "payment_scoring"  # the query it runs in: log lines say so


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

    def alerts(self, payments_df: DataFrame) -> DataFrame | None:
        """The batch's ``similar_to_fraud`` alerts, or None while no pattern exists."""
        matches_df = self.matches(payments_df)
        if matches_df is None:
            return None
        return similar_to_fraud_alerts(matches_df, self._conf.similarity.pattern_min_jaccard)
