"""Request-response requirements of requesters and responders (spec/request-response.md)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

from llmproto_ref import (
    Deadline,
    Envelope,
    ErrorCode,
    ExchangeError,
    Kind,
    MemoryTransport,
    Request,
    Service,
    Subscription,
    decode,
    encode,
    new_id,
)
from llmproto_ref._clock import now_ms
from runtime_pair import WAIT, RuntimePair, eventually, quiet

pytestmark = pytest.mark.anyio


class _GroupRecordingTransport(MemoryTransport):
    """A memory transport that remembers the group of every ``serve`` call."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.served: list[tuple[str, str]] = []  #: (type pattern, group)

    async def serve(self, type_pattern: str, *, group: str) -> Subscription:
        self.served.append((type_pattern, group))
        return await super().serve(type_pattern, group=group)


async def test_instances_of_a_service_serve_in_one_group_named_after_it() -> None:
    """Two instances of ``svc`` serve each type in group ``svc``; each request runs once.

    Requirements: RR-001.
    """
    pair = RuntimePair()
    transports = [_GroupRecordingTransport(pair.broker_name) for _ in range(2)]
    instances = [Service(t, name="svc") for t in transports]
    runs: list[tuple[int, str]] = []

    def register(service: Service, label: int) -> None:
        @service.handler("t.work")
        async def work(request: Request) -> Any:
            runs.append((label, request.envelope.id))
            return label

        @service.handler("t.other.*")
        async def other(request: Request) -> Any:
            return label

    for label, instance in enumerate(instances):
        register(instance, label)
    async with pair, transports[0], transports[1], instances[0], instances[1]:
        with anyio.fail_after(WAIT):
            replies = [await pair.client.request("t.work", n) for n in range(10)]
            await quiet(0.05)
    assert [[("t.work", "svc"), ("t.other.*", "svc")]] * 2 == [t.served for t in transports]
    assert 10 == len({rid for _, rid in runs}) == len(runs)  # no request ran twice
    assert {0: 5, 1: 5} == Counter(label for label, _ in runs)
    assert [reply.correlation_id for reply in replies] == [rid for _, rid in runs]


async def test_every_request_expecting_a_reply_has_reply_to_and_a_deadline() -> None:
    """Calls, streams and jobs carry the client's inbox as reply_to and a deadline.

    Requirements: RR-002.
    """
    pair = RuntimePair(timeout=5.0)

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    @pair.service.handler("t.gen")
    async def gen(request: Request) -> Any:
        yield 1

    @pair.service.worker("jobs")
    async def work(request: Request) -> Any:
        return request.data

    async with pair:
        before = now_ms()
        with anyio.fail_after(WAIT):
            await pair.client.request("t.echo")
            await pair.client.request("t.echo", timeout=1.5)
            async with pair.client.stream("t.gen") as stream:
                assert [1] == [chunk.data async for chunk in stream]
            await (await pair.client.submit("jobs", "t.job")).result()
            await pair.client.submit("jobs", "t.job", result=False)
        after = now_ms()
    transport = pair.client_transport
    sent = [*transport.sent_requests(), *map(decode, transport.jobs)]
    assert [pair.inbox] * 4 + [None] == [envelope.reply_to for envelope in sent]
    deadlines = [Deadline.from_timestamp(e.deadline or "").at_ms for e in sent]
    timeouts = [5.0, 1.5, 5.0, 5.0, 5.0]
    assert [True] * 5 == [
        before + s * 1000 - 1 <= at <= after + s * 1000
        for at, s in zip(deadlines, timeouts, strict=True)
    ]


async def _replies_by_request(pair: RuntimePair, watch: float = 0.2) -> dict[str, list[Envelope]]:
    """Everything on the raw peer's inbox until it has been quiet for ``watch`` seconds."""
    inbox = await pair.raw.inbox()
    found: dict[str, list[Envelope]] = {}
    iterator = inbox.subscription.__aiter__()
    while True:
        with anyio.move_on_after(watch):
            delivery = await iterator.__anext__()
            envelope = decode(delivery.body)
            found.setdefault(envelope.correlation_id or "", []).append(envelope)
            continue
        return found


