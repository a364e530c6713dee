"""What the runtime assembles without a second check is valid and what the constructor builds.

The runtime's builders (``_replies.response``, ``_replies.chunk``, the client's request and event
assembly) adopt their members through ``Envelope._assembled``
without running :func:`~llmproto_ref._validate.validate_members` again. Each builder is judged
here on generated inputs three ways: the normative schema (``jsonschema``, the oracle) accepts
what it builds; the validating constructor builds the same members in the same order (``id`` and
``time`` aside); and an input the constructor rejects is rejected with the same code, pointer
and requirement. The last tests run every pattern through a Client and a Service on memory://
while ``Envelope._assembled`` judges each envelope it adopts with the schema, and show the debug
switch ``VALIDATE_BUILT``.

Requirements: ENV-009, ENV-016, ENV-020, ENV-022, ENV-023, ENV-030, MET-001.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envelope_strategies import MEMBER_VALUES, UINT53_MAX, valid_envelopes
from llmproto_ref import (
    Client,
    Deadline,
    Envelope,
    EnvelopeError,
    Final,
    Kind,
    Request,
)
from llmproto_ref import _envelope as envelope_module
from llmproto_ref._clock import now_ms
from llmproto_ref._replies import chunk, reply_timing, response
from llmproto_ref._schemas import schema_validator
from runtime_pair import WAIT, RuntimePair, eventually

SOURCE = "llmp://tests/builder"
EXAMPLES = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
STAMPS = st.integers(0, UINT53_MAX)
OPTIONAL_DATA = st.one_of(st.none(), MEMBER_VALUES["data"])
FINISH_REASONS = st.one_of(st.none(), MEMBER_VALUES["finish_reason"])
USAGES = st.one_of(st.none(), MEMBER_VALUES["usage"])


def _schema_errors(envelope: Envelope) -> list[str]:
    return [error.message for error in schema_validator().iter_errors(envelope.to_dict())]


def _same_as_constructed(built: Envelope, constructed: Envelope) -> None:
    """Equal members in equal order, except the fresh ``id`` and ``time``."""

    def without_fresh(envelope: Envelope) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in envelope.members.items() if k not in ("id", "time")]

    assert without_fresh(constructed) == without_fresh(built)
    assert [] == _schema_errors(built)


def _rejection(error: EnvelopeError) -> tuple[str, str, str]:
    return (str(error.code), error.pointer, error.requirement)


@EXAMPLES
@given(
    request=valid_envelopes("request"),
    data=OPTIONAL_DATA,
    finish_reason=FINISH_REASONS,
    usage=USAGES,
    received=STAMPS,
    handled=STAMPS,
)
def test_response_is_what_the_constructor_builds(
    *,
    request: dict[str, Any],
    data: Any,
    finish_reason: str | None,
    usage: dict[str, int] | None,
    received: int,
    handled: int,
) -> None:
    """response() of any valid request: schema-valid, member for member the constructor's."""
    asked = Envelope.from_members(request)
    timing = reply_timing(asked, received, handled)
    built = response(
        asked, source=SOURCE, data=data, timing=timing, finish_reason=finish_reason, usage=usage
    )
    constructed = Envelope.new(
        kind=Kind.RESPONSE,
        type=asked.type,
        source=SOURCE,
        correlation_id=asked.id,
        data=data,
        timing=timing,
        finish_reason=finish_reason,
        usage=usage,
    )
    _same_as_constructed(built, constructed)
    assert {"received": received, "handled": handled}.items() <= (built.timing or {}).items()


@EXAMPLES
@given(
    request=valid_envelopes("request"),
    seq=STAMPS,
    data=OPTIONAL_DATA,
    final=st.booleans(),
    finish_reason=FINISH_REASONS,
    usage=USAGES,
    timing=st.one_of(st.none(), MEMBER_VALUES["timing"]),
)
def test_chunk_is_what_the_constructor_builds(
    *,
    request: dict[str, Any],
    seq: int,
    data: Any,
    final: bool,
    finish_reason: str | None,
    usage: dict[str, int] | None,
    timing: dict[str, int] | None,
) -> None:
    """chunk(): schema-valid and the constructor's members; a non-final one has no completion."""
    asked = Envelope.from_members(request)
    if not final:
        finish_reason = usage = None
    built = chunk(
        asked,
        source=SOURCE,
        seq=seq,
        data=data,
        final=final,
        finish_reason=finish_reason,
        usage=usage,
        timing=timing,
    )
    constructed = Envelope.new(
        kind=Kind.CHUNK,
        type=asked.type,
        source=SOURCE,
        correlation_id=asked.id,
        seq=seq,
        final=True if final else None,
        data=data,
        finish_reason=finish_reason,
        usage=usage,
        timing=timing,
    )
    _same_as_constructed(built, constructed)


_REQUEST = Envelope.new(kind=Kind.REQUEST, type="t.ask", source=SOURCE, reply_to="_INBOX.t")

