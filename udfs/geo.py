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


GEOHASH_ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"


def geohash_code(lat: Column, lon: Column, precision: int) -> Column:
    """The geohash's ``5 * precision`` bits as a number: cells of one prefix are one
    contiguous range of codes (a Z-order curve). Native expressions: the cell indices of
    latitude and longitude, their bits interleaved (longitude first, as geohash does)."""
    if not 1 <= precision <= 12:
        raise ValueError(f"geohash precision must be 1-12, not {precision}")
    bits = 5 * precision
    lon_bits, lat_bits = (bits + 1) // 2, bits // 2

    def cell(value: Column, low: float, span: float, n_bits: int) -> Column:
        index = F.floor((value - F.lit(low)) / F.lit(span) * F.lit(float(1 << n_bits)))
        return F.least(F.greatest(index, F.lit(0)), F.lit((1 << n_bits) - 1)).cast("long")

    lon_index, lat_index = cell(lon, -180.0, 360.0, lon_bits), cell(lat, -90.0, 180.0, lat_bits)
    code = F.lit(0).cast("long")
    for k in range(bits):
        index, n_bits, j = (
            (lon_index, lon_bits, k // 2) if k % 2 == 0 else (lat_index, lat_bits, k // 2)
        )
        bit = F.shiftright(index, n_bits - 1 - j).bitwiseAND(F.lit(1))
        code = code.bitwiseOR(F.shiftleft(bit, bits - 1 - k))
    return code


def geohash(lat: Column, lon: Column, precision: int) -> Column:
    """The geohash of a point, ``precision`` characters (5: cells of about 4.9 x 4.9 km):
    ``geohash_code`` read five bits per character. Null for a null coordinate."""
    code = geohash_code(lat, lon, precision)
    alphabet = F.array(*[F.lit(ch) for ch in GEOHASH_ALPHABET])
    chars = [
        F.element_at(
            alphabet,
            (F.shiftright(code, 5 * (precision - 1 - c)).bitwiseAND(F.lit(31)) + 1).cast("int"),
        )
        for c in range(precision)
    ]
    return F.when(lat.isNotNull() & lon.isNotNull(), F.concat(*chars))


def geohash_py(lat: float, lon: float, precision: int) -> str:
    """The textbook geohash (interval bisection), for tests."""
    lat_range, lon_range = [-90.0, 90.0], [-180.0, 180.0]
    code, bit, is_lon = 0, 0, True
    chars: list[str] = []
    while len(chars) < precision:
        value, interval = (lon, lon_range) if is_lon else (lat, lat_range)
        mid = (interval[0] + interval[1]) / 2
        code = code * 2 + (value >= mid)
        interval[0 if value >= mid else 1] = mid
        is_lon, bit = not is_lon, bit + 1
        if bit == 5:
            chars.append(GEOHASH_ALPHABET[code])
            code, bit = 0, 0
    return "".join(chars)
