"""Transport-contract checks (spec/transport.md): principles, lifecycle, request-response,
cancellation and events. The names, work-queue and limits checks are in the modules beside
this one; what they share is :mod:`llmproto_conformance._transport_kit`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from llmproto_conformance._catalogue import check
from llmproto_conformance._context import CheckContext
from llmproto_conformance._model import CheckFailed, Level, Profile
from llmproto_conformance._transport_kit import (
    QUIET_S,
    WAIT_S,
    Background,
    Tap,
    ack_job,
    await_total,
    expect_code,
    expect_once,
    fresh_transports,
    merged_bodies,
    name_prefix,
    transport_opener,
)
from llmproto_ref import (
    Delivery,
    ErrorCode,
    Notice,
    QueueOptions,
    Transport,
    TransportError,
)

__all__: tuple[str, ...] = ()


# -- principles and lifecycle --------------------------------------------------------------


@check(
    id="trn-opaque-bytes",
    requirement="TRN-001",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="requests, replies, events, cancels and jobs arrive as exactly the bytes sent",
    adapter_only=True,
)
async def check_opaque_bytes(ctx: CheckContext) -> None:
    """Bytes that are no envelope (every byte value, broken JSON) must pass untouched."""
    p = name_prefix(ctx)
    body = bytes(range(256)) + b'{"llmp": not json, "id": \xff}'
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        inbox = await t1.open_inbox()
        taps: dict[str, Tap[Any]] = {
            "send_request": bg.tap(await t2.serve(f"{p}.req", group="g")),
            "send_reply": bg.tap(inbox.subscription),
            "publish_event": bg.tap(await t2.subscribe_events(f"{p}.evt")),
            "publish_cancel": bg.tap(await t2.serve_cancels(f"{p}.req")),
        }
        if ctx.capabilities.durable_queues:
            options = QueueOptions(prefetch=1, lease_ms=5000)
            taps["enqueue"] = bg.tap(await t2.consume(f"{p}.q", options), ack_job)
            await t1.enqueue(f"{p}.q", body, message_id=ctx.unique("m"))
        await t1.send_request(f"{p}.req", body, reply_to=inbox.address, message_id=ctx.unique("m"))
        await t2.send_reply(inbox.address, body)
        await t1.publish_event(f"{p}.evt", body)
        await t1.publish_cancel(f"{p}.req", body)
        for operation, tap in taps.items():
            ctx.expect(await tap.wait(1), f"{operation}: nothing arrived within {WAIT_S:g} s")
            got = tap.items[0].body
            ctx.expect(
                got == body,
                f"{operation} delivered {len(got)} bytes that differ from the {len(body)} sent",
            )


@check(
    id="trn-closed-unavailable",
    requirement="TRN-002",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="operations on a transport not yet opened or closed raise UNAVAILABLE",
    adapter_only=True,
)
async def check_closed_unavailable(ctx: CheckContext) -> None:
    """Only a transport error with a registry code may reach the caller, never a library's."""
    opener = transport_opener(ctx)
    p = name_prefix(ctx)
    never_opened = opener()
    await _expect_unavailable(ctx, never_opened, p, "a transport never opened")
    async with opener() as closed:
        pass
    await _expect_unavailable(ctx, closed, p, "a closed transport")


async def _expect_unavailable(ctx: CheckContext, t: Transport, p: str, what: str) -> None:
    operations: dict[str, Callable[[], Awaitable[Any]]] = {
        "serve": lambda: t.serve(f"{p}.a", group="g"),
        "send_request": lambda: t.send_request(f"{p}.a", b"x", reply_to="", message_id="m1"),
        "open_inbox": t.open_inbox,
        "publish_event": lambda: t.publish_event(f"{p}.a", b"x"),
        "subscribe_events": lambda: t.subscribe_events(f"{p}.a"),
        "publish_cancel": lambda: t.publish_cancel(f"{p}.a", b"x"),
        "serve_cancels": lambda: t.serve_cancels(f"{p}.a"),
    }
    if t.capabilities.durable_queues:
        operations["enqueue"] = lambda: t.enqueue(f"{p}.q", b"x", message_id="m2")
        operations["consume"] = lambda: t.consume(f"{p}.q", QueueOptions())
    for name, operation in operations.items():
        await expect_code(ctx, ErrorCode.UNAVAILABLE, f"{name} on {what}", operation)


# -- request-response and cancellation ------------------------------------------------------


