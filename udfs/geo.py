"""Geographic column functions in native Spark expressions."""

from __future__ import annotations

import math

import pyspark.sql.functions as F
from pyspark.sql import Column

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG), metres


def haversine_m(lat1: Column, lon1: Column, lat2: Column, lon2: Column) -> Column:
    """Great-circle distance in metres between two points given in degrees."""
    phi1, phi2 = F.radians(lat1), F.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = F.radians(lon2 - lon1) / 2
    a = F.sin(half_dphi) ** 2 + F.cos(phi1) * F.cos(phi2) * F.sin(half_dlambda) ** 2
    # Guard asin against rounding just above 1 for antipodal points. Not least(): it skips
    # nulls, and a missing coordinate must give a null distance, not half the globe.
    a_clamped = F.when(a > 1.0, F.lit(1.0)).otherwise(a)
    return F.lit(2 * EARTH_RADIUS_M) * F.asin(F.sqrt(a_clamped))


def haversine_m_py(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The same distance in plain Python, for the simulator and for tests."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(a, 1.0)))
