"""Envelope and version requirements that need a sender or a receiver at work (spec/envelope.md).

The codec's own rules are checked by the vectors; the tests here check what the runtime sends,
what it does with what it rejects, and the order in which the decoder reports problems.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import anyio
import orjson
import pytest

from llmproto_ref import (
    Deadline,
    Envelope,
    EnvelopeError,
    ErrorCode,
    ExchangeError,
    Final,
    Kind,
    Limits,
    LlmpError,
    QueueOptions,
    Request,
    decode,
    encode,
)
from llmproto_ref._clock import now_ms
from llmproto_ref._schemas import schema_validator
from runtime_pair import WAIT, RuntimePair, eventually, quiet

pytestmark = pytest.mark.anyio

_HEADER = ('"llmp":"1.0","id":"m1","kind":"%s","type":"t.x","source":"s",'
           '"time":"2026-01-01T00:00:00.000Z"')  # fmt: skip


def _raw(kind: str, extra: str = "") -> bytes:
    """A hand-written envelope of ``kind`` with ``extra`` members appended."""
    return ("{" + _HEADER % kind + ("," + extra if extra else "") + "}").encode()


async def _everything_sent(pair: RuntimePair) -> list[bytes]:
    """Run one of each exchange through ``pair`` and return every body anybody sent."""
    async with pair:
        events = await pair.raw_transport.subscribe_events(">")
        with anyio.fail_after(WAIT):
            await pair.client.request("t.echo", {"x": 1})
            with contextlib.suppress(ExchangeError):
                await pair.client.request("t.refuse")
            async with pair.client.stream("t.gen", 3) as stream:
                assert 3 == len([chunk async for chunk in stream])
            async with pair.client.stream("t.gen", 100) as stream:
                async for _ in stream:
                    break  # leaving early sends a cancel; the service answers CANCELLED
            await eventually(lambda: pair.client.correlator.late_dropped >= 1)
            await pair.client.publish("e.note", {"n": 1})
            handle = await pair.client.submit("jobs", "t.job", "work")
            await handle.result()
            await pair.raw.send_request("t.echo", b'{"broken": ')
            rejection = await pair.raw.inbox()
            rejected = (await rejection.subscription.__aiter__().__anext__()).body
            event = (await events.__aiter__().__anext__()).body
        await quiet(0.05)
    transport = pair.client_transport
    return [
        *transport.requests,
        *transport.cancels,
        *transport.jobs,
        *transport.received,
        rejected,
        event,
    ]


def _busy_pair() -> RuntimePair:
    """A pair whose service answers, fails, streams and works a queue."""
    pair = RuntimePair()

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return Final(data=request.data, finish_reason="stop", usage={"output_tokens": 1})

    @pair.service.handler("t.refuse")
    async def refuse(request: Request) -> Any:
        raise ExchangeError(
            ErrorCode.RATE_LIMITED,
            "slow down",
            retry_after_ms=10,
            details=({"type": "acme.quota", "limit": 1},),
        )

    @pair.service.handler("t.gen")
    async def gen(request: Request) -> Any:
        for n in range(request.data):
            yield {"n": n}
            await anyio.sleep(0.001)

    @pair.service.worker("jobs", options=QueueOptions(prefetch=4))
    async def work(request: Request) -> Any:
        return request.data

    return pair


async def test_everything_the_runtime_sends_is_a_valid_envelope_of_version_1_0() -> None:
    """Requests, replies, chunks, cancels, events, jobs and rejections are valid 1.0 envelopes.

    Requirements: ENV-035, VER-001.
    """
    bodies = await _everything_sent(_busy_pair())
    validator = schema_validator("envelope")
    kinds = set()
    for body in bodies:
        envelope = decode(body)  # the default limits, nothing understood
        assert [] == [error.message for error in validator.iter_errors(orjson.loads(body))]
        assert "1.0" == envelope.llmp
        kinds.add(envelope.kind)
    assert set(Kind) == kinds


async def test_a_reply_too_large_to_accept_is_never_sent() -> None:
    """A handler result over the size limit is answered INTERNAL instead of being sent.

    Requirements: ENV-035.
    """
    pair = RuntimePair()

    @pair.service.handler("t.huge")
    async def huge(request: Request) -> Any:
        return "x" * 1_100_000  # fits the memory transport, not the default envelope limit

    async with pair:
        with anyio.fail_after(WAIT), pytest.raises(ExchangeError) as caught:
            await pair.client.request("t.huge")
    assert ErrorCode.INTERNAL == caught.value.code
    assert [] == [len(body) for body in pair.client_transport.received if len(body) > 1_048_576]


async def test_a_request_too_large_to_accept_is_never_sent() -> None:
    """The client refuses to send a request over the size limit, with PAYLOAD_TOO_LARGE.

    Requirements: ENV-035.
    """
    pair = RuntimePair()

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    async with pair:
        with anyio.fail_after(WAIT), pytest.raises(ExchangeError) as caught:
            await pair.client.request("t.echo", "x" * 1_100_000)
        assert 0 == pair.client.pending
    assert ErrorCode.PAYLOAD_TOO_LARGE == caught.value.code
    assert [] == pair.client_transport.requests


async def test_a_non_json_payload_never_travels_in_data() -> None:
    """A payload whose media type is not JSON is not sent in ``data``.

    Requirements: ENV-040.
    """
    pair = RuntimePair()

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return None

    async with pair:
        with anyio.fail_after(WAIT), contextlib.suppress(LlmpError):
            await pair.client.request("t.echo", "plain words", content_type="text/plain")
    assert [] == [e.data for e in pair.client_transport.sent_requests() if e.data is not None]


REJECTED_BUT_READABLE = [
    pytest.param(
        _raw("request", '"reply_to":"%s","critical":["acme.unknown"]'),
        "UNSUPPORTED_EXTENSION",
        id="critical-not-understood",
    ),
    pytest.param(
        _raw("request", '"reply_to":"%s","seq":0'), "INVALID_ENVELOPE", id="forbidden-member"
    ),
    pytest.param(
        _raw("request", '"reply_to":"%s","data":1,"data_base64":"AA=="'),
        "INVALID_ENVELOPE",
        id="data-and-data-base64",
    ),
]


@pytest.mark.parametrize(("template", "code"), REJECTED_BUT_READABLE)
async def test_a_rejected_request_never_reaches_the_handler(template: bytes, code: str) -> None:
    """A request the decoder rejects is answered with its code and its handler never runs.

    Requirements: ENV-037.
    """
    pair = RuntimePair()
    ran: list[str] = []

    @pair.service.handler("t.x")
    async def handler(request: Request) -> Any:
        ran.append(request.envelope.id)
        return "ran"

    async with pair:
        address = (await pair.raw.inbox()).address
        with anyio.fail_after(WAIT):
            await pair.raw.send_request("t.x", template.replace(b"%s", address.encode()))
            error = await pair.raw.next_reply()
            valid = await pair.raw.request("t.x")
            await pair.raw.send_request("t.x", encode(valid))
            answer = await pair.raw.next_reply()
    assert ("m1", code) == (error.correlation_id, (error.error or {})["code"])
    assert (Kind.RESPONSE, [valid.id]) == (answer.kind, ran)


async def test_a_reply_that_does_not_decode_is_not_passed_to_the_caller() -> None:
    """An invalid reply correlated to an open call is dropped; the call takes the valid one.

    Requirements: ENV-037.
    """
    async with RuntimePair() as pair:
        requests = await pair.raw_transport.serve("t.raw", group="raw")
        async with anyio.create_task_group() as tg:
            outcome: dict[str, Envelope] = {}

            async def call() -> None:
                outcome["reply"] = await pair.client.request("t.raw")

            tg.start_soon(call)
            with anyio.fail_after(WAIT):
                request = decode((await requests.__aiter__().__anext__()).body)
                forged = pair.raw.response(request.id, "t.raw", "forged").to_dict()
                forged["reply_to"] = "_INBOX.forged"  # forbidden on a response [ENV-034]
                await pair.raw.reply(request.reply_to or "", orjson.dumps(forged))
                await eventually(lambda: pair.client.malformed_replies == 1)
                await pair.raw.reply(
                    request.reply_to or "", pair.raw.response(request.id, "t.raw", "real")
                )
    assert "real" == outcome["reply"].data
    assert 0 == pair.client.correlator.late_dropped


async def test_a_rejection_without_a_reply_address_is_recorded_with_code_and_pointer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unanswerable rejection is logged or counted with its code, pointer and requirement.

    Requirements: ENV-038.
    """
    pair = RuntimePair()

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    caplog.set_level(logging.DEBUG)
    async with pair:
        await pair.raw.send_request("t.echo", b'{"a": 1, "a": 2}', reply=False)
        await eventually(lambda: pair.service.stats.dropped == 1)
    recorded = " ".join(
        [record.getMessage() for record in caplog.records]
        + [repr(pair.service.stats), repr(pair.service.metrics.snapshot())]
    )
    assert ("INVALID_ENVELOPE", "/a", "ENV-003") == tuple(
        word for word in ("INVALID_ENVELOPE", "/a", "ENV-003") if word in recorded
    )


