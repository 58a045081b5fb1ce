"""Cost over time: does any sink's cost per micro-batch grow with its table?

A stream that runs for months must pay per micro-batch for what the batch holds, not for
what the table holds: a MERGE that scans the whole target, an alert sink that reads every
stored alert or a compaction that rewrites one ever-larger file each get slower as the lake
grows. ``bench.throughput`` prints this report after its throughput report (unless
``--skip-cost-report``); it compares the first third of each sink's commits (by version)
with the last third:

- from each stream table's Delta history, per data-writing commit (MERGE into
  ``transactions_enriched``, WRITE appends elsewhere): execution time (``executionTimeMs``;
  Delta records it for MERGE, DELETE and UPDATE, not for appends or OPTIMIZE), bytes
  rewritten (``numTargetBytesRemoved``, else ``numTargetFilesRemoved`` files; rows copied
  ``numTargetRowsCopied``), bytes added (``numOutputBytes`` / ``numTargetBytesAdded``); the
  same for OPTIMIZE commits (auto compaction: ``numRemovedBytes``, ``numAddedBytes``); and
  the table's OPTIMIZE commits and live files at the end;
- from ``pipeline_progress``, per streaming query: batch duration, rows per batch and the
  join state's rows.

Verdict per sink and per query: "flat" when the last third's medians (duration, bytes
rewritten) are at most ``GROWTH_LIMIT`` times the first third's, else "GROWS (x.x times)".
A metric Delta did not record prints "n/a". Everything here except ``read_cost_inputs``
(the one function that talks to Spark) is pure: lists of dicts in, text out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from txwatch.infra import tables

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from txwatch.infra.config import Conf

T = TypeVar("T")

# The last third's median may be this many times the first third's and still be "flat".
GROWTH_LIMIT = 1.5

# A query's verdict notes when its rows per batch changed by more than this share.
ROWS_NOTE_THRESHOLD = 0.1

# The stream tables whose Delta history is read, in report order.
COST_TABLES = (
    tables.TRANSACTIONS_ENRICHED,
    tables.ALERTS,
    tables.BRONZE_TRANSACTIONS,
    tables.BRONZE_DEVICE_LOCATIONS,
    tables.QUARANTINE,
)
# Operations that write a micro-batch's data (foreachBatch appends are WRITE).
DATA_OPERATIONS = ("MERGE", "WRITE", "STREAMING UPDATE")
OPTIMIZE = "OPTIMIZE"  # OPTIMIZE and auto compaction (operationParameters.auto = true)

# operationMetrics keys (Delta's DeltaOperationMetrics), the first one present wins.
EXECUTION_MS = ("executionTimeMs",)  # MERGE, DELETE, UPDATE; not WRITE nor OPTIMIZE
BYTES_REWRITTEN = ("numTargetBytesRemoved", "numRemovedBytes")  # MERGE; OPTIMIZE, DELETE
FILES_REWRITTEN = ("numTargetFilesRemoved", "numRemovedFiles")
ROWS_COPIED = ("numTargetRowsCopied", "numCopiedRows")  # MERGE; DELETE, UPDATE
BYTES_ADDED = ("numOutputBytes", "numTargetBytesAdded", "numAddedBytes")  # WRITE, MERGE, OPTIMIZE
ROWS_IN = ("numSourceRows", "numOutputRows")  # MERGE's source rows; WRITE's rows written


# --------------------------------------------------------------------------- helpers


def metric(commit: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    """The first of ``keys`` present in the commit's ``operationMetrics``, as a number."""
    metrics = commit.get("operationMetrics") or {}
    for key in keys:
        value = metrics.get(key)
        if value is None:
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def maximum(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def split_thirds(items: Sequence[T]) -> tuple[list[T], list[T]]:
    """The first and the last third of ``items`` (both empty when there are fewer than 3)."""
    k = len(items) // 3
    if k == 0:
        return [], []
    return list(items[:k]), list(items[-k:])


@dataclass(frozen=True)
class Growth:
    """One figure in the first and in the last third."""

    what: str
    first: float | None
    last: float | None
    unit: str = "count"  # how to print the figures: "ms", "bytes", "files" or "count"

    @property
    def ratio(self) -> float | None:
        """Last over first; None if either is unknown; inf when it grew from 0."""
        if self.first is None or self.last is None:
            return None
        if self.first == 0:
            return 1.0 if self.last == 0 else math.inf
        return self.last / self.first


def judge(growths: Sequence[Growth], limit: float = GROWTH_LIMIT) -> str | None:
    """ "flat (...)" if every known ratio is at most ``limit``, else "GROWS (x.x times) ...".

    None when no ratio is known.
    """
    known = [g for g in growths if g.ratio is not None]
    if not known:
        return None
    worst = max(known, key=lambda g: g.ratio or 0.0)
    ratio = worst.ratio or 0.0
    ratios = ", ".join(f"{g.what} {g.ratio:.2f}x" for g in known)
    if ratio <= limit:
        return f"flat ({ratios})"
    times = "from 0" if math.isinf(ratio) else f"{ratio:.1f} times"
    change = f"{format_value(worst.first, worst.unit)} -> {format_value(worst.last, worst.unit)}"
    return f"GROWS ({times}) {worst.what} {change}" + (f"; {ratios}" if len(known) > 1 else "")


def _too_few(count: int, what: str) -> str:
    return f"n/a ({count} {what}{'' if count == 1 else 's'}: too few to compare thirds)"


# --------------------------------------------------------------------------- Delta sinks


@dataclass(frozen=True)
class CommitPhase:
    """Medians over some commits of one operation on one table (None: not recorded)."""

    commits: int
    median_ms: float | None
    max_ms: float | None
    median_rewritten: float | None  # bytes, or files when the table's unit is "files"
    median_rows_copied: float | None
    median_rows_in: float | None
    median_added_bytes: float | None


def summarize_commits(commits: Sequence[Mapping[str, Any]], rewritten_unit: str) -> CommitPhase:
    rewritten_keys = BYTES_REWRITTEN if rewritten_unit == "bytes" else FILES_REWRITTEN
    durations = [metric(c, EXECUTION_MS) for c in commits]
    return CommitPhase(
        commits=len(commits),
        median_ms=median(durations),
        max_ms=maximum(durations),
        median_rewritten=median(metric(c, rewritten_keys) for c in commits),
        median_rows_copied=median(metric(c, ROWS_COPIED) for c in commits),
        median_rows_in=median(metric(c, ROWS_IN) for c in commits),
        median_added_bytes=median(metric(c, BYTES_ADDED) for c in commits),
    )


def rewritten_unit(commits: Sequence[Mapping[str, Any]]) -> str:
    """ "bytes" if any commit records bytes removed, else "files" (one unit per sink)."""
    return "bytes" if any(metric(c, BYTES_REWRITTEN) is not None for c in commits) else "files"


@dataclass(frozen=True)
class SinkCost:
    """One operation's commits on one table, first third against last third."""

    table: str
    operation: str
    commits: int
    rewritten_unit: str
    first: CommitPhase
    last: CommitPhase

    @property
    def name(self) -> str:
        return f"{self.table} {self.operation}"

    @property
    def verdict(self) -> str:
        if self.first.commits == 0:
            return _too_few(self.commits, "commit")
        text = judge(
            [
                Growth("duration", self.first.median_ms, self.last.median_ms, "ms"),
                Growth(
                    f"{self.rewritten_unit} rewritten",
                    self.first.median_rewritten,
                    self.last.median_rewritten,
                    self.rewritten_unit,
                ),
            ]
        )
        if text is None:
            return "n/a (no duration in Delta's log, nothing rewritten: see the writing query)"
        return text


@dataclass(frozen=True)
class TableCost:
    table: str
    sinks: list[SinkCost]
    optimize_commits: int
    live_files: int | None


def sink_cost(table: str, operation: str, commits: Sequence[Mapping[str, Any]]) -> SinkCost:
    """``commits`` (one operation, any order) split by version into thirds."""
    ordered = sorted(commits, key=lambda c: int(c["version"]))
    unit = rewritten_unit(ordered)
    first, last = split_thirds(ordered)
    return SinkCost(
        table,
        operation,
        len(ordered),
        unit,
        summarize_commits(first, unit),
        summarize_commits(last, unit),
    )


def table_cost(
    table: str, history: Sequence[Mapping[str, Any]], live_files: int | None
) -> TableCost:
    """A table's data-writing commits per operation, and its OPTIMIZE commits."""
    by_operation: dict[str, list[Mapping[str, Any]]] = {}
    for commit in history:
        by_operation.setdefault(str(commit.get("operation")), []).append(commit)
    sinks = [sink_cost(table, op, by_operation[op]) for op in DATA_OPERATIONS if op in by_operation]
    optimize = by_operation.get(OPTIMIZE, [])
    if optimize:
        sinks.append(sink_cost(table, OPTIMIZE, optimize))
    return TableCost(table, sinks, len(optimize), live_files)


# --------------------------------------------------------------------------- streaming queries


@dataclass(frozen=True)
class QueryPhase:
    batches: int
    median_duration_ms: float | None
    median_rows: float | None
    state_rows_at_end: float | None  # of the phase's last batch


@dataclass(frozen=True)
class QueryCost:
    query: str
    batches: int  # micro-batches that read rows
    first_batch_id: int | None  # not 0: the earliest batches were not recorded
    first: QueryPhase
    last: QueryPhase

    @property
    def verdict(self) -> str:
        if self.first.batches == 0:
            return _too_few(self.batches, "batch")
        durations = Growth(
            "duration", self.first.median_duration_ms, self.last.median_duration_ms, "ms"
        )
        text = judge([durations]) or "n/a (no batch durations)"
        rows = Growth("rows/batch", self.first.median_rows, self.last.median_rows).ratio
        if rows is not None and abs(rows - 1.0) > ROWS_NOTE_THRESHOLD:
            text += f"; note: rows per batch {rows:.2f}x"
        return text


def _phase(batches: Sequence[Mapping[str, Any]]) -> QueryPhase:
    return QueryPhase(
        batches=len(batches),
        median_duration_ms=median(_number(b.get("batch_duration_ms")) for b in batches),
        median_rows=median(_number(b.get("num_input_rows")) for b in batches),
        state_rows_at_end=_number(batches[-1].get("state_rows")) if batches else None,
    )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def query_costs(progress: Sequence[Mapping[str, Any]]) -> list[QueryCost]:
    """Per query (in the order they first ran), first against last third of its batches.

    ``progress`` holds ``pipeline_progress`` rows (query_name, batch_id, batch_time,
    batch_duration_ms, num_input_rows, state_rows); batches that read no rows (watermark
    only, or the final empty one) are left out.
    """
    by_query: dict[str, list[Mapping[str, Any]]] = {}
    for row in sorted(progress, key=lambda r: (str(r.get("batch_time")), int(r["batch_id"]))):
        if row.get("num_input_rows"):
            by_query.setdefault(str(row["query_name"]), []).append(row)
    costs = []
    for query, rows in by_query.items():
        rows.sort(key=lambda r: int(r["batch_id"]))
        first, last = split_thirds(rows)
        costs.append(
            QueryCost(query, len(rows), int(rows[0]["batch_id"]), _phase(first), _phase(last))
        )
    return costs


# --------------------------------------------------------------------------- report


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value:,.0f} ms" if value < 1000 else f"{value / 1000:,.1f} s"
    if unit == "bytes":
        for size, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= size:
                return f"{value / size:,.1f} {suffix}"
        return f"{value:,.0f} B"
    if unit == "files":
        return f"{value:,.0f} files"
    return f"{value:,.0f}"


