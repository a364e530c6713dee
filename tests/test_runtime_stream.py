"""Streamed responses through the runtime: chunks, cancellation, reassembly, errors."""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest

from llmproto_ref import (
    Envelope,
    ErrorCode,
    ExchangeError,
    Final,
    Kind,
    LlmpError,
    Pattern,
    RemoteProtocolError,
    Request,
    Stream,
    Subscription,
    decode,
)
from runtime_pair import WAIT, RuntimePair, eventually

pytestmark = [
    pytest.mark.anyio,
]


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect each test's garbage inside the test, under the ResourceWarning filter above."""
    yield
    gc.collect()


async def _read_all(
    stream: Stream, into: list[Any], answer: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Open ``stream``, let ``answer`` reply to it, and collect its chunks' data."""
    async with stream:
        if answer is not None:
            await answer()
        async for chunk in stream:
            into.append(chunk.data)


async def _next_request(requests: Subscription) -> Envelope:
    with anyio.fail_after(WAIT):
        delivery = await requests.__aiter__().__anext__()
    return decode(delivery.body)


async def test_chunks_arrive_in_order_with_final_members() -> None:
    """Chunks come with seq 0, 1, 2 and the final chunk carries finish_reason and usage.

    Requirements: STR-002, STR-003.
    """
    pair = RuntimePair()

    @pair.service.handler("t.gen")
    async def gen(request: Request) -> AsyncIterator[Any]:
        for word in request.data:
            yield {"text": word}
        yield Final(finish_reason="length", usage={"input_tokens": 2, "output_tokens": 3})

    async with pair:
        with anyio.fail_after(WAIT):
            async with pair.client.stream("t.gen", ["a", "b", "c"]) as stream:
                chunks = [chunk async for chunk in stream]
        assert 0 == pair.client.pending
    assert [(0, {"text": "a"}), (1, {"text": "b"}), (2, {"text": "c"})] == [
        (c.seq, c.data) for c in chunks
    ]
    assert {Kind.CHUNK} == {c.kind for c in chunks}
    assert {stream.id} == {c.correlation_id for c in chunks}
    result = stream.result
    assert result is not None
    assert (Kind.CHUNK, True, 3, "length", {"input_tokens": 2, "output_tokens": 3}) == (
        result.kind,
        result.final,
        result.seq,
        result.finish_reason,
        result.usage,
    )
    assert 3 == stream.chunks
    figures = pair.client.metrics.snapshot()["stream"]["t.gen"]
    assert (1, 1) == (figures["sent"], figures["succeeded"])


async def test_generator_without_final_ends_with_stop() -> None:
    """A generator that just returns ends the stream with finish_reason "stop".

    Requirements: STR-003.
    """
    pair = RuntimePair()

    @pair.service.handler("t.plain")
    async def plain(request: Request) -> AsyncIterator[Any]:
        yield 1
        yield 2

    async with pair:
        with anyio.fail_after(WAIT):
            async with pair.client.stream("t.plain") as stream:
                data = [chunk.data async for chunk in stream]
    assert [1, 2] == data
    assert stream.result is not None
    assert (2, "stop", None) == (
        stream.result.seq,
        stream.result.finish_reason,
        stream.result.usage,
    )


@pytest.mark.parametrize("how", ["cancel", "leave"])
async def test_cancel_half_way_stops_the_handler_and_drops_late_chunks(how: str) -> None:
    """Cancelling mid-stream stops the handler; what arrives afterwards is dropped and counted.

    Requirements: CAN-001, CAN-002, CAN-003.
    """
    pair = RuntimePair()
    stopped = anyio.Event()

    @pair.service.handler("t.endless")
    async def endless(request: Request) -> AsyncIterator[Any]:
        yield 0
        yield 1
        try:
            await anyio.sleep(10)
        finally:
            stopped.set()
        yield 2

    async with pair:
        with anyio.fail_after(WAIT):
            async with pair.client.stream("t.endless") as stream:
                seen = []
                async for chunk in stream:
                    seen.append(chunk.data)
                    if len(seen) == 2:
                        break
                if how == "cancel":
                    assert await stream.cancel()
                    assert not await stream.cancel()  # already ended
            await stopped.wait()
            rid = stream.id
            # the service's CANCELLED reply is in flight; a stray chunk follows it
            await eventually(lambda: pair.client.correlator.late_dropped == 1)
            await pair.raw.reply(pair.inbox, pair.raw.chunk(rid, "t.endless", 2, "stray"))
            await eventually(lambda: pair.client.correlator.late_dropped == 2)
        assert [0, 1] == seen
        assert 0 == pair.client.pending
        terminal = pair.client_transport.replies_to(rid)[-2]
        assert (Kind.ERROR, "CANCELLED", 2) == (
            terminal.kind,
            (terminal.error or {})["code"],
            terminal.seq,
        )
        assert [(Kind.CANCEL, rid)] == [
            (c.kind, c.correlation_id) for c in map(decode, pair.client_transport.cancels)
        ]
        assert 0 == pair.service.stats.late_cancels
        assert 2 == pair.client.metrics.snapshot()["stream"]["t.endless"]["late_dropped"]


async def test_cancel_racing_the_last_chunk_has_exactly_one_outcome() -> None:
    """Cancels timed around the final chunk: one outcome per run, late cancels accounted."""
    pair = RuntimePair()
    pause_s = 0.004

    @pair.service.handler("t.race")
    async def race(request: Request) -> AsyncIterator[Any]:
        yield "a"
        yield "b"
        await anyio.sleep(pause_s)
        yield Final(finish_reason="stop")

    runs = 30
    outcomes: list[str] = []
    cancels_sent = 0
    async with pair:
        with anyio.fail_after(15):
            for run in range(runs):
                jitter = run * (3 * pause_s / runs)  # 0 .. 3x the pause before the final
                async with pair.client.stream("t.race") as stream:
                    chunks = stream.__aiter__()
                    assert "a" == (await chunks.__anext__()).data
                    assert "b" == (await chunks.__anext__()).data
                    await anyio.sleep(jitter)
                    cancelled = await stream.cancel()
                    cancels_sent += cancelled
                    try:
                        async for _ in chunks:
                            pass
                    except ExchangeError as exc:
                        outcomes.append(str(exc.code))
                    else:
                        outcomes.append("completed")
                    assert cancelled == (stream.result is None)
                assert 0 == pair.client.pending
            # every cancel sent was either obeyed (CANCELLED) or counted late by the service
            stats, metrics = pair.service.stats, pair.service.metrics

            def settled() -> bool:
                obeyed = metrics.figures(Pattern.STREAM, "t.race").failed.get("CANCELLED", 0)
                return obeyed + stats.late_cancels == cancels_sent

            await eventually(settled)
            # each cancelled run's terminal message (final chunk or CANCELLED) arrives late
            await eventually(lambda: pair.client.correlator.late_dropped >= cancels_sent)
    assert runs == len(outcomes)
    assert set(outcomes) <= {"completed", "CANCELLED"}
    assert cancels_sent == outcomes.count("CANCELLED")
    assert 0 == pair.client.correlator.unknown_dropped


async def test_handler_raising_mid_stream_sends_error_with_seq() -> None:
    """A streaming handler that fails after two chunks ends the stream with an error at seq 2.

    Requirements: STR-002, RR-007.
    """
    pair = RuntimePair()

    @pair.service.handler("t.broken")
    async def broken(request: Request) -> AsyncIterator[Any]:
        yield "one"
        yield "two"
        if request.data == "exchange":
            raise ExchangeError(
                ErrorCode.CONTENT_REFUSED, "refused", details=({"type": "acme.policy", "rule": 7},)
            )
        raise ValueError("bug")

    async with pair:
        with anyio.fail_after(WAIT):
            failures: list[ExchangeError] = []
            for mode in ("exchange", "bug"):
                seen: list[Any] = []
                with pytest.raises(ExchangeError) as caught:
                    await _read_all(pair.client.stream("t.broken", mode), seen)
                assert ["one", "two"] == seen
                failures.append(caught.value)
    refused, bug = failures
    assert (ErrorCode.CONTENT_REFUSED, "refused", ({"type": "acme.policy", "rule": 7},)) == (
        refused.code,
        refused.message,
        refused.details,
    )
    assert (ErrorCode.INTERNAL, "the handler failed with ValueError") == (bug.code, bug.message)
    assert [2, 2] == [f.envelope.seq for f in failures]
    assert 1 == pair.service.stats.handler_errors


async def test_duplicates_dropped_and_reordered_chunks_delivered_in_order() -> None:
    """Injected duplicate and out-of-order chunks reach the caller once each, in seq order."""
    async with RuntimePair() as pair:
        requests = await pair.raw_transport.serve("t.raws", group="raw")
        with anyio.fail_after(WAIT):
            async with pair.client.stream("t.raws") as stream:
                pending = pair.client.correlator.get(stream.id)
                assert pending is not None
                assert pending.reassembler is not None
                request = await _next_request(requests)
                assert stream.id == request.id
                address = request.reply_to or ""
                for seq in (0, 0, 2, 1, 1, 3):
                    await pair.raw.reply(address, pair.raw.chunk(request.id, "t.raws", seq, seq))
                await pair.raw.reply(
                    address,
                    pair.raw.chunk(request.id, "t.raws", 4, final=True, finish_reason="stop"),
                )
                got = [chunk.seq async for chunk in stream]
    assert [0, 1, 2, 3] == got
    assert stream.result is not None
    assert 4 == stream.result.seq
    assert (2, 1) == (pending.reassembler.duplicates, pending.reassembler.reordered)
    assert 0 == pair.client.pending


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        pytest.param((0, 2), ErrorCode.STREAM_INTERRUPTED, id="gap"),
        pytest.param((0, 1), ErrorCode.DEADLINE_EXCEEDED, id="no-gap"),
    ],
)
async def test_stream_ending_by_deadline(sent: tuple[int, ...], code: ErrorCode) -> None:
    """At the deadline a stream with a gap is STREAM_INTERRUPTED, one without DEADLINE_EXCEEDED.

    Requirements: DL-005.
    """
    async with RuntimePair() as pair:
        requests = await pair.raw_transport.serve("t.gappy", group="raw")
        got: list[Any] = []

        async def answer() -> None:
            request = await _next_request(requests)
            for seq in sent:
                await pair.raw.reply(
                    request.reply_to or "", pair.raw.chunk(request.id, "t.gappy", seq, seq)
                )

        with anyio.fail_after(WAIT), pytest.raises(LlmpError) as caught:
            await _read_all(pair.client.stream("t.gappy", timeout=0.2), got, answer)
        assert code == caught.value.code
        assert list(sent if code is ErrorCode.DEADLINE_EXCEEDED else sent[:1]) == got
        assert 0 == pair.client.pending
        if code is ErrorCode.STREAM_INTERRUPTED:
            assert isinstance(caught.value, RemoteProtocolError)


