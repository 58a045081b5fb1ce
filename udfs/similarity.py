"""Behaviour sets of accounts and MinHash LSH similarity between them.

An account's behaviour is the set of *tokens* its payments leave: the merchants it pays
(``merchant:<id>``), the devices it pays from (``device:<id>``), the coarse places
(``cell:<geohash>``) and the merchant category by part of the day
(``category_hours:<category>@<from>-<to>h``). Accounts run by one ring share devices,
merchants and places, so their sets nearly coincide; two ordinary customers share a
popular merchant or two among many tokens of their own.

A token that hundreds of accounts share (a supermarket, a city-centre cell, groceries in
the evening) says nothing about a ring and makes LSH buckets quadratic: ``filter_common``
drops tokens held by more than ``max_accounts_per_token`` accounts before hashing.

The batch side uses ``pyspark.ml.feature.MinHashLSH`` (``similar_pairs``); the stream uses
``datasketch`` (``udfs.fraud_patterns``, in the ``payment_scoring`` query). Both estimate the
Jaccard similarity J (shared tokens over all tokens of the two) from the share of equal minimum
hashes; with n hashes the estimate's standard error is sqrt(J (1 - J) / n).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame

from udfs.geo import geohash

ALERT_TYPE_FRAUD_RING = "fraud_ring"


@dataclass(frozen=True)
class BehaviourTokens:
    """How payments become tokens; see ``similarity`` in conf/base.yaml."""

    cell_precision: int
    hour_bucket_hours: int


@dataclass(frozen=True)
class SimilarityParams:
    """Which accounts count as similar; see ``similarity`` in conf/base.yaml."""

    max_accounts_per_token: int
    min_tokens: int
    num_hashes: int
    min_jaccard: float
    seed: int


def behaviour_tokens(tokens: BehaviourTokens) -> Column:
    """The tokens of one payment (an array column; null parts left out)."""
    hours = tokens.hour_bucket_hours
    bucket_start = F.floor(F.hour("event_time") / F.lit(hours)) * F.lit(hours)
    category_hours = F.format_string(
        "category_hours:%s@%02d-%02dh",
        F.col("merchant_category"),
        bucket_start.cast("int"),
        (bucket_start + F.lit(hours)).cast("int"),
    )
    parts = [
        F.concat(F.lit("merchant:"), F.col("merchant_id")),
        F.concat(F.lit("device:"), F.col("device_id")),
        F.concat(
            F.lit("cell:"), geohash(F.col("latitude"), F.col("longitude"), tokens.cell_precision)
        ),
        F.when(F.col("merchant_category").isNotNull(), category_hours),
    ]
    # filter() runs interpreted, as every higher-order function does; the generated code of
    # array_except or of a concat of one-element arrays took 1.8 and 2.5 times as long here.
    return F.filter(F.array(*parts), lambda token: token.isNotNull())


def account_token_sets(payments_df: DataFrame, tokens: BehaviourTokens) -> DataFrame:
    """``account_id``, ``tokens`` (sorted, distinct), ``last_event_time``."""
    return (
        payments_df.select(
            F.col("user_id").alias("account_id"),
            "event_time",
            F.explode(behaviour_tokens(tokens)).alias("token"),
        )
        .groupBy("account_id")
        .agg(
            F.array_sort(F.collect_set("token")).alias("tokens"),
            F.max("event_time").alias("last_event_time"),
        )
        .select("account_id", "tokens", "last_event_time")
    )


def common_tokens(sets_df: DataFrame, params: SimilarityParams) -> DataFrame:
    """``token``, ``accounts``: the tokens more than ``max_accounts_per_token`` accounts hold."""
    return (
        sets_df.select(F.explode("tokens").alias("token"))
        .groupBy("token")
        .agg(F.count("*").alias("accounts"))
        .filter(F.col("accounts") > params.max_accounts_per_token)
    )


def filter_common(
    sets_df: DataFrame, params: SimilarityParams, common_df: DataFrame | None = None
) -> DataFrame:
    """Token sets without the common tokens; accounts left with too few dropped."""
    if common_df is None:
        common_df = common_tokens(sets_df, params)
    common_set_df = common_df.agg(F.collect_set("token").alias("common"))
    return (
        sets_df.crossJoin(F.broadcast(common_set_df))
        .select(
            "account_id",
            F.array_except("tokens", "common").alias("tokens"),
            "last_event_time",
        )
        .filter(F.size("tokens") >= params.min_tokens)
    )


def _is_equal_hash(x: Column, y: Column) -> Column:
    return (x["min_hash"] == y["min_hash"]).cast("int")


def exact_jaccard(a: Column, b: Column) -> Column:
    """Shared tokens over all tokens of two token arrays."""
    return F.size(F.array_intersect(a, b)) / F.size(F.array_union(a, b))


def similar_pairs(sets_df: DataFrame, params: SimilarityParams) -> DataFrame:
    """Pairs of accounts whose token sets are at least ``min_jaccard`` alike.

    Sparse binary vectors (``CountVectorizer``) -> ``MinHashLSH`` with ``num_hashes`` hash
    tables -> ``approxSimilarityJoin`` of the accounts with themselves. Spark's join keeps
    the pairs that share a bucket in any table and whose *exact* Jaccard distance is
    within the threshold; ``estimated_jaccard`` is the share of the ``num_hashes`` minimum
    hashes the two accounts have in common (what LSH saw), ``exact_jaccard`` the truth.
    Each pair once (``account_a < account_b``).
    """
    # Imported here: pyspark.ml costs 0.4 s, and every job imports this module's
    # dataclasses through the conf.
    from pyspark.ml.feature import CountVectorizer, MinHashLSH
    from pyspark.ml.functions import vector_to_array

    if sets_df.isEmpty():
        return sets_df.sparkSession.createDataFrame([], PAIR_COLUMNS_DDL)
    # Every token gets a dimension (the default keeps 2^18, about one device per account).
    vectorizer = CountVectorizer(
        inputCol="tokens", outputCol="features", binary=True, vocabSize=MAX_VOCABULARY
    )
    vectors_df = vectorizer.fit(sets_df).transform(sets_df).persist()
    try:
        lsh = MinHashLSH(
            inputCol="features",
            outputCol="hashes",
            numHashTables=params.num_hashes,
            seed=params.seed,
        ).fit(vectors_df)
        hashed_df = lsh.transform(vectors_df)
        signatures_df = hashed_df.select(
            "account_id",
            F.posexplode("hashes").alias("table", "hash_vector"),
        ).select("account_id", "table", vector_to_array(F.col("hash_vector"))[0].alias("min_hash"))
        signature_df = signatures_df.groupBy("account_id").agg(
            F.array_sort(F.collect_list(F.struct("table", "min_hash"))).alias("signature")
        )
        pairs_df = (
            # Spark keeps distances strictly below the threshold: a hair above, so a pair at
            # exactly min_jaccard (3 of 5 tokens) is kept, then the exact check decides.
            lsh.approxSimilarityJoin(
                hashed_df, hashed_df, 1.0 - params.min_jaccard + 1e-9, distCol="jaccard_distance"
            )
            .filter(F.col("datasetA.account_id") < F.col("datasetB.account_id"))
            .select(
                F.col("datasetA.account_id").alias("account_a"),
                F.col("datasetB.account_id").alias("account_b"),
                F.col("datasetA.tokens").alias("tokens_a"),
                F.col("datasetB.tokens").alias("tokens_b"),
            )
        )
        sig_a = signature_df.select(
            F.col("account_id").alias("account_a"), F.col("signature").alias("signature_a")
        )
        sig_b = signature_df.select(
            F.col("account_id").alias("account_b"), F.col("signature").alias("signature_b")
        )
        equal_hashes = F.aggregate(
            F.zip_with("signature_a", "signature_b", _is_equal_hash),
            F.lit(0),
            lambda acc, x: acc + x,
        )
        return (
            pairs_df.join(sig_a, "account_a", how="inner")
            .join(sig_b, "account_b", how="inner")
            .select(
                "account_a",
                "account_b",
                (equal_hashes / F.lit(float(params.num_hashes))).alias("estimated_jaccard"),
                exact_jaccard(F.col("tokens_a"), F.col("tokens_b")).alias("exact_jaccard"),
                F.array_intersect("tokens_a", "tokens_b").alias("shared_tokens"),
            )
            .filter(F.col("exact_jaccard") >= F.lit(params.min_jaccard - 1e-9))
            .localCheckpoint()
        )
    finally:
        vectors_df.unpersist()


MAX_VOCABULARY = 2**31 - 1  # CountVectorizer keeps min(this, distinct tokens)
PAIR_COLUMNS_DDL = (
    "account_a string, account_b string, estimated_jaccard double, exact_jaccard double, "
    "shared_tokens array<string>"
)


def connected_components(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Account -> the smallest account id of its component (union-find over the pairs).

    Runs on the driver: the pairs are the few that passed the Jaccard threshold.
    """
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: root(x) for x in parent}