SINK_LEGEND = (
    "  Medians per commit. exec: operationMetrics.executionTimeMs (Delta records none for",
    "  WRITE appends or OPTIMIZE). rewritten: bytes (else files) of the files the commit",
    "  removed. rows copied: unchanged rows a MERGE wrote again. rows in: a MERGE's source",
    "  rows, an append's rows. added: bytes written.",
)


Cells = tuple[str, ...]


def _align(rows: Sequence[Cells], left: int = 2) -> list[str]:
    """Rows of cells as aligned columns: the first ``left`` to the left, the rest right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _sink_rows(sink: SinkCost) -> list[Cells]:
    """Two rows (first and last third); none when there are too few commits for thirds."""
    rows: list[Cells] = []
    if sink.first.commits == 0:
        return rows
    for label, phase in (("first", sink.first), ("last", sink.last)):
        rows.append(
            (
                sink.name if label == "first" else "",
                label,
                f"{phase.commits:,}",
                format_value(phase.median_ms, "ms"),
                format_value(phase.max_ms, "ms"),
                format_value(phase.median_rewritten, sink.rewritten_unit),
                format_value(phase.median_rows_copied, "count"),
                format_value(phase.median_rows_in, "count"),
                format_value(phase.median_added_bytes, "bytes"),
            )
        )
    return rows


def _query_rows(cost: QueryCost) -> list[Cells]:
    return [
        (
            cost.query if label == "first" else "",
            label,
            f"{phase.batches:,}",
            format_value(phase.median_duration_ms, "ms"),
            format_value(phase.median_rows, "count"),
            format_value(phase.state_rows_at_end, "count"),
        )
        for label, phase in (("first", cost.first), ("last", cost.last))
    ]


def cost_report(table_costs: Sequence[TableCost], queries: Sequence[QueryCost]) -> str:
    """The report: sinks, tables, queries (first against last third), then the verdicts."""
    title = "cost over time: first third against last third"
    lines = [
        title,
        "-" * len(title),
        "of each sink's commits (Delta history, by version) and of each query's micro-batches",
        "(pipeline_progress)",
        "",
    ]
    sinks = [s for t in table_costs for s in t.sinks]
    header: Cells
    if any(s.first.commits for s in sinks):
        header = (
            "sink",
            "third",
            "commits",
            "exec median",
            "exec max",
            "rewritten",
            "rows copied",
            "rows in",
            "added",
        )
        lines += _align([header, *[r for s in sinks for r in _sink_rows(s)]])
        lines += [*SINK_LEGEND, ""]
    if table_costs:
        header = ("table", "", "data commits", "OPTIMIZE commits", "live files at the end")
        rows: list[Cells] = [
            (
                t.table,
                "",
                f"{sum(s.commits for s in t.sinks if s.operation != OPTIMIZE):,}",
                f"{t.optimize_commits:,}",
                "n/a" if t.live_files is None else f"{t.live_files:,}",
            )
            for t in table_costs
        ]
        lines += [*_align([header, *rows]), ""]
    if queries:
        header = ("query", "third", "batches", "duration", "rows/batch", "state rows at end")
        lines += _align([header, *[r for q in queries for r in _query_rows(q)]])
        lines.append(
            "  medians over the batches that read rows; state rows: at the end of the third."
        )
        late = [q for q in queries if q.first_batch_id]
        for q in late:
            lines.append(
                f"  WARNING: {q.query}'s batches before {q.first_batch_id} are not in "
                "pipeline_progress (spark.sql.streaming.numRecentProgressUpdates)"
            )
        lines.append("")
    verdicts = [(s.name, s.verdict) for s in sinks] + [
        (f"query {q.query}", q.verdict) for q in queries
    ]
    if not verdicts:
        return "\n".join([*lines, "no stream table or progress row found"])
    width = max(len(name) for name, _ in verdicts)
    lines.append(f"verdicts (flat: last third's median at most {GROWTH_LIMIT:g}x the first's)")
    lines += [f"  {name:<{width}}  {verdict}" for name, verdict in verdicts]
    return "\n".join(lines)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class CostInputs:
    """What the report is computed from, as plain Python values."""

    history: dict[str, list[dict[str, Any]]]  # table -> version, operation, operationMetrics
    live_files: dict[str, int | None]  # table -> numFiles of DeltaTable.detail()
    progress: list[dict[str, Any]]  # pipeline_progress rows

    def report(self) -> str:
        costs = [
            table_cost(table, history, self.live_files.get(table))
            for table, history in self.history.items()
        ]
        return cost_report(costs, query_costs(self.progress))


PROGRESS_COLUMNS = (
    "query_name",
    "batch_id",
    "batch_time",
    "batch_duration_ms",
    "num_input_rows",
    "state_rows",
)


def read_cost_inputs(
    spark: SparkSession, conf: Conf, table_names: Sequence[str] = COST_TABLES
) -> CostInputs:
    """Each table's Delta history and live files, and ``pipeline_progress`` (the Spark part)."""
    from delta.tables import DeltaTable

    history: dict[str, list[dict[str, Any]]] = {}
    live_files: dict[str, int | None] = {}
    for table in table_names:
        path = conf.table_path(table)
        if not DeltaTable.isDeltaTable(spark, path):
            continue
        delta_table = DeltaTable.forPath(spark, path)
        commits = delta_table.history().select("version", "operation", "operationMetrics")
        history[table] = [row.asDict() for row in commits.collect()]
        files = delta_table.detail().select("numFiles").collect()[0].numFiles
        live_files[table] = None if files is None else int(files)
    progress_path = conf.table_path(tables.PIPELINE_PROGRESS)
    progress: list[dict[str, Any]] = []
    if DeltaTable.isDeltaTable(spark, progress_path):
        rows = spark.read.format("delta").load(progress_path).select(*PROGRESS_COLUMNS).collect()
        progress = [row.asDict() for row in rows]
    return CostInputs(history, live_files, progress)
