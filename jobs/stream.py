"""The streaming pipeline: Kafka -> bronze + quarantine -> enriched + alerts.

Two streaming queries:

``ingest``  reads both input topics, parses and validates each record, tokenizes card
            numbers and appends to ``bronze_transactions``, ``bronze_device_locations`` and
            ``quarantine``. Appends carry Delta's ``txnAppId``/``txnVersion`` so a micro-batch
            replayed after a crash is not written twice.
``enrich``  reads the two bronze tables as streams, joins each transaction to its device's
            location fixes (watermarked stream-stream join), MERGEs one row per transaction
            into ``transactions_enriched`` and new impossible-travel alerts into ``alerts``,
            publishing each new alert to the ``potential-fraud`` topic.

    ./spark-submit.sh stream [--conf conf/local.yaml] [--available-now]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyspark.sql.functions as F
import pyspark.sql.types as T
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from jobs import tables
from jobs.config import DEFAULT_CONF, Conf, load_conf
from jobs.kafka_admin import ensure_topics
from jobs.session import create_session
from udfs.privacy import token_key_from_env
from udfs.records import (
    RAW_KAFKA_SCHEMA,
    parse_device_locations,
    parse_transactions,
    to_bronze_device_locations,
    to_bronze_transactions,
    to_quarantine,
    with_kafka_columns,
)
from udfs.travel import (
    impossible_travel_alerts,
    join_transactions_to_locations,
    nearest_location_per_transaction,
    with_travel_metrics,
)

INGEST_QUERY = "ingest"
ENRICH_QUERY = "enrich"


# --------------------------------------------------------------------------- sources


def read_sources(spark: SparkSession, conf: Conf) -> DataFrame:
    """Both input topics as one Kafka stream, columns named as in every txwatch table."""
    topics = conf.kafka.topics
    return (
        spark.readStream.format("kafka")
        .options(**conf.kafka_options())
        .option("subscribe", f"{topics.transactions},{topics.device_locations}")
        .option("startingOffsets", conf.kafka.starting_offsets)
        .option("maxOffsetsPerTrigger", str(conf.kafka.max_offsets_per_trigger))
        .option("failOnDataLoss", str(conf.kafka.fail_on_data_loss).lower())
        .load()
        .transform(with_kafka_columns)
    )


def read_bronze(spark: SparkSession, conf: Conf, table: str) -> DataFrame:
    return (
        spark.readStream.format("delta")
        .option("maxFilesPerTrigger", str(conf.stream.max_files_per_trigger))
        .load(conf.table_path(table))
    )


# --------------------------------------------------------------------------- transforms


@dataclass(frozen=True)
class ParsedBatch:
    """Each topic's records, typed, with a ``quarantine_reason`` (null when valid)."""

    transactions_df: DataFrame
    device_locations_df: DataFrame

    def persist(self) -> ParsedBatch:
        return ParsedBatch(self.transactions_df.persist(), self.device_locations_df.persist())

    def unpersist(self) -> None:
        self.transactions_df.unpersist()
        self.device_locations_df.unpersist()


@dataclass(frozen=True)
class IngestOutputs:
    bronze_transactions_df: DataFrame
    bronze_device_locations_df: DataFrame
    quarantine_df: DataFrame


def parse_batch(raw_df: DataFrame, conf: Conf, token_key: bytes) -> ParsedBatch:
    """Parse and validate raw Kafka rows, by topic."""
    topics = conf.kafka.topics
    skew = conf.stream.max_future_skew
    return ParsedBatch(
        transactions_df=parse_transactions(
            raw_df.filter(F.col("kafka_topic") == topics.transactions), token_key, skew
        ),
        device_locations_df=parse_device_locations(
            raw_df.filter(F.col("kafka_topic") == topics.device_locations), skew
        ),
    )


