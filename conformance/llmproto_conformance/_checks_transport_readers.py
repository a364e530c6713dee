"""Transport-contract check: several tasks reading one subscription or consumer (TRN-027).

Theory of operation
-------------------
Three tasks await the next item of one source at once; then items are sent one at a time, and
each must reach one of the tasks still waiting, within the usual wait. A binding that keeps
one waiter (the latest) leaves the others asleep, so the second item reaches nobody. Then two
more tasks wait and the source is closed: both must end. Events, requests and jobs are each
tried; a source whose iterator is an async generator is exempt (TRN-027 says why).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from llmproto_conformance._catalogue import check
from llmproto_conformance._context import CheckContext
from llmproto_conformance._model import CheckFailed, Level, Profile, Unsupported
from llmproto_conformance._transport_kit import WAIT_S, fresh_transports, name_prefix
from llmproto_ref import Job, LlmpError, QueueOptions

__all__: tuple[str, ...] = ()

READERS = 3  #: tasks awaiting one source at once


@check(
    id="trn-concurrent-readers",
    requirement="TRN-027",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="several tasks may await one subscription or consumer: each item reaches one "
    "of them, and closing ends them all",
    adapter_only=True,
)
async def check_concurrent_readers(ctx: CheckContext) -> None:
    """Events, requests and jobs, each read by three tasks at once."""
    p = name_prefix(ctx)
    queue = ctx.unique("q")
    tried = 0
    async with fresh_transports(ctx, 2) as (sender, receiver):
        sources: list[tuple[str, Any, Callable[[int], Awaitable[None]]]] = [
            (
                "an event subscription",
                await receiver.subscribe_events(f"{p}.>"),
                lambda n: sender.publish_event(f"{p}.e", b"%d" % n),
            ),
            (
                "a request subscription",
                await receiver.serve(f"{p}.op", group="g"),
                lambda n: sender.send_request(
                    f"{p}.op", b"%d" % n, reply_to="", message_id=ctx.unique("m")
                ),
            ),
            (
                "a consumer",
                await receiver.consume(queue, QueueOptions(prefetch=READERS, lease_ms=30_000)),
                lambda n: sender.enqueue(queue, b"%d" % n, message_id=ctx.unique("j")),
            ),
        ]
        try:
            for where, source, send in sources:
                items = source.__aiter__()
                if inspect.isasyncgen(items):
                    await source.aclose()
                    continue
                tried += 1
                await _each_reaches_a_waiting_task(where, items, send)
                await _closing_ends_every_waiting_task(where, source, items)
        finally:
            for _, source, _ in sources:  # the run deletes the queue afterwards
                await source.aclose()
    if not tried:
        raise Unsupported("every source's iterator is an async generator (exempt from TRN-027)")


async def _each_reaches_a_waiting_task(
    where: str, items: AsyncIterator[Any], send: Callable[[int], Awaitable[None]]
) -> None:
    got: list[Any] = []

    async def reader() -> None:
        item = await items.__anext__()
        got.append(item)
        if isinstance(item, Job):
            await item.ack()

    unreached: int | None = None
    async with anyio.create_task_group() as tg:
        for _ in range(READERS):
            tg.start_soon(reader)
        await anyio.sleep(0.05)  # all of them wait now
        for n in range(READERS):
            await send(n)
            with anyio.move_on_after(WAIT_S):
                while len(got) <= n:
                    await anyio.sleep(0.005)
            if len(got) <= n:
                unreached = n
                tg.cancel_scope.cancel()
                break
    if unreached is not None:
        raise CheckFailed(
            f"{where}: item {unreached + 1} of {READERS} reached none of the "
            f"{READERS - unreached} tasks waiting for it within {WAIT_S:g} s "
            "(only one waiting task is woken?)"
        )
    bodies = sorted(item.body for item in got)
    if bodies != sorted(b"%d" % n for n in range(READERS)):
        raise CheckFailed(f"{where}: the waiting tasks got {bodies}, not each item once")


async def _closing_ends_every_waiting_task(
    where: str, source: Any, items: AsyncIterator[Any]
) -> None:
    ended = 0

    async def reader() -> None:
        nonlocal ended
        try:
            await items.__anext__()
        except (StopAsyncIteration, LlmpError):
            ended += 1

    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(reader)
        await anyio.sleep(0.05)
        await source.aclose()
        with anyio.move_on_after(WAIT_S):
            while ended < 2:
                await anyio.sleep(0.005)
        tg.cancel_scope.cancel()
    if ended < 2:
        raise CheckFailed(
            f"{where}: {2 - ended} of 2 tasks waiting on it did not end when it closed"
        )
