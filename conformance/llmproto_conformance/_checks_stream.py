"""Checks of profile ``stream``: chunk numbering, the terminal message, cancellation.

Theory of operation
-------------------
A stream is requested as raw bytes (:class:`~llmproto_conformance._checks_core.RawCall`), so
the check sees every chunk in the order the transport delivered it, duplicates and gaps
included, which the suite's client would reassemble away. Cancels are sent raw as well, to the
cancel address of the stream's type, after a few chunks have arrived; the testee's counters
then say whether its handler stopped (outcome ``cancelled``) and the inbox whether the chunks
did. The suite's own handling of late chunks (CAN-002) is not checked: it is the suite's client,
not the implementation under test.
"""

from __future__ import annotations

from typing import Any

import anyio

from llmproto_conformance._catalogue import check
from llmproto_conformance._checks_core import (
    GRACE_S,
    WAIT_S,
    RawCall,
    deadline_in,
    describe,
    expect_still_answering,
    request_message,
)
from llmproto_conformance._context import SUITE_SOURCE, TESTEE_TYPES, CheckContext, error_of
from llmproto_conformance._model import CheckFailed, Level, Profile
from llmproto_ref import Envelope, Kind, encode

__all__ = ()

STREAM, SLEEP = TESTEE_TYPES["stream"], TESTEE_TYPES["sleep"]


def _seqs(chunks: list[Envelope]) -> list[int | None]:
    return [c.seq for c in chunks]


def _expect_numbered(ctx: CheckContext, chunks: list[Envelope], count: int) -> None:
    """Chunks ``0 .. count-1``, in order, each with data ``{"index": seq}``."""
    ctx.expect(
        list(range(count)) == _seqs(chunks),
        f"the chunks arrived with seq {_seqs(chunks)}, expected 0..{count - 1}",
    )
    wrong = [c.seq for c in chunks if c.data != {"index": c.seq}]
    ctx.expect(not wrong, f"chunks {wrong} do not carry data {{'index': seq}}")


async def _cancel(ctx: CheckContext, type_: str, request_id: str) -> None:
    """Broadcast a cancel for ``request_id`` to the cancel address of ``type_``."""
    cancel = Envelope.new(kind=Kind.CANCEL, type=type_, source=SUITE_SOURCE,
                          correlation_id=request_id)  # fmt: skip
    await ctx.transport.publish_cancel(type_, encode(cancel))


async def _outcome(ctx: CheckContext, request_id: str, want: str) -> Any:
    """The testee's outcome for ``request_id``, waiting a moment for it to become ``want``."""

    async def probe() -> Any:
        outcomes = (await ctx.counters()).get("outcomes") or {}
        return outcomes.get(request_id) == want and want

    if await ctx.eventually(probe, timeout_s=2.0):
        return want
    return ((await ctx.counters()).get("outcomes") or {}).get(request_id)


@check(
    id="str-seq-order",
    requirement="STR-001",
    level=Level.MUST,
    profile=Profile.STREAM,
    description="a stream's chunks are numbered 0, 1, 2 ... in sending order, without gaps "
    "or repeats",
)
async def check_seq_order(ctx: CheckContext) -> None:
    """Eight chunks a few milliseconds apart."""
    members = request_message(ctx, "stream", {"n": 8, "delay_ms": 5})
    async with RawCall(ctx, STREAM, members) as call:
        await call.terminal()
    _expect_numbered(ctx, call.chunks, 8)
    wrong = [c.seq for c in call.chunks if c.correlation_id != members["id"] or c.type != STREAM]
    ctx.expect(not wrong, f"chunks {wrong} are not correlated to the request or lack its type")


