"""Checks of profile ``performance``: figures beside the raw transport's (spec/conformance.md).

Theory of operation
-------------------
Each check measures one pattern twice in the same run: through llmproto (a client of its own
on the suite's transport, unrecorded, against the testee), and through the bare transport
operations, with bodies of the same size and no envelope, codec or exchange on either side.
The raw side runs between two fresh connections of the transport under test (in testee mode
too: the suite's own adapter, two connections), where a server sends each request's bytes
back to its reply address. Every figure ``x`` comes with ``x_raw``, their ratio
``x_ratio = x / x_raw`` and the number of samples ``x_n``; a latency ratio above 1 and a
throughput ratio below 1 are what the protocol layer costs. The checks only measure: they
return figures, and the runner reports them as informational [CONF-021].

The counts are small so that the whole profile takes about a second on the memory transport
and stays well under 30 s on a remote broker: 500 sequential round trips, 64 in flight for 16
rounds (1 024), 10 streams of 64 chunks, 1 000 events, 200 jobs; each measurement starts after
a warm-up (10 round trips, one stream, 10 jobs).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from llmproto_conformance._catalogue import check
from llmproto_conformance._checks_core import deadline_in
from llmproto_conformance._context import (
    SUITE_SOURCE,
    TESTEE_QUEUE,
    TESTEE_TYPES,
    CheckContext,
)
from llmproto_conformance._model import CheckFailed, Level, Profile
from llmproto_conformance._transport_kit import Background, Tap
from llmproto_ref import (
    Client,
    Delivery,
    Envelope,
    Job,
    Kind,
    QueueOptions,
    Subscription,
    Transport,
    encode,
    new_id,
)

__all__ = ("JOBS", "RR_PARALLEL", "RR_ROUNDS", "RR_SEQUENTIAL", "STREAMS", "STREAM_CHUNKS")

#: Round trips one at a time.
RR_SEQUENTIAL = 500
#: Round trips in flight at once, and how many each of them makes.
RR_PARALLEL, RR_ROUNDS = 64, 16
#: Streams, and chunks per stream.
STREAMS, STREAM_CHUNKS = 10, 64
#: Events per measurement.
EVENTS = 1000
#: Jobs per measurement.
JOBS = 200
#: Round trips before each measurement starts.
WARMUP = 10
#: The payload every measured message carries.
SAMPLE = {"text": "The quick brown fox jumps over the lazy dog. " * 4, "n": [1, 2, 3]}
_KEY = 16  #: bytes of a raw body that identify it


def _percentile(samples: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank), ``None`` without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _ratio(value: float | None, raw: float | None) -> float | None:
    if value is None or raw is None or raw == 0:
        return None
    return round(value / raw, 3)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _latency(figures: dict[str, Any], name: str, ms: list[float], raw_ms: list[float]) -> None:
    """``name_p50_ms``, ``name_p99_ms``, their raw values and ratios, and the sample count."""
    figures[f"{name}_n"] = len(ms)
    for q in ("p50", "p99"):
        value = _percentile(ms, int(q[1:]) / 100)
        raw = _percentile(raw_ms, int(q[1:]) / 100)
        figures[f"{name}_{q}_ms"] = _round(value)
        figures[f"{name}_{q}_ms_raw"] = _round(raw)
        figures[f"{name}_{q}_ratio"] = _ratio(value, raw)


def _rate(figures: dict[str, Any], name: str, value: float, raw: float) -> None:
    figures[name] = round(value, 1)
    figures[f"{name}_raw"] = round(raw, 1)
    figures[f"{name}_ratio"] = _ratio(value, raw)


def _key(n: int) -> bytes:
    return b"%016d" % n


def _padded(key: bytes, size: int) -> bytes:
    return key + b"x" * max(0, size - len(key))


@contextlib.asynccontextmanager
async def _measuring_client(ctx: CheckContext) -> AsyncIterator[Client]:
    """A client with metrics of its own, on the suite's transport without the wire log."""
    async with Client(ctx.transport.inner, source=SUITE_SOURCE, timeout=10) as client:
        yield client


