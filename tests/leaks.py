"""What of a token key a text (a query plan, a log) gives away, for the tests that check none."""

from __future__ import annotations

import hashlib

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
