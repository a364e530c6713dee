"""What a streaming responder puts on the wire: numbering, the terminal message, replays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from llmproto_ref import (
    Deadline,
    Envelope,
    ErrorCode,
    ExchangeError,
    Final,
    Kind,
    Request,
    Stream,
    decode,
    encode,
)
from llmproto_ref._clock import now_ms
from runtime_pair import WAIT, RuntimePair, eventually, quiet

pytestmark = pytest.mark.anyio


def _wire(envelopes: list[Envelope]) -> list[tuple[Kind, int | None, bool | None]]:
    """Kind, ``seq`` and ``final`` (``None`` when absent) of each message, in arrival order."""
    return [(e.kind, e.seq, e.members.get("final")) for e in envelopes]


async def _read_to_the_end(stream: Stream) -> None:
    """Open ``stream`` and take every chunk until it ends (or raises)."""
    async with stream:
        async for _ in stream:
            pass


async def test_chunks_are_numbered_from_zero_and_end_with_one_terminal_message() -> None:
    """On the wire: seq 0, 1, 2, then one final chunk (or error) whose seq counts the chunks.

    Requirements: STR-001, STR-002, STR-003.
    """
    pair = RuntimePair()

    @pair.service.handler("t.gen")
    async def gen(request: Request) -> AsyncIterator[Any]:
        for n in range(request.data):
            yield {"n": n}
        if request.data == 2:
            raise ExchangeError(ErrorCode.UPSTREAM_ERROR, "provider closed the stream")
        yield Final(finish_reason="length", usage={"input_tokens": 4, "output_tokens": 3})

    async with pair:
        with anyio.fail_after(WAIT):
            async with pair.client.stream("t.gen", 3) as whole:
                assert 3 == len([chunk async for chunk in whole])
            broken = pair.client.stream("t.gen", 2)
            with pytest.raises(ExchangeError):
                await _read_to_the_end(broken)
            expired = pair.client.stream("t.gen", 3, deadline=Deadline(now_ms() - 1000))
            with pytest.raises(ExchangeError):
                await _read_to_the_end(expired)
            await eventually(lambda: len(pair.client_transport.replies_to(expired.id)) == 1)
        await quiet(0.05)
    replies = pair.client_transport.replies_to
    assert [
        (Kind.CHUNK, 0, None),
        (Kind.CHUNK, 1, None),
        (Kind.CHUNK, 2, None),
        (Kind.CHUNK, 3, True),
    ] == _wire(replies(whole.id))
    final = replies(whole.id)[-1]
    assert ("length", {"input_tokens": 4, "output_tokens": 3}) == (final.finish_reason, final.usage)
    assert [(Kind.CHUNK, 0, None), (Kind.CHUNK, 1, None), (Kind.ERROR, 2, None)] == _wire(
        replies(broken.id)
    )
    assert [(Kind.ERROR, None, None)] == _wire(replies(expired.id))  # no handler ever ran


async def test_nothing_follows_the_terminal_message() -> None:
    """After its CANCELLED error or its final chunk the service sends nothing more.

    Requirements: TERM-005.
    """
    pair = RuntimePair()

    @pair.service.handler("t.tokens")
    async def tokens(request: Request) -> AsyncIterator[Any]:
        for n in range(request.data):
            yield n
            await anyio.sleep(0.002)

    async with pair:
        raw = pair.raw
        replies: dict[str, list[Envelope]] = {}
        inbox = (await raw.inbox()).subscription.__aiter__()

        async def collect(watch: float, enough: int = 0) -> None:
            """Take replies until none came for ``watch`` s (or ``enough`` for ``endless``)."""
            while not enough or len(replies.get(endless.id, [])) < enough:
                with anyio.move_on_after(watch):
                    envelope = decode((await inbox.__anext__()).body)
                    replies.setdefault(envelope.correlation_id or "", []).append(envelope)
                    continue
                return

        async def cancel(request: Envelope) -> None:
            await pair.raw_transport.publish_cancel("t.tokens", encode(Envelope.new(
                kind=Kind.CANCEL, type="t.tokens", source=raw.source, correlation_id=request.id,
            )))  # fmt: skip

        with anyio.fail_after(WAIT):
            endless = await raw.request("t.tokens", 10_000)
            await raw.send_request("t.tokens", encode(endless))
            await collect(WAIT, enough=5)
            await cancel(endless)  # mid-stream
            await collect(0.3)
            finished = await raw.request("t.tokens", 3)
            await raw.send_request("t.tokens", encode(finished))
            await collect(0.1)
            await cancel(finished)  # too late: the stream had ended
            await collect(0.3)
        assert 1 == pair.service.stats.late_cancels
    stopped, completed = replies[endless.id], replies[finished.id]
    assert (Kind.ERROR, "CANCELLED") == (stopped[-1].kind, (stopped[-1].error or {})["code"])
    assert [Kind.CHUNK] * (len(stopped) - 1) == [e.kind for e in stopped[:-1]]
    assert [
        (Kind.CHUNK, 0, None),
        (Kind.CHUNK, 1, None),
        (Kind.CHUNK, 2, None),
        (Kind.CHUNK, 3, True),
    ] == _wire(completed)


async def test_a_replayed_stream_is_sent_again_whole() -> None:
    """A repeated streamed request with a finished key gets every chunk again, then the final.

    Requirements: IDEM-006.
    """
    pair = RuntimePair()
    runs = 0

    @pair.service.handler("t.poem")
    async def poem(request: Request) -> AsyncIterator[Any]:
        nonlocal runs
        runs += 1
        for word in ("The", "river", "runs"):
            yield {"delta": word}
        yield Final(finish_reason="stop", usage={"output_tokens": 3})

    async with pair:
        with anyio.fail_after(WAIT):
            streams = []
            for _ in range(2):
                async with pair.client.stream(
                    "t.poem", {"n": 1}, idempotency_key="poem-1"
                ) as stream:
                    assert 3 == len([chunk async for chunk in stream])
                streams.append(stream)
    first, second = (pair.client_transport.replies_to(s.id) for s in streams)
    assert 1 == runs
    assert _wire(first) == _wire(second)
    assert [(e.data, e.finish_reason, e.usage) for e in first] == [
        (e.data, e.finish_reason, e.usage) for e in second
    ]
    assert {streams[1].id} == {e.correlation_id for e in second}
    assert set() == {e.id for e in first} & {e.id for e in second}  # new envelopes
