"""``jobs/similarity.py``'s work: rings of near-identical accounts, over Delta history.

Payments of the window (``bronze_transactions``) -> each account's behaviour set
(``udfs.similarity``) -> tokens many accounts share left out -> MinHash LSH self-join ->
``similar_accounts`` (pairs, estimated and exact Jaccard, shared tokens) -> connected
components -> ``account_clusters`` -> a ``fraud_ring`` alert per cluster of at least
``similarity.min_ring_size`` accounts, through the common alert path: published to the
potential-fraud topic like every detector's alerts, and stored in ``alerts`` at once (the
stream's ``alerts`` query later finds the id stored and skips it); a ring alerted by an
earlier run is not alerted again.

It also rebuilds the known fraud patterns the stream compares recent activity with
(``fraud_patterns``, ``common_tokens``; see ``udfs.fraud_patterns``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pyspark.sql.functions as F
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from txwatch.infra import tables
from txwatch.infra.config import Conf, duration_s
from txwatch.infra.delta import append_once
from txwatch.infra.errors import UserError
from txwatch.infra.topics import publish
from txwatch.lake import read_pseudonymized, read_table, table_exists
from udfs.alerts import severity_from_score, to_alerts
from udfs.similarity import (
    ALERT_TYPE_FRAUD_RING,
    account_token_sets,
    behaviour_tokens,
    common_tokens,
    connected_components,
    filter_common,
    similar_pairs,
)

# Writer id of the alerts this job stores itself (Delta txnAppId).
WRITER = "similarity"
# Tokens named in a ring alert's reason.
REASON_TOKENS = 6


@dataclass(frozen=True)
class RingResult:
    window_start: datetime
    window_end: datetime
    accounts: int
    compared: int
    pairs: int
    clusters: int
    rings: list[tuple[str, list[str], list[str]]]  # cluster id, members, shared tokens
    alerts_published: int
    patterns: int

    def summary(self) -> str:
        return (
            f"{self.accounts:,} accounts with payments in [{self.window_start:%Y-%m-%d %H:%M}, "
            f"{self.window_end:%Y-%m-%d %H:%M}], {self.compared:,} with enough uncommon "
            f"tokens compared: {self.pairs:,} similar pairs, {self.clusters:,} clusters, "
            f"{len(self.rings)} rings; {self.patterns} known fraud patterns"
        )


def payments_window(
    spark: SparkSession, conf: Conf, since: datetime | None, until: datetime | None
) -> tuple[DataFrame, datetime, datetime]:
    """Valid payments in ``[since, until]``; by default the ``similarity.window`` up to the
    newest payment."""
    if not table_exists(spark, conf, tables.BRONZE_TRANSACTIONS):
        raise UserError(
            f"no {tables.BRONZE_TRANSACTIONS} table under {conf.lake_root}: run the stream "
            "on some transactions first"
        )
    df = read_pseudonymized(spark, conf, tables.BRONZE_TRANSACTIONS)
    if until is None:
        until = df.agg(F.max("event_time")).collect()[0][0]
        if until is None:
            raise UserError(f"{tables.BRONZE_TRANSACTIONS} holds no payment yet")
    if since is None:
        since = until - timedelta(seconds=duration_s(conf.similarity.window))
    in_window = (F.col("event_time") >= F.lit(since)) & (F.col("event_time") <= F.lit(until))
    return df.filter(in_window), since, until


def clusters_from_pairs(
    spark: SparkSession, pairs_df: DataFrame, sets_df: DataFrame, conf: Conf
) -> DataFrame:
    """Connected components of the similar pairs, shaped like ``account_clusters`` (without
    the window and time columns)."""
    pairs = [
        (r.account_a, r.account_b) for r in pairs_df.select("account_a", "account_b").collect()
    ]
    component = connected_components(pairs)
    membership_df = spark.createDataFrame(
        list(component.items()) or [("", "")], "account_id string, root string"
    ).filter(F.col("account_id") != "")
    member_sets_df = membership_df.join(sets_df, "account_id", how="inner")
    clusters_df = member_sets_df.groupBy("root").agg(
        F.array_sort(F.collect_list("account_id")).alias("members"),
        F.max("last_event_time").alias("last_event_time"),
    )
    cluster_id = F.substring(F.sha2(F.concat_ws(",", "members"), 256), 1, 16)
    clusters_df = clusters_df.select(
        "root",
        cluster_id.alias("cluster_id"),
        "members",
        F.size("members").alias("size"),
        "last_event_time",
    )
    # Tokens of the members, counted per cluster: those at least half of them (and two) hold.
    token_counts_df = (
        member_sets_df.select("root", F.explode("tokens").alias("token"))
        .groupBy("root", "token")
        .agg(F.count("*").alias("holders"))
    )
    shared_df = (
        token_counts_df.join(clusters_df.select("root", "size"), "root", how="inner")
        .filter((F.col("holders") * 2 >= F.col("size")) & (F.col("holders") >= 2))
        .groupBy("root")
        .agg(F.sort_array(F.collect_list(F.struct(-F.col("holders"), F.col("token")))).alias("_s"))
        .select("root", F.transform("_s", lambda s: s["token"]).alias("shared_tokens"))
    )
    pair_stats_df = (
        pairs_df.join(membership_df.withColumnRenamed("account_id", "account_a"), "account_a")
        .groupBy("root")
        .agg(F.count("*").alias("pairs"), F.avg("exact_jaccard").alias("mean_jaccard"))
    )
    return (
        clusters_df.join(shared_df, "root", how="left")
        .join(pair_stats_df, "root", how="left")
        .select(
            "cluster_id",
            F.col("size").cast("int").alias("size"),
            "members",
            F.coalesce("shared_tokens", F.array().cast("array<string>")).alias("shared_tokens"),
            "pairs",
            "mean_jaccard",
            (F.col("size") >= conf.similarity.min_ring_size).alias("is_ring"),
            "last_event_time",
        )
    )


def fraud_ring_alerts(clusters_df: DataFrame, min_ring_size: int) -> DataFrame:
    """One ``fraud_ring`` alert per ring: who is in it and what the accounts share."""
    rings_df = clusters_df.filter(F.col("is_ring"))
    shown = F.slice("shared_tokens", 1, REASON_TOKENS)
    reason = F.format_string(
        "%d accounts behave alike (mean Jaccard %.2f over %d similar pairs): %s; they share %s",
        F.col("size"),
        F.col("mean_jaccard"),
        F.col("pairs"),
        F.array_join("members", ", "),
        F.when(F.size("shared_tokens") > 0, F.array_join(shown, ", ")).otherwise(
            F.lit("no single token held by half of them")
        ),
    )
    score = F.col("size") / F.lit(float(min_ring_size))
    return to_alerts(
        rings_df.withColumn("event_time", F.col("last_event_time")),
        ALERT_TYPE_FRAUD_RING,
        subject_id=F.col("cluster_id"),
        score=score,
        severity=severity_from_score(score, 1.0, 2.0),
        reason=reason,
        evidence={
            "accounts": F.col("size"),
            "similar_pairs": F.col("pairs"),
            "mean_jaccard": F.col("mean_jaccard"),
        },
    )


def fraud_patterns(
    payments_df: DataFrame,
    truth_df: DataFrame | None,
    clusters_df: DataFrame,
    common_df: DataFrame,
    conf: Conf,
) -> DataFrame:
    """Known fraud as token sets, shaped like ``fraud_patterns`` (but ``computed_at``).

    A labelled incident (the payments of one account labelled with one of
    ``similarity.fraud_labels``) gives the tokens of its payments that the account's other
    payments of the window do not have; a ring gives what its accounts share. Common
    tokens are left out, sets with fewer than ``min_tokens`` dropped, equal sets kept once.
    """
    cfg = conf.similarity
    tokens_df = payments_df.select(
        "transaction_id",
        F.col("user_id").alias("account_id"),
        "event_time",
        F.explode(behaviour_tokens(cfg.tokens())).alias("token"),
    ).join(F.broadcast(common_df.select("token")), "token", how="left_anti")
    parts = []
    if truth_df is not None:
        labels_df = truth_df.filter(
            F.col("scenario").isin(*cfg.labels()) & F.col("transaction_id").isNotNull()
        ).select("transaction_id", "scenario")
        labelled_df = tokens_df.join(labels_df, "transaction_id", how="inner")
        usual_df = (
            tokens_df.join(labels_df, "transaction_id", how="left_anti")
            .select("account_id", "token")
            .distinct()
        )
        parts.append(
            labelled_df.join(usual_df, ["account_id", "token"], how="left_anti")
            .groupBy("scenario", "account_id")
            .agg(
                F.array_sort(F.collect_set("token")).alias("tokens"),
                F.countDistinct("transaction_id").alias("payments"),
                F.min("event_time").alias("first_event_time"),
                F.max("event_time").alias("last_event_time"),
            )
            .select(
                F.format_string("label %s: %s", "scenario", "account_id").alias("source"),
                "tokens",
                "payments",
                "first_event_time",
                "last_event_time",
            )
        )
    parts.append(
        clusters_df.filter(F.col("is_ring")).select(
            F.format_string("ring %s", "cluster_id").alias("source"),
            F.col("shared_tokens").alias("tokens"),
            F.lit(None).cast("long").alias("payments"),
            F.lit(None).cast("timestamp").alias("first_event_time"),
            "last_event_time",
        )
    )
    union_df = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    return (
        union_df.filter(F.size("tokens") >= cfg.min_tokens)
        .groupBy("tokens")
        .agg(
            F.min("source").alias("source"),
            F.max("payments").alias("payments"),
            F.min("first_event_time").alias("first_event_time"),
            F.max("last_event_time").alias("last_event_time"),
        )
        .select(
            F.substring(F.sha2(F.array_join("tokens", ","), 256), 1, 12).alias("pattern_id"),
            "source",
            "tokens",
            "payments",
            "first_event_time",
            "last_event_time",
        )
    )


def raise_ring_alerts(spark: SparkSession, conf: Conf, clusters_df: DataFrame) -> int:
    """Store, then publish, the ``fraud_ring`` alerts of rings not alerted before; return
    how many.

    A ring found again by a later run keeps its id (the same members) but not its
    ``event_time`` (its newest payment), so the ids are checked against every stored
    ``fraud_ring`` alert, not an event-time range; then nothing is sent twice, and a run
    repeated after a crash stores nothing twice. Stored first: the stream's ``alerts``
    query then finds the published copy stored and skips it.
    """
    # The stream writes alerts too and upgrades the table itself (no metadata commit here).
    tables.ensure_table(spark, conf, tables.ALERTS, upgrade=False)
    alerts_path = conf.table_path(tables.ALERTS)
    stored_df = (
        read_table(spark, conf, tables.ALERTS)
        .filter(F.col("alert_type") == ALERT_TYPE_FRAUD_RING)
        .select("alert_id")
    )
    new_df = (
        fraud_ring_alerts(clusters_df, conf.similarity.min_ring_size)
        .join(stored_df, "alert_id", how="left_anti")
        .localCheckpoint()
    )
    new = new_df.count()
    if new:
        # Delta's table version only grows: a txnVersion no clock can move backwards.
        version = int(DeltaTable.forPath(spark, alerts_path).history(1).collect()[0]["version"])
        append_once(new_df, conf, tables.ALERTS, WRITER, version + 1)
        # Straight to the topic: the alert sink would skip ids it finds stored.
        publish(new_df, conf, conf.kafka.topics.potential_fraud, key="alert_id")
    return new


def _overwrite(spark: SparkSession, conf: Conf, df: DataFrame, table: str) -> None:
    tables.ensure_table(spark, conf, table)
    columns = [F.col(f.name).cast(f.dataType) for f in tables.TABLES[table].schema.fields]
    df.select(*columns).write.format("delta").mode("overwrite").save(conf.table_path(table))


@dataclass(frozen=True)
class Similarity:
    """What ``compare_accounts`` found (DataFrames checkpointed: each computed once)."""

    sets_df: DataFrame  # every account's token set
    common_df: DataFrame  # the tokens left out
    compared_df: DataFrame  # the accounts compared, common tokens removed
    pairs_df: DataFrame  # similar pairs (account_a < account_b)
    clusters_df: DataFrame  # connected components
    accounts: int  # rows of sets_df
    compared: int  # rows of compared_df


def compare_accounts(spark: SparkSession, conf: Conf, payments_df: DataFrame) -> Similarity:
    """Token sets -> common tokens out -> LSH pairs -> clusters (nothing written)."""
    cfg = conf.similarity
    sets_df = account_token_sets(payments_df, cfg.tokens()).localCheckpoint()
    common_df = common_tokens(sets_df, cfg.params()).localCheckpoint()
    compared_df = filter_common(sets_df, cfg.params(), common_df).localCheckpoint()
    accounts, compared = sets_df.count(), compared_df.count()
    print(
        f"similarity: {accounts:,} accounts, {compared:,} with enough uncommon tokens to "
        f"compare ({common_df.count():,} common tokens left out)",
        flush=True,
    )
    pairs_df = similar_pairs(compared_df, cfg.params())
    clusters_df = clusters_from_pairs(spark, pairs_df, compared_df, conf).localCheckpoint()
    return Similarity(sets_df, common_df, compared_df, pairs_df, clusters_df, accounts, compared)


def find_rings(
    spark: SparkSession, conf: Conf, since: datetime | None = None, until: datetime | None = None
) -> RingResult:
    """Write ``similar_accounts``, ``account_clusters``, ``common_tokens`` and
    ``fraud_patterns``; raise a ``fraud_ring`` alert per ring."""
    payments_df, window_start, window_end = payments_window(spark, conf, since, until)
    payments_df = payments_df.persist()
    found = compare_accounts(spark, conf, payments_df)
    stamp = {
        "window_start": F.lit(window_start).cast("timestamp"),
        "window_end": F.lit(window_end).cast("timestamp"),
        "computed_at": F.current_timestamp(),
    }
    _overwrite(spark, conf, found.pairs_df.withColumns(stamp), tables.SIMILAR_ACCOUNTS)
    _overwrite(spark, conf, found.clusters_df.withColumns(stamp), tables.ACCOUNT_CLUSTERS)
    published = raise_ring_alerts(spark, conf, found.clusters_df)
    _overwrite(spark, conf, found.common_df.withColumns(stamp), tables.COMMON_TOKENS)
    truth_df = (
        read_pseudonymized(spark, conf, tables.GROUND_TRUTH)
        if table_exists(spark, conf, tables.GROUND_TRUTH)
        else None
    )
    patterns_df = fraud_patterns(payments_df, truth_df, found.clusters_df, found.common_df, conf)
    _overwrite(spark, conf, patterns_df.withColumns(stamp), tables.FRAUD_PATTERNS)
    payments_df.unpersist()
    rings = [
        (r.cluster_id, list(r.members), list(r.shared_tokens))
        for r in found.clusters_df.filter("is_ring").orderBy(F.col("size").desc()).collect()
    ]
    return RingResult(
        window_start,
        window_end,
        found.accounts,
        found.compared,
        found.pairs_df.count(),
        found.clusters_df.count(),
        rings,
        published,
        read_table(spark, conf, tables.FRAUD_PATTERNS).count(),
    )