async def test_gap_beyond_the_window_interrupts_the_stream_not_the_client() -> None:
    """A chunk far beyond the reassembly window ends that stream, not the client."""
    pair = RuntimePair()

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    async with pair:
        requests = await pair.raw_transport.serve("t.far", group="raw")

        async def answer() -> None:
            request = await _next_request(requests)
            await pair.raw.reply(request.reply_to or "", pair.raw.chunk(request.id, "t.far", 300))

        with anyio.fail_after(WAIT):
            with pytest.raises(LlmpError) as caught:
                await _read_all(pair.client.stream("t.far"), [], answer)
            assert ErrorCode.STREAM_INTERRUPTED == caught.value.code
            assert "alive" == (await pair.client.request("t.echo", "alive")).data
        assert 0 == pair.client.pending


async def test_sync_generator_handler_streams_from_a_thread() -> None:
    """A plain generator handler (run in a worker thread) streams its items in order."""
    pair = RuntimePair()

    @pair.service.handler("t.threaded", thread=True)
    def threaded(request: Request) -> Iterator[Any]:
        for n in range(request.data):
            time.sleep(0.005)  # blocking work between items
            yield n * 10
        yield Final(finish_reason="length")

    async with pair:
        with anyio.fail_after(WAIT):
            async with pair.client.stream("t.threaded", 4) as stream:
                got = [(chunk.seq, chunk.data) async for chunk in stream]
    assert [(0, 0), (1, 10), (2, 20), (3, 30)] == got
    assert stream.result is not None
    assert (4, "length") == (stream.result.seq, stream.result.finish_reason)