@contextlib.asynccontextmanager
async def _raw_pair(ctx: CheckContext) -> AsyncIterator[tuple[Transport, Transport]]:
    """Two connections for the raw figures: fresh ones, or the suite's own one twice."""
    if ctx.open_transport is None:
        yield ctx.transport.inner, ctx.transport.inner
        return
    async with ctx.open_transport() as server, ctx.open_transport() as requester:
        yield server, requester


@dataclass(slots=True)
class _Pending:
    """Replies awaited for one raw message: how many, and when each arrived."""

    expected: int
    done: anyio.Event
    arrivals: list[float] = field(default_factory=list)


class _RawPeer:
    """The raw side of a measurement: a server echoing bytes, a requester matching replies.

    The server sends a request's body back to its reply address (``<prefix>.echo``), or ``n``
    bodies for a stream request whose body ends in ``|n`` (``<prefix>.stream``), and notes when
    each request arrived, for the raw one-way time. Replies are matched by their first 16 bytes.
    """

    def __init__(
        self, server: Transport, requester: Transport, prefix: str, bg: Background
    ) -> None:
        self.server, self.requester, self.prefix, self.bg = server, requester, prefix, bg
        self.address = ""
        self.received_us: dict[bytes, int] = {}
        self._pending: dict[bytes, _Pending] = {}
        self._count = 0

    async def start(self, *, stream_size: int = 0) -> None:
        """Serve both types and open the requester's inbox."""
        echo = await self.server.serve(f"{self.prefix}.echo", group="raw")
        streams = await self.server.serve(f"{self.prefix}.stream", group="raw")
        inbox = await self.requester.open_inbox()
        self.address = inbox.address
        self.bg.start(self._echo, echo)
        self.bg.start(self._stream, streams, stream_size)
        self.bg.start(self._replies, inbox.subscription)

    async def _echo(self, requests: Subscription) -> None:
        async for delivery in requests:
            self.received_us[delivery.body[:_KEY]] = time.time_ns() // 1000
            await self.server.send_reply(delivery.reply_to or "", delivery.body)

    async def _stream(self, requests: Subscription, size: int) -> None:
        async for delivery in requests:
            key, count = delivery.body[:_KEY], int(delivery.body.rsplit(b"|", 1)[1])
            for _ in range(count):
                await self.server.send_reply(delivery.reply_to or "", _padded(key, size))

    async def _replies(self, subscription: Subscription) -> None:
        async for delivery in subscription:
            pending = self._pending.get(delivery.body[:_KEY])
            if pending is not None:
                pending.arrivals.append(time.perf_counter())
                if len(pending.arrivals) >= pending.expected:
                    pending.done.set()

    def next_key(self) -> bytes:
        """A key no earlier raw message used."""
        self._count += 1
        return _key(self._count)

    def expect(self, key: bytes, replies: int = 1) -> _Pending:
        """Start waiting for ``replies`` replies to the message with ``key``."""
        pending = self._pending[key] = _Pending(expected=replies, done=anyio.Event())
        return pending

    async def wait(self, key: bytes, pending: _Pending) -> list[float]:
        """The arrival times of the replies ``pending`` expects, once all arrived."""
        try:
            with anyio.fail_after(10):
                await pending.done.wait()
        except TimeoutError:
            raise CheckFailed(
                f"a raw message got {len(pending.arrivals)} of "
                f"{pending.expected} replies within 10 s"
            ) from None
        finally:
            self._pending.pop(key, None)
        return pending.arrivals

    async def call(self, body: bytes, *, kind: str = "echo", replies: int = 1) -> list[float]:
        """Send ``body`` (its first 16 bytes a fresh key) and wait for its replies."""
        key = body[:_KEY]
        pending = self.expect(key, replies)
        await self.requester.send_request(
            f"{self.prefix}.{kind}", body, reply_to=self.address, message_id=key.decode()
        )
        return await self.wait(key, pending)


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def _run(
    call: Callable[[], Awaitable[Any]], width: int, rounds: int
) -> tuple[list[float], float]:
    """After a warm-up, ``width`` callers make ``rounds`` calls each.

    :returns: each call's latency in milliseconds, and the calls per second.
    """
    for _ in range(WARMUP):
        await call()
    samples: list[float] = []

    async def caller() -> None:
        for _ in range(rounds):
            samples.append(await _timed(call))

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(width):
            tg.start_soon(caller)
    return samples, len(samples) / (time.perf_counter() - started)


