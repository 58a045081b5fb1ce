"""The Numenta Anomaly Benchmark (NAB): its corpus layout and its scoring rules.

A corpus directory holds ``<category>/<name>.csv`` files (``timestamp,value``, rows in time
order); a labels file (``combined_windows.json``) maps ``<category>/<name>.csv`` to the
anomaly windows ``[[start, end], ...]``; a profiles file (``profiles.json``) gives each
scoring profile's weights. The scorer follows NAB's published sweeper (repository
numenta/NAB, ``nab/sweeper.py``), for one fixed threshold instead of NAB's per-detector
threshold search: a point is a detection when the detector says ``is_anomaly``.

- The first ``min(floor(0.15 * rows), 750)`` rows of a file are not scored (probation).
- Inside a window, the earliest detection counts, worth ``tp * sigma(p)`` with ``p`` its
  position in the window (-1 at its first row, ~0 at its last) and
  ``sigma(y) = 2 / (1 + exp(5 y)) - 1``; a window without detection costs ``fn``.
- A detection outside the windows costs ``fp`` times ``sigma(d)`` where ``d`` is the
  distance past the previous window's end in window widths, or the full ``fp`` when no
  window came before.
- Scores add up over files, then ``100 * (raw - null) / (perfect - null)``: the null
  detector finds nothing, the perfect one finds every window at its first row.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

PROBATION_SHARE = 0.15
PROBATION_MAX_ROWS = 750  # NAB: 0.15 * 5000


@dataclass(frozen=True)
class Profile:
    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


@dataclass(frozen=True)
class Series:
    """One NAB file: its key (``<category>/<name>.csv``), timestamps and values."""

    key: str
    timestamps: tuple[datetime, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class FileScore:
    """One file's raw score parts for one profile."""

    tp: float  # sum of the windows' earliest-detection rewards
    fp: float  # sum of the (negative) false-positive costs
    fn: float  # minus fn_weight per missed window
    windows: int
    windows_detected: int
    false_positives: int

    @property
    def raw(self) -> float:
        return self.tp + self.fp + self.fn


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def read_series(path: Path, key: str) -> Series:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(rows[0]) != {"timestamp", "value"}:
        raise ValueError(f"{path}: expected columns timestamp,value (NAB format)")
    return Series(
        key,
        tuple(parse_timestamp(r["timestamp"]) for r in rows),
        tuple(float(r["value"]) for r in rows),
    )


def corpus_files(data_dir: Path) -> list[tuple[str, Path]]:
    """``(<category>/<name>.csv, path)`` for every file of the corpus, sorted."""
    files = sorted(data_dir.glob("*/*.csv"))
    return [(f"{p.parent.name}/{p.name}", p) for p in files]


def iter_corpus(data_dir: Path) -> Iterator[Series]:
    for key, path in corpus_files(data_dir):
        yield read_series(path, key)


def read_labels(path: Path) -> dict[str, list[tuple[datetime, datetime]]]:
    raw = json.loads(path.read_text())
    return {
        key: [(parse_timestamp(a), parse_timestamp(b)) for a, b in windows]
        for key, windows in raw.items()
    }


def read_profiles(path: Path) -> list[Profile]:
    raw = json.loads(path.read_text())
    return [
        Profile(
            name,
            float(p["CostMatrix"]["tpWeight"]),
            float(p["CostMatrix"]["fpWeight"]),
            float(p["CostMatrix"]["fnWeight"]),
        )
        for name, p in raw.items()
    ]


def scaled_sigmoid(position: float) -> float:
    """NAB's reward curve: ~1 at a window's start (-1), 0 at its end, -1 far past it."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def probation_rows(rows: int) -> int:
    return min(math.floor(PROBATION_SHARE * rows), PROBATION_MAX_ROWS)


def _window_index_ranges(
    timestamps: Sequence[datetime], windows: Sequence[tuple[datetime, datetime]]
) -> list[tuple[int, int]]:
    """Each window as (first row, last row), inclusive; windows without rows are left out."""
    ranges = []
    for start, end in windows:
        inside = [i for i, t in enumerate(timestamps) if start <= t <= end]
        if inside:
            ranges.append((inside[0], inside[-1]))
    return sorted(ranges)


def score_file(
    timestamps: Sequence[datetime],
    detections: Sequence[bool],
    windows: Sequence[tuple[datetime, datetime]],
    profile: Profile,
) -> FileScore:
    """One file's score parts: ``detections[i]`` says whether row ``i`` was flagged."""
    if len(timestamps) != len(detections):
        raise ValueError("one detection flag per row is needed")
    ranges = _window_index_ranges(timestamps, windows)
    probation = probation_rows(len(timestamps))
    window_of: dict[int, int] = {}
    for index, (first, last) in enumerate(ranges):
        for i in range(first, last + 1):
            window_of[i] = index
    best_in_window: dict[int, float] = {}
    fp_cost, false_positives = 0.0, 0
    scored_windows: set[int] = set()
    prev_window: tuple[int, int] | None = None  # (last row, width) of the last window passed
    next_window = 0
    for i, is_detection in enumerate(detections):
        while next_window < len(ranges) and ranges[next_window][1] < i:
            first, last = ranges[next_window]
            prev_window = (last, last - first + 1)
            next_window += 1
        window = window_of.get(i)
        if i < probation:
            continue
        if window is not None:
            scored_windows.add(window)
        if not is_detection:
            continue
        if window is not None:
            first, last = ranges[window]
            position = -(last - i + 1) / (last - first + 1)
            # NAB divides by sigma(-1) so that a window's first row is worth exactly tp
            reward = scaled_sigmoid(position) * profile.tp_weight / _MAX_TP
            best_in_window[window] = max(best_in_window.get(window, -math.inf), reward)
        else:
            if prev_window is None:
                cost = -1.0
            else:
                last, width = prev_window
                cost = scaled_sigmoid(abs(last - i) / max(width - 1, 1))
            fp_cost += cost * profile.fp_weight
            false_positives += 1
    missed = len(scored_windows) - len(best_in_window)
    return FileScore(
        tp=sum(best_in_window.values()),
        fp=fp_cost,
        fn=-profile.fn_weight * missed,
        windows=len(scored_windows),
        windows_detected=len(best_in_window),
        false_positives=false_positives,
    )


@dataclass(frozen=True)
class CorpusScore:
    profile: Profile
    raw: float
    null: float
    perfect: float
    windows: int
    windows_detected: int
    false_positives: int

    @property
    def normalized(self) -> float:
        """NAB's reported score: 0 finds nothing, 100 finds every window at its start."""
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def score_corpus(
    files: Sequence[tuple[Sequence[datetime], Sequence[bool], Sequence[tuple[datetime, datetime]]]],
    profile: Profile,
) -> CorpusScore:
    """Sum the files' scores for ``profile`` and normalize them as NAB does."""
    raw = null = perfect = 0.0
    windows = detected = fps = 0
    for timestamps, detections, labels in files:
        part = score_file(timestamps, detections, labels, profile)
        raw += part.raw
        windows += part.windows
        detected += part.windows_detected
        fps += part.false_positives
        null += -profile.fn_weight * part.windows
        # NAB (runner.normalize): perfect = every window found at its first row; the same
        # windows as the null score (those with rows after the probation period)
        perfect += profile.tp_weight * part.windows
    return CorpusScore(profile, raw, null, perfect, windows, detected, fps)