#: Messages with two problems; the one the earlier decoding step finds must be reported.
DECODING_ORDER = [
    pytest.param(
        b"{not json" + b" " * 2000, ("PAYLOAD_TOO_LARGE", "", "ENV-006"), id="size-before-json"
    ),
    pytest.param(b"[" * 40 + b"1,]", ("INVALID_ENVELOPE", "", "ENV-002"), id="json-before-depth"),
    pytest.param(
        b'{"a":1,"a":2,"b":' + b"[" * 40 + b"]" * 40 + b"}",
        ("INVALID_ENVELOPE", "", "ENV-007"),
        id="depth-before-duplicates",
    ),
    pytest.param(
        b'[{"a":1,"a":2}]', ("INVALID_ENVELOPE", "/0/a", "ENV-003"), id="duplicates-before-root"
    ),
    pytest.param(b'"llmp"', ("INVALID_ENVELOPE", "", "ENV-001"), id="root-before-version"),
    pytest.param(
        b'{"llmp":"2.0","bogus":1}',
        ("UNSUPPORTED_VERSION", "/llmp", "ENV-010"),
        id="version-before-unknown-member",
    ),
    pytest.param(
        b'{"llmp":"1.0","bogus":1}',
        ("INVALID_ENVELOPE", "/bogus", "ENV-008"),
        id="unknown-before-missing-member",
    ),
    pytest.param(
        b'{"llmp":"1.0","id":"bad id","kind":"request","type":"t.x",'
        b'"time":"2026-01-01T00:00:00.000Z"}',
        ("INVALID_ENVELOPE", "/source", "ENV-009"),
        id="missing-before-values",
    ),
    pytest.param(
        b'{"llmp":"1.0","kind":"nope","id":"bad id","type":"t.x","source":"s",'
        b'"time":"2026-01-01T00:00:00.000Z"}',
        ("INVALID_ENVELOPE", "/kind", "ENV-013"),
        id="values-in-document-order",
    ),
    pytest.param(
        _raw("response").replace(b"2026-01-01T00:00:00.000Z", b"yesterday"),
        ("INVALID_ENVELOPE", "/time", "ENV-016"),
        id="values-before-kind-required",
    ),
    pytest.param(
        _raw("response", '"reply_to":"_INBOX.a"'),
        ("INVALID_ENVELOPE", "/correlation_id", "ENV-017"),
        id="kind-required-before-forbidden",
    ),
    pytest.param(
        _raw("chunk", '"correlation_id":"r","seq":0,"finish_reason":"stop","reply_to":"_INBOX.a"'),
        ("INVALID_ENVELOPE", "/reply_to", "ENV-034"),
        id="forbidden-before-final-only",
    ),
    pytest.param(
        _raw(
            "chunk",
            '"correlation_id":"r","seq":0,"finish_reason":"stop","data":1,"data_base64":"AA=="',
        ),
        ("INVALID_ENVELOPE", "/finish_reason", "ENV-023"),
        id="final-only-before-payload",
    ),
    pytest.param(
        _raw("request", '"critical":["acme.x"],"data":1,"data_base64":"AA=="'),
        ("INVALID_ENVELOPE", "/data_base64", "ENV-026"),
        id="payload-before-critical",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), DECODING_ORDER)
