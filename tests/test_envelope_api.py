"""The Envelope object: immutable, validated when built, members as on the wire."""

from __future__ import annotations

import pytest

from llmproto_ref import Envelope, EnvelopeError, Kind, decode, encode


def _request() -> Envelope:
    return Envelope.new(kind=Kind.REQUEST, type="weather.get", source="llmp://t", data={"c": 1})


def test_replace_accepts_enum_members_and_keeps_wire_strings() -> None:
    """replace(kind=Kind.EVENT) stores the wire string and still validates."""
    event = _request().replace(kind=Kind.EVENT)
    assert (Kind.EVENT, str) == (event.kind, type(event.members["kind"]))
    assert b'"kind":"event"' in encode(event)


def test_replace_with_none_removes_a_member_and_revalidates() -> None:
    """A change to None removes the member; a change that breaks the schema raises."""
    request = _request().replace(deadline="2026-12-03T10:00:00.000Z")
    assert "2026-12-03T10:00:00.000Z" == request.deadline
    assert request.replace(deadline=None).deadline is None
    with pytest.raises(EnvelopeError) as caught:
        request.replace(seq=1)
    assert ("/seq", "ENV-034") == (caught.value.pointer, caught.value.requirement)


def test_an_envelope_cannot_be_changed_in_place() -> None:
    """Setting or deleting an attribute raises; equality compares the wire members."""
    request = _request()
    with pytest.raises(AttributeError):
        request.type = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del request.data
    assert decode(encode(request)) == request


def test_null_data_is_kept_only_through_from_members() -> None:
    """The constructor leaves data=None out; from_members keeps an explicit JSON null."""
    members = _request().to_dict()
    members["data"] = None
    kept = Envelope.from_members(members)
    assert (True, None) == (kept.has("data"), kept.data)
    assert b'"data":null' in encode(kept)
    assert not _request().replace(data=None).has("data")


def test_a_sender_puts_a_non_json_payload_in_data_base64() -> None:
    """Building an envelope with text/plain in data fails locally (ENV-040); base64 works."""
    with pytest.raises(EnvelopeError) as caught:
        Envelope.new(kind=Kind.EVENT, type="a.b", source="s", content_type="text/plain",
                     data="hi")  # fmt: skip
    assert ("/data", "ENV-040") == (caught.value.pointer, caught.value.requirement)
    ok = Envelope.new(kind=Kind.EVENT, type="a.b", source="s", content_type="text/plain",
                      data_base64="aGk=")  # fmt: skip
    assert "aGk=" == ok.data_base64
    vendor_json = "application/vnd.acme+json; v=2"
    json_ok = Envelope.new(
        kind=Kind.EVENT, type="a.b", source="s", content_type=vendor_json, data={"a": 1}
    )
    assert {"a": 1} == json_ok.data