async def test_each_request_taken_gets_exactly_one_terminal_reply() -> None:
    """Whatever ends the handling, the raw requester gets one reply per request, no more.

    Requirements: RR-004.
    """
    pair = RuntimePair(serve=False, grace=0.05)
    started: list[str] = []

    @pair.service.handler("t.op")
    async def op(request: Request) -> Any:
        started.append(str(request.data))
        if request.data == "raise":
            raise ExchangeError(ErrorCode.CONTENT_REFUSED, "refused")
        if request.data == "bug":
            raise ValueError("bug")
        if request.data in ("hold", "timeout", "shutdown"):
            await anyio.sleep(10)
        return request.data

    expected: dict[str, tuple[Kind, str | None]] = {}
    async with pair:
        raw = pair.raw

        async def send(
            name: str, expect: tuple[Kind, str | None], type_: str = "t.op", **members: Any
        ) -> Envelope:
            request = await raw.request(type_, name, **members)
            await raw.send_request("t.op", encode(request))
            expected[request.id] = expect
            return request

        async with pair.service:
            with anyio.fail_after(WAIT):
                await send("return", (Kind.RESPONSE, None))
                await send("raise", (Kind.ERROR, "CONTENT_REFUSED"))
                await send("bug", (Kind.ERROR, "INTERNAL"))
                await send("unknown", (Kind.ERROR, "UNKNOWN_TYPE"), type_="t.elsewhere")
                await send(
                    "expired",
                    (Kind.ERROR, "DEADLINE_EXCEEDED"),
                    deadline=Deadline(now_ms() - 1000).to_timestamp(),
                )
                timeout = await send(
                    "timeout",
                    (Kind.ERROR, "DEADLINE_EXCEEDED"),
                    deadline=Deadline(now_ms() + 100).to_timestamp(),
                )
                held = await send("hold", (Kind.ERROR, "CANCELLED"))
                await eventually(lambda: "hold" in started)
                cancel = Envelope.new(
                    kind=Kind.CANCEL, type="t.op", source=raw.source, correlation_id=held.id
                )
                await pair.raw_transport.publish_cancel("t.op", encode(cancel))
                running = pair.service.running
                await eventually(lambda: not {timeout.id, held.id} & set(running))
                await send("shutdown", (Kind.ERROR, "UNAVAILABLE"))
                await eventually(lambda: "shutdown" in started)
        with anyio.fail_after(WAIT):
            replies = await _replies_by_request(pair)
    assert {rid: [expect] for rid, expect in expected.items()} == {
        rid: [(e.kind, (e.error or {}).get("code")) for e in found]
        for rid, found in replies.items()
    }


REQUEST_ADDRESS_INTRUDERS = [
    pytest.param(Kind.RESPONSE, "PROTOCOL_ERROR", id="response"),
    pytest.param(Kind.CHUNK, "PROTOCOL_ERROR", id="chunk"),
    pytest.param(Kind.CANCEL, "PROTOCOL_ERROR", id="cancel"),
    pytest.param(Kind.EVENT, "PROTOCOL_ERROR", id="event"),
    pytest.param(Kind.ERROR, None, id="error"),
]


@pytest.mark.parametrize(("kind", "code"), REQUEST_ADDRESS_INTRUDERS)
async def test_only_requests_run_at_a_request_address(kind: Kind, code: str | None) -> None:
    """Another kind at a request address runs nothing: PROTOCOL_ERROR, or for an error a drop.

    Requirements: RR-005.
    """
    pair = RuntimePair()
    ran: list[str] = []

    @pair.service.handler("t.op")
    async def op(request: Request) -> Any:
        ran.append(request.envelope.id)
        return "ran"

    by_kind: dict[Kind, dict[str, Any]] = {
        Kind.RESPONSE: {"correlation_id": new_id(), "data": 1},
        Kind.CHUNK: {"correlation_id": new_id(), "seq": 0, "data": 1},
        Kind.CANCEL: {"correlation_id": new_id()},
        Kind.EVENT: {"data": 1},
        Kind.ERROR: {
            "correlation_id": new_id(),
            "error": {"code": "INTERNAL", "message": "x", "retryable": False},
        },
    }
    intruder = Envelope.new(kind=kind, type="t.op", source=pair.raw.source, **by_kind[kind])
    async with pair:
        with anyio.fail_after(WAIT):
            await pair.raw.send_request("t.op", encode(intruder))
            if code is None:
                await eventually(lambda: pair.service.stats.dropped == 1)
            replies = await _replies_by_request(pair, watch=0.1)
    assert [] == ran
    assert ([] if code is None else [(Kind.ERROR, code)]) == [
        (e.kind, (e.error or {}).get("code")) for found in replies.values() for e in found
    ]
