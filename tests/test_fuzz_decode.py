"""Fuzzing ``decode``: whatever the bytes, only :class:`~llmproto_ref.EnvelopeError` escapes.

Hypothesis feeds :func:`llmproto_ref.decode` arbitrary bytes, arbitrary text, JSON values that
are not envelopes, and near-valid bodies: generated valid envelopes (``tests/envelope_strategies``)
and their near misses, serialized and then bent at the byte level (a bit flipped, a slice cut
or repeated, a hostile fragment spliced in). For each input the decoder either accepts, and the
envelope survives ``encode`` and a second ``decode`` unchanged, or raises ``EnvelopeError`` with
one of the four rejection codes, a JSON Pointer and a requirement the spec defines, from which
the service's rejection reply can be built [ENV-002, ENV-036, ENV-039]. Anything else escaping
is a bug, and so is an input that takes a second (the deadline).

Deterministic in CI: ``derandomize=True`` and no example database; sizes are bounded so that a
run of the whole file stays well under 20 s. ``tests/fuzz/atheris_decode.py`` is the same
target for long coverage-guided runs.
"""

from __future__ import annotations

import importlib.util
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn

from envelope_strategies import mutations, valid_envelopes
from llmproto_conformance import requirements
from llmproto_conformance._hostile_corpus import BAD_UTF8, LONE_SURROGATES, OVERFLOW, SYNTAX
from llmproto_ref import Envelope, EnvelopeError, ErrorCode, decode, encode
from llmproto_ref._replies import rejection_reply

#: The codes a decoder rejects with (spec/envelope.md, Rejecting a message).
DECODE_CODES = frozenset({ErrorCode.INVALID_ENVELOPE, ErrorCode.UNSUPPORTED_VERSION,
                          ErrorCode.UNSUPPORTED_EXTENSION,
                          ErrorCode.PAYLOAD_TOO_LARGE})  # fmt: skip
DEFINED = frozenset(requirements())
_POINTER = re.compile(r"^(/([^~/]|~[01])*)*$", re.DOTALL)

#: Fixed, database-less, derandomized: the same examples on every run; one second each at most.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)

#: Fragments spliced into near-valid bodies: the hostile corpus's seeds and a few repeats.
FRAGMENTS: list[bytes] = [
    *SYNTAX.values(), *BAD_UTF8.values(), *LONE_SURROGATES.values(), *OVERFLOW.values(),
    b'"id":"x",', b'"kind":"request",', b'"llmp":"2.0",', b'"\\u0074ype":', b"[" * 40,
    b"\xef\xbb\xbf", b"NaN", b"-Infinity", b"9007199254740992", b'"\\u003a"', b'"\\ud800"',
]  # fmt: skip
_INTERESTING = b'"{}[],:\\ 0-.eE\x00\x1f\x7f\x80\xc0\xed\xef\xf4\xff'


def _outcome(raw: bytes | str) -> Envelope | EnvelopeError:
    try:
        return decode(raw)
    except EnvelopeError as exc:  # anything else escapes, and fails the test
        return exc


def judge(raw: bytes | str) -> None:
    """Decode; an acceptance must round-trip, a rejection must be well formed."""
    outcome = _outcome(raw)
    if isinstance(outcome, Envelope):
        assert decode(encode(outcome)) == outcome
        return
    assert outcome.code in DECODE_CODES, outcome
    assert _POINTER.match(outcome.pointer), outcome
    assert outcome.requirement in DEFINED, outcome
    body = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    reply = rejection_reply(body, outcome, source="llmp://fuzz")  # what a service sends back
    assert decode(encode(reply)).kind == "error"


@settings(FUZZ, max_examples=3000)
@given(st.binary(max_size=2048))
@example(b"")
@example(b"[" * 100_000)
@example(b'{"a":' * 50_000)
@example(b"1" * 5000)
@example(b'"' + b"\\u0000" * 20_000 + b'"')
@example(b" " * 1_048_577)
def test_arbitrary_bytes(raw: bytes) -> None:
    """Random bytes, and a few huge ones, are rejected or accepted, never crash decode."""
    judge(raw)


@settings(FUZZ, max_examples=500)
@given(st.text(max_size=512))
def test_arbitrary_text(text: str) -> None:
    """``decode`` takes ``str`` too; a lone surrogate in it is invalid UTF-8 [ENV-005]."""
    judge(text)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=40,
)


@settings(FUZZ, max_examples=500)
@given(_JSON)
def test_json_values(value: Any) -> None:
    """JSON values of any shape, most of them not envelopes at all [ENV-001]."""
    try:
        raw = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):  # an integer beyond 64 bits
        raw = repr(value).encode()
    judge(raw)


@st.composite
def near_valid(draw: DrawFn) -> bytes:
    """A valid envelope or a near miss of it, serialized, then bent one to three times."""
    envelope = draw(valid_envelopes())
    members = draw(mutations(envelope)) if draw(st.booleans()) else envelope
    try:
        raw = bytearray(orjson.dumps(members))
    except (TypeError, orjson.JSONEncodeError):
        raw = bytearray(orjson.dumps(envelope))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(raw)))
        operation = draw(st.sampled_from(("flip", "set", "cut", "insert", "repeat", "truncate")))
        if operation == "flip" and at < len(raw):
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set" and at < len(raw):
            raw[at] = draw(st.sampled_from(_INTERESTING))
        elif operation == "cut":
            del raw[at : at + draw(st.integers(1, 16))]
        elif operation == "insert":
            raw[at:at] = draw(st.sampled_from(FRAGMENTS))
        elif operation == "repeat":
            raw[at:at] = raw[at : at + draw(st.integers(1, 32))]
        else:
            del raw[at:]
    return bytes(raw)


@settings(FUZZ, max_examples=800)
@given(near_valid())
def test_near_valid_bodies(raw: bytes) -> None:
    """Bodies a byte or a member away from valid exercise the decoder's every step."""
    judge(raw)


def test_judge_accepts_a_valid_envelope() -> None:
    """The round trip of the judge itself, on one envelope (so its accept branch is known)."""
    envelope = Envelope.new(kind="event", type="fuzz.tick", source="llmp://fuzz", data={"n": 1})
    judge(encode(envelope))


def test_atheris_target_on_its_seeds(tmp_path: Path) -> None:
    """The atheris target takes every seed it exports, and says so when atheris is missing."""
    from fuzz.atheris_decode import export_seeds, fuzz_one_input, main

    count = export_seeds(tmp_path)
    assert count == len(list(tmp_path.iterdir())) >= 500
    for seed in sorted(tmp_path.iterdir()):
        fuzz_one_input(seed.read_bytes())
    if importlib.util.find_spec("atheris") is None:
        assert main(["atheris_decode.py", "-runs=1"]) == 2
