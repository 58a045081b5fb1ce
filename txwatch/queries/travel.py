"""Query ``travel``: Kafka -> impossible-travel alerts, within seconds of the payment.

The alert path does not wait for a Delta commit: it reads the input topics itself, parses
and validates each record exactly as ``ingest`` does (the same pure transforms, so it sees
exactly the records bronze gets), joins each transaction to its device's location fixes
(a watermarked stream-stream join on ``watermark_time``, see ``udfs.eventtime``) and hands
every detector's alerts on the transaction/fix pairs to the alert sink, which publishes
them to the potential-fraud topic (the ``alerts`` query stores them in Delta). Then it
publishes each transaction's nearest fix of the batch to the internal
enrichment-candidates topic, which the ``enrich`` query MERGEs into
``transactions_enriched``: the join runs once. No Delta commit happens on this path: a
commit (snapshot update, transaction-id check, statistics) costs more than the rest of a
one-second micro-batch.

A detector of single transactions is a transform ``(pairs_df, conf) -> alerts`` shaped by
``udfs.alerts.to_alerts``: list it in ``DETECTORS``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra.alert_sink import AlertSink
from txwatch.infra.config import Conf
from txwatch.infra.topics import publish
from txwatch.queries import ingest
from txwatch.queries.base import ALERTS_POOL, QuerySpec, RunContext
from udfs.eventtime import with_watermark_time
from udfs.privacy import pseudonymize
from udfs.records import (
    parse_device_locations,
    parse_transactions,
    to_bronze_device_locations,
    to_bronze_transactions,
)
from udfs.travel import (
    impossible_travel_alerts,
    join_transactions_to_locations,
    nearest_location_per_transaction,
    with_travel_metrics,
)

NAME = "travel"

Detector = Callable[[DataFrame, Conf], DataFrame]

DETECTORS: tuple[Detector, ...] = (
    lambda pairs_df, conf: impossible_travel_alerts(pairs_df, conf.impossible_travel),
)


def build_pairs(transactions_df: DataFrame, locations_df: DataFrame, conf: Conf) -> DataFrame:
    """Transaction/fix pairs with distance, gap and implied speed (one row per pair).

    Both inputs are bronze-shaped (valid records only); ``watermark_time`` is added here.
    """
    lead = conf.stream.max_event_time_lead
    pairs_df = join_transactions_to_locations(
        with_watermark_time(transactions_df, lead),
        with_watermark_time(locations_df, lead),
        conf.travel_join(),
    )
    return with_travel_metrics(pairs_df, conf.impossible_travel)


def build(raw_transactions_df: DataFrame, raw_locations_df: DataFrame, conf: Conf) -> DataFrame:
    """Raw Kafka rows of each topic -> transaction/fix pairs, from the valid records only,
    identifiers tokenized (``udfs.privacy.pseudonymize``): alerts and enrichment hold no
    user or device id in the clear."""
    skew, key_variable = conf.stream.max_future_skew, conf.privacy.token_key_env
    transactions_df = parse_transactions(raw_transactions_df, key_variable, skew)
    locations_df = parse_device_locations(raw_locations_df, skew)
    return build_pairs(
        pseudonymize(to_bronze_transactions(transactions_df), key_variable),
        pseudonymize(to_bronze_device_locations(locations_df), key_variable),
        conf,
    )


def publish_candidates(candidates_df: DataFrame, conf: Conf) -> None:
    """Send each transaction's nearest fix of the batch to the enrichment-candidates topic.

    At least once: a micro-batch replayed after a crash sends its rows again, which the
    enrich query's MERGE absorbs (it keeps the nearest fix and the highest speed).
    """
    publish(candidates_df, conf, conf.kafka.topics.enrichment_candidates, key="transaction_id")


def batch_writer(sink: AlertSink, conf: Conf) -> Callable[[DataFrame, int], None]:
    """The ``foreachBatch`` function: every detector's alerts to the sink, then candidates."""

    def write_travel_batch(pairs_df: DataFrame, batch_id: int) -> None:
        pairs_df = pairs_df.persist()
        try:
            alerts = [detector(pairs_df, conf) for detector in DETECTORS]
            sink.publish(reduce(DataFrame.unionByName, alerts))
            candidates_df = nearest_location_per_transaction(pairs_df)
            publish_candidates(candidates_df, conf)
        finally:
            pairs_df.unpersist()

    return write_travel_batch


def start(ctx: RunContext) -> StreamingQuery:
    spark, conf = ctx.spark, ctx.conf
    # One Kafka source per side of the join: each topic is read once per micro-batch.
    topics = conf.kafka.topics
    pairs_df = build(
        ingest.read(spark, conf, (topics.transactions,)),
        ingest.read(spark, conf, (topics.device_locations,)),
        conf,
    )
    sink = AlertSink(spark, conf)
    writer = pairs_df.writeStream.foreachBatch(batch_writer(sink, conf))
    writer = ctx.with_trigger(ctx.checkpoint(writer, NAME), conf.stream.alert_trigger_interval)
    return ctx.start(writer, ALERTS_POOL)


QUERY = QuerySpec(NAME, start, starts_first=True)
