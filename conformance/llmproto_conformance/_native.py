"""``llmproto bench --native``: llmproto beside the broker's own client, across processes.

Theory of operation
-------------------
The performance profile compares llmproto with the bare transport contract; this compares it
with the broker client itself, as a user would: on one side a separate process serves (the
reference testee for llmproto, a plain client peer for the raw figures:
:mod:`llmproto_conformance._native_nats`, :mod:`llmproto_conformance._native_amqp`), on the
other this process drives. Both use the same
server in the same run, ~200-byte JSON payloads, envelopes fully validated on receipt, no
signing. The measurements alternate, raw then llmproto, for several rounds; each figure is the
median over rounds and each ratio the median of the per-round ratios llmproto / raw, since the
machines are shared and noisy.

Measurements: request-response round trips per second at 1 and at N in flight; events per
second from the serving side's publish to this side's receipt of the last one (llmproto
decodes and validates each in a service's event handler); work-queue jobs per second, each
enqueued with the broker's confirmation, run by the serving side, and its outcome received.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
import orjson

from llmproto_conformance._context import TESTEE_QUEUE, TESTEE_SECURE_TYPES, TESTEE_TYPES
from llmproto_conformance._peer_process import PeerProcess
from llmproto_ref import Client, Event, Service, Signer, Transport, new_id, open_transport

__all__ = ("NativeRun", "native_supported", "run_native")

#: The payload of every measured message (~200 bytes of JSON).
SAMPLE = {"text": "The quick brown fox jumps over the lazy dog. " * 4, "n": [1, 2, 3]}
SEQUENTIAL = 300  #: round trips one at a time, per round
PER_CALLER = 20  #: round trips of each of the N callers, per round
EVENTS = 10_000  #: events per round (the most the testee emits for one request)
JOBS = 300  #: jobs per round


class NativePeer(Protocol):
    """The raw side: a broker client talking to a peer process of its own."""

    async def __aenter__(self) -> NativePeer: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def round_trips(self, body: bytes, width: int, per_caller: int) -> float: ...

    async def events(self, body: bytes, count: int) -> float: ...

    async def jobs(self, body: bytes, count: int) -> float: ...


def _native_peer(url: str, prefix: str) -> NativePeer:
    scheme = urlsplit(url).scheme
    if scheme in ("nats", "tls"):
        from llmproto_conformance._native_nats import NatsNative

        return NatsNative(url, prefix)
    if scheme in ("amqp", "amqps"):
        from llmproto_conformance._native_amqp import AmqpNative

        return AmqpNative(url, prefix)
    raise ValueError(f"no native baseline for {scheme}:// (known: nats://, amqp://)")


def native_supported(url: str) -> bool:
    """Whether ``url``'s broker has a native baseline."""
    return urlsplit(url).scheme in ("nats", "tls", "amqp", "amqps")


@dataclass
class NativeRun:
    """Figures per measurement: the raw and llmproto value of each round."""

    url: str
    in_flight: int
    raw: dict[str, list[float]] = field(default_factory=dict)
    llmproto: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, raw: float, llmproto: float) -> None:
        self.raw.setdefault(name, []).append(raw)
        self.llmproto.setdefault(name, []).append(llmproto)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per measurement: median raw and llmproto rates, and the median per-round ratio."""
        out = {}
        for name, raw in self.raw.items():
            mine = self.llmproto[name]
            ratios = [m / r for m, r in zip(mine, raw, strict=True) if r]
            out[name] = {
                "raw_per_s": round(statistics.median(raw), 1),
                "llmproto_per_s": round(statistics.median(mine), 1),
                "ratio": round(statistics.median(ratios), 3),
                "rounds": len(raw),
            }
        return out


@contextlib.asynccontextmanager
async def _reference_testee(url: str) -> AsyncIterator[None]:
    """The reference testee as a separate process, stopped afterwards."""
    process = PeerProcess(
        "llmproto_ref._cli", "conformance", "testee", "--transport", url,
        ready="serving", what="the reference testee",
    )  # fmt: skip
    await process.start()
    try:
        yield
    finally:
        await process.stop()


async def _llmp_round_trips(
    client: Client, width: int, per_caller: int, echo: str = TESTEE_TYPES["echo"]
) -> float:

    async def caller() -> None:
        for _ in range(per_caller):
            await client.request(echo, SAMPLE)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(width):
            tg.start_soon(caller)
    return width * per_caller / (time.perf_counter() - started)


def _signing_client(transport: Transport) -> Client:
    """A client that signs with the published gateway key, carries a test token, and verifies
    the secure testee's signed replies (spec/conformance.md, the secure service)."""
    from llmproto_conformance._security_kit import (
        GATEWAY_KID,
        GATEWAY_SOURCE,
        mint_token,
        published_key,
        reply_policy,
    )

    tokens = [mint_token()]
    minted = [time.monotonic()]

    def bearer() -> str:
        if time.monotonic() - minted[0] > 60:  # the test token lives 300 s
            tokens[0], minted[0] = mint_token(), time.monotonic()
        return tokens[0]

    return Client(
        transport,
        source=GATEWAY_SOURCE,
        timeout=30,
        signer=Signer(published_key(GATEWAY_KID)),
        bearer_token=bearer,
        security=reply_policy(),
    )