#: Builder arguments the constructor rejects: (name, changes to the good arguments).
_BAD_REPLY_ARGUMENTS = [
    ("empty source", {"source": ""}),
    ("source with a space", {"source": "llmp://a b"}),
    ("upper-case finish_reason", {"finish_reason": "Stop"}),
    ("usage name", {"usage": {"Tokens": 1}}),
    ("negative usage", {"usage": {"tokens": -1}}),
    ("usage not an object", {"usage": [1]}),
    ("negative stamp", {"timing": {"call": -1}}),
    ("unknown stamp", {"timing": {"queued": 1}}),
    ("stamp beyond 2^53", {"timing": {"sent": 2**53}}),
    ("two bad members", {"source": " ", "usage": {"X": -1}}),
]


@pytest.mark.parametrize(("case", "changes"), _BAD_REPLY_ARGUMENTS)
def test_response_rejects_what_the_constructor_rejects(case: str, changes: dict[str, Any]) -> None:
    """Each bad argument: the same EnvelopeError (code, pointer, requirement) as the constructor."""
    arguments: dict[str, Any] = {"source": SOURCE, "data": {"x": 1}, **changes}
    with pytest.raises(EnvelopeError) as built:
        response(_REQUEST, **arguments)
    with pytest.raises(EnvelopeError) as constructed:
        Envelope.new(
            kind=Kind.RESPONSE, type=_REQUEST.type, correlation_id=_REQUEST.id, **arguments
        )
    assert _rejection(constructed.value) == _rejection(built.value), case


@pytest.mark.parametrize(
    ("case", "changes"),
    [
        *_BAD_REPLY_ARGUMENTS,
        ("negative seq", {"seq": -1}),
        ("seq beyond 2^53", {"seq": 2**53}),
        ("seq not an integer", {"seq": 1.5}),
        ("finish_reason on a non-final chunk", {"final": None, "finish_reason": "stop"}),
        ("usage on a non-final chunk", {"final": None, "usage": {"tokens": 1}}),
        ("non-final, bad stamp too", {"final": None, "usage": {"n": 1}, "timing": {"x": 1}}),
    ],
)
def test_chunk_rejects_what_the_constructor_rejects(case: str, changes: dict[str, Any]) -> None:
    """The same for chunks, including the final-only members [ENV-022, ENV-023]."""
    arguments: dict[str, Any] = {"source": SOURCE, "seq": 3, "final": True, **changes}
    with pytest.raises(EnvelopeError) as constructed:
        Envelope.new(kind=Kind.CHUNK, type=_REQUEST.type, correlation_id=_REQUEST.id, **arguments)
    arguments["final"] = bool(arguments["final"])
    with pytest.raises(EnvelopeError) as built:
        chunk(_REQUEST, data=None, **arguments)
    assert _rejection(constructed.value) == _rejection(built.value), case


def _client(source: str = SOURCE) -> Client:
    return Client(_Unused(), source=source)  # type: ignore[arg-type]  # never sends


class _Unused:
    """Stands for a transport the test never reaches."""


@EXAMPLES
@given(
    type_=MEMBER_VALUES["type"],
    source=MEMBER_VALUES["source"],
    reply_to=st.one_of(st.none(), MEMBER_VALUES["reply_to"]),
    data=OPTIONAL_DATA,
    call_us=STAMPS,
    deadline_ms=st.integers(0, 253_402_300_799_999),  # to 9999-12-31T23:59:59.999Z
    nested=st.booleans(),
)
def test_client_request_is_what_the_constructor_builds(
    *,
    type_: str,
    source: str,
    reply_to: str | None,
    data: Any,
    call_us: int,
    deadline_ms: int,
    nested: bool,
) -> None:
    """The client's own assembly of a request (no extra members) equals the constructor's."""
    parent = Request(envelope=_REQUEST) if nested else None
    due = Deadline(deadline_ms)
    built = _client(source)._request_envelope(  # noqa: SLF001 - the builder under test
        type_, data, deadline=due, reply_to=reply_to, call_us=call_us, members={}, parent=parent
    )
    constructed = Envelope.new(
        kind=Kind.REQUEST,
        type=type_,
        source=source,
        causation_id=_REQUEST.id if nested else None,
        reply_to=reply_to,
        deadline=due.to_timestamp(),
        data=data,
        timing={"call": call_us, "sent": (built.timing or {}).get("sent")},
    )
    _same_as_constructed(built, constructed)


@pytest.mark.parametrize(
    ("case", "type_", "source", "reply_to", "deadline"),
    [
        ("bad type", "no spaces", SOURCE, "_INBOX.a", Deadline(0)),
        ("type too long", "a" * 256, SOURCE, "_INBOX.a", Deadline(0)),
        ("bad source", "t.ok", "", "_INBOX.a", Deadline(0)),
        ("empty reply_to", "t.ok", SOURCE, "", Deadline(0)),
        ("deadline after year 9999", "t.ok", SOURCE, None, Deadline(253_402_300_800_000)),
        ("bad type and source", "t ok", " ", None, Deadline(0)),
    ],
)
def test_client_request_rejects_what_the_constructor_rejects(
    case: str, type_: str, source: str, reply_to: str | None, deadline: Deadline
) -> None:
    """A bad type, source, reply address or deadline: the constructor's very error."""
    with pytest.raises(EnvelopeError) as constructed:
        Envelope.new(
            kind=Kind.REQUEST,
            type=type_,
            source=source,
            reply_to=reply_to,
            deadline=deadline.to_timestamp(),
            timing={"call": 1, "sent": 2},
        )
    with pytest.raises(EnvelopeError) as built:
        _client(source)._request_envelope(  # noqa: SLF001 - the builder under test
            type_, None, deadline=deadline, reply_to=reply_to, call_us=1, members={}, parent=None
        )
    assert _rejection(constructed.value) == _rejection(built.value), case


