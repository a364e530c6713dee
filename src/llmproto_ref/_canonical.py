"""RFC 8785 canonical JSON: the bytes a signature covers and AES-GCM binds (spec/security.md).

:func:`canonicalize` returns the JSON Canonicalization Scheme form of a JSON value;
:func:`signing_input` the form of an envelope without ``sig.value`` [SEC-004];
:func:`associated_data` the form of an envelope without ``data_base64`` and ``sig`` [SEC-036].

Theory of operation
-------------------
RFC 8785 is "members sorted by their names' UTF-16 code units, no whitespace, strings escaped as
ECMAScript's JSON.stringify escapes them, numbers written as ECMAScript writes them".
``orjson.dumps(value, option=OPT_SORT_KEYS)`` already produces exactly that, about ten times
faster than the pure-Python ``rfc8785`` package, except in three cases:

1. a float: orjson writes ``1.0``, ``1e+16`` and ``-0.0`` where ECMAScript writes ``1``,
   ``10000000000000000`` and ``0``;
2. an integer beyond 2^53-1, which I-JSON (and so RFC 8785) does not allow [SEC-008];
3. two member names of one object whose order by code points (orjson's) differs from their
   order by UTF-16 code units (RFC 8785's): only a name holding a character from U+E000 to
   U+FFFF compared with one holding a character beyond U+FFFF.

The output shows whether any of them can have happened. orjson and ECMAScript write the same
shortest digits; they differ only for integral floats, which orjson writes ending in ``.0``,
and in where they switch to exponent notation, which orjson writes with ``e+`` or ``e-`` after
a digit. An integer needs 16 or more digits to exceed 2^53-1; and case 3 needs a UTF-8 lead
byte ``EE``/``EF`` and one of ``F0``-``F4`` in the output. Scanning for ``.0`` before ``,``, ``}``
or ``]``, for an exponent at the start of a number token, and for 16 digits in a row is a few
byte searches; text inside strings can raise a false alarm, which costs the slow path, never a
wrong answer. The slow path rewrites
floats as ECMAScript numbers (``orjson.Fragment``) and checks integers, or, for case 3, hands the
value to the ``rfc8785`` package. ``tests/test_security_canonical.py`` compares all three paths
with ``rfc8785`` and with an independent implementation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson
import rfc8785

from llmproto_ref._errors import EnvelopeError
from llmproto_ref._registry import ErrorCode
from llmproto_ref._strictjson import escape_pointer

__all__ = ("associated_data", "canonicalize", "es6_number", "signing_input")

_MAX_SAFE = 9_007_199_254_740_991
_SORTED = orjson.OPT_SORT_KEYS
_INTEGRAL_FLOAT = re.compile(rb"\.0[,}\]]")  # 1.0 and -0.0 as orjson writes them
_EXPONENT = re.compile(rb"e[+-][0-9]")  # 1e+16, 1.5e-7 (a literal first byte: a fast scan)
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else b for b in range(256))
_SIXTEEN_DIGITS = b"0" * 16
_NUMBER_START = frozenset(b":,[")
_BMP_HIGH = re.compile(rb"[\xee\xef]")
_ASTRAL = re.compile(rb"[\xf0-\xf4]")


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 form of a JSON value (dicts, lists, str, int, float, bool, ``None``).

    :raises EnvelopeError: ``INVALID_ENVELOPE`` [SEC-008] at the offending place, for a
        non-finite number or an integer beyond 2^53-1, which RFC 8785 cannot represent.
    """
    try:
        if type(value) is not dict and type(value) is not list:
            return _slow(value)
        body = orjson.dumps(value, option=_SORTED)
        if _numbers_differ(body):
            body = orjson.dumps(_ecmascript_numbers(value), option=_SORTED)
        if _BMP_HIGH.search(body) is not None and _ASTRAL.search(body) is not None:
            return _slow(value)
    except _NotIJsonError as exc:
        what = "an integer beyond 2^53-1" if isinstance(exc.number, int) else "a non-finite number"
        raise EnvelopeError(
            ErrorCode.INVALID_ENVELOPE,
            f"a signed or encrypted envelope holds {what}, which RFC 8785 cannot represent",
            pointer=_where(value) or "",
            requirement="SEC-008",
        ) from None
    return body


