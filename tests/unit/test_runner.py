from __future__ import annotations

import pytest
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra.errors import UserError
from txwatch.infra.progress import ProgressRecorder, WatermarkBounds
from txwatch.queries.base import QuerySpec, RunContext
from txwatch.queries.runner import QueryFailedError, run_available_now, run_continuously


def _never_started(ctx: RunContext):
    raise AssertionError("a query waiting for another must not start")


def test_queries_that_wait_for_each_other_are_an_error_not_a_hang(spark, conf):
    first = QuerySpec("first", _never_started, after=("second",))
    second = QuerySpec("second", _never_started, after=("first",))
    ctx = RunContext(spark, conf, available_now=True)
    with pytest.raises(UserError, match="queries first, second wait for each other"):
        run_available_now(ctx, [first, second])


def _rate_query(
    name: str, starts_first: bool, started: list[tuple[str, bool]], running: list[StreamingQuery]
) -> QuerySpec:
    """A query on Spark's rate source into ``noop``; its start notes in ``started`` whether
    every query started before it had finished a micro-batch."""

    def start(ctx: RunContext) -> StreamingQuery:
        started.append((name, all(q.lastProgress is not None for q in running)))
        writer = ctx.spark.readStream.format("rate").load().writeStream.format("noop")
        running.append(writer.queryName(name).trigger(processingTime="1 second").start())
        return running[-1]

    return QuerySpec(name, start, starts_first=starts_first)


def _run_for_a_second(spark, conf, queries: list[QuerySpec]) -> None:
    recorder = ProgressRecorder(WatermarkBounds.from_conf(conf), quiet=True)
    run_continuously(RunContext(spark, conf, available_now=False), queries, recorder, run_for_s=1)


def test_a_continuous_run_starts_the_starts_first_queries_before_the_others(spark, conf):
    """The other queries start once the ``starts_first`` ones have finished a micro-batch."""
    started: list[tuple[str, bool]] = []
    running: list[StreamingQuery] = []
    queries = [
        _rate_query(name, first, started, running)
        for name, first in (("table", False), ("travel", True), ("alerts", True))
    ]
    _run_for_a_second(spark, conf, queries)
    assert [name for name, _ in started] == ["travel", "alerts", "table"]
    assert started[-1] == ("table", True)


def test_a_query_failing_before_the_others_start_fails_the_run(spark, conf):
    """The wait for the first micro-batches does not hide a failure: the job fails, naming the
    query, and the other queries never start."""
    started: list[tuple[str, bool]] = []

    def failing_start(ctx: RunContext) -> StreamingQuery:
        def fail(batch_df, batch_id: int) -> None:
            raise ValueError("no such sink")

        writer = ctx.spark.readStream.format("rate").load().writeStream.foreachBatch(fail)
        return writer.queryName("travel").start()

    queries = [
        QuerySpec("travel", failing_start, starts_first=True),
        _rate_query("table", False, started, []),
    ]
    with pytest.raises(QueryFailedError, match='query "travel" failed'):
        _run_for_a_second(spark, conf, queries)
    assert started == []
