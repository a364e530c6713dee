"""Readers: the tasks that read a subscription run what they read (src/llmproto_ref/_readers.py)."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

import llmproto_ref._readers as readers_module
from llmproto_ref import Event, Kind, Request, encode
from llmproto_ref._readers import WAITING
from runtime_pair import WAIT, RuntimePair, eventually

pytestmark = pytest.mark.anyio


def _reader_tasks(pair: RuntimePair) -> int:
    return sum(r.tasks for r in pair.service._readers)  # noqa: SLF001


async def test_a_waiting_handler_does_not_hold_up_the_next_request() -> None:
    """While one handler waits, the next request is taken and answered by another reader."""
    pair = RuntimePair()
    release = anyio.Event()

    @pair.service.handler("t.hold")
    async def hold(request: Request) -> Any:
        await release.wait()
        return "held"

    @pair.service.handler("t.quick")
    async def quick(request: Request) -> Any:
        return "quick"

    @pair.service.handler("t.also")
    async def also(request: Request) -> Any:
        return request.data

    async with pair:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                held: list[Any] = []

                async def first() -> None:
                    held.append((await pair.client.request("t.hold")).data)

                tg.start_soon(first)
                await eventually(lambda: len(pair.service.running) == 1)
                assert "quick" == (await pair.client.request("t.quick")).data
                # the same subscription as the held one, read by another task meanwhile
                assert [1, 2] == [(await pair.client.request("t.also", n)).data for n in (1, 2)]
                release.set()
        assert ["held"] == held


async def test_requests_one_at_a_time_keep_the_readers_few() -> None:
    """Sequential requests reuse the waiting readers instead of starting tasks."""
    pair = RuntimePair()

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    async with pair:
        with anyio.fail_after(WAIT):
            for n in range(200):
                assert n == (await pair.client.request("t.echo", n)).data
        assert _reader_tasks(pair) <= WAITING + 1


async def test_concurrency_is_bounded_by_max_concurrency_across_handlers() -> None:
    """Handlers of different subscriptions share the service's limit."""
    pair = RuntimePair(max_concurrency=2)
    running = 0
    most = 0
    release = anyio.Event()

    async def blocking(request: Request) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return request.data

    pair.service.handler("t.a")(blocking)
    pair.service.handler("t.b")(blocking)

    async with pair:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for n in range(6):
                    tg.start_soon(pair.client.request, "t.a" if n % 2 else "t.b", n)
                await eventually(lambda: running == 2)
                await anyio.sleep(0.1)  # nothing more may start
                assert 2 == running
                release.set()
    assert 2 == most


async def test_a_burst_of_events_is_handled_once_each() -> None:
    """Many events published at once are each handled exactly once."""
    pair = RuntimePair()
    seen: list[int] = []

    @pair.service.on_event("t.evt")
    async def on(event: Event) -> None:
        seen.append(event.data)
        if event.data % 7 == 0:
            await anyio.sleep(0)  # some handlers wait, so other readers take over

    async with pair:
        for n in range(500):
            await pair.client.publish("t.evt", n)
        await eventually(lambda: len(seen) == 500)
    assert list(range(500)) == sorted(seen)


async def test_what_waits_for_a_slot_as_the_service_stops_is_counted_not_run() -> None:
    """A request taken while every slot is held does not start once the service is stopping;
    it is counted (the handler that held the slot finishes within the grace period)."""
    pair = RuntimePair(serve=False, max_concurrency=1, grace=2.0)
    started = anyio.Event()
    release = anyio.Event()
    ran: list[str] = []

    @pair.service.handler("t.hold")
    async def hold(request: Request) -> Any:
        ran.append(request.data)
        started.set()
        await release.wait()
        return "held"

    stop = anyio.Event()
    stopped = anyio.Event()

    async def serve() -> None:
        async with pair.service:
            await stop.wait()
        stopped.set()

    async with pair:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                await eventually(lambda: bool(pair.service._readers))  # noqa: SLF001
                tg.start_soon(pair.client.request, "t.hold", "first")
                await started.wait()
                second = await pair.raw.request("t.hold", "second")
                await pair.raw.send_request("t.hold", encode(second))  # taken; waits for a slot
                await anyio.sleep(0.05)
                stop.set()  # the service stops while the first holds the only slot
                await anyio.sleep(0.1)
                assert not stopped.is_set()  # it gives the first its grace period
                release.set()
    assert ["first"] == ran
    assert 1 == pair.service.stats.unstarted


async def test_while_every_slot_is_held_deliveries_stay_with_the_binding() -> None:
    """Back-pressure: with every slot held, readers take at most a delivery each and start no
    more tasks; the rest waits in the subscription until a slot frees."""
    pair = RuntimePair(max_concurrency=2)
    release = anyio.Event()
    ran = 0

    @pair.service.on_event("t.evt")
    async def on(event: Event) -> None:
        nonlocal ran
        ran += 1
        await release.wait()

    async with pair:
        for n in range(200):
            await pair.client.publish("t.evt", n)
        await eventually(lambda: ran == 2)
        await anyio.sleep(0.1)
        readers = pair.service._readers[0]  # noqa: SLF001
        assert 2 == ran
        assert readers.tasks <= 2 + WAITING + 1
        assert len(pair.service._pool._waiting) <= WAITING + 1  # noqa: SLF001
        release.set()
        await eventually(lambda: ran == 200)
        assert readers.tasks <= 2 + WAITING + 1


@pytest.mark.parametrize("checkpoints", [0, 1, 2, 3, 5])
async def test_stopping_never_misses_a_reader_between_deliveries(
    checkpoints: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader pausing between deliveries (every YIELD_EVERY of them) as the service stops
    does not go back to the subscription: the service stops without waiting for a message."""
    monkeypatch.setattr(readers_module, "YIELD_EVERY", 1)
    for events in (1, 2, 3, 7):
        pair = RuntimePair(serve=False, grace=0.2)

        @pair.service.on_event("t.evt")
        async def on(event: Event) -> None:
            return None

        async with pair:
            with anyio.fail_after(WAIT):
                async with pair.service:
                    for n in range(events):
                        await pair.client.publish("t.evt", n)
                    for _ in range(checkpoints):
                        await anyio.lowlevel.checkpoint()


async def test_a_request_taken_as_the_service_stops_is_answered() -> None:
    """A request whose delivery is in hand when the readers stop runs to its end in a fresh
    scope, and is answered with its response (not cancelled as if its deadline passed)."""
    pair = RuntimePair(serve=False, grace=2.0)
    calls: list[str] = []

    @pair.service.handler("t.op")
    async def op(request: Request) -> Any:
        calls.append("started")
        await anyio.sleep(0)
        calls.append("finished")
        return "done"

    async with pair:
        async with pair.service:
            await anyio.sleep(0.05)
            request = await pair.raw.request("t.op")
            await pair.raw.send_request("t.op", encode(request))
        reply = await pair.raw.next_reply()
    assert (Kind.RESPONSE, "done") == (reply.kind, reply.data)
    assert ["started", "finished"] == calls