def _numbers_differ(body: bytes) -> bool:
    """Whether orjson's numbers in ``body`` may differ from RFC 8785's (false alarms allowed)."""
    if _INTEGRAL_FLOAT.search(body) is not None:
        return True
    if _SIXTEEN_DIGITS in body.translate(_DIGITS_AS_ZERO):
        return True
    for match in _EXPONENT.finditer(body):
        # A number token starts after ':', ',' or '[' (and a '-'); an 'e' inside a string such
        # as a UUID's "...c1e-6f..." is preceded by other characters.
        start = match.start()
        while start > 0 and (0x30 <= body[start - 1] <= 0x39 or body[start - 1] == 0x2E):
            start -= 1
        if start > 0 and body[start - 1] == 0x2D:
            start -= 1
        if start > 0 and body[start - 1] in _NUMBER_START:
            return True
    return False


def signing_input(members: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the envelope without the member ``sig.value`` [SEC-004]."""
    unsigned = dict(members)
    sig = unsigned.get("sig")
    if type(sig) is dict and "value" in sig:
        unsigned["sig"] = {name: v for name, v in sig.items() if name != "value"}
    return canonicalize(unsigned)


def associated_data(members: Mapping[str, Any]) -> bytes:
    """What AES-GCM binds the ciphertext to: the envelope without ``data_base64`` and ``sig``."""
    return canonicalize({n: v for n, v in members.items() if n not in ("data_base64", "sig")})


def es6_number(number: float) -> str:
    """A finite float as ECMAScript writes it (Number::toString, RFC 8785 section 3.2.2.3).

    :raises ValueError: for NaN and the infinities.
    """
    if not math.isfinite(number):
        raise ValueError(f"{number} has no JSON form")
    if number == 0:
        return "0"
    if number < 0:
        return "-" + es6_number(-number)
    mantissa, _, exponent = repr(number).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # number = 0.DIGITS x 10^point, with DIGITS free of leading zeros
    point = len(whole) + (int(exponent) if exponent else 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return digits + "0" * (point - k)
    if 0 < point <= 21:
        return f"{digits[:point]}.{digits[point:]}"
    if -6 < point <= 0:
        return "0." + "0" * -point + digits
    e = point - 1
    sign = "+" if e >= 0 else "-"
    head = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{head}e{sign}{abs(e)}"


def _ecmascript_numbers(value: Any) -> Any:
    """A copy of ``value`` with floats as ECMAScript numbers; integers checked for I-JSON."""
    kind = type(value)
    if kind is dict:
        return {k: _ecmascript_numbers(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_ecmascript_numbers(v) for v in value]
    if kind is float:
        if value.is_integer() and abs(value) <= _MAX_SAFE:
            return int(value)  # ECMAScript writes 1.0 as 1; in this range ints read the same
        if not math.isfinite(value):
            raise _NotIJsonError(value)
        return orjson.Fragment(es6_number(value))
    if kind is int:
        if abs(value) > _MAX_SAFE:
            raise _NotIJsonError(value)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return _ecmascript_numbers(float(value) if isinstance(value, float) else int(value))


def _slow(value: Any) -> bytes:
    """The ``rfc8785`` package's answer, after the I-JSON checks."""
    _ecmascript_numbers(value)
    return rfc8785.dumps(value)


class _NotIJsonError(Exception):
    """A number RFC 8785 cannot write; :func:`canonicalize` turns it into an EnvelopeError."""

    def __init__(self, number: float) -> None:
        super().__init__(number)
        self.number = number


def _where(value: Any, pointer: str = "") -> str | None:
    """The pointer of the first number in ``value`` that RFC 8785 cannot write (error path only)."""
    kind = type(value)
    if kind is dict:
        children: Any = ((f"{pointer}/{escape_pointer(k)}", v) for k, v in value.items())
    elif kind is list or kind is tuple:
        children = ((f"{pointer}/{i}", v) for i, v in enumerate(value))
    else:
        bad = isinstance(value, int | float) and not isinstance(value, bool)
        if bad and isinstance(value, float):
            bad = not math.isfinite(value)
        elif bad:
            bad = abs(value) > _MAX_SAFE
        return pointer if bad else None
    for where, child in children:
        found = _where(child, where)
        if found is not None:
            return found
    return None
