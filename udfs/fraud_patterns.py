"""New activity that looks like known fraud: datasketch MinHash LSH in the stream.

A *known fraud pattern* is a token set (``udfs.similarity``'s tokens: merchants, devices,
cells, category by part of day) of confirmed fraud: the payments of a labelled incident
less what the account did anyway, or the tokens a fraud ring's accounts share. The
similarity job writes them to ``fraud_patterns``, with the tokens too common to mean
anything (``common_tokens``).

In the stream each account's *recent* token set (its payments of the last
``similarity.recent_window``, kept by ``RecentTokens``, a stateful operator keyed by a
bucket of accounts) is hashed with datasketch's ``MinHash`` and looked up in a datasketch
``MinHashLSH`` index of the patterns (``PatternIndex``, built on the driver, broadcast to
the executors, rebuilt when the patterns change). The index only finds candidates; the
patterns' token sets are at hand, so each candidate is checked exactly: a payment whose
account's recent set is at least ``similarity.pattern_min_jaccard`` alike a pattern and
that itself adds tokens of the pattern is a match, reported with the MinHash estimate
and the exact figure. Batches go
through ``mapInPandas``: rows are hashed per micro-batch partition, and a row that shares
no token with any pattern is never hashed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyspark.sql.functions as F
import pyspark.sql.types as T
from pyspark.sql import DataFrame
from pyspark.sql.streaming.stateful_processor import StatefulProcessor, StatefulProcessorHandle

from udfs.alerts import severity_from_score, to_alerts
from udfs.similarity import BehaviourTokens, behaviour_tokens

ALERT_TYPE_SIMILAR_TO_FRAUD = "similar_to_fraud"
BUCKETS = 64  # customers share a stateful key, as in udfs.velocity (cost is per key)
# Tokens of the matched pattern named in the reason.
REASON_TOKENS = 5

PAYMENT_COLUMNS = (
    ("transaction_id", T.StringType()),
    ("user_id", T.StringType()),
    ("card_token", T.StringType()),
    ("card_last4", T.StringType()),
    ("device_id", T.StringType()),
    ("merchant", T.StringType()),
    ("amount", T.DoubleType()),
    ("currency", T.StringType()),
    ("latitude", T.DoubleType()),
    ("longitude", T.DoubleType()),
    ("event_time", T.TimestampType()),
    ("tokens", T.ArrayType(T.StringType())),
)
RECENT_SCHEMA = T.StructType(
    [T.StructField(name, data_type) for name, data_type in PAYMENT_COLUMNS]
    + [T.StructField("recent_tokens", T.ArrayType(T.StringType()))]
)
MATCH_SCHEMA = T.StructType(
    [T.StructField(name, data_type) for name, data_type in PAYMENT_COLUMNS]
    + [
        T.StructField("recent_size", T.IntegerType()),
        T.StructField("pattern_id", T.StringType()),
        T.StructField("pattern_source", T.StringType()),
        T.StructField("estimated_jaccard", T.DoubleType()),
        T.StructField("exact_jaccard", T.DoubleType()),
        T.StructField("shared_tokens", T.ArrayType(T.StringType())),
    ]
)
STATE_SCHEMA = T.StructType([T.StructField("tokens", T.BinaryType())])


def with_payment_tokens(payments_df: DataFrame, tokens: BehaviourTokens) -> DataFrame:
    """Valid payments -> the columns ``RecentTokens`` needs, with each payment's tokens."""
    return payments_df.select(
        *[name for name, _ in PAYMENT_COLUMNS if name != "tokens"],
        behaviour_tokens(tokens).alias("tokens"),
    )


