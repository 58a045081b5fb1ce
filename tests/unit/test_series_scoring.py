"""udfs.series_scoring: order, late points, filled zeros and incidents, without Spark."""

from __future__ import annotations

from udfs.metric_detector import DetectorConfig, SeriesState, score_point
from udfs.series_scoring import NO_INCIDENT, SeriesMemory, fill_zeros_until, score_points

CFG = DetectorConfig()
MINUTE_MS = 60_000
T0_MS = 1_700_006_400_000


def _series(n: int) -> list[tuple[int, float]]:
    return [(T0_MS + i * MINUTE_MS, float(10 + i % 4)) for i in range(n)]


def test_points_are_scored_in_time_order_whatever_order_they_come_in() -> None:
    points = _series(300)
    in_order = score_points(SeriesMemory.new(), points, CFG)
    shuffled = score_points(SeriesMemory.new(), list(reversed(points)), CFG)
    assert [p.score for p in shuffled] == [p.score for p in in_order]
    # the same as the detector itself, point by point
    state = SeriesState.new()
    direct = [score_point(state, t / 1000.0, x, CFG) for t, x in points]
    assert [p.score for p in in_order] == direct


def test_a_point_older_than_the_last_scored_one_is_late_and_leaves_the_state_alone() -> None:
    memory = SeriesMemory.new()
    score_points(memory, _series(50), CFG)
    before = memory.to_row()
    late = score_points(memory, [(T0_MS + 10 * MINUTE_MS, 99.0)], CFG)
    assert [(p.is_late, p.score) for p in late] == [(True, None)]
    assert memory.to_row() == before


def test_gaps_between_points_are_filled_with_zeros() -> None:
    memory = SeriesMemory.new()
    points = [(T0_MS, 5.0), (T0_MS + 4 * MINUTE_MS, 6.0)]
    scored = score_points(memory, points, CFG, fill_step_ms=MINUTE_MS)
    assert [(p.time_ms - T0_MS) // MINUTE_MS for p in scored] == [0, 1, 2, 3, 4]
    assert [p.value for p in scored] == [5.0, 0.0, 0.0, 0.0, 6.0]
    assert [p.is_filled for p in scored] == [False, True, True, True, False]


def test_zeros_until_a_time_cover_every_step_that_starts_before_it() -> None:
    memory = SeriesMemory.new()
    score_points(memory, [(T0_MS, 5.0)], CFG, fill_step_ms=MINUTE_MS)
    filled = fill_zeros_until(memory, T0_MS + 3 * MINUTE_MS, MINUTE_MS, CFG)
    assert [(p.time_ms - T0_MS) // MINUTE_MS for p in filled] == [1, 2]
    assert memory.last_time_ms == T0_MS + 2 * MINUTE_MS
    assert fill_zeros_until(memory, T0_MS + 3 * MINUTE_MS, MINUTE_MS, CFG) == []


def test_an_incident_counts_its_points_from_its_first_one() -> None:
    memory = SeriesMemory.new()
    score_points(memory, _series(400), CFG)
    start = T0_MS + 400 * MINUTE_MS
    surge = [(start + i * MINUTE_MS, 500.0 + i) for i in range(3)]
    scored = score_points(memory, surge, CFG)
    assert [p.incident_points for p in scored] == [1, 2, 3]
    assert {p.incident_start_ms for p in scored} == {start}
    assert scored[0].score is not None and scored[0].score.is_anomaly
    calm = [(start + (3 + i) * MINUTE_MS, float(10 + i % 4)) for i in range(60)]
    scored = score_points(memory, calm, CFG)
    # back inside the band: the incident is over
    assert scored[-1].incident_points == 0
    assert memory.incident_start_ms == NO_INCIDENT


def test_memory_survives_the_state_store_round_trip() -> None:
    memory = SeriesMemory.new()
    score_points(memory, _series(200), CFG, fill_step_ms=MINUTE_MS)
    again = SeriesMemory.from_row(memory.to_row())
    assert again.to_row() == memory.to_row()
    more = _series(260)[200:]
    assert [p.score for p in score_points(again, more, CFG)] == [
        p.score for p in score_points(memory, more, CFG)
    ]