@check(
    id="trn-request-groups",
    requirement="TRN-005",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="each request reaches exactly one member of each serving group",
    needs=frozenset({"groups"}),
    adapter_only=True,
)
async def check_request_groups(ctx: CheckContext) -> None:
    """Two groups (two members and one) serve a type; twelve requests; one copy per group."""
    p = name_prefix(ctx)
    sent = [f"request-{i}".encode() for i in range(12)]
    async with fresh_transports(ctx, 3) as (t1, t2, t3), Background() as bg:
        pair = [
            bg.tap(await t1.serve(f"{p}.req", group="g1")),
            bg.tap(await t2.serve(f"{p}.req", group="g1")),
        ]
        single = bg.tap(await t2.serve(f"{p}.req", group="g2"))
        other = bg.tap(await t1.serve(f"{p}.other", group="g1"))
        wildcard = None
        if t1.capabilities.wildcards:
            wildcard = bg.tap(await t1.serve(f"{p}.*", group="g3"))
        inbox = await t3.open_inbox()
        for body in sent:
            await t3.send_request(
                f"{p}.req", body, reply_to=inbox.address, message_id=ctx.unique("m")
            )
        await await_total(pair, len(sent))
        await single.wait(len(sent))
        await anyio.sleep(QUIET_S)
        expect_once(ctx, merged_bodies(pair), sent, "group g1 (two members)")
        expect_once(ctx, single.bodies(), sent, "group g2 (one member)")
        if wildcard is not None:
            expect_once(ctx, wildcard.bodies(), sent, f"group g3 serving {p}.*")
        ctx.expect(not other.items, "a request reached a subscription serving another type")


@check(
    id="trn-no-responders",
    requirement="TRN-006",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a request nobody serves is reported as NO_RESPONDERS, at once or by a notice",
    needs=frozenset({"no_responders"}),
    adapter_only=True,
)
async def check_no_responders(ctx: CheckContext) -> None:
    """send_request raises NO_RESPONDERS, or the inbox gets a notice with the message id."""
    p = name_prefix(ctx)
    message_id = ctx.unique("m")
    async with fresh_transports(ctx, 1) as (t,), Background() as bg:
        inbox = await t.open_inbox()
        replies = bg.tap(inbox.subscription)
        try:
            await t.send_request(f"{p}.nobody", b"x", reply_to=inbox.address, message_id=message_id)
        except TransportError as exc:
            ctx.expect(
                exc.code == ErrorCode.NO_RESPONDERS,
                f"send_request raised {exc.code} instead of NO_RESPONDERS",
            )
            return
        ctx.expect(
            await replies.wait(1),
            "a request nobody serves was reported as sent, and no notice followed",
        )
        notice = replies.items[0]
        ctx.expect(
            notice.notice is Notice.NO_RESPONDERS,
            f"the inbox received {notice.body[:60]!r} instead of a no_responders notice",
        )
        ctx.expect(
            notice.message_id == message_id,
            f"the notice names message {notice.message_id!r}, not {message_id!r}",
        )


@check(
    id="trn-inbox-unique",
    requirement="TRN-007",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="inbox addresses are unique and each inbox receives exactly what is sent to it",
    adapter_only=True,
)
async def check_inbox_unique(ctx: CheckContext) -> None:
    """Twenty inboxes on two connections; a reply to each reaches that inbox only."""
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        inboxes = [await t.open_inbox() for t in (t1, t2) for _ in range(10)]
        addresses = [inbox.address for inbox in inboxes]
        ctx.expect(
            len(set(addresses)) == len(addresses), f"two open inboxes share an address: {addresses}"
        )
        taps = [bg.tap(inbox.subscription) for inbox in inboxes]
        for address in addresses:
            for n in range(2):
                await t2.send_reply(address, f"{address}#{n}".encode())
        await await_total(taps, 2 * len(addresses))
        await anyio.sleep(QUIET_S)
        for address, tap in zip(addresses, taps, strict=True):
            want = [f"{address}#{n}".encode() for n in range(2)]
            expect_once(ctx, tap.bodies(), want, f"inbox {address}")


@check(
    id="trn-reply-address",
    requirement="TRN-008",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a delivered request carries the reply address it was sent with, even as bytes",
    adapter_only=True,
)
async def check_reply_address(ctx: CheckContext) -> None:
    """A body that is no envelope still comes with its reply address, and the reply gets back."""
    p = name_prefix(ctx)
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        requests = bg.tap(await t2.serve(f"{p}.req", group="g"))
        inbox = await t1.open_inbox()
        replies = bg.tap(inbox.subscription)
        await t1.send_request(
            f"{p}.req",
            b"\xff\xfe not an envelope",
            reply_to=inbox.address,
            message_id=ctx.unique("m"),
        )
        ctx.expect(await requests.wait(1), "the request never arrived")
        reply_to = requests.items[0].reply_to
        # A binding may give each request a reply address of its own (NATS does, so that a
        # 503 names the request); what counts is that answering it reaches the inbox.
        if reply_to is None:
            raise CheckFailed("the delivered request has no reply address")
        await t2.send_reply(reply_to, b"answer")
        ctx.expect(await replies.wait(1), "a reply to the handed-over address never arrived")
        ctx.expect(replies.items[0].body == b"answer", "the reply arrived changed")