def build_ingest(parsed: ParsedBatch) -> IngestOutputs:
    """Split parsed records into the three ingestion tables."""
    transactions_df, locations_df = parsed.transactions_df, parsed.device_locations_df
    return IngestOutputs(
        bronze_transactions_df=to_bronze_transactions(transactions_df),
        bronze_device_locations_df=to_bronze_device_locations(locations_df),
        quarantine_df=to_quarantine(transactions_df).unionByName(to_quarantine(locations_df)),
    )


def build_enrich(transactions_df: DataFrame, locations_df: DataFrame, conf: Conf) -> DataFrame:
    """Transaction/fix pairs with distance, gap and implied speed (one row per pair)."""
    pairs_df = join_transactions_to_locations(transactions_df, locations_df, conf.stream)
    return with_travel_metrics(pairs_df, conf.impossible_travel)


# --------------------------------------------------------------------------- sinks


def _empty_raw_df(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], RAW_KAFKA_SCHEMA)


def table_schemas(spark: SparkSession, conf: Conf) -> dict[str, T.StructType]:
    """The schema of each table, derived from the transforms that write it."""
    ingest = build_ingest(parse_batch(_empty_raw_df(spark), conf, b"schema-only"))
    metrics_df = build_enrich(
        ingest.bronze_transactions_df, ingest.bronze_device_locations_df, conf
    )
    return {
        tables.BRONZE_TRANSACTIONS: ingest.bronze_transactions_df.schema,
        tables.BRONZE_DEVICE_LOCATIONS: ingest.bronze_device_locations_df.schema,
        tables.QUARANTINE: ingest.quarantine_df.schema,
        tables.TRANSACTIONS_ENRICHED: nearest_location_per_transaction(metrics_df).schema,
        tables.ALERTS: impossible_travel_alerts(metrics_df, conf.impossible_travel).schema,
        tables.PIPELINE_PROGRESS: PROGRESS_SCHEMA,
    }


def ensure_tables(spark: SparkSession, conf: Conf) -> None:
    """Create every table the stream writes, so readers and MERGEs find them from the start."""
    for table, schema in table_schemas(spark, conf).items():
        (
            DeltaTable.createIfNotExists(spark)
            .location(conf.table_path(table))
            .addColumns(schema)
            .execute()
        )


def _append_once(df: DataFrame, conf: Conf, table: str, batch_id: int) -> None:
    """Append ``df`` unless this micro-batch was already committed to ``table``."""
    (
        df.write.format("delta")
        .mode("append")
        .option("txnAppId", f"txwatch-{INGEST_QUERY}-{table}")
        .option("txnVersion", batch_id)
        .save(conf.table_path(table))
    )


def ingest_batch_writer(conf: Conf, token_key: bytes) -> Callable[[DataFrame, int], None]:
    """The ``foreachBatch`` function of the ingest query."""

    def write_ingest_batch(batch_df: DataFrame, batch_id: int) -> None:
        # Read Kafka once and parse each record once, although three tables are written.
        raw_df = batch_df.persist()
        parsed = parse_batch(raw_df, conf, token_key).persist()
        try:
            outputs = build_ingest(parsed)
            _append_once(outputs.bronze_transactions_df, conf, tables.BRONZE_TRANSACTIONS, batch_id)
            _append_once(
                outputs.bronze_device_locations_df, conf, tables.BRONZE_DEVICE_LOCATIONS, batch_id
            )
            _append_once(outputs.quarantine_df, conf, tables.QUARANTINE, batch_id)
        finally:
            parsed.unpersist()
            raw_df.unpersist()

    return write_ingest_batch


def event_time_range(df: DataFrame) -> str | None:
    """A SQL predicate on ``t.event_time`` covering ``df``'s event times (None if empty).

    MERGE only skips target files by predicates on the target alone, so each MERGE names
    the batch's event-time range: files of other hours and days are not even opened.
    """
    fmt = "yyyy-MM-dd HH:mm:ss.SSSSSS"
    bounds = df.agg(
        F.date_format(F.min("event_time"), fmt).alias("first"),
        F.date_format(F.max("event_time"), fmt).alias("last"),
    ).collect()[0]
    if bounds.first is None:
        return None
    return f"t.event_time BETWEEN TIMESTAMP'{bounds.first}' AND TIMESTAMP'{bounds.last}'"


