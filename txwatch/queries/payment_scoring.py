"""Query ``payment_scoring``: each valid payment against its customer's history.

Reads the transactions topic (the same parse and checks as ``ingest``) and gives each
payment its behaviour tokens, its velocity and what is new in its account's activity
(``udfs.payment_history``, one stateful operator, its state by customer). Then, per
micro-batch, two detectors look at the same cached rows:

- the newest registered outlier model (``txwatch.model_scorer``): payments above its
  threshold become ``model_outlier`` alerts, with the features that stood out;
- the known fraud patterns (``txwatch.pattern_matcher``): payments whose account's new
  tokens are alike one become ``similar_to_fraud`` alerts.

Both sets go to the alert sink together. Each detector looks for a newer model or newer
patterns on its own refresh interval and swaps it in between two micro-batches, without a
restart; until one exists, its part passes (said once in the log). No Delta table is
written here: the alert path does not wait for a commit.

One query for both, not one each: each read and parsed the topic, ran its own stateful
operator and paid a micro-batch's fixed cost (offset and commit logs, state checkpoints,
planning) on the same two cores as the impossible-travel path.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra.alert_sink import AlertSink
from txwatch.infra.config import Conf, duration_s
from txwatch.model_scorer import ModelScorer
from txwatch.pattern_matcher import PatternMatcher
from txwatch.queries import ingest
from txwatch.queries.base import TABLES_POOL, QuerySpec, RunContext
from udfs.payment_history import QUERY_SQL_CONF, payment_history_stream
from udfs.privacy import pseudonymize
from udfs.records import parse_transactions, to_bronze_transactions

NAME = "payment_scoring"


def batch_writer(
    scorer: ModelScorer, matcher: PatternMatcher, sink: AlertSink
) -> Callable[[DataFrame, int], None]:
    def write_scoring_batch(payments_df: DataFrame, batch_id: int) -> None:
        # Run the whole batch once whatever happens next: the operator's state commits only
        # when every partition of the batch has been computed (Spark fails the batch
        # otherwise), and both detectors read the cached rows.
        payments_df = payments_df.persist()
        try:
            payments_df.count()
            found = [
                alerts_df
                for alerts_df in (scorer.alerts(payments_df), matcher.alerts(payments_df))
                if alerts_df is not None
            ]
            if found:
                sink.publish(reduce(DataFrame.unionByName, found))
        finally:
            payments_df.unpersist()

    return write_scoring_batch


def build(raw_transactions_df: DataFrame, conf: Conf) -> DataFrame:
    """Raw Kafka rows of the transactions topic -> valid payments with their history,
    identifiers tokenized (``udfs.privacy.pseudonymize``)."""
    cfg, key_variable = conf.similarity, conf.privacy.token_key_env
    payments_df = to_bronze_transactions(
        parse_transactions(raw_transactions_df, key_variable, conf.stream.max_future_skew)
    )
    return payment_history_stream(
        pseudonymize(payments_df, key_variable),
        cfg.tokens(),
        duration_s(cfg.new_window),
        duration_s(cfg.habit_window),
    )


def start(ctx: RunContext) -> StreamingQuery:
    spark, conf = ctx.spark, ctx.conf
    scorer = ModelScorer(spark, conf)
    scorer.refresh(force=True)
    matcher = PatternMatcher(spark, conf)
    matcher.refresh(force=True)
    payments_df = build(ingest.read(spark, conf, (conf.kafka.topics.transactions,)), conf)
    writer = payments_df.writeStream.foreachBatch(
        batch_writer(scorer, matcher, AlertSink(spark, conf))
    )
    writer = ctx.with_trigger(ctx.checkpoint(writer, NAME), conf.stream.scoring_trigger_interval)
    return ctx.start(writer, TABLES_POOL, QUERY_SQL_CONF)


QUERY = QuerySpec(NAME, start)