class RecentTokens(StatefulProcessor):
    """Adds ``recent_tokens``: the account's tokens of the last ``window_s`` up to each payment.

    Keyed by a bucket of accounts; the state is one value per bucket, its accounts' (account,
    event time, token) rows of the last ``window_s`` before the bucket's newest payment, as
    Arrow IPC bytes. A payment sees the earlier payments of its account that arrived before
    it (in this micro-batch or an earlier one).
    """

    def __init__(self, window_s: float) -> None:
        self.window_ms = int(window_s * 1000)

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.state = handle.getValueState("recent_tokens", STATE_SCHEMA)

    def handleInputRows(  # noqa: N802 (Spark's API names)
        self,
        key: Any,
        rows: Iterator[Any],
        timerValues: Any,  # noqa: N803
    ) -> Iterator[Any]:
        import pandas as pd

        frames = list(rows)
        df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        df = df.drop(columns=["similarity_bucket"])
        df["_ms"] = df["event_time"].to_numpy(dtype="datetime64[ms]").astype("int64")
        df = df.sort_values(["user_id", "_ms"], kind="stable").reset_index(drop=True)
        stored = self.state.get() if self.state.exists() else None
        kept = _read_tokens(stored[0]) if stored is not None else _no_tokens()
        new_rows = df[["user_id", "_ms", "tokens"]].explode("tokens").dropna()
        new_long = pd.DataFrame(
            {
                "user_id": new_rows["user_id"].to_numpy(dtype=object),
                "time_ms": new_rows["_ms"].to_numpy(dtype="int64"),
                "token": new_rows["tokens"].to_numpy(dtype=object),
            }
        )
        all_long = pd.concat([kept, new_long], ignore_index=True)
        by_user = {user: g for user, g in all_long.groupby("user_id", sort=False)}
        recent: list[list[str]] = []
        for user, t_ms in zip(df["user_id"], df["_ms"], strict=True):
            rows_of_user = by_user.get(user)
            if rows_of_user is None:
                recent.append([])
                continue
            times = rows_of_user["time_ms"].to_numpy()
            in_window = (times >= t_ms - self.window_ms) & (times <= t_ms)
            recent.append(sorted(set(rows_of_user["token"].to_numpy()[in_window])))
        df["recent_tokens"] = recent
        newest = int(all_long["time_ms"].max()) if len(all_long) else 0
        keep = all_long[all_long["time_ms"] >= newest - self.window_ms]
        self.state.update((_write_tokens(keep),))
        yield df[[f.name for f in RECENT_SCHEMA.fields]]


def _no_tokens() -> Any:
    import pandas as pd

    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype=object),
            "time_ms": pd.Series([], dtype="int64"),
            "token": pd.Series([], dtype=object),
        }
    )


def _read_tokens(blob: Any) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(bytes(blob)).read_all().to_pandas()


