"""``jobs/anonymize.py``'s work: a k-anonymous, l-diversity-reported release table.

From ``transactions_enriched``: direct identifiers dropped (transaction, user, card, device,
merchant), four quasi-identifiers generalized (``udfs.anonymity``), the sensitive
attribute ``is_flagged`` (an alert was raised on the payment) kept.

Partitioning is Mondrian (K. LeFevre, D. J. DeWitt, R. Ramakrishnan, "Mondrian
Multidimensional K-Anonymity", ICDE 2006), strict, top-down, run in Spark: every row carries
its partition id; each round aggregates per partition (count, min, max and approximate
median of every dimension), the driver picks for each partition of at least 2k rows the
dimension with the widest range relative to the whole table that still splits it into two
halves of at least k (LeFevre's allowable cut), and the rows move to the children in one
pass. Only per-partition figures reach the driver (at most n / k partitions), never rows.
Each partition is published with the most specific hierarchy node covering its rows; a
partition whose place would be coarser than conf allows is suppressed, up to
``anonymize.max_suppression`` of the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.errors import UserError
from txwatch.lake import read_table, table_exists
from udfs import schemas
from udfs.anonymity import (
    DIMENSIONS,
    QUASI_IDENTIFIERS,
    SENSITIVE,
    TIME_LEVELS,
    Hierarchies,
    generalized,
    with_dimensions,
)

# Columns released besides the quasi-identifiers: what analysts need, naming nobody.
PAYLOAD = ("currency", "status", "channel", "has_location", SENSITIVE)
# Rounds of Mondrian: every cut leaves at least k rows on each side; on the benchmark's
# million rows 24 rounds sufficed. A partition still open after this many is kept whole
# (it is at least k rows; the job says so).
MAX_ROUNDS = 60
MEDIAN_ACCURACY = 10_000  # percentile_approx: relative error about 1 / this


@dataclass(frozen=True)
class Report:
    k_requested: int
    k_reached: int
    rows_in: int
    rows_released: int
    suppressed: int
    classes: int
    average_class_size: float
    discernibility: float
    ncp: float
    l_diversity: int
    l_diverse_share: float
    rounds: int

    @property
    def suppression_rate(self) -> float:
        return self.suppressed / self.rows_in if self.rows_in else 0.0


def payments(spark: SparkSession, conf: Conf) -> DataFrame:
    """``transactions_enriched`` with ``is_flagged`` (any alert on the transaction)."""
    for table in (tables.TRANSACTIONS_ENRICHED, tables.ALERTS):
        if not table_exists(spark, conf, table):
            raise UserError(f"no {table} table under {conf.lake_root}: run the stream first")
    flagged_df = (
        read_table(spark, conf, tables.ALERTS)
        .filter(F.col("transaction_id").isNotNull())
        .select("transaction_id")
        .distinct()
        .withColumn(SENSITIVE, F.lit(True))
    )
    return (
        read_table(spark, conf, tables.TRANSACTIONS_ENRICHED)
        .join(flagged_df, "transaction_id", how="left")
        .withColumn(SENSITIVE, F.coalesce(F.col(SENSITIVE), F.lit(False)))
    )


def _common_prefix_length(a: str | None, b: str | None) -> int:
    n = 0
    for x, y in zip(a or "", b or "", strict=False):
        if x != y:
            break
        n += 1
    return n


def mondrian(df: DataFrame, k: int, geohash_precision: int) -> tuple[DataFrame, int]:
    """``df`` (with ``DIMENSIONS`` and ``_geohash``) with ``partition_id``: every partition
    >= k rows (if ``df`` has k rows). Returns the rows and the number of rounds run.

    A dimension's penalty is its range in the partition over its range in the table
    (LeFevre's normalized width). Places are published as geohash prefixes, so the place's
    penalty is at least 1 - the shared prefix's length / precision (two cities in one
    partition cost the whole location, however close their codes), and a place is cut
    where a cell one character longer than the shared prefix begins (the start of the
    median's cell, or of the second cell when the median is in the first), not at the
    median itself: each side then shares a longer prefix.
    """
    spark = df.sparkSession
    spans_row = df.agg(*[(F.max(d) - F.min(d)).alias(d) for d in DIMENSIONS]).collect()[0]
    spans = {d: float(spans_row[d] or 0.0) or 1.0 for d in DIMENSIONS}
    df = df.withColumn("partition_id", F.lit(0).cast("long")).localCheckpoint()
    final: set[int] = set()
    rounds = 0
    while rounds < MAX_ROUNDS:
        rounds += 1
        stats = (
            df.groupBy("partition_id")
            .agg(
                F.count("*").alias("n"),
                *[(F.max(d) - F.min(d)).alias(f"span_{d}") for d in DIMENSIONS],
                *[
                    F.percentile_approx(d, 0.5, MEDIAN_ACCURACY).alias(f"median_{d}")
                    for d in DIMENSIONS
                ],
                F.min("_geohash").alias("min_geohash"),
                F.max("_geohash").alias("max_geohash"),
                F.min("location_code").alias("min_location_code"),
            )
            .collect()
        )
        # Partitions under 2k rows cannot be cut into two of k: final.
        current = [r for r in stats if r.partition_id not in final]
        final.update(r.partition_id for r in current if r.n < 2 * k)
        open_parts = [r for r in current if r.n >= 2 * k]
        if not open_parts:
            break
        # Candidate cuts: per partition, dimensions by normalized span, widest first.
        candidates = []
        for r in open_parts:
            penalty = {d: (r[f"span_{d}"] or 0.0) / spans[d] for d in DIMENSIONS}
            shared = _common_prefix_length(r.min_geohash, r.max_geohash)
            penalty["location_code"] = max(
                penalty["location_code"], 1.0 - shared / geohash_precision
            )
            ranked = sorted(
                (d for d in DIMENSIONS if r[f"span_{d}"] and r[f"span_{d}"] > 0),
                key=lambda d: -penalty[d],
            )
            for order, d in enumerate(ranked):
                cut, at_boundary = r[f"median_{d}"], False
                if d == "location_code" and shared < geohash_precision:
                    cell = float(2 ** (5 * (geohash_precision - shared - 1)))
                    cut = max(
                        (cut // cell) * cell,
                        (r.min_location_code // cell) * cell + cell,
                    )
                    at_boundary = True
                candidates.append((r.partition_id, order, DIMENSIONS.index(d), cut, at_boundary))
            if not ranked:
                final.add(r.partition_id)
        if not candidates:
            break
        cuts_df = spark.createDataFrame(
            candidates, "partition_id long, choice int, dim int, median double, boundary boolean"
        )
        values = F.array(*[F.col(d) for d in DIMENSIONS])
        value = F.element_at(values, F.col("dim") + 1)
        sides = (
            df.join(F.broadcast(cuts_df), "partition_id", how="inner")
            .groupBy("partition_id", "choice", "dim", "median", "boundary")
            .agg(
                F.count("*").alias("n"),
                F.sum((value <= F.col("median")).cast("long")).alias("le"),
                F.sum((value < F.col("median")).cast("long")).alias("lt"),
            )
            .collect()
        )
        # Per partition the first allowable cut (both halves >= k): <= median, else <.
        chosen: dict[int, tuple[int, int, float, bool]] = {}
        for r in sorted(sides, key=lambda r: (r.partition_id, r.choice)):
            if r.partition_id in chosen:
                continue
            # A cell boundary is where the next cell begins: its rows go right.
            options = ((False, r.lt),) if r.boundary else ((True, r.le), (False, r.lt))
            for inclusive, left in options:
                if left >= k and r.n - left >= k:
                    chosen[r.partition_id] = (r.choice, r.dim, r.median, inclusive)
                    break
        split_ids = set(chosen)
        final.update(r.partition_id for r in open_parts if r.partition_id not in split_ids)
        print(
            f"anonymize: round {rounds}: {len(chosen):,} partitions split, {len(final):,} final",
            flush=True,
        )
        if not chosen:
            break
        split_df = spark.createDataFrame(
            [(pid, dim, median, inclusive) for pid, (_, dim, median, inclusive) in chosen.items()],
            "partition_id long, dim int, median double, inclusive boolean",
        )
        goes_left = F.when(F.col("inclusive"), value <= F.col("median")).otherwise(
            value < F.col("median")
        )
        df = (
            df.join(F.broadcast(split_df), "partition_id", how="left")
            .withColumn(
                "partition_id",
                F.when(F.col("dim").isNull(), F.col("partition_id")).otherwise(
                    F.col("partition_id") * 2 + F.when(goes_left, 1).otherwise(2)
                ),
            )
            .drop("dim", "median", "inclusive")
            .localCheckpoint()
        )
    if rounds >= MAX_ROUNDS and open_parts:
        print(
            f"anonymize: stopped after {MAX_ROUNDS} rounds with partitions still open; they "
            "are released whole (each holds at least 2k rows)",
            flush=True,
        )
    return df, rounds


def _partition_stats(parted_df: DataFrame, total_time_span_s: float) -> DataFrame:
    return (
        parted_df.groupBy("partition_id")
        .agg(
            F.count("*").alias("n"),
            *[
                agg(F.col(d)).alias(f"{name}_{d}")
                for d in ("epoch_s", "amount", "category_rank")
                for name, agg in (("min", F.min), ("max", F.max))
            ],
            F.min("_geohash").alias("min_geohash"),
            F.max("_geohash").alias("max_geohash"),
        )
        .withColumn("total_time_span_s", F.lit(total_time_span_s))
    )


def release(
    rows_df: DataFrame, k: int, hierarchies: Hierarchies, min_location_precision: int
) -> tuple[DataFrame, int, int]:
    """Mondrian partitions of ``rows_df`` generalized; partitions beyond the limits
    suppressed. Returns (released rows with ``ncp``, rows suppressed, rounds).

    Suppression never looks at ``is_flagged``: dropping the classes whose rows are all
    flagged would itself disclose the flag of anyone known to be missing from the release.
    l-diversity is measured and reported (``measure``), not enforced."""
    parted_df, rounds = mondrian(rows_df, k, hierarchies.geohash_precision)
    span = rows_df.agg(F.max("epoch_s") - F.min("epoch_s")).collect()[0][0] or 0.0
    gen_df = generalized(_partition_stats(parted_df, float(span)), hierarchies)
    beyond_limits = (F.col("location_cell") == "*") | (
        F.length("location_cell") < min_location_precision
    )
    kept_df = gen_df.filter(~beyond_limits)
    released_df = (
        parted_df.join(F.broadcast(kept_df), "partition_id", how="inner")
        .select(*QUASI_IDENTIFIERS, *PAYLOAD, "ncp")
        .localCheckpoint()
    )
    suppressed = rows_df.count() - released_df.count()
    return released_df, suppressed, rounds


def measure(released_df: DataFrame, rows_in: int, suppressed: int, k: int, rounds: int) -> Report:
    """The report's figures from the released rows (``ncp`` per row) alone."""
    classes_df = released_df.groupBy(*QUASI_IDENTIFIERS).agg(
        F.count("*").alias("size"), F.countDistinct(SENSITIVE).alias("l")
    )
    figures = classes_df.agg(
        F.count("*").alias("classes"),
        F.min("size").alias("k_reached"),
        F.sum(F.col("size") * F.col("size")).alias("dm"),
        F.min("l").alias("l"),
        F.avg((F.col("l") >= 2).cast("double")).alias("l_share"),
    ).collect()[0]
    released = rows_in - suppressed
    ncp = released_df.agg(F.avg("ncp")).collect()[0][0]
    classes = int(figures.classes or 0)
    return Report(
        k_requested=k,
        k_reached=int(figures.k_reached or 0),
        rows_in=rows_in,
        rows_released=released,
        suppressed=suppressed,
        classes=classes,
        average_class_size=released / classes if classes else 0.0,
        # Bayardo & Agrawal: |E|^2 per class, |D| per suppressed row.
        discernibility=float(figures.dm or 0) + float(suppressed) * rows_in,
        ncp=float(ncp or 0.0),
        l_diversity=int(figures.l or 0),
        l_diverse_share=float(figures.l_share or 0.0),
        rounds=rounds,
    )


def full_domain_ncp(
    rows_df: DataFrame, k: int, hierarchies: Hierarchies, max_suppression: float
) -> tuple[int, float]:
    """The naive alternative: a uniform full-domain generalization, every quasi-identifier
    raised by the same number of levels of its hierarchy until classes under k hold at most
    ``max_suppression`` of the rows; returns (level, NCP of the released rows). For
    comparison (tests, report), not for release. A search over each attribute's own level
    (Samarati; Incognito) would lose less than this; it is not the one compared."""
    n = rows_df.count()
    precision = hierarchies.geohash_precision
    bands = max(len(hierarchies.amount_edges) - 1, 1)
    order = hierarchies.category_order()
    groups = [hierarchies.category_groups[c] for c in order]
    span = float(rows_df.agg(F.max("epoch_s") - F.min("epoch_s")).collect()[0][0] or 1.0)
    edges = F.array(*[F.lit(float(e)) for e in hierarchies.amount_edges])
    band = F.size(F.filter(edges, lambda e: e <= F.col("amount"))) - 1  # from 0
    for level in range(0, max(precision, 4, bands.bit_length()) + 2):
        seconds = [s for _, s in TIME_LEVELS]
        time_s = seconds[level] if level < len(seconds) else None
        width = 2**level
        location = F.substring("_geohash", 1, max(precision - level, 0))
        time_key = F.floor(F.col("epoch_s") / time_s) if time_s else F.lit(0)
        rank = F.col("category_rank").cast("int")
        category = (
            rank
            if level == 0
            else (
                F.element_at(F.array(*[F.lit(g) for g in groups] + [F.lit("?")]), rank + 1)
                if level == 1
                else F.lit("*")
            )
        )
        keyed = rows_df.select(
            location.alias("l"),
            time_key.alias("t"),
            F.floor(band / width).alias("a"),
            category.cast("string").alias("c"),
        )
        sizes = keyed.groupBy("l", "t", "a", "c").count()
        small = sizes.filter(F.col("count") < k).agg(F.sum("count")).collect()[0][0] or 0
        if small / n <= max_suppression:
            location_ncp = level / precision if level < precision else 1.0
            time_ncp = min((time_s - 3600) / max(span - 3600, 1.0), 1.0) if time_s else 1.0
            amount_ncp = min((width - 1) / bands, 1.0)
            if level == 0:
                category_ncp = 0.0
            elif level == 1:  # each row's group size, over the rows
                group_sizes = F.array(*[F.lit(groups.count(g)) for g in groups] + [F.lit(1)])
                mean_size = rows_df.agg(F.avg(F.element_at(group_sizes, rank + 1))).collect()[0][0]
                category_ncp = (float(mean_size or 1.0) - 1) / max(len(order) - 1, 1)
            else:
                category_ncp = 1.0
            return level, (location_ncp + time_ncp + amount_ncp + category_ncp) / 4
    return -1, 1.0


def anonymize(spark: SparkSession, conf: Conf, k: int | None = None) -> Report:
    """Replace ``transactions_anonymized``; append a row to ``anonymization_report``."""
    cfg = conf.anonymize
    k = cfg.k if k is None else k
    if k < 2:
        raise UserError(f"k must be at least 2, not {k}")
    hierarchies = cfg.hierarchies()
    rows_df = (
        with_dimensions(payments(spark, conf), hierarchies)
        .select(*DIMENSIONS, "_geohash", *PAYLOAD)
        .localCheckpoint()
    )
    rows_in = rows_df.count()
    if rows_in < k:
        raise UserError(f"{rows_in} transactions: fewer than k = {k}, nothing can be released")
    print(f"anonymize: {rows_in:,} transactions, k = {k}: partitioning (Mondrian)", flush=True)
    released_df, suppressed, rounds = release(rows_df, k, hierarchies, cfg.min_location_precision)
    if suppressed / rows_in > cfg.max_suppression:
        raise UserError(
            f"k = {k} would suppress {suppressed:,} of {rows_in:,} rows "
            f"({suppressed / rows_in:.1%}), more than anonymize.max_suppression "
            f"({cfg.max_suppression:.1%}): lower k or allow more suppression"
        )
    tables.ensure_table(spark, conf, tables.TRANSACTIONS_ANONYMIZED)
    columns = [F.col(f.name) for f in schemas.TRANSACTIONS_ANONYMIZED.fields]
    released_df.select(*columns).write.format("delta").mode("overwrite").save(
        conf.table_path(tables.TRANSACTIONS_ANONYMIZED)
    )
    report = measure(released_df, rows_in, suppressed, k, rounds)
    level, naive_ncp = full_domain_ncp(rows_df, k, hierarchies, cfg.max_suppression)
    record(spark, conf, report, naive_ncp)
    print(
        f"anonymize: full-domain generalization to the same k would need level {level} of "
        f"every hierarchy: NCP {naive_ncp:.3f} against Mondrian's {report.ncp:.3f}",
        flush=True,
    )
    return report


def record(spark: SparkSession, conf: Conf, report: Report, naive_ncp: float) -> None:
    tables.ensure_table(spark, conf, tables.ANONYMIZATION_REPORT)
    row = {
        "run_at": datetime.now(UTC).replace(tzinfo=None),
        "k_requested": report.k_requested,
        "k_reached": report.k_reached,
        "rows_in": report.rows_in,
        "rows_released": report.rows_released,
        "suppressed": report.suppressed,
        "suppression_rate": report.suppression_rate,
        "classes": report.classes,
        "average_class_size": report.average_class_size,
        "discernibility": report.discernibility,
        "ncp": report.ncp,
        "full_domain_ncp": naive_ncp,
        "l_diversity": report.l_diversity,
        "l_diverse_share": report.l_diverse_share,
        "quasi_identifiers": list(QUASI_IDENTIFIERS),
        "sensitive_attribute": SENSITIVE,
        "algorithm": "Mondrian (LeFevre, DeWitt, Ramakrishnan, ICDE 2006), strict; median "
        "cuts, places cut at geohash cell boundaries",
        "rounds": report.rounds,
    }
    spark.createDataFrame([row], schemas.ANONYMIZATION_REPORT).write.format("delta").mode(
        "append"
    ).save(conf.table_path(tables.ANONYMIZATION_REPORT))