def merge_enriched(spark: SparkSession, conf: Conf, enriched_df: DataFrame, in_range: str) -> None:
    """Upsert one row per transaction, keeping the nearest fix and the highest speed seen.

    Replaying a micro-batch changes nothing: a row is only replaced by a strictly nearer
    fix, and ``max_implied_speed_mps`` only grows. A transaction's event time never
    changes, so ``in_range`` (see ``event_time_range``) is safe to add to the condition.
    """
    target = DeltaTable.forPath(spark, conf.table_path(tables.TRANSACTIONS_ENRICHED))
    columns = enriched_df.columns
    keep_max: dict[str, str | Column] = {
        "max_implied_speed_mps": "greatest(t.max_implied_speed_mps, s.max_implied_speed_mps)"
    }
    is_nearer_fix = "s.has_location AND (NOT t.has_location OR abs(s.gap_s) < abs(t.gap_s))"
    is_faster = "s.max_implied_speed_mps > coalesce(t.max_implied_speed_mps, -1.0)"
    (
        target.alias("t")
        .merge(
            enriched_df.alias("s"),
            f"t.transaction_id = s.transaction_id AND t.event_time = s.event_time AND {in_range}",
        )
        .whenMatchedUpdate(
            condition=is_nearer_fix, set={**{c: f"s.{c}" for c in columns}, **keep_max}
        )
        .whenMatchedUpdate(condition=is_faster, set=keep_max)
        .whenNotMatchedInsertAll()
        .execute()
    )


def publish_alerts(conf: Conf, alerts_df: DataFrame) -> None:
    """Send alerts as JSON to the potential-fraud topic, keyed by ``alert_id``."""
    (
        alerts_df.select(
            F.col("alert_id").alias("key"),
            F.to_json(F.struct(*[F.col(c) for c in alerts_df.columns])).alias("value"),
        )
        .write.format("kafka")
        .options(**conf.kafka_options())
        .option("topic", conf.kafka.topics.potential_fraud)
        .save()
    )


def save_new_alerts(spark: SparkSession, conf: Conf, alerts_df: DataFrame, in_range: str) -> int:
    """Publish and store the alerts not stored yet; return how many there were.

    Publishing comes before the MERGE: a crash between the two republishes on restart
    (the topic is at-least-once, keyed by ``alert_id``) but never loses an alert.
    """
    target = DeltaTable.forPath(spark, conf.table_path(tables.ALERTS))
    stored_df = target.toDF().alias("t").filter(F.expr(in_range)).select("alert_id")
    new_alerts_df = alerts_df.join(stored_df, on="alert_id", how="left_anti").persist()
    try:
        count = new_alerts_df.count()
        if count:
            publish_alerts(conf, new_alerts_df)
            (
                target.alias("t")
                .merge(new_alerts_df.alias("s"), f"t.alert_id = s.alert_id AND {in_range}")
                .whenNotMatchedInsertAll()
                .execute()
            )
        return count
    finally:
        new_alerts_df.unpersist()


def enrich_batch_writer(spark: SparkSession, conf: Conf) -> Callable[[DataFrame, int], None]:
    """The ``foreachBatch`` function of the enrich query."""

    def write_enrich_batch(batch_df: DataFrame, batch_id: int) -> None:
        metrics_df = batch_df.persist()
        try:
            in_range = event_time_range(metrics_df)
            if in_range is None:  # a batch that only moved the watermark
                return
            merge_enriched(spark, conf, nearest_location_per_transaction(metrics_df), in_range)
            alerts_df = impossible_travel_alerts(metrics_df, conf.impossible_travel)
            save_new_alerts(spark, conf, alerts_df, in_range)
        finally:
            metrics_df.unpersist()

    return write_enrich_batch