@check(
    id="trn-cancel-broadcast",
    requirement="TRN-009",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a cancel reaches every serve_cancels subscription that matches, without groups",
    adapter_only=True,
)
async def check_cancel_broadcast(ctx: CheckContext) -> None:
    """Three subscriptions of the type on two connections each get every cancel, once."""
    p = name_prefix(ctx)
    sent = [f"cancel-{i}".encode() for i in range(3)]
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        await t1.serve(f"{p}.req", group="g")  # requests are grouped; cancels are not
        await t2.serve(f"{p}.req", group="g")
        taps = [bg.tap(await t.serve_cancels(f"{p}.req")) for t in (t1, t1, t2)]
        if t1.capabilities.wildcards:
            taps.append(bg.tap(await t2.serve_cancels(f"{p}.*")))
        other = bg.tap(await t2.serve_cancels(f"{p}.other"))
        for body in sent:
            await t1.publish_cancel(f"{p}.req", body)
        await await_total(taps, len(taps) * len(sent))
        await anyio.sleep(QUIET_S)
        for n, tap in enumerate(taps):
            expect_once(ctx, tap.bodies(), sent, f"cancel subscription {n + 1} of {len(taps)}")
        ctx.expect(not other.items, "a cancel reached a subscription for another type")


# -- events ---------------------------------------------------------------------------------


@check(
    id="trn-event-fanout",
    requirement="TRN-010",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="each event reaches every ungrouped subscription and one member of each group",
    adapter_only=True,
)
async def check_event_fanout(ctx: CheckContext) -> None:
    """Ten events; two ungrouped subscribers, a group of two and a group of one (if groups)."""
    p = name_prefix(ctx)
    sent = [f"event-{i}".encode() for i in range(10)]
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        ungrouped = [bg.tap(await t.subscribe_events(f"{p}.e")) for t in (t1, t2)]
        pair: list[Tap[Delivery]] = []
        single = None
        if t1.capabilities.groups:
            pair = [bg.tap(await t.subscribe_events(f"{p}.e", group="g")) for t in (t1, t2)]
            single = bg.tap(await t2.subscribe_events(f"{p}.e", group="h"))
        for body in sent:
            await t1.publish_event(f"{p}.e", body)
        try:
            await t1.publish_event(f"{p}.nobody", b"x")
        except TransportError as exc:
            raise CheckFailed(f"an event nobody subscribes to raised {exc.code}") from exc
        for tap in ungrouped:
            await tap.wait(len(sent))
        if pair:
            await await_total(pair, len(sent))
        await anyio.sleep(QUIET_S)
        for n, tap in enumerate(ungrouped):
            expect_once(ctx, tap.bodies(), sent, f"ungrouped subscription {n + 1}")
        if single is not None:
            expect_once(ctx, merged_bodies(pair), sent, "group g (two members)")
            expect_once(ctx, single.bodies(), sent, "group h (one member)")


@check(
    id="trn-order",
    requirement="TRN-022",
    level=Level.SHOULD,
    profile=Profile.TRANSPORT,
    description="messages from one sender to one address arrive in the order sent",
    adapter_only=True,
)
async def check_order(ctx: CheckContext) -> None:
    """A hundred events and a hundred replies keep their order."""
    p = name_prefix(ctx)
    sent = [f"{i:04d}".encode() for i in range(100)]
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        events = bg.tap(await t2.subscribe_events(f"{p}.e"))
        inbox = await t2.open_inbox()
        replies = bg.tap(inbox.subscription)
        for body in sent:
            await t1.publish_event(f"{p}.e", body)
            await t1.send_reply(inbox.address, body)
        for what, tap in (("events", events), ("replies", replies)):
            ctx.expect(await tap.wait(len(sent)), f"{what}: only {len(tap.items)} arrived")
            got = tap.bodies()
            if got != sent:
                first = next(
                    (i for i, (a, b) in enumerate(zip(got, sent, strict=False)) if a != b),
                    len(sent),
                )
                raise CheckFailed(f"{what} arrived out of order, first at index {first}")
