"""What every streaming query module provides, and what it is given to start.

A query module reads its sources, builds with pure transforms from ``udfs``, writes in a
``foreachBatch`` function and exposes ``QUERY``: its name, a ``start(ctx)`` that is the
only place calling ``writeStream``, and the queries whose output it reads (``after``). The
runner (``txwatch.queries.runner``) starts a list of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from txwatch.infra.config import CHECKPOINT_VERSIONS, Conf

# Scheduler pools (conf/fairscheduler.xml): the alert path, the alerts table, the other tables.
ALERTS_POOL = "alerts"
ALERT_TABLE_POOL = "alert_table"
TABLES_POOL = "tables"


@dataclass(frozen=True)
class RunContext:
    """What a query needs to start: the session, the conf and the trigger.

    The token key is not here: ``conf.privacy.token_key_env`` names the environment
    variable that holds it, which Spark's tasks read where they run
    (``udfs.privacy.keyed_hash``), so the key is never in a plan.
    """

    spark: SparkSession
    conf: Conf
    available_now: bool

    def with_trigger(
        self, writer: DataStreamWriter, interval: str | None = None
    ) -> DataStreamWriter:
        """``availableNow`` for a drain-and-stop run, else a processing-time trigger.

        ``interval`` defaults to ``stream.trigger_interval``.
        """
        if self.available_now:
            return writer.trigger(availableNow=True)
        return writer.trigger(processingTime=interval or self.conf.stream.trigger_interval)

    def checkpoint(self, writer: DataStreamWriter, query_name: str) -> DataStreamWriter:
        """Name the query and give it its checkpoint under ``lake_root``."""
        self._say_if_superseded(query_name)
        return writer.queryName(query_name).option(
            "checkpointLocation", self.conf.checkpoint_path(query_name)
        )

    def _say_if_superseded(self, query_name: str) -> None:
        """Say so when the query's checkpoint is of a state version this code no longer
        reads (``CHECKPOINT_VERSIONS``) and its new one does not exist yet."""
        current = self.conf.checkpoint_path(query_name)
        older = [
            self.conf.checkpoint_path(query_name, v)
            for v in range(1, CHECKPOINT_VERSIONS.get(query_name, 1))
        ]
        if not older:
            return
        jvm = self.spark._jvm
        assert jvm is not None
        hadoop = self.spark._jsc.hadoopConfiguration()

        def exists(path: str) -> bool:
            location = jvm.org.apache.hadoop.fs.Path(path)
            return bool(location.getFileSystem(hadoop).exists(location))

        left = [path for path in older if exists(path)]
        if left and not exists(current):
            print(
                f"[{query_name}] its state changed shape in this version: it starts a new "
                f"checkpoint in {current} and reads its topics again from "
                f"kafka.starting_offsets. {', '.join(left)} is no longer read; delete it "
                "when you like",
                flush=True,
            )

    def start(
        self,
        writer: DataStreamWriter,
        pool: str = TABLES_POOL,
        sql_conf: Mapping[str, str] | None = None,
    ) -> StreamingQuery:
        """Start the query with its jobs in scheduler pool ``pool``.

        ``sql_conf``: SQL settings of this query only. A query keeps a copy of the
        session's SQL settings from its start, so they are set for the start and restored.
        """
        context = self.spark.sparkContext
        context.setLocalProperty("spark.scheduler.pool", pool)
        try:
            with query_sql_conf(self.spark, sql_conf or {}):
                return writer.start()
        finally:
            context.setLocalProperty("spark.scheduler.pool", None)  # type: ignore[arg-type]


@contextmanager
def query_sql_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Set SQL settings on the session for a ``with`` block (a query's start), then restore
    the earlier values."""
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, earlier in before.items():
            if earlier is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, earlier)


@dataclass(frozen=True)
class QuerySpec:
    """A streaming query the runner can start: its name and how to start it.

    ``after`` names the queries whose output (a topic or table) this one reads: an
    ``--available-now`` run starts it once they have drained theirs. ``enabled`` says
    whether the conf asks for the query at all (the runner skips it otherwise), and
    ``tick``, if given, is called every 30 seconds while a continuous run lasts and once at
    the end of an ``--available-now`` run, for work that must happen without new input (a
    retry, say). A continuous run starts the ``starts_first`` queries (impossible travel and
    the alerts table: the latency the alerts are held to) before the others, and those once
    these have finished a micro-batch.
    """

    name: str
    start: Callable[[RunContext], StreamingQuery]
    after: tuple[str, ...] = ()
    enabled: Callable[[Conf], bool] = lambda conf: True
    tick: Callable[[RunContext], None] | None = None
    starts_first: bool = False
