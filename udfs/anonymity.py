"""k-anonymity: quasi-identifiers, their generalization hierarchies, and information loss.

The release table generalizes four quasi-identifiers along hierarchies (``Hierarchies``,
from conf):

- location: the payment's place as a geohash, cut to a shorter prefix (finer first);
- event time: hour, part of the day, day, week;
- amount: bands (edges from conf, the first 0), merged into the narrowest range of edges
  holding a partition's amounts (ranges of different classes may overlap);
- merchant category: the category, its group, any.

Partitioning (``txwatch.anonymize``) follows Mondrian: K. LeFevre, D. J. DeWitt,
R. Ramakrishnan, "Mondrian Multidimensional K-Anonymity", ICDE 2006. Each partition of at
least k rows is then published with, per quasi-identifier, the most specific hierarchy
node covering all its rows (``generalized``); rows sharing all four form an equivalence
class. Information loss is the normalized certainty penalty (NCP; J. Xu et al.,
"Utility-Based Anonymization Using Local Recoding", KDD 2006) and the discernibility
metric (R. J. Bayardo, R. Agrawal, "Data Privacy through Optimal k-Anonymization", ICDE
2005).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame

from udfs.geo import geohash, geohash_code

# Quasi-identifier columns of the release table, as they appear in it.
QUASI_IDENTIFIERS = ("location_cell", "time_slot", "amount_range", "merchant_category_group")
# Numeric dimensions Mondrian splits on (derived from each row).
# The place is one dimension, its geohash code: a cell is a contiguous range of codes.
DIMENSIONS = ("location_code", "epoch_s", "amount", "category_rank")
SENSITIVE = "is_flagged"
# Time levels, finest first: the seconds each covers (parts of the day are 6 hours).
TIME_LEVELS = (("hour", 3600), ("part_of_day", 6 * 3600), ("day", 86400), ("week", 7 * 86400))
ANY = "*"


@dataclass(frozen=True)
class Hierarchies:
    """Generalization hierarchies; see ``anonymize`` in conf/base.yaml."""

    geohash_precision: int  # the finest location published
    amount_edges: tuple[float, ...]  # band edges, ascending, from 0
    category_groups: dict[str, str]  # category -> group

    def category_order(self) -> list[str]:
        """Categories ordered so that each group's are adjacent (Mondrian splits ranks)."""
        return sorted(self.category_groups, key=lambda c: (self.category_groups[c], c))


def with_dimensions(df: DataFrame, hierarchies: Hierarchies) -> DataFrame:
    """Adds the numeric dimensions Mondrian splits on, and the finest geohash."""
    order = hierarchies.category_order()
    rank = F.coalesce(
        F.element_at(
            F.create_map(*[part for i, c in enumerate(order) for part in (F.lit(c), F.lit(i))]),
            F.col("merchant_category"),
        ),
        F.lit(len(order)),  # unknown categories last
    )
    return df.withColumns(
        {
            "epoch_s": F.unix_timestamp("event_time").cast("double"),
            "category_rank": rank.cast("double"),
            "location_code": geohash_code(
                F.col("latitude"), F.col("longitude"), hierarchies.geohash_precision
            ).cast("double"),
            "_geohash": geohash(
                F.col("latitude"), F.col("longitude"), hierarchies.geohash_precision
            ),
        }
    )


def _common_prefix(low: Column, high: Column, length: int) -> Column:
    """Longest common prefix of two strings (of at most ``length`` characters)."""
    prefix = F.lit("")
    for n in range(1, length + 1):
        prefix = F.when(
            F.substring(low, 1, n) == F.substring(high, 1, n), F.substring(low, 1, n)
        ).otherwise(prefix)
    return prefix


def _edge_text(edge: Column) -> Column:
    """A band edge as written in conf: ``20``, ``2.5`` (no thousands separator)."""
    return F.when(edge == F.floor(edge), edge.cast("long").cast("string")).otherwise(
        edge.cast("string")
    )


