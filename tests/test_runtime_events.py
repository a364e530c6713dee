"""Events through the runtime: groups, wildcards, failures, expiry, malformed bytes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

from llmproto_ref import (
    Deadline,
    ErrorCode,
    Event,
    ExchangeError,
    Pattern,
    Request,
    Service,
    encode,
)
from llmproto_ref._clock import now_ms
from runtime_pair import WAIT, RuntimePair, eventually, quiet

pytestmark = pytest.mark.anyio


async def test_fan_out_to_groups_one_member_each() -> None:
    """Each group gets every event once, through one of its members."""
    pair = RuntimePair()
    seen: list[tuple[str, int]] = []

    def subscribe(service: Service, label: str, group: str) -> None:
        @service.on_event("e.order.placed", group=group)
        async def on_placed(event: Event) -> None:
            seen.append((label, event.data))

    subscribe(pair.service, "billing-1", "billing")
    subscribe(pair.service, "shipping-1", "shipping")
    other_transport = pair.transport()
    other = Service(other_transport, name="other")
    subscribe(other, "billing-2", "billing")
    async with pair, other_transport, other:
        for n in range(10):
            await pair.client.publish("e.order.placed", n)
        await eventually(lambda: len(seen) == 20)
        await quiet(0.05)
    per_group = Counter((label.split("-")[0], n) for label, n in seen)
    assert {(group, n): 1 for group in ("billing", "shipping") for n in range(10)} == per_group
    members = Counter(label for label, _ in seen)
    assert (10, True, True) == (
        members["shipping-1"],
        members["billing-1"] > 0,
        members["billing-2"] > 0,
    )


async def test_wildcard_subscriptions() -> None:
    """``*`` matches exactly one token and ``>`` one or more trailing tokens."""
    pair = RuntimePair()
    one: list[str] = []
    rest: list[str] = []

    @pair.service.on_event("e.*.done")
    async def on_one(event: Event) -> None:
        one.append(event.type)

    @pair.service.on_event("e.>")
    async def on_rest(event: Event) -> None:
        rest.append(event.type)

    types = ["e.job.done", "e.job.x.done", "e.a", "e", "f.job.done", "e.job.done.later"]
    async with pair:
        for type_ in types:
            await pair.client.publish(type_)
        await eventually(lambda: (len(one), len(rest)) == (1, 4))
        await quiet(0.05)
    assert ["e.job.done"] == one
    assert ["e.a", "e.job.done", "e.job.done.later", "e.job.x.done"] == sorted(rest)


async def test_subscribers_without_group_each_get_every_event() -> None:
    """Two subscribers without a group both receive every event."""
    pair = RuntimePair()
    first: list[int] = []
    second: list[int] = []

    @pair.service.on_event("e.tick")
    async def on_first(event: Event) -> None:
        first.append(event.data)

    other_transport = pair.transport()
    other = Service(other_transport, name="other")

    @other.on_event("e.tick")
    async def on_second(event: Event) -> None:
        second.append(event.data)

    async with pair, other_transport, other:
        for n in range(5):
            await pair.client.publish("e.tick", n)
        await eventually(lambda: len(first) == len(second) == 5)
    assert list(range(5)) == sorted(first) == sorted(second)


async def test_handler_failures_are_counted_not_fatal() -> None:
    """A failing event handler is counted by code and the next events are still handled.

    Requirements: EVT-005.
    """
    pair = RuntimePair()
    handled: list[int] = []

    @pair.service.on_event("e.work")
    def on_work(event: Event) -> None:
        if event.data == 0:
            raise ValueError("bug")
        if event.data == 1:
            raise ExchangeError(ErrorCode.INVALID_PARAMS, "bad event")
        handled.append(event.data)

    async with pair:
        for n in range(4):
            await pair.client.publish("e.work", n)
        figures = pair.service.metrics.figures(Pattern.EVENT, "e.work")
        await eventually(lambda: figures.succeeded == 2 and len(figures.failed) == 2)
    assert [2, 3] == sorted(handled)
    assert {"INTERNAL": 1, "INVALID_PARAMS": 1} == figures.failed
    assert (4, 0.5) == (figures.sent, figures.efficiency)
    assert 1 == pair.service.stats.handler_errors


async def test_expired_events_are_not_handled() -> None:
    """An event whose deadline has passed is counted DEADLINE_EXCEEDED and not handled.

    Requirements: EVT-003.
    """
    pair = RuntimePair()
    handled: list[str] = []

    @pair.service.on_event("e.offer")
    async def on_offer(event: Event) -> None:
        handled.append(event.data)

    async with pair:
        await pair.client.publish(
            "e.offer", "stale", deadline=Deadline(now_ms() - 1000).to_timestamp()
        )
        await pair.client.publish(
            "e.offer", "fresh", deadline=Deadline(now_ms() + 60_000).to_timestamp()
        )
        figures = pair.service.metrics.figures(Pattern.EVENT, "e.offer")
        await eventually(lambda: figures.sent == 2 and figures.succeeded == 1)
        await quiet(0.05)
    assert ["fresh"] == handled
    assert {"DEADLINE_EXCEEDED": 1} == figures.failed


async def test_malformed_event_bytes_are_dropped_and_counted() -> None:
    """Undecodable event bytes, and non-events, are dropped and counted; valid ones still work.

    Requirements: EVT-002, ENV-037.
    """
    pair = RuntimePair()
    handled: list[Any] = []

    @pair.service.on_event("e.note")
    async def on_note(event: Event) -> None:
        handled.append(event.data)

    async with pair:
        await pair.raw_transport.publish_event("e.note", b"{broken")
        await pair.raw_transport.publish_event("e.note", encode(await pair.raw.request("e.note")))
        await pair.client.publish("e.note", "ok")
        with anyio.fail_after(WAIT):
            await eventually(lambda: pair.service.stats.dropped == 2 and handled == ["ok"])
    assert 0 == pair.service.stats.rejected


async def test_event_published_by_a_handler_records_its_causation() -> None:
    """An event a request handler publishes carries the request's id as causation_id.

    Requirements: EVT-004.
    """
    pair = RuntimePair()
    causes: list[str | None] = []
    handled: list[str] = []

    @pair.service.handler("t.order")
    async def order(request: Request) -> Any:
        handled.append(request.envelope.id)
        await pair.client.publish("e.order.placed", request.data)
        return "ok"

    @pair.service.on_event("e.order.placed")
    async def on_placed(event: Event) -> None:
        causes.append(event.envelope.causation_id)

    async with pair:
        with anyio.fail_after(WAIT):
            await pair.client.request("t.order", 1)
            await pair.client.publish("e.order.placed", 2)
            await eventually(lambda: len(causes) == 2)
    assert [handled[0], None] == sorted(causes, key=lambda cause: cause is None)