class _Publishing:
    """A transport stand-in that keeps what is published."""

    def __init__(self) -> None:
        self.published: list[bytes] = []

    async def publish_event(self, type: str, body: bytes) -> None:
        self.published.append(body)


@pytest.mark.anyio
async def test_client_event_is_what_the_constructor_builds() -> None:
    """publish() without extra members: the constructor's event, plain or inside a handler."""
    transport = _Publishing()
    client = Client(transport, source=SOURCE)  # type: ignore[arg-type]  # publish only
    plain = await client.publish("e.happened", {"n": 1})
    _same_as_constructed(
        plain, Envelope.new(kind=Kind.EVENT, type="e.happened", source=SOURCE, data={"n": 1})
    )
    with pytest.raises(EnvelopeError) as built:
        await client.publish("e happened")
    with pytest.raises(EnvelopeError) as constructed:
        Envelope.new(kind=Kind.EVENT, type="e happened", source=SOURCE)
    assert _rejection(constructed.value) == _rejection(built.value)
    assert 1 == len(transport.published)


# -- every pattern through the runtime, judged by the schema --------------------------------


@pytest.fixture
def assembled(monkeypatch: pytest.MonkeyPatch) -> list[Envelope]:
    """Every envelope ``Envelope._assembled`` adopts, after the schema judged it valid."""
    seen: list[Envelope] = []
    adopt = Envelope._assembled.__func__  # type: ignore[attr-defined]  # noqa: SLF001

    def judged(cls: type[Envelope], members: dict[str, Any]) -> Envelope:
        envelope: Envelope = adopt(cls, members)
        errors = _schema_errors(envelope)
        assert [] == errors, (members, errors)
        seen.append(envelope)
        return envelope

    monkeypatch.setattr(Envelope, "_assembled", classmethod(judged))
    return seen


@pytest.mark.anyio
async def test_every_pattern_assembles_schema_valid_envelopes(assembled: list[Envelope]) -> None:
    """Requests, responses, chunks, final chunks, events and jobs on memory:// are all valid."""
    pair = RuntimePair()
    events: list[str] = []

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    @pair.service.handler("t.nested")
    async def nested(request: Request) -> Any:
        inner = await pair.client.request("t.echo", {"inner": True})  # causation_id, deadline
        await pair.client.publish("e.nested", inner.data)
        return Final(data=inner.data, finish_reason="length", usage={"tokens": 3})

    @pair.service.handler("t.stream")
    async def stream(request: Request) -> Any:
        for n in range(3):
            yield {"n": n}
        yield Final(data="end", usage={"input_tokens": 1, "output_tokens": 3})

    @pair.service.on_event("e.>")
    async def on_event(event: Any) -> None:
        events.append(event.type)

    @pair.service.worker("t-jobs")
    async def work(request: Request) -> Any:
        return {"job": request.data}

    async with pair:
        with anyio.fail_after(WAIT):
            assert {"x": 1} == (await pair.client.request("t.echo", {"x": 1})).data
            assert {"inner": True} == (await pair.client.request("t.nested", timeout=2)).data
            async with pair.client.stream("t.stream", deadline=Deadline(now_ms() + 2000)) as s:
                assert [0, 1, 2] == [c.data["n"] async for c in s]
            await pair.client.publish("e.plain")
            handle = await pair.client.submit("t-jobs", "t.job", 7)
            assert {"job": 7} == (await handle.result()).data
            await eventually(lambda: ["e.nested", "e.plain"] == sorted(events))
    kinds = sorted({str(envelope.kind) for envelope in assembled})
    assert ["chunk", "event", "request", "response"] == kinds
    finals = [e for e in assembled if e.kind is Kind.CHUNK and e.final]
    assert 1 == len(finals)
    assert 2 == sum(e.causation_id is not None for e in assembled)  # the nested call and event


def test_validate_built_makes_assembled_envelopes_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    """With VALIDATE_BUILT (LLMPROTO_VALIDATE_BUILT=1) a builder's slip raises, not sends."""
    broken = {**_REQUEST.to_dict(), "seq": 1}  # a request may not carry seq [ENV-034]
    assert broken == Envelope._assembled(dict(broken)).to_dict()  # noqa: SLF001 - off: adopted
    monkeypatch.setattr(envelope_module, "VALIDATE_BUILT", True)
    with pytest.raises(EnvelopeError) as caught:
        Envelope._assembled(dict(broken))  # noqa: SLF001 - the switch under test
    assert ("/seq", "ENV-034") == (caught.value.pointer, caught.value.requirement)