def _write_tokens(long_df: Any) -> bytes:
    import pyarrow as pa

    table = pa.table(
        {
            "user_id": pa.array(long_df["user_id"], pa.string()),
            "time_ms": pa.array(long_df["time_ms"], pa.int64()),
            "token": pa.array(long_df["token"], pa.string()),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def recent_tokens_stream(payments_df: DataFrame, window_s: float) -> DataFrame:
    """Streaming payments (``with_payment_tokens``) with each account's recent token set."""
    bucket = F.pmod(F.xxhash64("user_id"), F.lit(BUCKETS)).alias("similarity_bucket")
    return (
        payments_df.select(*[name for name, _ in PAYMENT_COLUMNS], bucket)
        .groupBy("similarity_bucket")
        .transformWithStateInPandas(
            statefulProcessor=RecentTokens(window_s),
            outputStructType=RECENT_SCHEMA,
            outputMode="Append",
            timeMode="None",
        )
    )


@dataclass(frozen=True)
class Pattern:
    pattern_id: str
    source: str
    tokens: frozenset[str]


@dataclass
class PatternIndex:
    """A datasketch ``MinHashLSH`` over the known fraud patterns (picklable: broadcast)."""

    patterns: list[Pattern]
    common_tokens: frozenset[str]
    num_perm: int
    min_jaccard: float
    seed: int = 1
    _lsh: Any = field(init=False, repr=False)
    _signatures: dict[str, Any] = field(init=False, repr=False)
    _all_tokens: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from datasketch import LeanMinHash, MinHashLSH

        # Weighted for recall: with 128 permutations and equal weights datasketch bands the
        # signature so that a pattern exactly at the threshold is found 64 % of the time;
        # (0.1, 0.9) finds it 95 % of the time (and one at J = 0.35, 98.5 %) for more
        # candidates, which the exact check removes.
        self._lsh = MinHashLSH(
            threshold=self.min_jaccard, num_perm=self.num_perm, weights=(0.1, 0.9)
        )
        self._signatures = {}
        for pattern in self.patterns:
            signature = LeanMinHash(self.minhash(pattern.tokens))
            self._signatures[pattern.pattern_id] = signature
            self._lsh.insert(pattern.pattern_id, signature)
        self._all_tokens = frozenset().union(*[p.tokens for p in self.patterns])

    def minhash(self, tokens: frozenset[str] | set[str]) -> Any:
        from datasketch import MinHash

        signature = MinHash(num_perm=self.num_perm, seed=self.seed)
        signature.update_batch([t.encode("utf-8") for t in sorted(tokens)])
        return signature

    def best_match(self, recent: set[str], own: set[str]) -> tuple[Pattern, float, float] | None:
        """The most similar pattern to ``recent`` sharing a token with ``own``, if any."""
        recent = recent - self.common_tokens
        if not (own - self.common_tokens) & self._all_tokens or not recent:
            return None
        signature = self.minhash(recent)
        best = None
        by_id = {p.pattern_id: p for p in self.patterns}
        for pattern_id in self._lsh.query(signature):
            pattern = by_id[pattern_id]
            exact = len(recent & pattern.tokens) / len(recent | pattern.tokens)
            if exact < self.min_jaccard or not own & pattern.tokens:
                continue
            estimated = float(self._signatures[pattern_id].jaccard(signature))
            if best is None or exact > best[2]:
                best = (pattern, estimated, exact)
        return best


def match_batches(index: PatternIndex, batches: Iterator[Any]) -> Iterator[Any]:
    """``mapInPandas`` body: the payments that match a pattern, with the match."""
    import pandas as pd

    columns = [f.name for f in MATCH_SCHEMA.fields]
    for pdf in batches:
        matches = []
        for row in pdf.itertuples(index=False):
            recent = set(row.recent_tokens)
            found = index.best_match(recent, set(row.tokens))
            if found is None:
                continue
            pattern, estimated, exact = found
            values = {name: getattr(row, name) for name, _ in PAYMENT_COLUMNS}
            values.update(
                recent_size=len(recent - index.common_tokens),
                pattern_id=pattern.pattern_id,
                pattern_source=pattern.source,
                estimated_jaccard=estimated,
                exact_jaccard=exact,
                shared_tokens=sorted(recent & pattern.tokens),
            )
            matches.append(values)
        yield pd.DataFrame(matches, columns=columns)


def similar_to_fraud_alerts(matches_df: DataFrame, min_jaccard: float) -> DataFrame:
    """One ``similar_to_fraud`` alert per matching payment."""
    score = F.col("exact_jaccard") / F.lit(min_jaccard)
    reason = F.format_string(
        "account %s's activity of the last minutes (%d tokens) is alike known fraud pattern "
        "%s (%s): MinHash estimate %.2f, exact Jaccard %.2f; shares %s",
        F.col("user_id"),
        F.col("recent_size"),
        F.col("pattern_id"),
        F.col("pattern_source"),
        F.col("estimated_jaccard"),
        F.col("exact_jaccard"),
        F.array_join(F.slice("shared_tokens", 1, REASON_TOKENS), ", "),
    )
    return to_alerts(
        matches_df,
        ALERT_TYPE_SIMILAR_TO_FRAUD,
        subject_id=F.col("transaction_id"),
        score=score,
        severity=severity_from_score(score, 1.5, 2.5),
        reason=reason,
        evidence={
            "estimated_jaccard": F.col("estimated_jaccard"),
            "exact_jaccard": F.col("exact_jaccard"),
            "recent_tokens": F.col("recent_size"),
        },
    )
