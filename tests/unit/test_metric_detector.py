"""udfs.metric_detector: serialization, outage/surge detection, quiet series, state size."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from udfs.metric_detector import DetectorConfig, PointScore, SeriesState, score_point

CFG = DetectorConfig()
T0 = 1_700_006_400.0  # a midnight UTC
MINUTE = 60.0


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def _daily_shape(t: float) -> float:
    return 1.0 + 0.7 * math.sin(2.0 * math.pi * (t % 86400.0) / 86400.0 - 1.5)


def _counts(rate: float, days: float, seed: int = 1) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    points = []
    for i in range(int(days * 1440)):
        t = T0 + MINUTE * i
        points.append((t, float(_poisson(rng, rate * _daily_shape(t)))))
    return points


def _run(points: list[tuple[float, float]], cfg: DetectorConfig = CFG) -> list[PointScore]:
    state = SeriesState.new()
    return [score_point(state, t, x, cfg) for t, x in points]


@pytest.mark.parametrize("every", [1, 7, 500])
def test_round_trip_after_every_k_points_changes_nothing(every: int) -> None:
    rng = random.Random(3)
    points = _counts(20.0, 2.5)
    # irregular intervals, a level shift, a spike and an outage in the mix
    points = [(t + rng.uniform(-20, 20), x) for t, x in points]
    points[2000:2100] = [(t, x + 40) for t, x in points[2000:2100]]
    points[2500] = (points[2500][0], 500.0)
    points[3000:3010] = [(t, 0.0) for t, _ in points[3000:3010]]
    straight = _run(points)
    state = SeriesState.new()
    resumed = []
    for i, (t, x) in enumerate(points):
        if i % every == 0:
            data = state.to_bytes()
            state = SeriesState.from_bytes(data)
            assert state.to_bytes() == data
        resumed.append(score_point(state, t, x, CFG))
    assert resumed == straight  # every field, exactly
    assert any(p.is_anomaly for p in straight)


def test_outage_is_detected_within_three_points() -> None:
    for hour in (14, 4):
        start = 3 * 1440 + hour * 60
        points = _counts(20.0, 4.0)
        points[start : start + 10] = [(t, 0.0) for t, _ in points[start : start + 10]]
        scores = _run(points)
        onset = [i - start for i in range(start, start + 10) if scores[i].is_anomaly]
        # a noise detection just before can hold the alert for the refractory period
        before = [i for i in range(start - CFG.refractory, start) if scores[i].is_anomaly]
        if not before:
            assert onset and onset[0] <= 3, (hour, onset)
            assert scores[start + onset[0]].direction == -1
        p = scores[start + 2]
        assert p.expected > 5 and p.lower <= p.expected <= p.upper


def test_surge_is_detected_within_three_points() -> None:
    start = 3 * 1440 + 14 * 60
    rng = random.Random(9)
    points = _counts(20.0, 4.0)
    points[start : start + 10] = [
        (t, float(_poisson(rng, 5 * 20.0 * _daily_shape(t)))) for t, _ in points[start : start + 10]
    ]
    scores = _run(points)
    onset = [i - start for i in range(start, start + 10) if scores[i].is_anomaly]
    assert onset and onset[0] <= 3
    first = scores[start + onset[0]]
    assert first.direction == 1 and first.anomaly_score >= CFG.threshold
    assert first.upper < points[start + onset[0]][1]


def test_quiet_count_series_does_not_fire_on_noise() -> None:
    for seed in range(2):
        scores = _run(_counts(3.0, 2.0, seed))
        assert sum(p.is_anomaly for p in scores[1440:]) <= 1  # over a whole simulated day
        assert all(0.0 <= p.anomaly_score <= 1.0 for p in scores)
        assert all(p.lower >= 0.0 for p in scores)


def _amounts(days: float, seed: int) -> list[tuple[float, float]]:
    """Per-minute sums of lognormal(5.2, 0.9) amounts at Poisson(10) payments a minute."""
    rng = random.Random(seed)
    return [
        (
            T0 + MINUTE * i,
            round(sum(rng.lognormvariate(5.2, 0.9) for _ in range(_poisson(rng, 10.0))), 2),
        )
        for i in range(int(days * 1440))
    ]


def test_heavy_tailed_amount_series_rarely_fires() -> None:
    # one large purchase makes a minute's sum jump several "sd": not an incident. Measured
    # over 10 seeds: 1.0 detection per series-day on average (0-3 per day), so this bounds
    # the average over 5 simulated days, not every day.
    detections = 0
    for seed in range(5):
        scores = _run(_amounts(2.0, seed))
        detections += sum(p.is_anomaly for p in scores[1440:])
        assert all(p.lower >= 0.0 for p in scores)
    assert detections <= 5


def test_new_extremes_of_a_young_count_series_are_not_alerts() -> None:
    # the range of a Poisson series keeps widening: a new maximum after a few hours is noise
    for seed in range(3):
        scores = _run(_counts(10.0, 0.2, seed))  # 288 minutes
        assert not any(p.is_anomaly for p in scores)


def test_no_detections_during_warmup_and_flags_imply_threshold() -> None:
    points = [(T0 + i * 300.0, float(i % 7) * 100.0) for i in range(2000)]
    scores = _run(points)
    assert not any(p.is_anomaly for p in scores[: CFG.warmup])
    assert all(p.anomaly_score >= CFG.threshold for p in scores if p.is_anomaly)


def test_state_size_is_bounded() -> None:
    state = SeriesState.new()
    for t, x in _counts(20.0, 3.0):
        score_point(state, t, x, CFG)
    assert len(state.to_bytes()) <= 8 * 1024
    hourly = SeriesState.new()
    for i in range(500):
        score_point(hourly, T0 + 3600.0 * i, 1.0 + (i % 24), CFG)
    assert len(hourly.to_bytes()) < len(state.to_bytes())  # 24 profile buckets, not 288


def test_seasonal_profile_learns_a_daily_shape() -> None:
    points = [(T0 + 300.0 * i, 100.0 + 80.0 * (i % 288 >= 144)) for i in range(288 * 4)]
    scores = _run(points)
    last_day = scores[-288:]
    assert not any(p.is_anomaly for p in last_day)
    assert all(abs(p.expected - x) < 1.0 for p, (_, x) in zip(last_day, points[-288:], strict=True))


def test_non_finite_values_are_ignored() -> None:
    state = SeriesState.new()
    for i in range(50):
        score_point(state, T0 + 60.0 * i, 5.0, CFG)
    before = state.to_bytes()
    p = score_point(state, T0 + 3000.0, math.nan, CFG)
    assert not p.is_anomaly and state.to_bytes() == before


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CFG.threshold = 0.1  # type: ignore[misc]


def test_log_ratio_mode_quiets_amount_sums_and_round_trips() -> None:
    # right-skewed non-negative series are scored on log ratios (the default, log_gain 0.8)
    cfg = CFG
    assert cfg.log_gain > 0
    detections = 0
    for seed in range(5):
        points = _amounts(2.0, seed)
        scores = _run(points, cfg)
        detections += sum(p.is_anomaly for p in scores[1440:])
        assert all(0.0 <= p.lower <= p.expected <= p.upper for p in scores[200:])
    assert detections <= 4  # measured 3 (raw residuals: 5); 15 vs 19 over 10 seeds x 2 days
    points = _amounts(1.0, 7)
    straight = _run(points, cfg)
    state = SeriesState.new()
    resumed = []
    for t, x in points:
        state = SeriesState.from_bytes(state.to_bytes())
        resumed.append(score_point(state, t, x, cfg))
    assert resumed == straight
