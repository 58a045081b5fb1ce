"""The outlier model: fit on past payments, score new ones, explain the score.

The ``pyspark.ml`` pipeline, saved and registered as one model:

1. ``SQLTransformer``: the features of a payment against its customer's habits
   (``udfs.model_features.FEATURES_SQL``), then one more: the amount against its merchant
   category's usual amounts (``category_amount_sql``, fitted on the training payments);
2. ``SQLTransformer``: each feature standardized with the training mean and standard
   deviation (floored at ``MIN_FEATURE_SD``: a feature that never varied in training, such
   as a new device, still counts when it does);
3. ``VectorAssembler`` -> ``KMeans`` (``model.clusters`` clusters).

The outlier score of a payment is its distance to the nearest cluster centre in
standardized units; the threshold is the ``model.threshold_quantile`` quantile of the
training payments' scores (each judged against its customer's *other* payments), so about
``1 - quantile`` of payments like the training ones are flagged. The reason names the
features whose standardized values stand out most in the unusual direction (the distance
also counts a payment *more* usual than its centre).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyspark.sql.functions as F
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.feature import SQLTransformer, VectorAssembler
from pyspark.sql import Column, DataFrame

from udfs.model_features import (
    FEATURES,
    FEATURES_SQL,
    category_amount_sql,
    category_amount_stats,
)

# A feature's standard deviation in training is taken as at least this (standardized units
# are then at most 1 / MIN_FEATURE_SD per unit of the feature) ...
MIN_FEATURE_SD = 0.05
# ... and for the velocity counts (ln(1 + count)) at least this: one payment more than
# usual (0 -> 1 is 0.69) is then 1.4 standard deviations, not 5 where a customer rarely pays
# twice in ten minutes (measured on the demo: with 0.05, one earlier decline was enough to
# flag 0.75 % of ordinary payments; with 0.5, 0.3 %).
MIN_COUNT_SD = 0.5
COUNT_FEATURES = ("payments_10m", "declines_10m", "payments_1h")
VECTOR = "model_vector"
CLUSTER = "model_cluster"


def scaled(name: str) -> str:
    return f"{name}_scaled"


@dataclass(frozen=True)
class FeatureScale:
    mean: float
    sd: float


def model_features(model: PipelineModel) -> tuple[str, ...]:
    """The features a fitted pipeline uses, in its vector's order: a model trained before a
    feature was added goes on scoring (and explaining) with its own."""
    assembler = next(s for s in model.stages if isinstance(s, VectorAssembler))
    return tuple(c.removesuffix("_scaled") for c in assembler.getInputCols())


def feature_scales(
    features_df: DataFrame, features: tuple[str, ...] = FEATURES
) -> dict[str, FeatureScale]:
    """Mean and floored standard deviation of each of ``features`` over ``features_df``."""
    row = features_df.agg(
        *[F.avg(f).alias(f"{f}__mean") for f in features],
        *[F.stddev_pop(f).alias(f"{f}__sd") for f in features],
    ).first()
    assert row is not None
    return {
        f: FeatureScale(
            float(row[f"{f}__mean"] or 0.0),
            max(
                float(row[f"{f}__sd"] or 0.0),
                MIN_COUNT_SD if f in COUNT_FEATURES else MIN_FEATURE_SD,
            ),
        )
        for f in features
    }


def _standardize_sql(scales: dict[str, FeatureScale]) -> str:
    columns = ",\n  ".join(
        f"({f} - {s.mean!r}D) / {s.sd!r}D AS {scaled(f)}" for f, s in scales.items()
    )
    return f"SELECT *,\n  {columns}\nFROM __THIS__"


def fit_model(
    seen_df: DataFrame, clusters: int, seed: int, features: tuple[str, ...] = FEATURES
) -> PipelineModel:
    """Fit the pipeline on past payments shaped by ``udfs.model_features.leave_one_out``,
    on ``features`` (a subset of ``FEATURES``, in its order)."""
    by_features = SQLTransformer(statement=FEATURES_SQL)
    by_category = SQLTransformer(statement=category_amount_sql(category_amount_stats(seen_df)))
    computed = by_category.transform(by_features.transform(seen_df))
    scales = feature_scales(computed, features)
    pipeline = Pipeline(
        stages=[
            by_features,
            by_category,
            SQLTransformer(statement=_standardize_sql(scales)),
            VectorAssembler(inputCols=[scaled(f) for f in features], outputCol=VECTOR),
            KMeans(k=clusters, seed=seed, featuresCol=VECTOR, predictionCol=CLUSTER, maxIter=30),
        ]
    )
    return pipeline.fit(seen_df)


def _centers(model: PipelineModel) -> list[list[float]]:
    kmeans = model.stages[-1]
    assert isinstance(kmeans, KMeansModel)
    return [[float(x) for x in c] for c in kmeans.clusterCenters()]


def score(model: PipelineModel, seen_df: DataFrame) -> DataFrame:
    """``seen_df`` with the features and ``outlier_score``: the distance (standardized units)
    to the nearest cluster centre."""
    centers = _centers(model)
    squares = [
        (F.col(scaled(name)) - F.array(*[F.lit(c[i]) for c in centers])[F.col(CLUSTER)]) ** 2
        for i, name in enumerate(model_features(model))
    ]
    total = sum(squares, F.lit(0.0))
    return model.transform(seen_df).withColumn("outlier_score", F.sqrt(total))


def calibrate_threshold(scores_df: DataFrame, quantile: float) -> float:
    """The ``quantile`` of ``outlier_score`` over ``scores_df`` (exact, not approximate)."""
    row = scores_df.agg(F.percentile("outlier_score", quantile).alias("q")).first()
    if row is None or row.q is None:
        raise ValueError("no scores to calibrate a threshold on")
    return float(row.q)


def _fmt(value: Column, decimals: int = 2) -> Column:
    return F.format_number(value, decimals)


def _feature_texts() -> dict[str, Column]:
    """What each feature says about a payment, with the customer's usual value."""
    usual_amount = F.expm1(F.col("usual_log_amount"))
    n = F.col("usual_n").cast("long")
    return {
        "amount_z": F.concat(
            F.lit("amount "),
            _fmt(F.col("amount")),
            F.lit(" "),
            F.col("currency"),
            F.lit(", usually about "),
            _fmt(usual_amount),
            F.lit(" ("),
            _fmt(F.col("amount_z"), 1),
            F.lit(" sd)"),
        ),
        "amount_category_z": F.concat(
            F.lit("amount "),
            _fmt(F.col("amount")),
            F.lit(" for "),
            F.col("merchant_category"),
            F.lit(" ("),
            _fmt(F.col("amount_category_z"), 1),
            F.lit(" sd from what the category usually costs)"),
        ),
        "category_novelty": F.concat(
            F.lit("merchant category "),
            F.col("merchant_category"),
            F.lit(" in "),
            F.col("usual_category_count").cast("long").cast("string"),
            F.lit(" of "),
            n.cast("string"),
            F.lit(" past payments"),
        ),
        "distance_log_km": F.concat(
            _fmt(F.col("distance_from_usual_km"), 0),
            F.lit(" km from the nearest place of their past payments"),
        ),
        "new_device": F.concat(
            F.lit("device "),
            F.col("device_id"),
            F.lit(" used in "),
            F.col("usual_device_count").cast("long").cast("string"),
            F.lit(" of "),
            n.cast("string"),
            F.lit(" past payments"),
        ),
        "declined": F.concat(F.lit("status "), F.col("status")),
        "payments_10m": F.concat(
            F.col("prior_payments_10m").cast("string"),
            F.lit(" other payments in the 10 minutes before"),
        ),
        "declines_10m": F.concat(
            F.col("prior_declines_10m").cast("string"),
            F.lit(" declined payments in the 10 minutes before"),
        ),
        "payments_1h": F.concat(
            F.col("prior_payments_1h").cast("string"), F.lit(" other payments in the hour before")
        ),
        "unusual_hour": F.concat(
            F.lit("at "),
            F.date_format("event_time", "HH:mm"),
            F.lit(" UTC, "),
            F.col("usual_hour_count").cast("long").cast("string"),
            F.lit(" of "),
            n.cast("string"),
            F.lit(" past payments in the clock hours around it"),
        ),
    }


# Features where only a high value is unusual; the amounts are unusual both ways.
TWO_SIDED = ("amount_z", "amount_category_z")


def explanation(features: tuple[str, ...] = FEATURES, top: int = 2) -> Column:
    """The ``top`` of ``features`` that stand out most, as text, most first.

    A feature stands out by its standardized value in the unusual direction (the distance
    to the nearest centre also counts a payment *more* usual than the centre).
    """
    texts = _feature_texts()

    def excess(name: str) -> Column:
        value = F.col(scaled(name))
        return F.abs(value) if name in TWO_SIDED else F.greatest(value, F.lit(0.0))

    ranked = F.sort_array(
        F.array(*[F.struct(excess(f).alias("e"), texts[f].alias("text")) for f in features]),
        asc=False,
    )
    return F.array_join(F.transform(F.slice(ranked, 1, top), lambda e: e["text"]), "; ")