async def _llmp_events(client: Client, url: str, count: int) -> float:
    type_ = f"llmp.bench.{new_id().replace('-', '')[:12]}.evt"
    got = 0
    done = anyio.Event()
    async with open_transport(url) as transport:
        receiver = Service(transport, name=f"bench-{new_id()[:8]}")

        @receiver.on_event(type_)
        async def on_event(event: Event) -> None:
            nonlocal got
            got += 1
            if got >= count:
                done.set()

        async with receiver:
            started = time.perf_counter()
            await client.request(
                TESTEE_TYPES["emit"], {"type": type_, "count": count, "data": SAMPLE}
            )
            with anyio.fail_after(60):
                await done.wait()
            return count / (time.perf_counter() - started)


async def _llmp_jobs(client: Client, count: int) -> float:
    started = time.perf_counter()
    handles = [
        await client.submit(TESTEE_QUEUE, TESTEE_TYPES["job"], {"fail_first": 0})
        for _ in range(count)
    ]
    for handle in handles:
        await handle.result()
    return count / (time.perf_counter() - started)


async def run_native(
    url: str,
    *,
    rounds: int = 5,
    in_flight: int = 64,
    external_testee: bool = False,
    progress: Callable[[str], Awaitable[None] | None] | None = None,
    scale: float = 1.0,
    signed: bool = False,
) -> NativeRun:
    """Alternate raw and llmproto measurements on ``url`` for ``rounds`` rounds.

    :param external_testee: a testee already serves ``url``; otherwise the reference testee
        is started as a separate process.
    :param scale: multiplies the message counts (a quick smoke run uses less than 1).
    :param signed: also measure round trips signed with Ed25519 and carrying a bearer token,
        against the testee's secure service (rows ``rr_1_signed`` and ``rr_N_signed``).
    """
    sequential, per_caller = max(1, int(SEQUENTIAL * scale)), max(1, int(PER_CALLER * scale))
    events, jobs = max(1, int(EVENTS * scale)), max(1, int(JOBS * scale))
    run = NativeRun(url=url, in_flight=in_flight)
    body = orjson.dumps(SAMPLE)
    prefix = f"llmpnative{new_id().replace('-', '')[:12]}"
    testee = contextlib.nullcontext() if external_testee else _reference_testee(url)
    async with (
        testee,
        _native_peer(url, prefix) as raw,
        open_transport(url) as transport,
        Client(transport, source="llmp://bench", timeout=30) as client,
        _signing_client(transport) if signed else contextlib.nullcontext() as secure,
    ):
        for _ in range(20):  # warm both paths up
            await raw.round_trips(body, 1, 1)
            await client.request(TESTEE_TYPES["echo"], SAMPLE)
        for number in range(1, rounds + 1):
            run.add(
                "rr_1",
                await raw.round_trips(body, 1, sequential),
                await _llmp_round_trips(client, 1, sequential),
            )
            run.add(
                f"rr_{in_flight}",
                await raw.round_trips(body, in_flight, per_caller),
                await _llmp_round_trips(client, in_flight, per_caller),
            )
            run.add(
                "events",
                await raw.events(body, events),
                await _llmp_events(client, url, events),
            )
            run.add("jobs", await raw.jobs(body, jobs), await _llmp_jobs(client, jobs))
            if isinstance(secure, Client):
                run.add(
                    "rr_1_signed",
                    await raw.round_trips(body, 1, sequential),
                    await _llmp_round_trips(secure, 1, sequential, TESTEE_SECURE_TYPES["echo"]),
                )
                run.add(
                    f"rr_{in_flight}_signed",
                    await raw.round_trips(body, in_flight, per_caller),
                    await _llmp_round_trips(
                        secure, in_flight, per_caller, TESTEE_SECURE_TYPES["echo"]
                    ),
                )
            if progress is not None:
                result = progress(f"round {number} of {rounds} done")
                if result is not None:
                    await result
    return run


def format_run(run: NativeRun) -> str:
    """The terminal table of a run."""
    lines = [
        f"llmproto beside the native client on {run.url} (separate processes, "
        f"{len(next(iter(run.raw.values()), []))} interleaved rounds, medians)",
        f"{'measurement':12s} {'raw /s':>10s} {'llmproto /s':>12s} {'ratio':>7s}",
    ]
    for name, row in run.summary().items():
        lines.append(
            f"{name:12s} {row['raw_per_s']:>10.0f} {row['llmproto_per_s']:>12.0f} "
            f"{row['ratio']:>7.3f}"
        )
    lines.append("ratio: median over rounds of llmproto / raw in the same round")
    return "\n".join(lines)


def summary_document(run: NativeRun) -> dict[str, Any]:
    """The JSON document of a run."""
    return {
        "transport": run.url,
        "in_flight": run.in_flight,
        "summary": run.summary(),
        "rounds": {"raw": run.raw, "llmproto": run.llmproto},
    }