def _request_size(address: str) -> int:
    """The encoded size of an echo request carrying :data:`SAMPLE`."""
    request = Envelope.new(
        kind=Kind.REQUEST,
        type=TESTEE_TYPES["echo"],
        source=SUITE_SOURCE,
        reply_to=address,
        deadline=deadline_in(10),
        data=SAMPLE,
        timing={"call": 1, "sent": 2},
    )
    return len(encode(request))


def _split(client: Client, pattern: str, type_: str) -> dict[str, Any]:
    """η, the p50 and p99 of Ts, Tt and Tr, and their sample count, from the client's metrics
    (MET-001, MET-002)."""
    summary = client.metrics.snapshot().get(pattern, {}).get(type_, {})
    out: dict[str, Any] = {"eta": summary.get("efficiency"), "split_n": summary.get("succeeded")}
    for part in ("ts", "tt", "tr"):
        for q in ("p50", "p99"):
            out[f"{part}_{q}_ms"] = _round(summary.get(f"{part}_ms", {}).get(q))
    return out


@check(
    id="perf-request-response",
    requirement="MET-003",
    level=Level.MAY,
    profile=Profile.PERFORMANCE,
    description="echo round trips, 1 and 64 in flight, beside raw transport round trips",
    timeout_s=60.0,
)
async def check_request_response(ctx: CheckContext) -> dict[str, Any]:
    """Latency p50/p99 and throughput of the testee's echo, L and its split, η; and raw.

    One client per phase (1 and 64 in flight), so that each phase's split and η are its own.
    """
    figures: dict[str, Any] = {"rr_payload_bytes": _request_size(f"_INBOX.{new_id()}")}
    echo = TESTEE_TYPES["echo"]
    in_flight = int(ctx.options.get("in_flight", RR_PARALLEL))  # llmproto bench --in-flight
    per_caller = max(1, RR_PARALLEL * RR_ROUNDS // in_flight)
    phases = {"rr_1": (1, RR_SEQUENTIAL), f"rr_{in_flight}": (in_flight, per_caller)}
    measured: dict[str, tuple[list[float], float]] = {}
    for name, (width, rounds) in phases.items():
        async with _measuring_client(ctx) as client:
            whole: list[float] = []  #: L = handled - call, from each reply's stamps

            async def call(client: Client = client, whole: list[float] = whole) -> None:
                timing = (await client.request(echo, SAMPLE)).timing or {}
                if "handled" in timing and "call" in timing:
                    whole.append((timing["handled"] - timing["call"]) / 1000)

            measured[name] = await _run(call, width, rounds)
            whole[:] = whole[WARMUP:]
            split = _split(client, "request", echo)
        figures[f"{name}_l_p50_ms"] = _round(_percentile(whole, 0.5))
        figures[f"{name}_l_p99_ms"] = _round(_percentile(whole, 0.99))
        figures[f"{name}_eta"] = split.pop("eta")
        figures[f"{name}_eta_raw"] = 1.0  # every raw call below got its reply, or it failed
        figures.update({f"{name}_{part}": value for part, value in split.items()})
    async with _raw_pair(ctx) as (server, requester), Background() as bg:
        raw = _RawPeer(server, requester, f"llmp.perf.{ctx.unique('raw')}", bg)
        await raw.start()
        for name, (width, rounds) in phases.items():
            sent_us: dict[bytes, int] = {}  #: wall-clock µs at each raw send

            async def raw_call(sent_us: dict[bytes, int] = sent_us) -> None:
                key = raw.next_key()
                sent_us[key] = time.time_ns() // 1000
                await raw.call(_padded(key, figures["rr_payload_bytes"]))

            samples, raw_rate = await _run(raw_call, width, rounds)
            one_way = [(raw.received_us[k] - at) / 1000 for k, at in sent_us.items()]
            _latency(figures, name, measured[name][0], samples)
            _rate(figures, f"{name}_rps", measured[name][1], raw_rate)
            figures[f"{name}_tt_p50_ms_raw"] = _round(_percentile(one_way, 0.5))
            figures[f"{name}_tt_p99_ms_raw"] = _round(_percentile(one_way, 0.99))
            figures[f"{name}_tt_p50_ratio"] = _ratio(
                figures[f"{name}_tt_p50_ms"], figures[f"{name}_tt_p50_ms_raw"]
            )
    return figures


@check(
    id="perf-stream",
    requirement="MET-003",
    level=Level.MAY,
    profile=Profile.PERFORMANCE,
    description="streamed chunk latency and rate, beside raw transport replies",
    timeout_s=60.0,
)
async def check_stream(ctx: CheckContext) -> dict[str, Any]:
    """Time to the first chunk, time per chunk and chunks per second of a 64-chunk stream."""
    stream_type = TESTEE_TYPES["stream"]
    firsts, per_chunk, elapsed = [], [], 0.0
    async with _measuring_client(ctx) as client:
        chunk_size = 0
        for run in range(STREAMS + 1):
            started = time.perf_counter()
            arrivals: list[float] = []
            async with client.stream(stream_type, {"n": STREAM_CHUNKS}) as stream:
                async for chunk in stream:
                    arrivals.append(time.perf_counter())
                    chunk_size = chunk_size or len(encode(chunk))
            if len(arrivals) != STREAM_CHUNKS:
                raise CheckFailed(f"a stream of {STREAM_CHUNKS} chunks brought {len(arrivals)}")
            if run == 0:
                continue  # warm-up
            firsts.append((arrivals[0] - started) * 1000)
            per_chunk.append((arrivals[-1] - arrivals[0]) * 1000 / (STREAM_CHUNKS - 1))
            elapsed += arrivals[-1] - started
        eta = _split(client, "stream", stream_type)["eta"]
    raw_firsts, raw_per_chunk, raw_elapsed = [], [], 0.0
    async with _raw_pair(ctx) as (server, requester), Background() as bg:
        raw = _RawPeer(server, requester, f"llmp.perf.{ctx.unique('raw')}", bg)
        await raw.start(stream_size=chunk_size)
        for run in range(STREAMS + 1):
            key = raw.next_key()
            started = time.perf_counter()
            got = await raw.call(key + b"|%d" % STREAM_CHUNKS, kind="stream", replies=STREAM_CHUNKS)
            if run == 0:
                continue
            raw_firsts.append((got[0] - started) * 1000)
            raw_per_chunk.append((got[-1] - got[0]) * 1000 / (STREAM_CHUNKS - 1))
            raw_elapsed += got[-1] - started
    figures: dict[str, Any] = {"stream_chunks": STREAM_CHUNKS, "stream_chunk_bytes": chunk_size}
    _latency(figures, "stream_first", firsts, raw_firsts)
    _latency(figures, "stream_chunk", per_chunk, raw_per_chunk)
    total = STREAMS * STREAM_CHUNKS
    _rate(figures, "stream_chunks_per_s", total / elapsed, total / raw_elapsed)
    figures["stream_eta"] = eta
    figures["stream_eta_raw"] = 1.0
    return figures


@check(
    id="perf-events",
    requirement="MET-003",
    level=Level.MAY,
    profile=Profile.PERFORMANCE,
    description="events the testee publishes per second, beside raw transport events",
    timeout_s=60.0,
)
async def check_events(ctx: CheckContext) -> dict[str, Any]:
    """The testee emits 500 events to the suite's subscription; raw: 500 bodies of that size."""
    figures: dict[str, Any] = {"events_n": EVENTS}
    type_ = f"llmp.perf.events.{ctx.unique('emit')}"
    inner = ctx.transport.inner
    subscription = await inner.subscribe_events(type_)
    size = 0
    try:
        async with _measuring_client(ctx) as client, Background() as bg:
            received: Tap[Delivery] = bg.tap(subscription)
            started = time.monotonic()
            await client.request(
                TESTEE_TYPES["emit"], {"type": type_, "count": EVENTS, "data": SAMPLE}
            )
            await received.wait(EVENTS, 10.0)
            took = (received.times[-1] if received.times else time.monotonic()) - started
            got = len(received.items)
            size = len(received.items[0].body) if received.items else 0
    finally:
        with anyio.CancelScope(shield=True):
            await subscription.aclose()
    async with _raw_pair(ctx) as (publisher, subscriber), Background() as bg:
        raw_type = f"llmp.perf.{ctx.unique('raw')}.events"
        raw_received: Tap[Delivery] = bg.tap(await subscriber.subscribe_events(raw_type))
        body = _padded(_key(0), size)
        raw_started = time.monotonic()
        for _ in range(EVENTS):
            await publisher.publish_event(raw_type, body)
        await raw_received.wait(EVENTS, 10.0)
        raw_took = (
            raw_received.times[-1] if raw_received.times else time.monotonic()
        ) - raw_started
        raw_got = len(raw_received.items)
    figures["events_bytes"] = size
    _rate(figures, "events_per_s", got / max(took, 1e-9), raw_got / max(raw_took, 1e-9))
    figures["events_eta"] = round(got / EVENTS, 4)
    figures["events_eta_raw"] = round(raw_got / EVENTS, 4)
    return figures


@check(
    id="perf-queue",
    requirement="MET-003",
    level=Level.MAY,
    profile=Profile.PERFORMANCE,
    description="jobs through the testee's queue per second, beside raw enqueue-consume-reply",
    needs=frozenset({"durable_queues"}),
    timeout_s=60.0,
)
async def check_queue(ctx: CheckContext) -> dict[str, Any]:
    """100 jobs submitted at once; raw: 100 bodies enqueued, consumed, answered, acked."""
    job_type = TESTEE_TYPES["job"]
    latencies: list[float] = []
    async with _measuring_client(ctx) as client:

        async def one() -> None:
            started = time.perf_counter()
            handle = await client.submit(TESTEE_QUEUE, job_type, {"fail_first": 0, "pad": SAMPLE})
            await handle.result()
            latencies.append((time.perf_counter() - started) * 1000)

        size = len(
            encode(
                Envelope.new(
                    kind=Kind.REQUEST,
                    type=job_type,
                    source=SUITE_SOURCE,
                    reply_to=f"_INBOX.{new_id()}",
                    deadline=deadline_in(10),
                    data={"fail_first": 0, "pad": SAMPLE},
                )
            )
        )
        for _ in range(WARMUP):
            await one()
        latencies.clear()
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(JOBS):
                tg.start_soon(one)
        rate = JOBS / (time.perf_counter() - started)
        eta = _split(client, "queue", job_type)["eta"]
    raw_latencies: list[float] = []
    async with _raw_pair(ctx) as (worker, requester), Background() as bg:
        raw = _RawPeer(worker, requester, f"llmp.perf.{ctx.unique('raw')}", bg)
        await raw.start()
        queue = f"{raw.prefix}.jobs"

        async def answer(job: Job) -> None:
            key, address = job.body[:_KEY], job.body[_KEY:].split(b"|", 2)[1].decode()
            await worker.send_reply(address, _padded(key, size // 2))
            await job.ack()

        bg.tap(await worker.consume(queue, QueueOptions(prefetch=8, lease_ms=30_000)), answer)

        async def raw_one() -> None:
            key = raw.next_key()
            body = _padded(key + b"|" + raw.address.encode() + b"|", size)
            started = time.perf_counter()
            pending = raw.expect(key)
            await requester.enqueue(queue, body, message_id=key.decode())
            await raw.wait(key, pending)
            raw_latencies.append((time.perf_counter() - started) * 1000)

        for _ in range(WARMUP):
            await raw_one()
        raw_latencies.clear()
        raw_started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(JOBS):
                tg.start_soon(raw_one)
        raw_rate = JOBS / (time.perf_counter() - raw_started)
    figures: dict[str, Any] = {"jobs_bytes": size}
    _latency(figures, "jobs", latencies, raw_latencies)
    _rate(figures, "jobs_per_s", rate, raw_rate)
    figures["jobs_eta"] = eta
    figures["jobs_eta_raw"] = round(len(raw_latencies) / JOBS, 4)
    return figures