def generalized(stats_df: DataFrame, hierarchies: Hierarchies) -> DataFrame:
    """Per partition (its min/max of every dimension and geohash), the published values.

    ``location_cell``: the longest geohash prefix all rows share (``*`` for none);
    ``time_slot``: the finest of hour, part of day, day, week holding every row, else the
    days spanned; ``amount_range``: the narrowest range of band edges holding every amount;
    ``merchant_category_group``: the category, else its group, else ``*``.
    Also each value's normalized certainty penalty (0 exact .. 1 anything).
    """
    edges = list(hierarchies.amount_edges)
    order = hierarchies.category_order()
    groups = [hierarchies.category_groups[c] for c in order]
    # Location
    cell = _common_prefix(F.col("min_geohash"), F.col("max_geohash"), hierarchies.geohash_precision)
    location = F.when(F.length(cell) > 0, cell).otherwise(F.lit(ANY))
    location_ncp = F.lit(1.0) - F.length(cell) / F.lit(float(hierarchies.geohash_precision))
    # Time: the first level whose slot holds both ends
    slot = F.lit(None).cast("string")
    time_span = F.lit(None).cast("double")
    for name, seconds in reversed(TIME_LEVELS):
        same = F.floor(F.col("min_epoch_s") / seconds) == F.floor(F.col("max_epoch_s") / seconds)
        start = F.from_unixtime(
            F.floor(F.col("min_epoch_s") / seconds) * seconds, "yyyy-MM-dd HH:mm"
        )
        slot = F.when(same, F.concat(F.lit(f"{name} "), start)).otherwise(slot)
        time_span = F.when(same, F.lit(float(seconds))).otherwise(time_span)
    days = F.concat(
        F.lit("days "),
        F.from_unixtime(F.col("min_epoch_s"), "yyyy-MM-dd"),
        F.lit(" to "),
        F.from_unixtime(F.col("max_epoch_s"), "yyyy-MM-dd"),
    )
    spanned_s = (
        F.floor(F.col("max_epoch_s") / 86400) - F.floor(F.col("min_epoch_s") / 86400) + 1
    ) * 86400.0
    time_span = F.coalesce(time_span, spanned_s)
    slot = F.coalesce(slot, days)
    time_ncp = F.least(
        (time_span - 3600.0) / F.greatest(F.col("total_time_span_s") - 3600.0, F.lit(1.0)),
        F.lit(1.0),
    )
    # Amount: band edges around min and max
    edge_array = F.array(*[F.lit(float(e)) for e in edges])
    low = F.element_at(F.filter(edge_array, lambda e: e <= F.col("min_amount")).alias("l"), -1)
    high_candidates = F.filter(edge_array, lambda e: e > F.col("max_amount"))
    high = F.when(F.size(high_candidates) > 0, F.element_at(high_candidates, 1))
    amount_range = F.format_string(
        "[%s, %s)",
        _edge_text(F.coalesce(low, F.lit(0.0))),
        F.coalesce(_edge_text(high), F.lit("inf")),
    ).alias("amount_range")
    bands_used = F.size(
        F.filter(
            edge_array,
            lambda e: (e >= F.coalesce(low, F.lit(0.0))) & ((e < high) | high.isNull()),
        )
    )
    amount_ncp = (bands_used - F.lit(1)) / F.lit(float(max(len(edges) - 1, 1)))
    # Category: rank range -> category, group or any
    order_array = F.array(*[F.lit(c) for c in order] + [F.lit("unknown")])
    group_array = F.array(*[F.lit(g) for g in groups] + [F.lit("unknown")])
    low_rank = F.col("min_category_rank").cast("int") + 1
    high_rank = F.col("max_category_rank").cast("int") + 1
    same_category = low_rank == high_rank
    same_group = F.element_at(group_array, low_rank) == F.element_at(group_array, high_rank)
    category = (
        F.when(same_category, F.element_at(order_array, low_rank))
        .when(same_group, F.concat(F.lit("group "), F.element_at(group_array, low_rank)))
        .otherwise(F.lit(ANY))
    )
    leaves = float(len(order))
    group_size = F.size(F.filter(group_array, lambda g: g == F.element_at(group_array, low_rank)))
    category_ncp = (
        F.when(same_category, F.lit(0.0))
        .when(same_group, (group_size - 1) / F.lit(max(leaves - 1, 1.0)))
        .otherwise(F.lit(1.0))
    )
    return stats_df.select(
        "partition_id",
        location.alias("location_cell"),
        slot.alias("time_slot"),
        amount_range,
        category.alias("merchant_category_group"),
        ((location_ncp + time_ncp + amount_ncp + category_ncp) / 4.0).alias("ncp"),
    )
