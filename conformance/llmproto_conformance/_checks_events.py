"""Checks of profile ``events``: the testee's subscriptions and publisher (spec/events.md).

Theory of operation
-------------------
The testee subscribes ``llmp.testee.events.*`` with two members of group ``a`` and
``llmp.testee.events.>`` with one member of group ``b``, and counts each receipt per group and
event id (spec/conformance.md). The suite publishes events, good and bad, and reads the
counters: events have no reply, so a check polls until the events that must arrive are
counted, then waits a quiet period and reads once more, so that a second receipt, or one that
must not happen at all, has had time to show. A bad event is followed by a good one, which
must still be counted: the subscriber survived. Each event type carries a run-unique token,
so the counters of different runs never mix. For ``emit`` the suite subscribes itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import orjson

from llmproto_conformance._catalogue import check
from llmproto_conformance._checks_core import deadline_in
from llmproto_conformance._context import CheckContext
from llmproto_conformance._model import CheckFailed, Level, Profile
from llmproto_conformance._transport_kit import QUIET_S, Background, Tap
from llmproto_ref import Delivery, Envelope, EnvelopeError, Kind, decode, encode, new_id

__all__ = ()

#: The topic root of the testee's subscriptions.
ROOT = "llmp.testee.events"
#: How long a check waits for an event to be counted.
WAIT_S = 3.0
#: The testee subscribes with wildcards, and group ``a`` has two members.
SUBSCRIBERS = frozenset({"wildcards", "groups"})


async def _counts(
    ctx: CheckContext, must: Mapping[str, set[str]], timeout_s: float = WAIT_S
) -> dict[str, dict[str, int]]:
    """The testee's event counters once every id in ``must[group]`` is counted for its group
    (or ``timeout_s`` passed), read again after a quiet period."""

    async def counted() -> bool:
        events = (await ctx.counters()).get("events", {})
        return all(ids <= set(events.get(group, {})) for group, ids in must.items())

    await ctx.eventually(counted, timeout_s=timeout_s)
    await anyio.sleep(QUIET_S)
    events = (await ctx.counters()).get("events", {})
    return {group: dict(events.get(group, {})) for group in ("a", "b")}


def _expect_counts(
    ctx: CheckContext, counts: Mapping[str, Mapping[str, int]], event: Envelope, a: int, b: int
) -> None:
    """``event`` was counted ``a`` times in group a and ``b`` times in group b."""
    for group, want in (("a", a), ("b", b)):
        got = counts.get(group, {}).get(event.id, 0)
        if got != want:
            raise CheckFailed(
                f"group {group} counted event {event.id} of type {event.type} {_times(got)}, "
                f"expected {_times(want)}"
            )


def _times(n: int) -> str:
    return {0: "never", 1: "once"}.get(n, f"{n} times")


@check(
    id="evt-group-once",
    requirement="TRN-010",
    level=Level.MUST,
    profile=Profile.EVENTS,
    description="an event reaches one member of each subscriber group",
    needs=SUBSCRIBERS,
)
async def check_group_once(ctx: CheckContext) -> None:
    """Six events: each counted once by group a (two members) and once by group b."""
    type_ = f"{ROOT}.{ctx.unique('evt')}"
    sent = [await ctx.client.publish(type_, {"n": n}) for n in range(6)]
    ids = {e.id for e in sent}
    counts = await _counts(ctx, {"a": ids, "b": ids})
    for event in sent:
        _expect_counts(ctx, counts, event, a=1, b=1)


@check(
    id="evt-wildcard-one-token",
    requirement="TRN-004",
    level=Level.MUST,
    profile=Profile.EVENTS,
    description="'*' matches exactly one token: a two-token suffix reaches '>' only",
    needs=SUBSCRIBERS,
)
async def check_wildcard_one_token(ctx: CheckContext) -> None:
    """``llmp.testee.events.x.y`` reaches group b, not group a; ``.x`` reaches both."""
    token = ctx.unique("evt")
    deep = await ctx.client.publish(f"{ROOT}.{token}.y")
    flat = await ctx.client.publish(f"{ROOT}.{token}")
    counts = await _counts(ctx, {"a": {flat.id}, "b": {deep.id, flat.id}})
    _expect_counts(ctx, counts, flat, a=1, b=1)
    _expect_counts(ctx, counts, deep, a=0, b=1)


@check(
    id="evt-wildcard-rest",
    requirement="TRN-004",
    level=Level.MUST,
    profile=Profile.EVENTS,
    description="'>' matches one or more trailing tokens, never zero",
    needs=SUBSCRIBERS,
)
async def check_wildcard_rest(ctx: CheckContext) -> None:
    """Three trailing tokens reach group b; the bare root reaches neither group."""
    token = ctx.unique("evt")
    # The bare root cannot carry the run's token in its type; the event id keeps it apart.
    bare = await ctx.client.publish(ROOT, {"token": token})
    deep = await ctx.client.publish(f"{ROOT}.{token}.y.z")
    counts = await _counts(ctx, {"b": {deep.id}})
    _expect_counts(ctx, counts, deep, a=0, b=1)
    _expect_counts(ctx, counts, bare, a=0, b=0)


@check(
    id="evt-expired-not-handled",
    requirement="EVT-003",
    level=Level.MUST,
    profile=Profile.EVENTS,
    description="an event whose deadline has passed is not handled",
    needs=SUBSCRIBERS,
)
async def check_expired_not_handled(ctx: CheckContext) -> None:
    """An event due a second ago is counted by neither group; a live one after it is."""
    type_ = f"{ROOT}.{ctx.unique('evt')}"
    stale = await ctx.client.publish(type_, {"stale": True}, deadline=deadline_in(-1.0))
    live = await ctx.client.publish(type_, {"stale": False}, deadline=deadline_in(30.0))
    counts = await _counts(ctx, {"a": {live.id}, "b": {live.id}})
    _expect_counts(ctx, counts, live, a=1, b=1)
    _expect_counts(ctx, counts, stale, a=0, b=0)


@check(
    id="evt-non-event-dropped",
    requirement="EVT-002",
    level=Level.MUST,
    profile=Profile.EVENTS,
    description="a request or a response on an event topic is dropped, not handled",
    needs=SUBSCRIBERS,
)
async def check_non_event_dropped(ctx: CheckContext) -> None:
    """A valid request and a valid response published as events are counted by nobody."""
    type_ = f"{ROOT}.{ctx.unique('evt')}"
    source = ctx.client.source
    wrong = [
        Envelope.new(kind=Kind.REQUEST, type=type_, source=source, data={"kind": "request"}),
        Envelope.new(kind=Kind.RESPONSE, type=type_, source=source, correlation_id=new_id()),
    ]
    for envelope in wrong:
        await ctx.transport.publish_event(type_, encode(envelope))
    good = await ctx.client.publish(type_)
    counts = await _counts(ctx, {"a": {good.id}, "b": {good.id}})
    _expect_counts(ctx, counts, good, a=1, b=1)
    for envelope in wrong:
        _expect_counts(ctx, counts, envelope, a=0, b=0)


@check(
    id="evt-malformed-dropped",
    requirement="ENV-037",
    level=Level.MUST,
    profile=Profile.EVENTS,
    description="event bytes that do not decode are dropped and the subscriber keeps going",
    needs=SUBSCRIBERS,
)
async def check_malformed_dropped(ctx: CheckContext) -> None:
    """Garbage, and an event with an unknown member, then a good event: only it is counted."""
    type_ = f"{ROOT}.{ctx.unique('evt')}"
    unknown = Envelope.new(kind=Kind.EVENT, type=type_, source=ctx.client.source)
    bad_member = orjson.dumps({**unknown.to_dict(), "bogus": True})
    for body in (b"\x00\xff not an envelope {", b"[]", bad_member):
        await ctx.transport.publish_event(type_, body)
    good = await ctx.client.publish(type_)
    counts = await _counts(ctx, {"a": {good.id}, "b": {good.id}})
    _expect_counts(ctx, counts, good, a=1, b=1)
    _expect_counts(ctx, counts, unknown, a=0, b=0)


async def _emitted(
    ctx: CheckContext, count: int, data: Any
) -> tuple[Envelope, list[Envelope], str]:
    """Ask the testee to emit ``count`` events to a topic the suite subscribes to.

    :returns: the emit reply, the events received (decoded), and the topic.
    """
    type_ = f"llmp.suite.events.{ctx.unique('emit')}"
    subscription = await ctx.transport.subscribe_events(type_)
    try:
        async with Background() as bg:
            received: Tap[Delivery] = bg.tap(subscription)
            reply = await ctx.call("emit", {"type": type_, "count": count, "data": data})
            ctx.expect(reply.data == {"emitted": count}, f"emit answered {reply.data!r}")
            await received.wait(count, WAIT_S)
            await anyio.sleep(QUIET_S)
    finally:
        with anyio.CancelScope(shield=True):
            await subscription.aclose()
    events: list[Envelope] = []
    for delivery in received.items:
        try:
            events.append(decode(delivery.body))
        except EnvelopeError as exc:
            raise CheckFailed(f"an emitted event does not decode: {exc}") from exc
    return reply, events, type_


@check(
    id="evt-emit-topic",
    requirement="EVT-001",
    level=Level.MUST,
    profile=Profile.EVENTS,
    description="the testee publishes each event to the topic equal to its type",
)
async def check_emit_topic(ctx: CheckContext) -> None:
    """Three emitted events arrive on their type's topic, as events of that type and data."""
    data = {"emitted": "by the testee", "n": [1, 2, 3]}
    _, events, type_ = await _emitted(ctx, 3, data)
    ctx.expect(len(events) == 3, f"{len(events)} of 3 emitted events arrived on topic {type_}")
    for event in events:
        ctx.expect(event.kind is Kind.EVENT, f"a {event.kind} arrived on an event topic")
        ctx.expect(event.type == type_, f"an event of type {event.type} arrived on {type_}")
        ctx.expect(event.data == data, f"an emitted event carries {event.data!r}")
    ctx.expect(len({e.id for e in events}) == 3, "emitted events share an id")


@check(
    id="evt-emit-causation",
    requirement="EVT-004",
    level=Level.SHOULD,
    profile=Profile.EVENTS,
    description="events published while handling a request name it as their causation_id",
)
async def check_emit_causation(ctx: CheckContext) -> None:
    """Each event emitted for a request carries that request's id as ``causation_id``."""
    reply, events, _ = await _emitted(ctx, 2, None)
    ctx.expect(len(events) == 2, f"{len(events)} of 2 emitted events arrived")
    for event in events:
        ctx.expect(
            event.causation_id == reply.correlation_id,
            f"an emitted event's causation_id is {event.causation_id!r}, "
            f"not the emit request's id {reply.correlation_id!r}",
        )
