"""The NATS binding's pure mapping, by the binding vectors and by unit tests, without a broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import llmproto_ref
from llmproto_nats import (
    NatsMessage,
    cancel_subject,
    dead_letter_subject,
    decode_header_value,
    encode_header_value,
    event_pattern,
    event_subject,
    from_nats,
    inbox_subject,
    queue_subject,
    request_subject,
    to_nats,
)
from llmproto_ref import Envelope, ErrorCode, TransportError

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "conformance" / "llmproto_conformance" / "binding_vectors"
DOCUMENT: dict[str, Any] = json.loads((VECTORS / "nats.json").read_text(encoding="utf-8"))
MESSAGES: list[dict[str, Any]] = DOCUMENT["messages"]
HEADER_VALUES: list[dict[str, Any]] = DOCUMENT["header_values"]


def _subject_of(route: dict[str, Any], envelope: Envelope) -> str:
    operation = route["operation"]
    if operation == "send_request":
        return request_subject(envelope.type)
    if operation == "publish_cancel":
        return cancel_subject(envelope.type)
    if operation == "publish_event":
        return event_subject(envelope.type)
    if operation == "enqueue":
        return queue_subject(route["address"])
    address: str = route["address"]
    return address


def _is_header_name(name: str) -> bool:
    return bool(name) and all(0x21 <= ord(c) <= 0x7E and c != ":" for c in name)


def test_the_binding_vectors_match_their_schema() -> None:
    """nats.json is valid against binding.schema.json and its ids are unique."""
    schema = json.loads((VECTORS / "binding.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert [] == [e.message for e in Draft202012Validator(schema).iter_errors(DOCUMENT)]
    ids = [case["id"] for case in (*MESSAGES, *HEADER_VALUES)]
    assert len(set(ids)) == len(ids)


def test_the_vectors_cover_every_kind() -> None:
    """There is a message vector for each of the six kinds."""
    assert {str(kind) for kind in llmproto_ref.Kind} == {c["envelope"]["kind"] for c in MESSAGES}


@pytest.mark.parametrize("case", MESSAGES, ids=[c["id"] for c in MESSAGES])
def test_message_vector(case: dict[str, Any]) -> None:
    """Subject, reply, headers (NATS-011 NATS-013 NATS-022) and body (NATS-010) are as expected."""
    envelope = Envelope.from_members(case["envelope"])
    route = case["route"]
    message = to_nats(envelope, _subject_of(route, envelope), route.get("reply"))
    expect = case["expect"]
    assert expect["subject"] == message.subject
    assert expect["reply"] == message.reply
    assert expect["headers"] == message.headers
    assert all(_is_header_name(name) for name in message.headers)
    assert expect["payload_is_envelope"]
    assert llmproto_ref.encode(envelope) == message.payload
    assert envelope == llmproto_ref.decode(from_nats(message))


@pytest.mark.parametrize("case", HEADER_VALUES, ids=[c["id"] for c in HEADER_VALUES])
def test_header_value_vector(case: dict[str, Any]) -> None:
    """Each value encodes as given (NATS-014, NATS-016) or is refused (NATS-015)."""
    if case.get("rejected"):
        with pytest.raises(TransportError) as caught:
            encode_header_value(case["value"])
        assert ErrorCode.INVALID_PARAMS == caught.value.code
        return
    assert case["encoded"] == encode_header_value(case["value"])
    assert case["value"] == decode_header_value(case["encoded"])


@given(st.text().filter(lambda s: "\r" not in s and "\n" not in s))
def test_header_encoding_round_trips(value: str) -> None:
    """Text without CR/LF encodes to printable ASCII and decodes back (NATS-014)."""
    encoded = encode_header_value(value)
    assert all(0x21 <= ord(c) <= 0x7E for c in encoded)
    assert value == decode_header_value(encoded)


@pytest.mark.parametrize("value", ["\r", "\n", "a\r\nb", "tail\n"])
def test_cr_and_lf_are_refused(value: str) -> None:
    """A value holding CR or LF is refused with INVALID_PARAMS (NATS-015)."""
    with pytest.raises(TransportError) as caught:
        encode_header_value(value)
    assert ErrorCode.INVALID_PARAMS == caught.value.code


@pytest.mark.parametrize("raw", ["%", "%4", "%G0", "caf\u00e9", "a b", "a\rb", "%C3", "%FF"])
def test_malformed_header_values_do_not_decode(raw: str) -> None:
    """Bad escapes, raw non-ASCII or spaces, and non-UTF-8 bytes are refused (NATS-016)."""
    with pytest.raises(ValueError, match=r"."):
        decode_header_value(raw)


def test_lower_case_escapes_decode() -> None:
    """Hex digits of either case decode (NATS-016)."""
    assert "\u00e9" == decode_header_value("%c3%a9")


def test_subject_grammar() -> None:
    """Addresses map onto llmp. subjects: NATS-001 NATS-002 NATS-003 NATS-004 NATS-005 NATS-006."""
    assert "llmp.rpc.llm.chat" == request_subject("llm.chat")
    assert "llmp.cancel.llm.chat" == cancel_subject("llm.chat")
    assert "llmp.evt.model.loaded" == event_subject("model.loaded")
    assert "llmp.wq.embeddings" == queue_subject("embeddings")
    assert "llmp.dlq.embeddings" == dead_letter_subject("embeddings")
    assert "_INBOX.c1.req-1" == inbox_subject("c1", "req-1")


def test_rpc_and_stream_subjects_never_overlap() -> None:
    """No RPC subject can fall inside a client's inbox, nor the reverse (NATS-009)."""
    subjects = {
        request_subject("a.b"),
        cancel_subject("a.b"),
        event_subject("a.b"),
        queue_subject("a.b"),
        dead_letter_subject("a.b"),
    }
    assert 5 == len({s.split(".")[1] for s in subjects})
    assert not any(s.startswith("_INBOX.") for s in subjects)


