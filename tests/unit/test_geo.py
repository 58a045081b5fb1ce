from __future__ import annotations

import pyspark.sql.functions as F
import pytest

from udfs.geo import haversine_m, haversine_m_py

PARIS = (48.8566, 2.3522)
LYON = (45.7640, 4.8357)


def test_haversine_matches_python_and_known_distance(spark):
    df = spark.createDataFrame(
        [(*PARIS, *LYON)], "lat1 double, lon1 double, lat2 double, lon2 double"
    )
    d = df.select(haversine_m(F.col("lat1"), F.col("lon1"), F.col("lat2"), F.col("lon2"))).first()[
        0
    ]
    assert d == pytest.approx(haversine_m_py(*PARIS, *LYON), rel=1e-9)
    assert d == pytest.approx(391_500, rel=0.005)  # Paris-Lyon great circle, ~391.5 km


def test_haversine_zero_antipodal_and_null(spark):
    rows = [(10.0, 20.0, 10.0, 20.0), (0.0, 0.0, 0.0, 180.0), (1.0, 1.0, None, None)]
    df = spark.createDataFrame(rows, "lat1 double, lon1 double, lat2 double, lon2 double")
    result = [
        r[0]
        for r in df.select(
            haversine_m(F.col("lat1"), F.col("lon1"), F.col("lat2"), F.col("lon2"))
        ).collect()
    ]
    assert result[0] == 0.0
    assert result[1] == pytest.approx(20_015_114, rel=1e-4)
    assert result[2] is None  # a missing fix is no distance, not half the globe