# --------------------------------------------------------------------------- progress

PROGRESS_SCHEMA = T.StructType(
    [
        T.StructField("query_name", T.StringType()),
        T.StructField("run_id", T.StringType()),
        T.StructField("batch_id", T.LongType()),
        T.StructField("batch_time", T.StringType()),
        T.StructField("num_input_rows", T.LongType()),
        T.StructField("input_rows_per_second", T.DoubleType()),
        T.StructField("processed_rows_per_second", T.DoubleType()),
        T.StructField("batch_duration_ms", T.LongType()),
        T.StructField("state_rows", T.LongType()),
        T.StructField("rows_dropped_by_watermark", T.LongType()),
        T.StructField("watermark", T.StringType()),
    ]
)


def progress_row(p) -> tuple:
    """One ``pipeline_progress`` row from a ``StreamingQueryProgress``."""
    return (
        p.name,
        str(p.runId),
        p.batchId,
        p.timestamp,
        p.numInputRows,
        float(p.inputRowsPerSecond or 0.0),
        float(p.processedRowsPerSecond or 0.0),
        int(p.durationMs.get("triggerExecution", 0)),
        sum(op.numRowsTotal for op in p.stateOperators),
        sum(op.numRowsDroppedByWatermark for op in p.stateOperators),
        (p.eventTime or {}).get("watermark"),
    )


def write_progress(spark: SparkSession, conf: Conf, rows: list[tuple]) -> None:
    """Append progress rows to ``pipeline_progress``."""
    if rows:
        (
            spark.createDataFrame(rows, PROGRESS_SCHEMA)
            .write.format("delta")
            .mode("append")
            .save(conf.table_path(tables.PIPELINE_PROGRESS))
        )


class ProgressRecorder(StreamingQueryListener):
    """Prints one line per micro-batch; buffers rows for ``pipeline_progress`` if asked.

    Listener events arrive asynchronously, so a run that stops (``--available-now``) takes
    its rows from ``query.recentProgress`` instead and does not buffer here.
    """

    def __init__(self, quiet: bool = False, buffer: bool = False) -> None:
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._quiet = quiet
        self._buffer = buffer

    def onQueryStarted(self, event) -> None:  # noqa: N802 (Spark's listener API)
        if not self._quiet:
            print(f"[{event.name}] started", flush=True)

    def onQueryProgress(self, event) -> None:  # noqa: N802
        p = event.progress
        row = progress_row(p)
        if self._buffer:
            with self._lock:
                self._rows.append(row)
        if not self._quiet and p.numInputRows:
            state_rows, dropped, watermark = row[8], row[9], row[10]
            print(
                f"[{p.name}] batch {p.batchId}: {p.numInputRows:,} rows in "
                f"{row[7] / 1000:.1f} s ({row[6]:,.0f} rows/s)"
                + (f", state {state_rows:,} rows" if p.stateOperators else "")
                + (f", {dropped} late rows dropped by watermark" if dropped else "")
                + (f", watermark {watermark}" if watermark else ""),
                flush=True,
            )

    def onQueryIdle(self, event) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event) -> None:  # noqa: N802
        if not self._quiet and event.exception:
            print(f"[{event.id}] failed: {event.exception}", flush=True)

    def flush(self, spark: SparkSession, conf: Conf) -> None:
        """Append the buffered progress rows to ``pipeline_progress``."""
        with self._lock:
            rows, self._rows = self._rows, []
        write_progress(spark, conf, rows)


# --------------------------------------------------------------------------- queries


