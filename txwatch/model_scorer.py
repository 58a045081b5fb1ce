"""The outlier model in the stream: the newest registered version, loaded and refreshed.

``ModelScorer`` looks the model up in the registry (``txwatch.registry``) when the stream
starts and again every ``model.refresh_interval``: a newer version (a new ``train`` run) is
loaded with the customer profiles it was trained with (``customer_profiles`` at that Delta
version, cached) between two micro-batches, without a restart. Its ``alerts`` joins a
micro-batch of payments (with their velocity, ``udfs.payment_history``) to the profiles,
scores them with the model's ``pyspark.ml`` pipeline (``txwatch.model``) and returns the
``model_outlier`` alerts of those above the model's threshold, the features that stood out
in the reason. The ``payment_scoring`` query calls it; so does the evaluation.

A version this job cannot score with (a feature it does not know, or a column its
pipeline reads that this code does not compute: a newer txwatch trained it) is refused when
found, said once in the log; the scorer keeps the version it has, or payments pass
unscored, until a version it can use is registered or the job is upgraded. The columns are
checked by Spark's analysis of the scoring plan on no rows, which fails on the first
column the stream does not have.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyspark.sql.functions as F
from pyspark.errors import AnalysisException
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from txwatch import model, registry
from txwatch.infra.config import Conf, duration_s
from txwatch.infra.errors import first_line
from udfs.model_alerts import model_outlier_alerts
from udfs.model_features import FEATURES, as_seen
from udfs.payment_history import OUTPUT_SCHEMA
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
        self._refused_version = 0  # the newest version found unusable, not loaded again
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
        newest_tried = max(self.current.version if self.current else 0, self._refused_version)
        if found.version > newest_tried:
            loaded = load(self._spark, found)
            why_not = self._cannot_score(loaded)
            if why_not is not None:
                loaded.release()
                self._refused_version = found.version
                instead = (
                    f"scoring goes on with version {self.current.version}"
                    if self.current
                    else "payments pass unscored"
                )
                print(
                    f"[{NAME}] cannot score with {self._conf.model.name} version "
                    f"{found.version}: {why_not}. The model reads what this job does not "
                    f"compute (trained by a newer txwatch?): {instead} until a version it "
                    "can use is registered or the job is upgraded",
                    flush=True,
                )
                return self.current
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
        return _alerts(loaded, payments_df)

    def _cannot_score(self, loaded: LoadedModel) -> str | None:
        """Why this job cannot score payments with ``loaded``, or None if it can."""
        unknown = [f for f in loaded.features if f not in FEATURES]
        if unknown:
            return f"features this job does not compute or explain: {', '.join(unknown)}"
        no_payments_df = self._spark.createDataFrame([], OUTPUT_SCHEMA)
        try:
            _alerts(loaded, no_payments_df)  # building the plan analyses it; nothing runs
        except AnalysisException as err:
            return first_line(err)
        return None


def _alerts(loaded: LoadedModel, payments_df: DataFrame) -> DataFrame:
    scored_df = model.score(loaded.pipeline, as_seen(payments_df, loaded.profiles_df))
    return model_outlier_alerts(
        scored_df,
        loaded.threshold,
        loaded.version,
        model.explanation(loaded.features),
        loaded.features,
    )
