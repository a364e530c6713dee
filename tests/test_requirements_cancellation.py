"""Cancellation requirements: best effort on the requester's side, every instance reached."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest

from llmproto_ref import (
    Client,
    ErrorCode,
    ExchangeError,
    Request,
    Service,
    TransportError,
    decode,
)
from runtime_pair import (
    CLIENT_SOURCE,
    WAIT,
    RecordingTransport,
    RuntimePair,
    eventually,
    run_in_background,
)

pytestmark = pytest.mark.anyio


class _CancelLosingTransport(RecordingTransport):
    """A client transport on which every cancel fails to go out."""

    async def publish_cancel(self, type: str, body: bytes) -> None:
        self.cancels.append(bytes(body))
        raise TransportError(ErrorCode.UNAVAILABLE, "the cancel could not be sent")


@pytest.mark.parametrize("lose_cancel", [False, True], ids=["cancel-sent", "cancel-lost"])
async def test_a_cancelled_stream_ends_at_once_without_waiting_for_the_responder(
    lose_cancel: bool,
) -> None:
    """Cancel ends the stream as CANCELLED at once, with nobody confirming or the cancel lost.

    Requirements: CAN-004.
    """
    pair = RuntimePair()
    if lose_cancel:
        pair.client_transport = _CancelLosingTransport(pair.broker_name)
        pair.client = Client(pair.client_transport, source=CLIENT_SOURCE, timeout=WAIT)
    async with pair:
        requests = await pair.raw_transport.serve("t.raw", group="raw")  # never answers cancels
        with anyio.fail_after(WAIT):
            async with pair.client.stream("t.raw") as stream:
                request = decode((await requests.__aiter__().__anext__()).body)
                await pair.raw.reply(
                    request.reply_to or "", pair.raw.chunk(request.id, "t.raw", 0, "first")
                )
                chunks = stream.__aiter__()
                assert "first" == (await chunks.__anext__()).data
                with anyio.fail_after(0.5):
                    assert await stream.cancel()
                assert 0 == pair.client.pending
                with pytest.raises(ExchangeError) as caught:
                    await chunks.__anext__()
    assert ErrorCode.CANCELLED == caught.value.code
    assert [request.id] == [decode(body).correlation_id for body in pair.client_transport.cancels]


async def test_a_cancelled_call_ends_even_when_its_cancel_is_lost() -> None:
    """Cancelling a waiting call ends it at once although the cancel cannot be sent.

    Requirements: CAN-004.
    """
    pair = RuntimePair()
    pair.client_transport = _CancelLosingTransport(pair.broker_name)
    pair.client = Client(pair.client_transport, source=CLIENT_SOURCE, timeout=WAIT)
    async with pair:
        await pair.raw_transport.serve("t.raw", group="raw")
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pair.client.request, "t.raw")
                await eventually(lambda: bool(pair.client_transport.requests))
                tg.cancel_scope.cancel()
        assert 0 == pair.client.pending
    assert 1 == len(pair.client_transport.cancels)


async def test_every_instance_receives_the_cancels_of_the_types_it_serves() -> None:
    """Two instances each run one request of a pattern-served type; cancels stop both.

    Requirements: CAN-005.
    """
    pair = RuntimePair()
    other_transport = pair.transport()
    other = Service(other_transport, name="svc")
    started: dict[str, str] = {}
    stopped: list[str] = []

    def register(service: Service, label: str) -> None:
        @service.handler("t.long.*")
        async def long(request: Request) -> Any:
            started[request.envelope.id] = label
            try:
                await anyio.sleep(10)
            finally:
                stopped.append(label)

    register(pair.service, "one")
    register(other, "two")
    async with pair, other_transport, other:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                calls = [
                    await run_in_background(tg, partial(pair.client.request, type_))
                    for type_ in ("t.long.a", "t.long.b")
                ]
                await eventually(lambda: len(started) == 2)
                for request_id in started:
                    assert await pair.client.cancel(request_id)
            await eventually(lambda: len(stopped) == 2)
            await eventually(lambda: pair.client.correlator.late_dropped == 2)
        cancelled = [
            (e.correlation_id, (e.error or {})["code"])
            for e in map(decode, pair.client_transport.received)
        ]
    assert [ErrorCode.CANCELLED] * 2 == [call["error"].code for call in calls]
    assert ["one", "two"] == sorted(started.values()) == sorted(stopped)
    assert sorted((rid, "CANCELLED") for rid in started) == sorted(cancelled)