@pytest.mark.parametrize(
    "name", ["", "a..b", "a.*", "a.>", "a b", "caf\u00e9", "a.b\n", "x" * 65, ".".join("a" * 17)]
)
def test_malformed_names_are_refused(name: str) -> None:
    """Names breaking the token grammar are refused with INVALID_PARAMS (NATS-007)."""
    for subject in (request_subject, cancel_subject, event_subject, queue_subject):
        with pytest.raises(TransportError) as caught:
            subject(name)
        assert ErrorCode.INVALID_PARAMS == caught.value.code


@pytest.mark.parametrize(("client_token", "request_id"), [("a.b", "r"), ("c", "r.s"), ("c", "*")])
def test_inbox_tokens_are_single_tokens(client_token: str, request_id: str) -> None:
    """An inbox is exactly three tokens (NATS-006, NATS-007)."""
    with pytest.raises(TransportError):
        inbox_subject(client_token, request_id)


@pytest.mark.parametrize(
    ("pattern", "subject"),
    [("model.*", "llmp.evt.model.*"), ("model.>", "llmp.evt.model.>"), ("*.x.>", "llmp.evt.*.x.>")],
)
def test_wildcards_map_natively(pattern: str, subject: str) -> None:
    """``*`` and ``>`` keep their meaning under the event prefix (NATS-008)."""
    assert subject == event_pattern(pattern)


def test_a_wildcard_matches_what_the_runtime_matches() -> None:
    """Stripping the prefix gives back the pattern, with the same matches (NATS-008)."""
    types = ["model.loaded", "model.loaded.v2", "model", "tool.loaded"]
    for pattern in ["model.*", "model.>", "*.loaded", ">"]:
        nats = event_pattern(pattern).split(".")[2:]
        for name in types:
            mapped = ".".join(nats)
            assert llmproto_ref.pattern_matches(pattern, name) == llmproto_ref.pattern_matches(
                mapped, name
            )


@pytest.mark.parametrize("pattern", ["model.>.x", "a..b", "", "a.b*"])
def test_malformed_patterns_are_refused(pattern: str) -> None:
    """A pattern NATS could not express the same way is refused (NATS-007, NATS-008)."""
    with pytest.raises(TransportError):
        event_pattern(pattern)


def test_headers_are_never_trusted_over_the_body() -> None:
    """from_nats returns the body untouched, whatever the headers claim (NATS-012)."""
    envelope = Envelope.new(kind="event", type="a.b", source="s")
    message = to_nats(envelope, event_subject("a.b"))
    forged = NatsMessage(
        subject=message.subject,
        headers={**message.headers, "llmp-kind": "request", "llmp-type": "x.y"},
        payload=message.payload,
    )
    decoded = llmproto_ref.decode(from_nats(forged))
    assert ("event", "a.b") == (str(decoded.kind), decoded.type)


def test_the_package_imports_no_nats_client() -> None:
    """The mapping is pure: its source imports nothing from the NATS client."""
    source = (ROOT / "adapters" / "llmproto_nats" / "_mapping.py").read_text(encoding="utf-8")
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert [] == [line for line in imports if line.split()[1].partition(".")[0] == "nats"]
