"""Query ``model_scoring``: every valid payment through the newest registered outlier model.

Reads the transactions topic (the same parse and checks as ``ingest``), counts each
customer's payments and declines just before each payment (``udfs.velocity``, a stateful
operator per customer holding their last hour of payments), joins each payment
to its customer's profile (``customer_profiles``, at the Delta version the model was
trained with, cached) and scores it with the model's ``pyspark.ml`` pipeline
(``txwatch.model``). Payments above the model's threshold go to the alert sink as
``model_outlier`` alerts, with the features that stood out in the reason.

The model is looked up in the registry when the query starts and again every
``model.refresh_interval``: a newer version (a new ``train`` run) is loaded with its
profiles between two micro-batches, without a restart. Until a model is registered,
payments pass unscored (said once in the log). No Delta table is written here: the alert
path does not wait for a commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from txwatch import model, registry
from txwatch.infra.alert_sink import AlertSink
from txwatch.infra.config import Conf, duration_s
from txwatch.queries import ingest
from txwatch.queries.base import TABLES_POOL, QuerySpec, RunContext
from udfs.model_alerts import model_outlier_alerts
from udfs.model_features import as_seen
from udfs.records import parse_transactions, to_bronze_transactions
from udfs.velocity import velocity_stream

NAME = "model_scoring"


@dataclass
class LoadedModel:
    version: int
    pipeline: PipelineModel
    threshold: float
    profiles_df: DataFrame

    def release(self) -> None:
        self.profiles_df.unpersist()


def load(spark: SparkSession, found: registry.ModelVersion) -> LoadedModel:
    """The registered version's pipeline and the customer profiles it was trained with."""
    params = found.params
    profiles_df = (
        spark.read.format("delta")
        .option("versionAsOf", int(params["profiles_version"]))
        .load(params["profiles_table"])
        .persist()
    )
    return LoadedModel(
        found.version,
        PipelineModel.load(found.model_path),
        float(params["threshold"]),
        profiles_df,
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
            scored_df, loaded.threshold, loaded.version, model.explanation()
        )


def batch_writer(scorer: ModelScorer, sink: AlertSink) -> Callable[[DataFrame, int], None]:
    def write_scoring_batch(payments_df: DataFrame, batch_id: int) -> None:
        # Run the whole batch once whatever happens next: the velocity operator's state
        # commits only when every partition of the batch has been computed (Spark fails
        # the batch otherwise), and scoring reads the cached rows.
        payments_df = payments_df.persist()
        try:
            payments_df.count()
            alerts_df = scorer.alerts(payments_df)
            if alerts_df is not None:
                sink.publish(alerts_df)
        finally:
            payments_df.unpersist()

    return write_scoring_batch


def build(raw_transactions_df: DataFrame, conf: Conf, token_key: bytes) -> DataFrame:
    """Raw Kafka rows of the transactions topic -> valid payments with their velocity."""
    return velocity_stream(
        to_bronze_transactions(
            parse_transactions(raw_transactions_df, token_key, conf.stream.max_future_skew)
        )
    )


def start(ctx: RunContext) -> StreamingQuery:
    spark, conf = ctx.spark, ctx.conf
    scorer = ModelScorer(spark, conf)
    scorer.refresh(force=True)
    payments_df = build(
        ingest.read(spark, conf, (conf.kafka.topics.transactions,)), conf, ctx.token_key
    )
    writer = payments_df.writeStream.foreachBatch(batch_writer(scorer, AlertSink(spark, conf)))
    writer = ctx.with_trigger(ctx.checkpoint(writer, NAME), conf.model.trigger_interval)
    return ctx.start(writer, TABLES_POOL)


QUERY = QuerySpec(NAME, start)
