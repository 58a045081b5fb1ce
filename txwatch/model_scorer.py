"""The outlier model in the stream: the newest registered version, loaded and refreshed.

``ModelScorer`` looks the model up in the registry (``txwatch.registry``) when the stream
starts and again every ``model.refresh_interval``: a newer version (a new ``train`` run) is
loaded with the customer profiles it was trained with (``customer_profiles`` at that Delta
version, cached) between two micro-batches, without a restart. Its ``alerts`` joins a
micro-batch of payments (with their velocity, ``udfs.payment_history``) to the profiles,
scores them with the model's ``pyspark.ml`` pipeline (``txwatch.model``) and returns the
``model_outlier`` alerts of those above the model's threshold, the features that stood out
in the reason. The ``payment_scoring`` query calls it; so does the evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyspark.sql.functions as F
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from txwatch import model, registry
from txwatch.infra.config import Conf, duration_s
from udfs.model_alerts import model_outlier_alerts
from udfs.model_features import as_seen
from udfs.schemas import CUSTOMER_PROFILES

NAME = "payment_scoring"  # the query it runs in: log lines say so


@dataclass
class LoadedModel:
    version: int
    pipeline: PipelineModel
    threshold: float
    profiles_df: DataFrame
    features: tuple[str, ...]

    def release(self) -> None:
        self.profiles_df.unpersist()


def load(spark: SparkSession, found: registry.ModelVersion) -> LoadedModel:
    """The registered version's pipeline and the customer profiles it was trained with."""
    params = found.params
    profiles_df = (
        spark.read.format("delta")
        .option("versionAsOf", int(params["profiles_version"]))
        .load(params["profiles_table"])
    )
    if "p_hours" not in profiles_df.columns:  # written before the column; its model ignores it
        counts = CUSTOMER_PROFILES["p_hours"].dataType
        profiles_df = profiles_df.withColumn("p_hours", F.create_map().cast(counts))
    pipeline = PipelineModel.load(found.model_path)
    return LoadedModel(
        found.version,
        pipeline,
        float(params["threshold"]),
        profiles_df.persist(),
        model.model_features(pipeline),
    )


class ModelScorer:
    """Keeps the newest registered model loaded; scores micro-batches with it."""

    def __init__(self, spark: SparkSession, conf: Conf) -> None:
        self._spark = spark
        self._conf = conf
        self._refresh_s = duration_s(conf.model.refresh_interval)
        self._checked_at = float("-inf")
        self._said_missing = False
        self.current: LoadedModel | None = None

    def refresh(self, force: bool = False) -> LoadedModel | None:
        """Look for a newer version if ``refresh_interval`` has passed (or ``force``)."""
        now = time.monotonic()
        if not force and now - self._checked_at < self._refresh_s:
            return self.current
        self._checked_at = now
        found = registry.newest(self._conf)
        if found is None:
            if not self._said_missing:
                print(
                    f"[{NAME}] no model '{self._conf.model.name}' registered yet: payments "
                    "pass unscored until `./spark-submit.sh train` registers one",
                    flush=True,
                )
                self._said_missing = True
            return self.current
        if self.current is None or found.version > self.current.version:
            loaded = load(self._spark, found)
            previous, self.current = self.current, loaded
            if previous is not None:
                previous.release()
            print(
                f"[{NAME}] scoring with {self._conf.model.name} version {loaded.version} "
                f"(threshold {loaded.threshold:.2f})",
                flush=True,
            )
        return self.current

    def alerts(self, payments_df: DataFrame) -> DataFrame | None:
        """The batch's ``model_outlier`` alerts, or None while no model is registered."""
        loaded = self.refresh()
        if loaded is None:
            return None
        scored_df = model.score(loaded.pipeline, as_seen(payments_df, loaded.profiles_df))
        return model_outlier_alerts(
            scored_df,
            loaded.threshold,
            loaded.version,
            model.explanation(loaded.features),
            loaded.features,
        )
