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


def _spread_bits(index: Column) -> Column:
    """The bits of a non-negative number below 2**32, bit ``b`` moved to bit ``2b`` (a
    Morton code's spreading: five shift-and-mask steps, not one expression per bit)."""
    spread = index.cast("long")
    for shift, mask in (
        (16, 0x0000FFFF0000FFFF),
        (8, 0x00FF00FF00FF00FF),
        (4, 0x0F0F0F0F0F0F0F0F),
        (2, 0x3333333333333333),
        (1, 0x5555555555555555),
    ):
        spread = spread.bitwiseOR(F.shiftleft(spread, shift)).bitwiseAND(F.lit(mask))
    return spread


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
    # The most significant bit is a longitude bit: with an odd number of bits longitude
    # has the even positions, with an even number the odd ones.
    lon_shift, lat_shift = (0, 1) if bits % 2 else (1, 0)
    return F.shiftleft(_spread_bits(lon_index), lon_shift).bitwiseOR(
        F.shiftleft(_spread_bits(lat_index), lat_shift)
    )


# conv() writes base 32 with these digits; geohash has its own.
_BASE32_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUV"


def geohash(lat: Column, lon: Column, precision: int) -> Column:
    """The geohash of a point, ``precision`` characters (5: cells of about 4.9 x 4.9 km):
    ``geohash_code`` written in base 32 (``conv``), in geohash's digits, zeros in front.
    Null for a null coordinate.

    A few expressions, not one per character and bit: behaviour tokens (one geohash each)
    of 200,000 cached payments into a ``noop`` sink took 0.5-0.7 times as long (1.5-2.4 s
    against 3.0-3.5 s, two sessions).
    """
    code = geohash_code(lat, lon, precision)
    digits = F.translate(F.conv(code.cast("string"), 10, 32), _BASE32_DIGITS, GEOHASH_ALPHABET)
    return F.when(lat.isNotNull() & lon.isNotNull(), F.lpad(digits, precision, "0"))


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