async def test_plain_handler_completes_a_stream_with_zero_chunks() -> None:
    """A stream request answered by a plain handler ends at once with its response."""
    pair = RuntimePair()

    @pair.service.handler("t.whole")
    async def whole(request: Request) -> Any:
        return {"whole": request.data}

    async with pair:
        with anyio.fail_after(WAIT):
            async with pair.client.stream("t.whole", 5) as stream:
                chunks = [chunk async for chunk in stream]
    assert [] == chunks
    assert stream.result is not None
    assert (Kind.RESPONSE, {"whole": 5}) == (stream.result.kind, stream.result.data)
    assert 0 == pair.client.pending


async def test_completed_stream_closes_its_memory_streams() -> None:
    """After a stream completed and its block was left, its reply buffer is closed."""
    pair = RuntimePair()

    @pair.service.handler("t.two")
    async def two(request: Request) -> AsyncIterator[Any]:
        yield 1
        yield 2

    async with pair:
        with anyio.fail_after(WAIT):
            async with pair.client.stream("t.two") as stream:
                assert [1, 2] == [chunk.data async for chunk in stream]
    assert stream.receive is not None
    stats = stream.receive.statistics()
    assert (0, 0) == (stats.open_send_streams, stats.open_receive_streams)


async def test_streaming_handler_is_closed_while_its_request_runs() -> None:
    """A generator that yielded Final is closed by the service before the exchange ends."""
    pair = RuntimePair()
    closed_while_running: list[bool] = []

    @pair.service.handler("t.tidy")
    async def tidy(request: Request) -> AsyncIterator[Any]:
        try:
            yield "x"
            yield Final(finish_reason="stop")
        finally:
            closed_while_running.append(request.envelope.id in pair.service.running)

    async with pair:
        with anyio.fail_after(WAIT):
            async with pair.client.stream("t.tidy") as stream:
                assert ["x"] == [chunk.data async for chunk in stream]
            await eventually(lambda: bool(closed_while_running))
    assert [True] == closed_while_running


async def test_breaking_out_of_a_stream_leaves_no_generator_behind(
    anyio_backend: str,
) -> None:
    """Leaving ``async for`` early and then the block leaves no unclosed async generator."""
    pair = RuntimePair()

    @pair.service.handler("t.many")
    async def many(request: Request) -> AsyncIterator[Any]:
        for n in range(5):
            yield n

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with pair:
            with anyio.fail_after(WAIT):
                async with pair.client.stream("t.many") as stream:
                    async for _ in stream:
                        break
        gc.collect()
    generators = [
        str(w.message)
        for w in caught
        if "Async generator" in str(w.message) and "Stream._chunks" in str(w.message)
    ]
    assert [] == generators
