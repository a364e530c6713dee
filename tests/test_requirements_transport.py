"""Transport-contract requirements checked on the memory transport (spec/transport.md).

tests/test_memory_transport.py covers each operation's semantics; the tests here add the
contract's tables (names, patterns, error codes per operation) and the cases it singles out.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial

import anyio
import pytest

from llmproto_ref import (
    Consumer,
    ErrorCode,
    MemoryBroker,
    MemoryTransport,
    QueueOptions,
    Subscription,
    TransportError,
)

pytestmark = pytest.mark.anyio

WAIT = 3.0


@pytest.fixture
def broker_name() -> Iterator[str]:
    """A broker name no other test uses, forgotten afterwards."""
    name = f"t{uuid.uuid4().hex}"
    yield name
    MemoryBroker.reset(name)


@pytest.fixture
async def transport(broker_name: str) -> AsyncIterator[MemoryTransport]:
    """An open memory transport on a fresh broker."""
    async with MemoryTransport(broker_name) as t:
        yield t


async def _drain(source: Subscription, watch: float = 0.05) -> list[bytes]:
    """Every body ``source`` yields until it has been quiet for ``watch`` seconds."""
    bodies: list[bytes] = []
    iterator = source.__aiter__()
    while True:
        with anyio.move_on_after(watch):
            bodies.append((await iterator.__anext__()).body)
            continue
        return bodies


TOKEN = "t" * 64
NAMES = [
    pytest.param("llm.chat", True, id="two-tokens"),
    pytest.param("A-b_9", True, id="one-token-of-every-class"),
    pytest.param(".".join([TOKEN] * 3 + ["t" * 60]), True, id="255-characters"),
    pytest.param(".".join(["t"] * 16), True, id="16-tokens"),
    pytest.param(".".join(["t"] * 17), False, id="17-tokens"),
    pytest.param("t" * 65, False, id="token-of-65"),
    pytest.param(".".join([TOKEN] * 4), False, id="259-characters"),
    pytest.param("llm..chat", False, id="empty-token"),
    pytest.param("llm.chat.", False, id="trailing-dot"),
    pytest.param("llm.#", False, id="hash"),
    pytest.param("llm chat", False, id="space"),
    pytest.param("llm.*", False, id="wildcard-in-a-name"),
]
PATTERNS = [
    pytest.param("llm.chat", True, id="literal"),
    pytest.param("llm.*", True, id="star"),
    pytest.param("llm.>", True, id="tail"),
    pytest.param("*.*.>", True, id="stars-and-tail"),
    pytest.param(">", True, id="tail-alone"),
    pytest.param("llm.>.v2", False, id="tail-not-last"),
    pytest.param("llm.#", False, id="hash"),
    pytest.param("llm..chat", False, id="empty-token"),
    pytest.param("llm.c*", False, id="star-inside-a-token"),
]


@pytest.mark.parametrize(("name", "valid"), NAMES)
async def test_names_follow_the_grammar_before_the_broker_is_asked(
    broker_name: str, name: str, valid: bool
) -> None:
    """A malformed name is INVALID_PARAMS even on an unopened transport; a valid one is not.

    Requirements: TRN-003.
    """
    unopened = MemoryTransport(broker_name)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: unopened.publish_event(name, b"{}"),
        lambda: unopened.enqueue(name, b"{}", message_id="m"),
        lambda: unopened.consume(name, QueueOptions()),
    ]
    codes = []
    for call in calls:
        with pytest.raises(TransportError) as caught:
            await call()
        codes.append(caught.value.code)
    expected = ErrorCode.UNAVAILABLE if valid else ErrorCode.INVALID_PARAMS
    assert [expected] * len(calls) == codes


@pytest.mark.parametrize(("pattern", "valid"), PATTERNS)
async def test_patterns_follow_the_grammar_before_the_broker_is_asked(
    broker_name: str, pattern: str, valid: bool
) -> None:
    """A malformed pattern is INVALID_PARAMS even on an unopened transport; a valid one is not.

    Requirements: TRN-003.
    """
    unopened = MemoryTransport(broker_name)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: unopened.serve(pattern, group="g"),
        lambda: unopened.serve_cancels(pattern),
        lambda: unopened.subscribe_events(pattern),
    ]
    codes = []
    for call in calls:
        with pytest.raises(TransportError) as caught:
            await call()
        codes.append(caught.value.code)
    expected = ErrorCode.UNAVAILABLE if valid else ErrorCode.INVALID_PARAMS
    assert [expected] * len(calls) == codes


#: spec/events.md's pattern table, plus case: which topics each pattern matches.
MATCHES = {
    "model.loaded": {"model.loaded"},
    "model.*": {"model.loaded"},
    "model.>": {"model.loaded", "model.loaded.gpu1"},
    "model.*.gpu1": {"model.loaded.gpu1"},
    "*.loaded": {"model.loaded", "Model.loaded"},
    "*.*.>": {"model.loaded.gpu1", "gpu.model.loaded"},
    ">": {"model.loaded", "model.loaded.gpu1", "model", "gpu.model.loaded", "Model.loaded"},
    "Model.*": {"Model.loaded"},
}


async def test_patterns_match_as_the_spec_table_says(transport: MemoryTransport) -> None:
    """Each pattern of the spec's table gets exactly the topics the table says; case matters.

    Requirements: TRN-004.
    """
    subscriptions = {p: await transport.subscribe_events(p) for p in MATCHES}
    topics = ["model.loaded", "model.loaded.gpu1", "model", "gpu.model.loaded", "Model.loaded"]
    for topic in topics:
        await transport.publish_event(topic, topic.encode())
    got = {p: {body.decode() for body in await _drain(s)} for p, s in subscriptions.items()}
    assert MATCHES == got


async def test_a_repeated_enqueue_stores_nothing_even_after_the_first_was_settled(
    transport: MemoryTransport,
) -> None:
    """An enqueue whose message_id was stored before, acked or not, succeeds and adds nothing.

    Requirements: TRN-012.
    """
    consumer = await transport.consume("work", QueueOptions(prefetch=4, lease_ms=100))
    await transport.enqueue("work", b"first", message_id="same")
    with anyio.fail_after(WAIT):
        job = await consumer.__aiter__().__anext__()
    await job.ack()
    await transport.enqueue("work", b"again", message_id="same")  # no error
    with anyio.move_on_after(0.2):
        extra = await consumer.__aiter__().__anext__()
        pytest.fail(f"the repeated enqueue stored a job: {extra.body!r}")
    assert 1 == transport.broker.stats.duplicates


async def test_settling_a_delivery_no_longer_leased_changes_nothing(
    transport: MemoryTransport,
) -> None:
    """terminate (like ack, nack, extend_lease) of an expired delivery neither raises nor moves it.

    Requirements: TRN-019.
    """
    slow = await transport.consume("work", QueueOptions(prefetch=1, lease_ms=250))
    await transport.enqueue("work", b"job", message_id="m")
    with anyio.fail_after(WAIT):
        stale = await slow.__aiter__().__anext__()
        fast = await transport.consume("work", QueueOptions())
        current = await fast.__aiter__().__anext__()  # the redelivery after the lease ran out
    await stale.terminate(reason="too late")
    await stale.nack(delay_ms=10)
    await stale.extend_lease()
    await stale.ack()
    await current.ack()  # still leased to its consumer: the stale settles left it alone
    assert (2, 4, 0) == (
        current.delivery_count,
        transport.broker.stats.stale_settles,
        transport.broker.stats.dead_lettered,
    )
    assert [] == await _drain_jobs(await transport.dead_letters("work"))
    assert [] == await _drain_jobs(fast, watch=0.2)  # acked for good, not back after a lease


async def _drain_jobs(consumer: Consumer, watch: float = 0.1) -> list[bytes]:
    """The bodies a consumer yields within ``watch`` seconds."""
    bodies: list[bytes] = []
    iterator = consumer.__aiter__()
    with anyio.move_on_after(watch):
        while True:
            bodies.append((await iterator.__anext__()).body)
    return bodies


async def test_subscriptions_yield_only_the_messages_sent_to_them(
    transport: MemoryTransport,
) -> None:
    """After requests, replies, cancels, events and settled jobs, nothing extra is delivered.

    Requirements: TRN-021.
    """
    requests = await transport.serve("svc.run", group="g")
    cancels = await transport.serve_cancels("svc.>")
    events = await transport.subscribe_events(">")
    inbox = await transport.open_inbox()
    consumer = await transport.consume("work", QueueOptions(prefetch=4, lease_ms=5_000))
    await transport.send_request("svc.run", b"request", reply_to=inbox.address, message_id="r")
    await transport.send_reply(inbox.address, b"reply")
    await transport.publish_cancel("svc.run", b"cancel")
    await transport.publish_event("e.x", b"event")
    for n in range(3):
        await transport.enqueue("work", b"job%d" % n, message_id=f"j{n}")
    with anyio.fail_after(WAIT):
        jobs = [await consumer.__aiter__().__anext__() for _ in range(3)]
    await jobs[0].ack()
    await jobs[1].extend_lease()
    await jobs[1].nack()
    await jobs[2].terminate(reason="no")
    deliveries = {
        "requests": await _drain(requests), "cancels": await _drain(cancels),
        "events": await _drain(events), "inbox": await _drain(inbox.subscription),
    }  # fmt: skip
    assert {
        "requests": [b"request"],
        "cancels": [b"cancel"],
        "events": [b"event"],
        "inbox": [b"reply"],
    } == deliveries
    assert [b"job1"] == await _drain_jobs(consumer)


async def test_one_senders_messages_to_one_address_arrive_in_order(
    transport: MemoryTransport,
) -> None:
    """Replies to an inbox, events to a subscription and requests to a server keep their order.

    Requirements: TRN-022.
    """
    inbox = await transport.open_inbox()
    events = await transport.subscribe_events("e.seq")
    requests = await transport.serve("svc.seq", group="g")
    bodies = [b"%03d" % n for n in range(300)]
    for body in bodies:
        await transport.send_reply(inbox.address, body)
        await transport.publish_event("e.seq", body)
        await transport.send_request("svc.seq", body, reply_to="", message_id=body.decode())
    assert [bodies] * 3 == [await _drain(s) for s in (inbox.subscription, events, requests)]


#: spec/transport.md, section Errors: the codes each operation may raise.
_EVERY = {ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL}
_SUBSCRIBE = _EVERY | {ErrorCode.INVALID_PARAMS}
_SEND = _EVERY | {ErrorCode.INVALID_PARAMS, ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.OVERLOADED}
ALLOWED = {
    "serve": _SUBSCRIBE, "serve_cancels": _SUBSCRIBE, "subscribe_events": _SUBSCRIBE,
    "consume": _SUBSCRIBE, "dead_letters": _SUBSCRIBE,
    "send_request": _SEND | {ErrorCode.NO_RESPONDERS},
    "enqueue": _SEND | {ErrorCode.NO_RESPONDERS},
    "send_reply": _SEND, "publish_cancel": _SEND, "publish_event": _SEND,
    "open_inbox": _EVERY, "ack": _EVERY, "terminate": _EVERY, "extend_lease": _EVERY,
    "nack": _EVERY | {ErrorCode.INVALID_PARAMS},
    "aclose": set(),
}  # fmt: skip


async def test_each_operation_raises_only_the_codes_its_row_lists(broker_name: str) -> None:
    """Bad names, big bodies, nobody serving, a closed transport: every code is in its row.

    Requirements: TRN-026.
    """
    raised: dict[str, set[ErrorCode | str]] = {op: set() for op in ALLOWED}

    async def attempt(op: str, call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except TransportError as exc:
            raised[op].add(exc.code)

    small = MemoryTransport(broker_name, max_payload=16)
    big = b"x" * 17
    async with small:
        inbox = await small.open_inbox()
        consumer = await small.consume("work", QueueOptions(prefetch=1, lease_ms=50))
        letters = await small.dead_letters("work")
        await small.enqueue("work", b"j", message_id="m")
        with anyio.fail_after(WAIT):
            job = await consumer.__aiter__().__anext__()
        for name in ("bad name", "svc.run"):
            await attempt("serve", partial(small.serve, name, group="g"))
            await attempt("serve_cancels", partial(small.serve_cancels, name))
            await attempt("subscribe_events", partial(small.subscribe_events, name))
            await attempt("consume", partial(small.consume, name, QueueOptions()))
            await attempt("dead_letters", partial(small.dead_letters, name))
            for body in (b"{}", big):
                await attempt(
                    "send_request",
                    partial(small.send_request, name, body, reply_to=inbox.address, message_id="m"),
                )
                await attempt("enqueue", partial(small.enqueue, name, body, message_id="m2"))
                await attempt("publish_cancel", partial(small.publish_cancel, name, body))
                await attempt("publish_event", partial(small.publish_event, name, body))
        await attempt(
            "send_request",
            partial(
                small.send_request, "svc.nobody", b"{}", reply_to=inbox.address, message_id="m"
            ),
        )
        for address in ("not an address", inbox.address, "_INBOX.nobody"):
            for body in (b"{}", big):
                await attempt("send_reply", partial(small.send_reply, address, body))
        await attempt("nack", partial(job.nack, delay_ms=-1))
        await attempt("extend_lease", job.extend_lease)
        await attempt("ack", job.ack)
        await attempt("terminate", partial(job.terminate, reason="again"))
        await attempt("open_inbox", small.open_inbox)
        for closable in (inbox.subscription, consumer, letters, inbox.subscription):
            await attempt("aclose", closable.aclose)
    await attempt("open_inbox", small.open_inbox)  # closed now: UNAVAILABLE
    await attempt(
        "send_request", partial(small.send_request, "svc.run", b"{}", reply_to="", message_id="m")
    )
    await attempt("enqueue", partial(small.enqueue, "work", b"{}", message_id="m3"))
    await attempt("ack", job.ack)
    await attempt("aclose", inbox.subscription.aclose)
    assert {op: set() for op in ALLOWED} == {
        op: codes - ALLOWED[op] for op, codes in raised.items()
    }
    assert {
        ErrorCode.INVALID_PARAMS,
        ErrorCode.PAYLOAD_TOO_LARGE,
        ErrorCode.NO_RESPONDERS,
        ErrorCode.UNAVAILABLE,
    } == raised["send_request"]  # the battery did reach each case