@check(
    id="str-final-chunk",
    requirement="STR-002",
    level=Level.MUST,
    profile=Profile.STREAM,
    description="a stream ends with exactly one final chunk whose seq is the number of chunks",
)
async def check_final_chunk(ctx: CheckContext) -> None:
    """Five chunks, then the final chunk with seq 5, then nothing."""
    async with RawCall(ctx, STREAM, request_message(ctx, "stream", {"n": 5})) as call:
        final = await call.terminal()
        await call.silence(after="the final chunk")
    ctx.expect(
        Kind.CHUNK is final.kind and final.final is True,
        f"the stream ended with {describe(final)} instead of a final chunk",
    )
    ctx.expect(5 == final.seq, f"the final chunk after 5 chunks has seq {final.seq}")
    _expect_numbered(ctx, call.chunks, 5)


@check(
    id="str-empty-stream",
    requirement="STR-002",
    level=Level.MUST,
    profile=Profile.STREAM,
    description="a stream of no chunks ends with a final chunk of seq 0 (or a response)",
)
async def check_empty_stream(ctx: CheckContext) -> None:
    """``n`` = 0."""
    async with RawCall(ctx, STREAM, request_message(ctx, "stream", {"n": 0})) as call:
        final = await call.terminal()
        await call.silence(after="the end of an empty stream")
    ctx.expect(not call.chunks, f"an empty stream sent chunks {_seqs(call.chunks)}")
    if final.kind is Kind.RESPONSE:
        return  # a stream request answered with a plain response is complete (streams.md)
    ctx.expect(
        Kind.CHUNK is final.kind and final.final is True and 0 == final.seq,
        f"an empty stream ended with {describe(final)}",
    )


@check(
    id="str-final-members",
    requirement="STR-003",
    level=Level.SHOULD,
    profile=Profile.STREAM,
    description="the final chunk carries finish_reason and usage",
)
async def check_final_members(ctx: CheckContext) -> None:
    """The finish_reason asked for and output_tokens = n (the testee knows its usage)."""
    body = request_message(ctx, "stream", {"n": 3, "finish_reason": "length"})
    async with RawCall(ctx, STREAM, body) as call:
        final = await call.terminal()
    ctx.expect(Kind.CHUNK is final.kind, f"the stream ended with {describe(final)}")
    ctx.expect(
        "length" == final.finish_reason,
        f"the final chunk's finish_reason is {final.finish_reason!r}, asked for 'length'",
    )
    usage = dict(final.usage or {})
    ctx.expect(
        3 == usage.get("output_tokens"), f"the final chunk's usage is {usage!r}, expected 3 tokens"
    )


@check(
    id="str-error-seq",
    requirement="STR-002",
    level=Level.MUST,
    profile=Profile.STREAM,
    description="an error ending a started stream carries seq = the chunks sent before it",
)
async def check_error_seq(ctx: CheckContext) -> None:
    """A slow stream runs into its deadline after a few chunks."""
    body = request_message(ctx, "stream", {"n": 100, "delay_ms": 50}, deadline=deadline_in(0.35))
    async with RawCall(ctx, STREAM, body) as call:
        end = await call.terminal()
    error = error_of(end)
    ctx.expect(
        "DEADLINE_EXCEEDED" == error.get("code"), f"the stream ended with {error.get('code')}"
    )
    _expect_numbered(ctx, call.chunks, len(call.chunks))
    ctx.expect(
        len(call.chunks) == end.seq,
        f"the error after {len(call.chunks)} chunks carries seq {end.seq}",
    )


async def _cancelled_stream(
    ctx: CheckContext, after: int, quiet_s: float
) -> tuple[RawCall, Envelope, str]:
    """A 40-chunk stream, cancelled once ``after`` chunks arrived; the call and its end.

    Nothing may arrive for ``quiet_s`` after the end.
    """
    body = request_message(ctx, "stream", {"n": 40, "delay_ms": 25})
    async with RawCall(ctx, STREAM, body) as call:
        while len(call.chunks) < after:
            reply = await call.next(WAIT_S)
            if reply is None or reply.kind is not Kind.CHUNK or reply.final:
                raise CheckFailed(f"the stream to cancel stopped before {after} chunks")
        await _cancel(ctx, STREAM, body["id"])
        end = await call.terminal()
        await call.silence(quiet_s, after=f"{describe(end)} (the end of the cancelled stream)")
    return call, end, body["id"]


