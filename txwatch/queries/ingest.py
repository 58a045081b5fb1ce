"""Query ``ingest``: Kafka -> bronze tables + quarantine.

Reads the input topics (transactions, device locations, metrics) as one Kafka stream,
parses and validates each record (``udfs.records``), tokenizes card numbers and appends to
``bronze_transactions``, ``bronze_device_locations`` and ``quarantine``. Valid points of
the metrics topic are the ``metric_points`` query's input, stored scored in
``metric_scores``; here only the invalid ones go anywhere (to ``quarantine``). Appends carry Delta's
``txnAppId``/``txnVersion``, so a micro-batch replayed after a crash is not written twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra import tables
from txwatch.infra.config import Conf
from txwatch.infra.delta import append_once
from txwatch.queries.base import QuerySpec, RunContext
from udfs.records import (
    filter_invalid_records,
    parse_device_locations,
    parse_metric_points,
    parse_transactions,
    to_bronze_device_locations,
    to_bronze_transactions,
    to_quarantine,
    with_kafka_columns,
)

NAME = "ingest"


def read(spark: SparkSession, conf: Conf, topics: tuple[str, ...] | None = None) -> DataFrame:
    """The input topics (default: all three) as one Kafka stream, columns named as in tables."""
    if topics is None:
        names = conf.kafka.topics
        topics = (names.transactions, names.device_locations, names.metrics)
    return (
        spark.readStream.format("kafka")
        .options(**conf.kafka_options())
        .option("subscribe", ",".join(topics))
        .option("startingOffsets", conf.kafka.starting_offsets)
        .option("maxOffsetsPerTrigger", str(conf.kafka.max_offsets_per_trigger))
        .option("failOnDataLoss", str(conf.kafka.fail_on_data_loss).lower())
        .load()
        .transform(with_kafka_columns)
    )


@dataclass(frozen=True)
class ParsedBatch:
    """Each topic's records, typed, with a ``quarantine_reason`` (null when valid)."""

    transactions_df: DataFrame
    device_locations_df: DataFrame
    metric_points_df: DataFrame

    def persist(self) -> ParsedBatch:
        return ParsedBatch(
            self.transactions_df.persist(),
            self.device_locations_df.persist(),
            self.metric_points_df.persist(),
        )

    def unpersist(self) -> None:
        self.transactions_df.unpersist()
        self.device_locations_df.unpersist()
        self.metric_points_df.unpersist()


@dataclass(frozen=True)
class IngestOutputs:
    bronze_transactions_df: DataFrame
    bronze_device_locations_df: DataFrame
    quarantine_df: DataFrame


def _raw_text_of_invalid_only(parsed_df: DataFrame) -> DataFrame:
    """Keep the raw key and value only where quarantine needs them: on invalid records.

    The raw JSON is most of a parsed record's size, and the parsed batch is cached while
    three tables are written; valid records never need it again.
    """
    is_invalid = F.col("quarantine_reason").isNotNull()
    return parsed_df.withColumns(
        {name: F.when(is_invalid, F.col(name)) for name in ("kafka_key", "raw_value")}
    )


def parse_batch(raw_df: DataFrame, conf: Conf) -> ParsedBatch:
    """Parse and validate raw Kafka rows, by topic."""
    topics = conf.kafka.topics
    skew = conf.stream.max_future_skew
    return ParsedBatch(
        transactions_df=_raw_text_of_invalid_only(
            parse_transactions(
                raw_df.filter(F.col("kafka_topic") == topics.transactions),
                conf.privacy.token_key_env,
                skew,
            )
        ),
        device_locations_df=_raw_text_of_invalid_only(
            parse_device_locations(
                raw_df.filter(F.col("kafka_topic") == topics.device_locations), skew
            )
        ),
        metric_points_df=filter_invalid_records(
            parse_metric_points(raw_df.filter(F.col("kafka_topic") == topics.metrics), skew)
        ),
    )


def build(parsed: ParsedBatch, key_variable: str) -> IngestOutputs:
    """Split parsed records into the three ingestion tables."""
    transactions_df, locations_df = parsed.transactions_df, parsed.device_locations_df
    return IngestOutputs(
        bronze_transactions_df=to_bronze_transactions(transactions_df),
        bronze_device_locations_df=to_bronze_device_locations(locations_df),
        quarantine_df=to_quarantine(transactions_df, key_variable)
        .unionByName(to_quarantine(locations_df, key_variable))
        .unionByName(to_quarantine(parsed.metric_points_df, key_variable)),
    )


def batch_writer(conf: Conf) -> Callable[[DataFrame, int], None]:
    """The ``foreachBatch`` function of the ingest query."""

    def write_ingest_batch(batch_df: DataFrame, batch_id: int) -> None:
        # Read Kafka once and parse each record once, although three tables are written.
        raw_df = batch_df.persist()
        parsed = parse_batch(raw_df, conf).persist()
        try:
            outputs = build(parsed, conf.privacy.token_key_env)
            for table, df in (
                (tables.BRONZE_TRANSACTIONS, outputs.bronze_transactions_df),
                (tables.BRONZE_DEVICE_LOCATIONS, outputs.bronze_device_locations_df),
                (tables.QUARANTINE, outputs.quarantine_df),
            ):
                append_once(df, conf, table, NAME, batch_id)
        finally:
            parsed.unpersist()
            raw_df.unpersist()

    return write_ingest_batch


def start(ctx: RunContext) -> StreamingQuery:
    writer = read(ctx.spark, ctx.conf).writeStream.foreachBatch(batch_writer(ctx.conf))
    return ctx.start(ctx.with_trigger(ctx.checkpoint(writer, NAME)))


QUERY = QuerySpec(NAME, start)
