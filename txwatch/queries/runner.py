"""Starts a list of streaming queries, awaits them and stops them cleanly.

Two ways to run:

- ``run_available_now``: drain what Kafka holds now, then stop. Queries run side by side,
  except that a query starts only after the queries it reads from (``QuerySpec.after``)
  have drained theirs; then every query's ``tick`` runs once;
- ``run_continuously``: start every query (``QuerySpec.starts_first`` ones first, the others
  once those have finished a micro-batch), run until one fails, the process gets SIGTERM or
  Ctrl-C, or a duration passes; then stop the others between micro-batches.

A failed query is reported as ``QueryFailedError``, naming the query, the cause in one
line and what to do.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence

from pyspark.errors import StreamingQueryException
from pyspark.sql.streaming import StreamingQuery

from txwatch.infra.config import duration_s
from txwatch.infra.errors import UserError, first_line
from txwatch.infra.maintenance import maintain_tables
from txwatch.infra.progress import ProgressRecorder, WatermarkBounds, progress_row, write_progress
from txwatch.infra.tables import ensure_tables
from txwatch.queries.base import QuerySpec, RunContext

# How long a continuous run waits for the first micro-batches of its ``starts_first``
# queries before it starts the others anyway.
FIRST_BATCH_WAIT_S = 120.0


class QueryFailedError(UserError):
    """A streaming query stopped with an error."""

    exit_code = 1

    def __init__(self, query_name: str, cause: str, hint: str) -> None:
        super().__init__(f'query "{query_name}" failed: {cause}. {hint}')
        self.query_name = query_name


def describe_failure(query_name: str, error: BaseException, ctx: RunContext) -> QueryFailedError:
    """The one-line report of a query's failure, with what to do about it."""
    # The cause only: the rest of Spark's message prints the plan, which names Kafka.
    text = first_line(error)
    bootstrap = ctx.conf.kafka.bootstrap_servers
    if any(s in text for s in ("TimeoutException", "Broker", "bootstrap", "kafka")):
        hint = (
            f"Is the Kafka broker at {bootstrap} up (scripts/kafka-local.sh status)? "
            "Restart the job once it is: it resumes from its checkpoint, losing nothing"
        )
    else:
        hint = (
            f"Spark's log above has the details; the job resumes from its checkpoint in "
            f"{ctx.conf.checkpoint_path(query_name)} when restarted"
        )
    return QueryFailedError(query_name, first_line(error), hint)


def enabled_queries(queries: Sequence[QuerySpec], ctx: RunContext) -> list[QuerySpec]:
    """The queries the conf asks for (``QuerySpec.enabled``); a query the others wait for
    (``after``) that is not asked for is not waited for."""
    return [spec for spec in queries if spec.enabled(ctx.conf)]


def run_ticks(ctx: RunContext, queries: Sequence[QuerySpec]) -> None:
    """Call every query's ``tick``; one that fails is reported in a line and tried again
    next time: it must not stop the queries."""
    for spec in queries:
        if spec.tick is None:
            continue
        try:
            spec.tick(ctx)
        except Exception as err:
            print(f"[{spec.name}] between batches: {type(err).__name__}: {first_line(err)}")


def run_available_now(ctx: RunContext, queries: Sequence[QuerySpec]) -> None:
    """Run each query with an ``availableNow`` trigger until it has drained its input.

    A query starts as soon as the queries of this run it reads from (``after``) have
    finished, so independent ones overlap: one query's driver-side planning and commits
    leave cores idle that the other's tasks use.
    """
    assert ctx.available_now, "run_available_now needs a RunContext with available_now=True"
    queries = enabled_queries(queries, ctx)
    ensure_tables(ctx.spark, ctx.conf)
    bounds = WatermarkBounds.from_conf(ctx.conf)
    in_run = {spec.name for spec in queries}
    waiting = list(queries)
    running: dict[str, StreamingQuery] = {}
    finished: set[str] = set()

    def record_progress(query: StreamingQuery) -> None:
        write_progress(ctx.spark, ctx.conf, [progress_row(p, bounds) for p in query.recentProgress])

    # Queries of earlier runs in this session count as terminated until this is reset.
    ctx.spark.streams.resetTerminated()
    try:
        while waiting or running:
            for spec in [s for s in waiting if in_run.intersection(s.after) <= finished]:
                running[spec.name] = spec.start(ctx)
                waiting.remove(spec)
            if not running:
                names = ", ".join(spec.name for spec in waiting)
                raise UserError(f"queries {names} wait for each other (QuerySpec.after)")
            ctx.spark.streams.awaitAnyTermination()
            ctx.spark.streams.resetTerminated()
            for name, query in list(running.items()):
                if not query.isActive:
                    del running[name]
                    finished.add(name)
                    record_progress(query)
        # Work that waits for no input (a retry of what a webhook missed) is done once more.
        run_ticks(ctx, queries)
    except StreamingQueryException as err:
        failed = next((n for n, q in running.items() if q.exception() is not None), "unknown")
        raise describe_failure(failed, err, ctx) from err
    finally:
        # After a failure the others stop too, between micro-batches.
        for query in running.values():
            query.stop()
            record_progress(query)


