"""Card number protection: keyed tokens and masking, in native Spark expressions.

``card_token`` is HMAC-SHA256 (RFC 2104) of the card's digits under a secret key. The key is
constant for a run, so its inner and outer pads are computed once here and the two hashes
run as Spark's ``sha2`` on binary columns: no Python UDF touches the card number.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import pyspark.sql.functions as F
from pyspark.sql import Column

_SHA256_BLOCK_BYTES = 64

# The shape of a payment card number (ISO/IEC 7812): 12 to 19 digits written together, in
# groups of four (4-4-4-4, up to 4-4-4-7) or as American Express prints them (4-6-5),
# separated by single spaces or dashes, and not part of a longer word. Letters and dashes
# around it rule out hex strings and UUID segments. The last four digits are group 1.
CARD_NUMBER_PATTERN = (
    r"(?<![0-9A-Za-z-])"
    r"(?:[0-9]{8,15}|[0-9]{4}[ -][0-9]{4}[ -][0-9]{4}[ -]?[0-9]{0,3}|[0-9]{4}[ -][0-9]{6}[ -][0-9])"
    r"([0-9]{4})"
    r"(?![0-9A-Za-z-])"
)
CARD_NUMBER_MASK = "****$1"

# Whatever a JSON ``card_number`` field holds, even when it is not shaped like a valid card
# number (a typo, an extra digit): all but its last four characters are masked.
CARD_NUMBER_FIELD_PATTERN = r'("card_number"\s*:\s*"?)[^",}]*([^",}]{4})'
CARD_NUMBER_FIELD_MASK = "$1****$2"

# The card holder's name in a JSON ``name`` field: masked whole, also in a record cut short.
NAME_FIELD_PATTERN = r'("name"\s*:\s*")[^"]*'
NAME_FIELD_MASK = "$1****"


class MissingTokenKeyError(RuntimeError):
    """The environment variable holding the tokenization key is unset or empty."""


def token_key_from_env(variable: str) -> bytes:
    """Read the HMAC key from ``variable``; refuse to run without one."""
    value = os.environ.get(variable, "")
    if not value:
        raise MissingTokenKeyError(
            f"environment variable {variable} is not set: it holds the secret key for card "
            f"tokens (HMAC-SHA256). Set it, e.g. `export {variable}=$(openssl rand -hex 32)`; "
            "keep the same key across runs so tokens stay comparable"
        )
    return value.encode("utf-8")


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > _SHA256_BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK_BYTES, b"\0")
    inner = bytes(b ^ 0x36 for b in key)
    outer = bytes(b ^ 0x5C for b in key)
    return inner, outer


def card_digits(card_number: Column) -> Column:
    """The card number with spaces, dashes and anything else but digits removed."""
    return F.regexp_replace(card_number, r"[^0-9]", "")


def card_token(card_number: Column, key: bytes) -> Column:
    """Hex HMAC-SHA256 of the card's digits under ``key``."""
    inner_pad, outer_pad = _pads(key)
    message = card_digits(card_number).cast("binary")
    inner_digest = F.unhex(F.sha2(F.concat(F.lit(bytearray(inner_pad)), message), 256))
    return F.sha2(F.concat(F.lit(bytearray(outer_pad)), inner_digest), 256)


def card_token_py(card_number: str, key: bytes) -> str:
    """Reference implementation with Python's ``hmac``, for tests and producers."""
    digits = "".join(ch for ch in card_number if ch.isdigit())
    return hmac.new(key, digits.encode("utf-8"), hashlib.sha256).hexdigest()


def card_last4(card_number: Column) -> Column:
    """The last four digits, the only part of a card number that may be displayed."""
    digits = card_digits(card_number)
    return F.substring(digits, -4, 4)


def mask_card_numbers(text: Column) -> Column:
    """``text`` with card numbers replaced by ``****`` + their last four digits.

    Masks every card-number-shaped digit run, and the value of any ``card_number`` field.
    """
    masked_field = F.regexp_replace(text, CARD_NUMBER_FIELD_PATTERN, CARD_NUMBER_FIELD_MASK)
    return F.regexp_replace(masked_field, CARD_NUMBER_PATTERN, CARD_NUMBER_MASK)


def mask_personal_data(text: Column) -> Column:
    """``text`` with card numbers masked (``mask_card_numbers``) and the holder's name too."""
    return F.regexp_replace(mask_card_numbers(text), NAME_FIELD_PATTERN, NAME_FIELD_MASK)
