"""Card number protection: keyed tokens and masking, without the key in any query plan.

``card_token`` is HMAC-SHA256 (RFC 2104) of the card's digits under a secret key. The key
stays out of Spark's plans: they name the environment variable that holds it, and the
HMAC runs in the JVM function ``txwatch_hmac_sha256`` (``udfs/jvm``, compiled by
``scripts/setup.sh``), which reads the variable on the executor. A key computed into the
plan (as its pads once were) shows in the Spark UI, the event log and ``explain()``, and
with it a token reverses by enumeration: a known BIN and last four digits leave about
10^5 Luhn-valid card numbers to try. No Python UDF touches the card number.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame

# The JVM function that computes the tokens (udfs/jvm/io/txwatch/udfs/HmacSha256.java),
# registered in every session by txwatch.infra.session.create_session.
HMAC_FUNCTION = "txwatch_hmac_sha256"
HMAC_CLASS = "io.txwatch.udfs.HmacSha256"

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
    """The environment variable holding the tokenization key is unset, empty or unusable."""


def token_key_from_env(variable: str) -> bytes:
    """Read the HMAC key from ``variable``; refuse to run without one.

    The jobs call it at start to stop at once, with this message, when the key is missing;
    Spark's tasks read the variable themselves (``keyed_hash``)."""
    value = os.environ.get(variable, "")
    if not value:
        raise MissingTokenKeyError(
            f"environment variable {variable} is not set: it holds the secret key for card "
            f"tokens (HMAC-SHA256). Set it, e.g. `export {variable}=$(openssl rand -hex 32)`; "
            "keep the same key across runs so tokens stay comparable"
        )
    if not value.isascii():
        # Each executor's JVM decodes its environment with its own locale: a non-ASCII key
        # could give other key bytes there, and other tokens, without any error.
        raise MissingTokenKeyError(
            f"environment variable {variable} holds characters outside ASCII: a token key "
            f"must be ASCII (e.g. `export {variable}=$(openssl rand -hex 32)`), so every "
            "executor reads the same bytes whatever its locale"
        )
    return value.encode("utf-8")


def card_digits(card_number: Column) -> Column:
    """The card number with spaces, dashes and anything else but digits removed."""
    return F.regexp_replace(card_number, r"[^0-9]", "")


def keyed_hash(value: Column, key_variable: str) -> Column:
    """Hex HMAC-SHA256 of ``value`` (a string column) under the key in the environment
    variable ``key_variable``, read on the executor (the plan holds only the name)."""
    return F.call_function(HMAC_FUNCTION, F.lit(key_variable), value)


def card_token(card_number: Column, key_variable: str) -> Column:
    """Hex HMAC-SHA256 of the card's digits under the key in ``key_variable``."""
    return keyed_hash(card_digits(card_number), key_variable)


# Identifiers tokenized in every table outside bronze (and ground_truth, the simulator's
# answer key), with the prefix that says what a token stands for.
ID_COLUMNS = ("user_id", "device_id", "name")
ID_TOKEN_PREFIXES = {"user_id": "u_", "device_id": "d_", "name": "n_", "kafka_key": "k_"}
# Hex digits kept of the HMAC: 64 bits, so a collision among a billion identifiers has a
# probability of about 3 %, among ten million of 3 in a million; short enough to read in
# an alert's reason.
ID_TOKEN_HEX = 16


def id_token(value: Column, field: str, key_variable: str) -> Column:
    """The token of identifier ``field`` (a key of ``ID_TOKEN_PREFIXES``): its prefix and
    the first ``ID_TOKEN_HEX`` hex digits of HMAC-SHA256(key, "<field>:<value>"). The
    field name in the message keeps tokens of different kinds apart (and apart from card
    tokens). Null stays null; the same value always gives the same token."""
    digest = keyed_hash(F.concat(F.lit(f"{field}:"), value), key_variable)
    return F.concat(F.lit(ID_TOKEN_PREFIXES[field]), F.substring(digest, 1, ID_TOKEN_HEX))


def id_token_py(value: str, field: str, key: bytes) -> str:
    """Reference implementation of ``id_token``, for tests and producers."""
    digest = hmac.new(key, f"{field}:{value}".encode(), hashlib.sha256).hexdigest()
    return ID_TOKEN_PREFIXES[field] + digest[:ID_TOKEN_HEX]


def pseudonymize(df: DataFrame, key_variable: str) -> DataFrame:
    """``df`` with each identifier column it has (``ID_COLUMNS``) replaced by its
    token, under the same name: what every table outside bronze holds."""
    present = [field for field in ID_COLUMNS if field in df.columns]
    return df.withColumns({f: id_token(F.col(f), f, key_variable) for f in present})


def pseudonymize_text(text: Column, key_variable: str) -> Column:
    """``text`` (a raw JSON record) with the value of its ``user_id`` and ``device_id``
    fields replaced by their tokens: quoted or not (a number), and also when the record is
    cut short inside the value. A field written twice gets the first value's token both
    times; the name is masked whole by ``mask_personal_data``."""
    for field in ("user_id", "device_id"):
        value = F.regexp_extract(text, rf'"{field}"\s*:\s*"?([^",}}]*)', 1)
        text = F.when(value == "", text).otherwise(
            F.regexp_replace(
                text,
                rf'("{field}"\s*:\s*"?)[^",}}]*',
                F.concat(F.lit("$1"), id_token(value, field, key_variable)),
            )
        )
    return text


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