@check(
    id="can-stream-cancelled",
    requirement="CAN-003",
    level=Level.MUST,
    profile=Profile.STREAM,
    description="a cancel stops a running stream: error CANCELLED with seq, no more chunks, "
    "outcome cancelled",
)
async def check_stream_cancelled(ctx: CheckContext) -> None:
    """Cancel after three of forty chunks."""
    call, end, request_id = await _cancelled_stream(ctx, 3, GRACE_S)
    error = error_of(end)
    ctx.expect(
        "CANCELLED" == error.get("code"), f"the cancelled stream ended with {error.get('code')}"
    )
    sent = len(call.chunks)
    ctx.expect(sent < 40, f"all {sent} chunks were sent despite the cancel")
    ctx.expect(sent == end.seq, f"CANCELLED after {sent} chunks carries seq {end.seq}")
    outcome = await _outcome(ctx, request_id, "cancelled")
    ctx.expect("cancelled" == outcome, f"the testee's outcome for the stream is {outcome!r}")
    await expect_still_answering(ctx, "a cancelled stream")


@check(
    id="str-nothing-after-cancelled",
    requirement="TERM-005",
    level=Level.MUST,
    profile=Profile.STREAM,
    description="nothing of a cancelled stream is sent after its CANCELLED error",
)
async def check_nothing_after_cancelled(ctx: CheckContext) -> None:
    """The silence after the error is part of running the cancelled stream."""
    call, end, _ = await _cancelled_stream(ctx, 2, 0.5)  # twenty chunk periods
    ctx.expect(call.replies[-1] is end, "messages arrived after the stream's terminal message")


@check(
    id="can-request-cancelled",
    requirement="CAN-003",
    level=Level.MUST,
    profile=Profile.STREAM,
    description="a cancel stops a running request: error CANCELLED, outcome cancelled",
)
async def check_request_cancelled(ctx: CheckContext) -> None:
    """A 3 s sleep cancelled after 0.2 s."""
    body = request_message(ctx, "sleep", {"ms": 3000})
    async with RawCall(ctx, SLEEP, body) as call:
        await anyio.sleep(0.2)
        await _cancel(ctx, SLEEP, body["id"])
        end = await call.terminal(2.0)
        took = call.elapsed()
    error = error_of(end)
    ctx.expect(
        "CANCELLED" == error.get("code"), f"the cancelled sleep ended with {error.get('code')}"
    )
    ctx.expect(took < 1.5, f"CANCELLED came {took:.2f} s after the request")
    outcome = await _outcome(ctx, body["id"], "cancelled")
    ctx.expect("cancelled" == outcome, f"the testee's outcome for the sleep is {outcome!r}")


@check(
    id="idem-stream-replay",
    requirement="IDEM-006",
    level=Level.MUST,
    profile=Profile.STREAM,
    description="a repeat of a finished streamed request gets the whole stream again, "
    "without a second execution",
)
async def check_stream_replay(ctx: CheckContext) -> None:
    """Two streams of three chunks under one key."""
    key = ctx.unique("stream-replay")
    for _ in range(2):
        body = request_message(ctx, "stream", {"n": 3}, idempotency_key=key)
        async with RawCall(ctx, STREAM, body) as call:
            final = await call.terminal()
        ctx.expect(
            Kind.CHUNK is final.kind and 3 == final.seq,
            f"a stream under key {key} ended with {describe(final)}",
        )
        _expect_numbered(ctx, call.chunks, 3)
        wrong = [r.seq for r in call.replies if r.correlation_id != body["id"]]
        ctx.expect(not wrong, f"replayed messages {wrong} are correlated to another request")
    executions = ((await ctx.counters()).get("executions") or {}).get(key, 0)
    ctx.expect(1 == executions, f"the streamed request ran {executions} time(s)")