def test_the_first_failing_decoding_step_decides_the_report(
    raw: bytes, expected: tuple[str, str, str]
) -> None:
    """Of two problems in one message the decoder reports the one its earlier step finds.

    Requirements: ENV-039.
    """
    with pytest.raises(EnvelopeError) as caught:
        decode(raw, limits=Limits(max_envelope_bytes=1024))
    error = caught.value
    assert expected == (str(error.code), error.pointer, error.requirement)


async def test_unknown_ext_members_are_ignored_unless_critical() -> None:
    """A request or a reply with an ext member nobody understands is handled as usual.

    Requirements: ENV-041.
    """
    pair = RuntimePair()
    seen: list[Any] = []

    @pair.service.handler("t.x")
    async def handler(request: Request) -> Any:
        seen.append(request.envelope.ext)
        return "handled"

    async with pair:
        requests = await pair.raw_transport.serve("t.raw", group="raw")
        ext = {"acme.unknown": {"any": ["json", 1]}}
        with anyio.fail_after(WAIT):
            handled = await pair.client.request("t.x", ext=ext)
            with pytest.raises(ExchangeError) as refused:
                await pair.client.request("t.x", ext=ext, critical=["acme.unknown"])
            async with anyio.create_task_group() as tg:
                replies: list[Envelope] = []

                async def call() -> None:
                    replies.append(await pair.client.request("t.raw"))

                tg.start_soon(call)
                request = decode((await requests.__aiter__().__anext__()).body)
                reply = pair.raw.response(request.id, "t.raw", "fine").replace(ext=ext)
                await pair.raw.reply(request.reply_to or "", reply)
    assert ("handled", [ext]) == (handled.data, seen)
    assert ErrorCode.UNSUPPORTED_EXTENSION == refused.value.code
    assert [("fine", ext)] == [(r.data, r.ext) for r in replies]


