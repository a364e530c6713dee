"""Event requirements of publishers: the topic, and the cause of an event sent while handling."""

from __future__ import annotations

import anyio
import pytest

from llmproto_ref import Event, decode
from runtime_pair import WAIT, RuntimePair, eventually, quiet

pytestmark = pytest.mark.anyio


async def test_an_event_is_published_to_the_topic_equal_to_its_type() -> None:
    """Each published event arrives on exactly its own type's topic, and on no other.

    Requirements: EVT-001.
    """
    async with RuntimePair() as pair:
        topics = ("e.model.loaded", "e.model.unloaded", "e.capacity")
        subscriptions = {t: await pair.raw_transport.subscribe_events(t) for t in topics}
        with anyio.fail_after(WAIT):
            sent = [await pair.client.publish(topic, n) for n, topic in enumerate(topics[:2])]
            got = {
                t: decode((await subscriptions[t].__aiter__().__anext__()).body) for t in topics[:2]
            }
        with anyio.move_on_after(0.1):
            await subscriptions["e.capacity"].__aiter__().__anext__()
            pytest.fail("an event reached a topic other than its type")
    assert [(e.id, e.type) for e in sent] == [(got[t].id, t) for t in topics[:2]]


async def test_an_event_published_while_handling_an_event_names_it_as_cause() -> None:
    """An event an event handler publishes carries the handled event's id as causation_id.

    Requirements: EVT-004.
    """
    pair = RuntimePair()
    causes: list[str | None] = []

    @pair.service.on_event("e.model.loaded")
    async def on_loaded(event: Event) -> None:
        await pair.client.publish("e.capacity.changed", event.data)

    @pair.service.on_event("e.capacity.changed")
    async def on_capacity(event: Event) -> None:
        causes.append(event.envelope.causation_id)

    async with pair:
        with anyio.fail_after(WAIT):
            loaded = await pair.client.publish("e.model.loaded", {"replicas": 3})
            await eventually(lambda: len(causes) == 1)
        await quiet(0.05)
    assert [loaded.id] == causes
