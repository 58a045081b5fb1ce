from __future__ import annotations

import pytest
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra.errors import UserError
from txwatch.infra.progress import ProgressRecorder, WatermarkBounds
from txwatch.queries.base import QuerySpec, RunContext
from txwatch.queries.runner import run_available_now, run_continuously


def _never_started(ctx: RunContext):
    raise AssertionError("a query waiting for another must not start")


def test_queries_that_wait_for_each_other_are_an_error_not_a_hang(spark, conf):
    first = QuerySpec("first", _never_started, after=("second",))
    second = QuerySpec("second", _never_started, after=("first",))
    ctx = RunContext(spark, conf, available_now=True)
    with pytest.raises(UserError, match="queries first, second wait for each other"):
        run_available_now(ctx, [first, second])


def test_a_continuous_run_starts_the_alert_path_first(spark, conf):
    """The other queries start once the alert path's queries have finished a micro-batch."""
    running: list[StreamingQuery] = []
    # Per query, in the order started: had every query started before it finished a
    # micro-batch?
    others_done: list[tuple[str, bool]] = []

    def rate_query(name: str, alert_path: bool) -> QuerySpec:
        def start(ctx: RunContext) -> StreamingQuery:
            others_done.append((name, all(q.lastProgress is not None for q in running)))
            writer = ctx.spark.readStream.format("rate").load().writeStream.format("noop")
            running.append(writer.queryName(name).trigger(processingTime="1 second").start())
            return running[-1]

        return QuerySpec(name, start, alert_path=alert_path)

    queries = [rate_query("table", False), rate_query("alert_1", True), rate_query("alert_2", True)]
    recorder = ProgressRecorder(WatermarkBounds.from_conf(conf), quiet=True)
    run_continuously(RunContext(spark, conf, available_now=False), queries, recorder, run_for_s=1)
    assert [name for name, _ in others_done] == ["alert_1", "alert_2", "table"]
    assert others_done[-1] == ("table", True)
