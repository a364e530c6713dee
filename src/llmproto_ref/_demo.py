"""``llmproto demo``: the scenarios the protocol was designed for, end to end.

(a) a weather service answering ``weather.get``, called synchronously and through the work
queue; (b) a chat service streaming ``llm.chat`` tokens, one stream cancelled half way; (c) a
device-state event fanned out to two subscriber groups; (d) a request that misses its deadline
and one that fails with a registry error. It ends with the latency split L = Ts + Tt + Tr and
the efficiency η per pattern. Service and client use separate transports that share only bytes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

from llmproto_ref._client import Client
from llmproto_ref._errors import ExchangeError
from llmproto_ref._handling import Event, Final, Request
from llmproto_ref._metrics import Metrics
from llmproto_ref._registry import ErrorCode
from llmproto_ref._service import Service
from llmproto_ref._sync import SyncClient
from llmproto_ref._transport_url import open_transport

__all__ = ("run_demo",)

_FORECASTS = {"Paris": 18, "Oslo": 4, "Lagos": 31}
_TOKENS = [
    "The", "sky", "over", "Paris", "is", "clear", ",", "a", "light", "breeze",
    "from", "the", "west", ",", "18", "degrees", ".",
]  # fmt: skip


def _weather_service(service: Service) -> None:
    @service.handler("weather.get")
    async def weather(request: Request) -> dict[str, Any]:
        city = (request.data or {}).get("city")
        if city not in _FORECASTS:
            raise ExchangeError(ErrorCode.NOT_FOUND, f"no forecast for {city!r}")
        return {"city": city, "temp_c": _FORECASTS[city], "sky": "clear"}

    @service.worker("weather.jobs", concurrency=2)
    async def weather_job(request: Request) -> dict[str, Any]:
        await anyio.sleep(0.01)  # a report takes a moment to build
        return await weather(request)

    @service.handler("weather.slow")
    async def slow(request: Request) -> None:
        await anyio.sleep(5)  # longer than any caller waits: the deadline stops it

    @service.handler("llm.complete")
    async def complete(request: Request) -> None:
        prompt = str((request.data or {}).get("prompt", ""))
        raise ExchangeError(
            ErrorCode.CONTEXT_LENGTH_EXCEEDED,
            f"prompt of {len(prompt)} characters exceeds the 32-character context window",
        )


def _chat_service(service: Service) -> None:
    @service.handler("llm.chat")
    async def chat(request: Request) -> AsyncIterator[Any]:
        for token in _TOKENS:
            await anyio.sleep(0.005)
            yield {"delta": token}
        yield Final(finish_reason="stop", usage={"input_tokens": 9, "output_tokens": len(_TOKENS)})


def _device_subscribers(service: Service, seen: Counter[str]) -> None:
    for group in ("dashboards", "audit"):
        for member in (1, 2):

            def record(event: Event, g: str = group, m: int = member) -> None:
                seen[f"{g}#{m}"] += 1

            service.on_event("device.*.state", group=group)(record)


def _metrics_table(say: Callable[[str], None], *sources: Metrics) -> None:
    say("  pattern  sent  ok   eta    L p50 ms  Ts ms   Tt ms   Tr ms")
    rows = {p: t for metrics in sources for p, t in metrics.snapshot().items()}
    for pattern, types in sorted(rows.items()):
        total = types["*"]
        eta = total["efficiency"]

        def ms(part: str, t: dict[str, Any] = total) -> str:
            value = t[part]["p50"]
            return "    -   " if value is None else f"{value:8.3f}"

        say(
            f"  {pattern:7s} {total['sent']:5d} {total['succeeded']:4d}  "
            f"{'  -  ' if eta is None else f'{eta:5.2f}'} {ms('latency_ms')}  {ms('ts_ms')}"
            f"{ms('tt_ms')}{ms('tr_ms')}"
        )


async def run_demo(url: str = "memory://demo", say: Callable[[str], None] = print) -> int:
    """Run every scenario on the transport at ``url``; 0 when each behaved as designed."""
    problems: list[str] = []
    seen: Counter[str] = Counter()
    started = time.perf_counter()
    say(f"llmproto demo on {url}")
    async with open_transport(url) as service_side, open_transport(url) as client_side:
        service = Service(service_side, name="demo", grace=1.0)
        _weather_service(service)
        _chat_service(service)
        _device_subscribers(service, seen)
        async with service, Client(client_side, source="llmp://demo-client", timeout=5) as client:
            sync_metrics = await _scenario_weather(client_side, client, say, problems)
            await _scenario_chat(client, say, problems)
            await _scenario_events(client, seen, say, problems)
            await _scenario_failures(client, say, problems)
            say("metrics (client side):")
            _metrics_table(say, client.metrics, sync_metrics)
            say("metrics (service side):")
            _metrics_table(say, service.metrics)
    for problem in problems:
        say(f"PROBLEM: {problem}")
    say(f"{'all scenarios ran as designed' if not problems else 'some scenarios failed'} "
        f"in {time.perf_counter() - started:.2f} s")  # fmt: skip
    return 1 if problems else 0


async def _scenario_weather(
    transport: Any, client: Client, say: Callable[[str], None], problems: list[str]
) -> Metrics:
    say("(a) weather.get, synchronously and through the work queue")

    def sync_call(portal: BlockingPortal) -> tuple[Any, Metrics]:
        with SyncClient(transport, source="llmp://demo-sync", portal=portal) as sync:
            return sync.request("weather.get", {"city": "Paris"}).data, sync.metrics

    async with BlockingPortal() as portal:
        answer, sync_metrics = await anyio.to_thread.run_sync(sync_call, portal)
    say(f"    sync  weather.get Paris -> {answer}")
    if answer != {"city": "Paris", "temp_c": 18, "sky": "clear"}:
        problems.append(f"sync weather.get answered {answer!r}")
    job = await client.submit("weather.jobs", "weather.get", {"city": "Oslo"}, timeout=5)
    say(f"    queue weather.get Oslo  -> job {job.id} accepted")
    result = (await job.result()).data
    say(f"    queue result            -> {result}")
    if result != {"city": "Oslo", "temp_c": 4, "sky": "clear"}:
        problems.append(f"queued weather.get answered {result!r}")
    return sync_metrics


async def _scenario_chat(client: Client, say: Callable[[str], None], problems: list[str]) -> None:
    say("(b) llm.chat streamed tokens, then a stream cancelled half way")
    async with client.stream(
        "llm.chat", {"messages": [{"role": "user", "content": "Weather?"}]}
    ) as s:
        words = [chunk.data["delta"] async for chunk in s]
    final = s.result
    say(f"    {len(words)} chunks: {' '.join(words)}")
    if final is None or final.finish_reason != "stop" or len(words) != len(_TOKENS):
        problems.append("the complete stream did not end with its final chunk")
    else:
        say(f"    final: finish_reason={final.finish_reason} usage={dict(final.usage or {})}")
    half = len(_TOKENS) // 2
    async with client.stream("llm.chat", {"messages": []}) as cancelled:
        got = 0
        async for _ in cancelled:
            got += 1
            if got == half:
                await cancelled.cancel()
                break
    await anyio.sleep(0.05)  # let chunks already in flight arrive and be dropped
    late = client.correlator.late_dropped
    say(f"    cancelled after {got} chunks; late chunks dropped and counted: {late}")
    if got != half:
        problems.append(f"the cancelled stream delivered {got} chunks, expected {half}")


async def _scenario_events(
    client: Client, seen: Counter[str], say: Callable[[str], None], problems: list[str]
) -> None:
    say("(c) device.lamp-7.state fanned out to groups 'dashboards' and 'audit'")
    await client.publish("device.lamp-7.state", {"device": "lamp-7", "on": True})
    with anyio.move_on_after(2):
        while sum(seen.values()) < 2:
            await anyio.sleep(0.01)
    await anyio.sleep(0.05)  # a third delivery would be a bug: give it time to show
    per_group = Counter(name.split("#")[0] for name in seen.elements())
    say(f"    deliveries by member: {dict(sorted(seen.items()))}")
    if per_group != Counter({"dashboards": 1, "audit": 1}):
        problems.append(f"each group should get the event once, got {dict(per_group)}")


async def _scenario_failures(
    client: Client, say: Callable[[str], None], problems: list[str]
) -> None:
    say("(d) a request that misses its deadline, one that fails with a registry error")
    for type_, data, timeout, expected in (
        ("weather.slow", {"city": "Paris"}, 0.2, ErrorCode.DEADLINE_EXCEEDED),
        ("llm.complete", {"prompt": "x" * 100}, 5, ErrorCode.CONTEXT_LENGTH_EXCEEDED),
    ):
        try:
            await client.request(type_, data, timeout=timeout)
        except ExchangeError as exc:
            say(f"    {type_:13s} -> {exc.code}: {exc.message} (retryable={exc.retryable})")
            if exc.code != expected:
                problems.append(f"{type_} failed with {exc.code}, expected {expected}")
        else:
            problems.append(f"{type_} succeeded, expected {expected}")
