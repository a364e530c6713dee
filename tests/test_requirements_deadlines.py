"""Deadline requirements: an absolute instant, inherited by the work a handler starts."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from llmproto_ref import Deadline, Envelope, Event, Kind, Request, encode
from llmproto_ref._clock import now_ms
from runtime_pair import WAIT, RuntimePair, eventually

pytestmark = pytest.mark.anyio


async def test_time_spent_waiting_counts_against_the_absolute_deadline() -> None:
    """A request that waits at the service past its deadline is refused, never started.

    Requirements: DL-001, DL-004.
    """
    pair = RuntimePair(max_concurrency=1)
    ran: list[str] = []
    busy = anyio.Event()

    @pair.service.handler("t.busy")
    async def occupy(request: Request) -> Any:
        busy.set()
        await anyio.sleep(0.4)  # holds the only slot past the other request's deadline
        return "done"

    @pair.service.handler("t.work")
    async def work(request: Request) -> Any:
        ran.append(request.envelope.id)
        return "ran"

    async with pair:
        with anyio.fail_after(WAIT):
            await pair.raw.send_request("t.busy", encode(await pair.raw.request("t.busy")))
            await busy.wait()
            request = await pair.raw.request(
                "t.work", deadline=Deadline(now_ms() + 200).to_timestamp()
            )
            await pair.raw.send_request("t.work", encode(request))
            replies = [await pair.raw.next_reply(), await pair.raw.next_reply()]
    assert {(Kind.ERROR, request.id, "DEADLINE_EXCEEDED")} <= {
        (e.kind, e.correlation_id, (e.error or {}).get("code")) for e in replies
    }
    assert [] == ran


async def test_a_request_sent_while_handling_an_event_inherits_its_deadline_and_cause() -> None:
    """A call from an event handler is due no later than the event and names it as its cause.

    Requirements: DL-003.
    """
    pair = RuntimePair()
    seen: dict[str, Envelope] = {}

    @pair.service.on_event("e.tick")
    async def on_tick(event: Event) -> None:
        await pair.client.request("t.back", "from-event", timeout=60)

    @pair.service.handler("t.back")
    async def back(request: Request) -> Any:
        seen[request.data] = request.envelope
        return None

    async with pair:
        due = Deadline(now_ms() + 2_000).to_timestamp()
        with anyio.fail_after(WAIT):
            event = await pair.client.publish("e.tick", deadline=due)
            await eventually(lambda: "from-event" in seen)
    assert (event.id, due) == (seen["from-event"].causation_id, seen["from-event"].deadline)


async def test_a_request_sent_while_handling_a_job_inherits_its_deadline_and_cause() -> None:
    """A call from a work-queue handler is due no later than the job and names it as its cause.

    Requirements: DL-003.
    """
    pair = RuntimePair()
    seen: dict[str, Envelope] = {}

    @pair.service.worker("jobs")
    async def work(request: Request) -> Any:
        await pair.client.request("t.back", "from-job", timeout=60)

    @pair.service.handler("t.back")
    async def back(request: Request) -> Any:
        seen[request.data] = request.envelope
        return None

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit("jobs", "t.job", timeout=2.0)
            await handle.result()
    assert (handle.id, handle.request.deadline) == (
        seen["from-job"].causation_id,
        seen["from-job"].deadline,
    )
