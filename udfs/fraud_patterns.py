"""New activity that looks like known fraud: datasketch MinHash LSH in the stream.

A *known fraud pattern* is a token set (``udfs.similarity``'s tokens: merchants, devices,
cells, category by part of day) of confirmed fraud: the payments of a labelled incident
less what the account did anyway, or the tokens a fraud ring's accounts share. The
similarity job writes them to ``fraud_patterns``, with the tokens too common to mean
anything (``common_tokens``).

In the stream each account's *new* tokens (first used within ``similarity.new_window``,
not in the ``similarity.habit_window`` before: ``add_new_tokens``, a step of the stateful
operator of ``udfs.payment_history``) are hashed with
datasketch's ``MinHash`` and looked up in a datasketch ``MinHashLSH`` index of the
patterns (``PatternIndex``, built on the driver, broadcast to the executors, rebuilt when
the patterns change). The index only finds candidates; the
patterns' token sets are at hand, so each candidate is checked exactly: a payment whose
account's new tokens are at least ``similarity.pattern_min_jaccard`` alike a pattern and
that itself brings tokens of the pattern is a match, when what they share is of at least
``similarity.pattern_min_shared_kinds`` kinds (shops and a device, say: new places alone
are a trip, not a fraud), reported with the MinHash estimate and the exact figure. Batches go
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

from udfs.alerts import severity_from_score, to_alerts

ALERT_TYPE_SIMILAR_TO_FRAUD = "similar_to_fraud"
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
MATCH_SCHEMA = T.StructType(
    [T.StructField(name, data_type) for name, data_type in PAYMENT_COLUMNS]
    + [
        T.StructField("new_size", T.IntegerType()),
        T.StructField("pattern_id", T.StringType()),
        T.StructField("pattern_source", T.StringType()),
        T.StructField("estimated_jaccard", T.DoubleType()),
        T.StructField("exact_jaccard", T.DoubleType()),
        T.StructField("shared_tokens", T.ArrayType(T.StringType())),
    ]
)
KnownTokens = dict[tuple[str, str], list[int]]
"""(account, token) -> [first use, last use], in ms of event time."""


def add_new_tokens(
    df: Any, known: KnownTokens, new_ms: int, habit_ms: int
) -> tuple[Any, KnownTokens]:
    """New payments (pandas, with ``tokens``) with ``new_tokens``, and the tokens to keep.

    A payment's new tokens are its account's tokens first used within ``new_ms`` before
    it. A token is *new* for an account from its first use until ``new_ms`` later; one the
    account has not used for ``habit_ms`` is forgotten, and new again when used again. So a
    customer's usual shop, device and neighbourhood are never new, and a takeover's device
    and shops are, for ``new_ms``: what the stream compares with the patterns, which are
    built the same way (an incident's tokens less the account's other tokens).

    ``known`` holds the tokens these payments' accounts used before, with the time each
    was first and last used (it is updated in place); the tokens to keep are those of
    ``known`` used within ``habit_ms`` before the newest payment. A payment sees the
    payments of its account that arrived before it.
    """
    df["_ms"] = df["event_time"].to_numpy(dtype="datetime64[ms]").astype("int64")
    df = df.sort_values(["_ms", "transaction_id"], kind="stable").reset_index(drop=True)
    by_account: dict[str, set[str]] = {}
    for account, token in known:
        by_account.setdefault(account, set()).add(token)
    new_tokens: list[list[str]] = []
    for account, t_ms, tokens in zip(df["user_id"], df["_ms"], df["tokens"], strict=True):
        held = by_account.setdefault(account, set())
        for token in tokens:
            times = known.get((account, token))
            if times is None or times[1] < t_ms - habit_ms:
                known[(account, token)] = [t_ms, t_ms]
                held.add(token)
            else:  # a payment that arrived late can be the first use
                times[0] = min(times[0], t_ms)
                times[1] = max(times[1], t_ms)
        new_tokens.append(
            sorted(token for token in held if t_ms - new_ms <= known[(account, token)][0] <= t_ms)
        )
    df["new_tokens"] = new_tokens
    newest = int(df["_ms"].max())
    kept = {k: v for k, v in known.items() if v[1] >= newest - habit_ms}
    return df.drop(columns=["_ms"]), kept


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
    min_shared_kinds: int = 2
    seed: int = 1
    _lsh: Any = field(init=False, repr=False)
    _signatures: dict[str, Any] = field(init=False, repr=False)
    _all_tokens: frozenset[str] = field(init=False, repr=False)
    _by_id: dict[str, Pattern] = field(init=False, repr=False)

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
        self._by_id = {p.pattern_id: p for p in self.patterns}

    def minhash(self, tokens: frozenset[str] | set[str]) -> Any:
        from datasketch import MinHash

        signature = MinHash(num_perm=self.num_perm, seed=self.seed)
        signature.update_batch([t.encode("utf-8") for t in sorted(tokens)])
        return signature

    def best_match(self, new: set[str], own: set[str]) -> tuple[Pattern, float, float] | None:
        """The pattern most alike ``new`` (the account's new tokens) that shares one of
        ``own`` (the payment's new tokens), if any reaches ``min_jaccard``."""
        new = new - self.common_tokens
        own = own & new
        if not own & self._all_tokens:
            return None
        signature = self.minhash(new)
        best = None
        for pattern_id in self._lsh.query(signature):
            pattern = self._by_id[pattern_id]
            shared = new & pattern.tokens
            exact = len(shared) / len(new | pattern.tokens)
            kinds = {token.split(":", 1)[0] for token in shared}
            if exact < self.min_jaccard or not own & shared or len(kinds) < self.min_shared_kinds:
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
            new = set(row.new_tokens)
            found = index.best_match(new, set(row.tokens))
            if found is None:
                continue
            pattern, estimated, exact = found
            values = {name: getattr(row, name) for name, _ in PAYMENT_COLUMNS}
            values.update(
                new_size=len(new - index.common_tokens),
                pattern_id=pattern.pattern_id,
                pattern_source=pattern.source,
                estimated_jaccard=estimated,
                exact_jaccard=exact,
                shared_tokens=sorted(new & pattern.tokens),
            )
            matches.append(values)
        yield pd.DataFrame(matches, columns=columns)


def similar_to_fraud_alerts(matches_df: DataFrame, min_jaccard: float) -> DataFrame:
    """One ``similar_to_fraud`` alert per matching payment."""
    score = F.col("exact_jaccard") / F.lit(min_jaccard)
    reason = F.format_string(
        "what is new in account %s's activity (%d tokens first used in the last minutes) is "
        "alike known fraud pattern %s (%s): MinHash estimate %.2f, exact Jaccard %.2f; "
        "shares %s",
        F.col("user_id"),
        F.col("new_size"),
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
            "new_tokens": F.col("new_size"),
        },
    )