def start_ingest(
    spark: SparkSession, conf: Conf, token_key: bytes, available_now: bool
) -> StreamingQuery:
    writer = (
        read_sources(spark, conf)
        .writeStream.queryName(INGEST_QUERY)
        .foreachBatch(ingest_batch_writer(conf, token_key))
        .option("checkpointLocation", conf.checkpoint_path(INGEST_QUERY))
    )
    return _with_trigger(writer, conf, available_now).start()


def start_enrich(spark: SparkSession, conf: Conf, available_now: bool) -> StreamingQuery:
    metrics_df = build_enrich(
        read_bronze(spark, conf, tables.BRONZE_TRANSACTIONS),
        read_bronze(spark, conf, tables.BRONZE_DEVICE_LOCATIONS),
        conf,
    )
    writer = (
        metrics_df.writeStream.queryName(ENRICH_QUERY)
        .foreachBatch(enrich_batch_writer(spark, conf))
        .option("checkpointLocation", conf.checkpoint_path(ENRICH_QUERY))
    )
    return _with_trigger(writer, conf, available_now).start()


def _with_trigger(writer, conf: Conf, available_now: bool):
    if available_now:
        return writer.trigger(availableNow=True)
    return writer.trigger(processingTime=conf.stream.trigger_interval)


def start(spark: SparkSession, conf: Conf, token_key: bytes) -> list[StreamingQuery]:
    """Start both queries running continuously; the caller awaits them."""
    ensure_tables(spark, conf)
    return [
        start_ingest(spark, conf, token_key, available_now=False),
        start_enrich(spark, conf, available_now=False),
    ]


def run_available_now(spark: SparkSession, conf: Conf, token_key: bytes) -> None:
    """Drain everything in Kafka now: ingest to bronze first, then enrich, then stop."""
    ensure_tables(spark, conf)
    for start_query in (
        lambda: start_ingest(spark, conf, token_key, available_now=True),
        lambda: start_enrich(spark, conf, available_now=True),
    ):
        query = start_query()
        query.awaitTermination()
        write_progress(spark, conf, [progress_row(p) for p in query.recentProgress])


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_continuously(
    spark: SparkSession,
    conf: Conf,
    token_key: bytes,
    recorder: ProgressRecorder,
    flush_every_s: int = 30,
) -> None:
    """Run both queries until one stops or fails, or the process gets SIGTERM or Ctrl-C.

    Progress rows are written to ``pipeline_progress`` every ``flush_every_s`` seconds.
    """
    queries = start(spark, conf, token_key)
    # A SIGTERM (docker stop, YARN/Kubernetes shutdown) stops the queries between batches.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        while all(q.isActive for q in queries):
            # awaitAnyTermination re-raises a failed query's exception.
            spark.streams.awaitAnyTermination(flush_every_s)
            recorder.flush(spark, conf)
    except KeyboardInterrupt:
        print("stream: stopping the queries", flush=True)
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
        recorder.flush(spark, conf)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit.sh stream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--conf", default=DEFAULT_CONF, help="YAML config (default %(default)s)")
    parser.add_argument(
        "--available-now", action="store_true", help="process what is in Kafka now, then stop"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-batch progress lines")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    conf = load_conf(args.conf)
    token_key = token_key_from_env(conf.privacy.token_key_env)
    try:
        ensure_topics(conf)
    except RuntimeError as err:
        print(f"stream: {err}", file=sys.stderr)
        return 2
    spark = create_session(conf, "stream")
    recorder = ProgressRecorder(quiet=args.quiet, buffer=not args.available_now)
    spark.streams.addListener(recorder)
    started = time.monotonic()
    mode = (
        "available-now"
        if args.available_now
        else f"continuous ({conf.stream.trigger_interval} trigger)"
    )
    print(
        f"stream: {mode}, Kafka {conf.kafka.bootstrap_servers}, lake {conf.lake_root}", flush=True
    )
    if args.available_now:
        run_available_now(spark, conf, token_key)
    else:
        run_continuously(spark, conf, token_key, recorder)
    print(f"stream: done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
