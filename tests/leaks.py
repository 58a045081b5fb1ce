"""What of a token key a text (a query plan, a log) gives away, for the tests that check none."""

from __future__ import annotations

import hashlib

import pyspark.sql.functions as F
from pyspark.sql import Column

from udfs.privacy import card_digits

_SHA256_BLOCK_BYTES = 64


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC-SHA256's inner and outer key pads (RFC 2104): with either, tokens recompute."""
    if len(key) > _SHA256_BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK_BYTES, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def leaked_key_material(text: str, key: bytes) -> list[str]:
    """The forms of ``key`` found in ``text``: the key, its hex, the hex of its pads (Spark
    prints a binary literal as 0x + hex) whole or their first 16 bytes, the pads' bytes as a
    list of numbers."""
    inner, outer = hmac_pads(key)
    forms = {
        "key": key.decode("utf-8", "replace"),
        "key hex": key.hex(),
        "inner pad hex": inner.hex(),
        "outer pad hex": outer.hex(),
        "inner pad head hex": inner[:16].hex(),
        "outer pad head hex": outer[:16].hex(),
        "inner pad numbers": ", ".join(str(b) for b in inner[:16]),
        "outer pad numbers": ", ".join(str(b) for b in outer[:16]),
        "inner pad signed numbers": ", ".join(str(b - 256 if b > 127 else b) for b in inner[:16]),
    }
    lowered = text.lower()
    return [name for name, form in forms.items() if form.lower() in lowered]


def sha2_on_pads(card_number: Column, key: bytes) -> Column:
    """What ``udfs.privacy.card_token`` was until the key left the plans: HMAC-SHA256 as
    sha2(outer pad || unhex(sha2(inner pad || digits))), the pads literals in the plan. For
    the test that the leak check finds them, and the benchmark's comparison."""
    inner, outer = hmac_pads(key)
    message = card_digits(card_number).cast("binary")
    inner_digest = F.unhex(F.sha2(F.concat(F.lit(bytearray(inner)), message), 256))
    return F.sha2(F.concat(F.lit(bytearray(outer)), inner_digest), 256)