class _StopRequest:
    """SIGTERM or Ctrl-C, noted by a signal handler and acted on by the runner's loop.

    Raising from the handler would interrupt whatever py4j call the main thread is in (the
    runner mostly waits in one) and leave its connection to the JVM unusable, so the
    queries could no longer be stopped cleanly. A second Ctrl-C raises at once.
    """

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True


def _failed_query(started: dict[str, StreamingQuery]) -> str | None:
    """The name of a query that stopped with an error, if any."""
    return next((name for name, q in started.items() if q.exception() is not None), None)


def _wait_for_first_batches(
    ctx: RunContext,
    queries: Sequence[StreamingQuery],
    stop: _StopRequest,
    timeout_s: float = FIRST_BATCH_WAIT_S,
) -> None:
    """Until each query has finished a micro-batch or stopped, a stop is asked for, or
    ``timeout_s`` passes. A query that fails meanwhile raises (``awaitAnyTermination``)."""
    deadline = time.monotonic() + timeout_s
    while any(q.isActive and q.lastProgress is None for q in queries) and not stop.requested:
        if time.monotonic() >= deadline:
            print(
                f"stream: no micro-batch finished in {timeout_s:.0f} s; starting the other "
                "queries anyway",
                flush=True,
            )
            return
        ctx.spark.streams.awaitAnyTermination(1)


def run_continuously(
    ctx: RunContext,
    queries: Sequence[QuerySpec],
    recorder: ProgressRecorder,
    run_for_s: float | None = None,
    flush_every_s: int = 30,
) -> None:
    """Run every query until one stops or fails, SIGTERM/Ctrl-C, or ``run_for_s`` passes.

    Progress rows are written to ``pipeline_progress`` every ``flush_every_s`` seconds, and
    the queries' ``tick`` functions called.
    """
    queries = enabled_queries(queries, ctx)
    ensure_tables(ctx.spark, ctx.conf)
    maintenance_every_s = duration_s(ctx.conf.delta.maintenance_interval)
    next_maintenance = time.monotonic() + maintenance_every_s
    started: dict[str, StreamingQuery] = {}
    # A SIGTERM (docker stop, YARN/Kubernetes shutdown) or Ctrl-C stops the queries between
    # batches, noticed within a second.
    stop = _StopRequest()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = None if run_for_s is None else time.monotonic() + run_for_s
    next_flush = time.monotonic() + flush_every_s
    try:
        # Travel and the alerts query first: every query's first micro-batch (planning, code
        # generation and compiling in a cold JVM) competes for the same cores, and on two
        # cores that held the first alerts back by up to a minute (README, Benchmarks).
        first = [spec for spec in queries if spec.starts_first]
        for spec in first:
            started[spec.name] = spec.start(ctx)
        if first and len(first) < len(queries):
            names = ", ".join(spec.name for spec in first)
            print(
                f"stream: starting {names}; the other queries once each has finished a micro-batch",
                flush=True,
            )
            _wait_for_first_batches(ctx, list(started.values()), stop)
        if not stop.requested and all(q.isActive for q in started.values()):
            for spec in [s for s in queries if not s.starts_first]:
                started[spec.name] = spec.start(ctx)
        while all(q.isActive for q in started.values()):
            # awaitAnyTermination re-raises a failed query's exception.
            ctx.spark.streams.awaitAnyTermination(1)
            if stop.requested:
                print("stream: stopping the queries", flush=True)
                break
            if time.monotonic() < next_flush and (deadline is None or time.monotonic() < deadline):
                continue
            next_flush = time.monotonic() + flush_every_s
            recorder.flush(ctx.spark, ctx.conf)
            run_ticks(ctx, queries)
            if time.monotonic() >= next_maintenance:
                maintain_tables(ctx.spark, ctx.conf, compact=False)
                next_maintenance = time.monotonic() + maintenance_every_s
            if deadline is not None and time.monotonic() >= deadline:
                print("stream: duration reached, stopping the queries", flush=True)
                break
        # A query can fail between awaitAnyTermination's return and the loop's test.
        failed = _failed_query(started)
        if failed is not None:
            error = started[failed].exception()
            assert error is not None
            raise describe_failure(failed, error, ctx) from error
    except StreamingQueryException as err:
        raise describe_failure(_failed_query(started) or "unknown", err, ctx) from err
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, whatever the JVM was doing
        print("stream: stopping the queries", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for query in started.values():
            if query.isActive:
                query.stop()
        recorder.flush(ctx.spark, ctx.conf)
