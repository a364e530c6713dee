"""RFC 8785 canonicalization: the fast path, the slow path and two other writers agree [SEC-004].

``llmproto_ref._canonical`` writes with orjson and falls back when a number or a member order
could differ; these tests compare it with the ``rfc8785`` package and with the independent
writer of tests/test_security_vectors.py on generated JSON, and pin down the I-JSON rule
[SEC-008] and the two derived inputs (signing input [SEC-004], associated data [SEC-036]).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import hypothesis.strategies as st
import orjson
import pytest
import rfc8785
from hypothesis import given, settings

from llmproto_ref import EnvelopeError
from llmproto_ref._canonical import (
    _numbers_differ,
    associated_data,
    canonicalize,
    es6_number,
    signing_input,
)
from test_security_vectors import jcs

MAX_SAFE = 2**53 - 1

_names = st.text(
    alphabet=st.characters(codec="utf-8", max_codepoint=0x1F9FF), max_size=6
) | st.sampled_from(["\ue000", "\U0001f600", "\uffff", "\U00010000", "a", "Z", "é"])
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE, max_value=MAX_SAFE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_names, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_names, _json, max_size=6))
def test_canonicalize_agrees_with_rfc8785_and_an_independent_writer(value: dict[str, Any]) -> None:
    """Generated objects: all three writers produce the same bytes [SEC-004]."""
    expected = rfc8785.dumps(value)
    assert expected == canonicalize(value)
    assert expected == jcs(value)


@settings(max_examples=300, deadline=None)
@given(st.lists(_json, max_size=5))
def test_arrays_and_scalars_at_the_top(value: list[Any]) -> None:
    """A top-level array, and each of its items alone, canonicalize as rfc8785 does."""
    assert rfc8785.dumps(value) == canonicalize(value)
    for item in value:
        assert rfc8785.dumps(item) == canonicalize(item)


@settings(max_examples=1000, deadline=None)
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_es6_number_of_any_double(bits: int) -> None:
    """Every finite double is written as ECMAScript (and rfc8785) writes it."""
    number = struct.unpack("<d", struct.pack("<Q", bits))[0]
    if math.isfinite(number):
        assert rfc8785.dumps(number).decode() == es6_number(number)


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (123e-20, "1.23e-18"),
        (5e-324, "5e-324"),
        (0.1, "0.1"),
        (-1.5, "-1.5"),
    ],
)
def test_es6_number_examples(number: float, text: str) -> None:
    """The examples of RFC 8785 section 3.2.2.3 and appendix B."""
    assert text == es6_number(number)


def test_es6_number_refuses_non_finite() -> None:
    """NaN and the infinities have no JSON form."""
    for number in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="no JSON form"):
            es6_number(number)


@pytest.mark.parametrize(
    "value",
    [
        {"t": "2026-05-20T07:00:00.000Z", "id": "019e442f-2180-74a3-9fae-6f291c8f544d"},
        {"temperature": 0.2, "top_p": 0.95, "n": 3},
        {"text": "version 1.0, then 2e-3"},
    ],
)
def test_common_envelopes_take_the_fast_path(value: dict[str, Any]) -> None:
    """Timestamps, UUIDs and ordinary floats raise no alarm: orjson's output is final."""
    body = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    if "text" not in value:
        assert not _numbers_differ(body)
    assert rfc8785.dumps(value) == canonicalize(value)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.0},
        {"a": [-0.0]},
        {"a": 1e16},
        {"a": 1e-6},
        {"a": [1.5e-7]},
        {"a": 12345678901234567},
    ],
)
def test_numbers_orjson_writes_differently_raise_the_alarm(value: dict[str, Any]) -> None:
    """Integral floats, exponents and 16-digit integers send the value down the slow path."""
    assert _numbers_differ(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def test_an_integer_beyond_two_to_the_53_is_refused_at_its_place() -> None:
    """I-JSON: an integer beyond 2^53-1 has no canonical form; the pointer names it [SEC-008]."""
    with pytest.raises(EnvelopeError) as caught:
        canonicalize({"data": {"items": [1, {"count": 2**53}]}})
    assert ("INVALID_ENVELOPE", "/data/items/1/count", "SEC-008") == (
        caught.value.code,
        caught.value.pointer,
        caught.value.requirement,
    )
    assert canonicalize({"n": MAX_SAFE}) == b'{"n":9007199254740991}'
    with pytest.raises(EnvelopeError, match="non-finite"):
        canonicalize(math.inf)


def test_the_signing_input_leaves_out_only_the_signature_value() -> None:
    """sig.alg, kid, created, expires and nonce are covered; value is not [SEC-004]."""
    members = {"b": 1, "sig": {"value": "xyz", "nonce": "n", "alg": "EdDSA"}, "a": 2}
    assert b'{"a":2,"b":1,"sig":{"alg":"EdDSA","nonce":"n"}}' == signing_input(members)
    assert {"value": "xyz", "nonce": "n", "alg": "EdDSA"} == members["sig"]  # not modified


def test_the_associated_data_leaves_out_the_ciphertext_and_the_signature() -> None:
    """AES-GCM binds every member but data_base64 and sig [SEC-036]."""
    members = {"enc": {"iv": "i"}, "data_base64": "AAAA", "sig": {"value": "v"}, "type": "t"}
    assert b'{"enc":{"iv":"i"},"type":"t"}' == associated_data(members)


def test_es6_number_of_every_power_of_two() -> None:
    """Powers of two, where the gaps between doubles change size, are written as rfc8785 does."""
    for exponent in range(-1074, 1024):
        number = 2.0**exponent
        assert rfc8785.dumps(number).decode() == es6_number(number), exponent