async def test_every_reply_and_cancel_carries_the_type_of_its_request() -> None:
    """Responses, chunks, errors and cancels carry their request's type, pattern-served too.

    Requirements: ENV-042.
    """
    pair = RuntimePair()

    @pair.service.handler("t.call.*")
    async def call(request: Request) -> Any:
        if request.data == "fail":
            raise ExchangeError(ErrorCode.INVALID_PARAMS, "no")
        return request.data

    @pair.service.handler("t.gen.*")
    async def gen(request: Request) -> Any:
        for n in range(request.data):
            yield n
            await anyio.sleep(0.001)

    @pair.service.worker("jobs")
    async def work(request: Request) -> Any:
        return request.data

    async with pair:
        with anyio.fail_after(WAIT):
            await pair.client.request("t.call.ok", "ok")
            with contextlib.suppress(ExchangeError):
                await pair.client.request("t.call.bad", "fail")
            with contextlib.suppress(ExchangeError):
                await pair.client.request("t.call.late", deadline=Deadline(now_ms() - 1000))
            async with pair.client.stream("t.gen.short", 2) as stream:
                assert 2 == len([chunk async for chunk in stream])
            async with pair.client.stream("t.gen.long", 100) as stream:
                async for _ in stream:
                    break
            await eventually(lambda: pair.client.correlator.late_dropped >= 1)
            await (await pair.client.submit("jobs", "t.job.one", 1)).result()
        await quiet(0.05)
    transport = pair.client_transport
    sent = {env.id: env.type for env in map(decode, [*transport.requests, *transport.jobs])}
    answers = [*map(decode, transport.received), *map(decode, transport.cancels)]
    assert {Kind.RESPONSE, Kind.ERROR, Kind.CHUNK, Kind.CANCEL} == {e.kind for e in answers}
    assert [] == [(e.kind, e.type) for e in answers if e.type != sent.get(e.correlation_id or "")]


def test_the_sender_cannot_add_a_top_level_member_1_0_does_not_define() -> None:
    """Envelopes refuse top-level members that version 1.0 does not define, so none is sent.

    Requirements: VER-002.
    """
    members = orjson.loads(_raw("request"))
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_members({**members, "priority": 3})
    assert ("/priority", "ENV-008") == (caught.value.pointer, caught.value.requirement)
    with pytest.raises(TypeError):
        Envelope(**{**members, "priority": 3})


async def test_an_unsupported_version_rejection_lists_the_supported_versions() -> None:
    """Rejecting another major version, the service lists the versions it implements.

    Requirements: VER-003.
    """
    pair = RuntimePair()

    @pair.service.handler("t.x")
    async def handler(request: Request) -> Any:
        return None

    async with pair:
        with anyio.fail_after(WAIT):
            await pair.raw.send_request("t.x", _raw("request").replace(b'"1.0"', b'"2.0"', 1))
            error = await pair.raw.next_reply()
    details = (error.error or {}).get("details", [])
    assert [{"type": "llmp.versions", "supported": ["1.0"]}] == [
        d for d in details if d["type"] == "llmp.versions"
    ]
