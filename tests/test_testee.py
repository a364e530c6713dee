"""The reference testee and the conformance rules of spec/conformance.md.

The testee runs on one memory transport and the tests drive it from another on the same,
uniquely named broker, through a :class:`~llmproto_ref.Client` or raw transport operations;
they read ``Testee.counters`` only to see that the counters operation reports it faithfully.
The last group of tests pins down the suite's own rules: outcomes, the verdict, the report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from llmproto_conformance import _catalogue
from llmproto_conformance._catalogue import catalogue
from llmproto_conformance._context import (
    SUITE_SOURCE,
    TESTEE_QUEUE,
    TESTEE_SERVICE,
    TESTEE_TYPES,
    CheckContext,
)
from llmproto_conformance._model import (
    Check,
    CheckFailed,
    CheckResult,
    Level,
    Outcome,
    Profile,
    Unsupported,
    WireRecord,
)
from llmproto_conformance._recording import RecordingTransport
from llmproto_conformance._report import Report
from llmproto_conformance._runner import RunPlan, run_one, run_suite
from llmproto_conformance._testee import Testee
from llmproto_ref import (
    Client,
    Deadline,
    Envelope,
    ErrorCode,
    ExchangeError,
    Kind,
    MemoryBroker,
    MemoryTransport,
    Transport,
    decode,
    encode,
)

ROOT = Path(__file__).resolve().parents[1]
WAIT = 3.0  #: generous bound for something that must happen
EVENTS = "llmp.testee.events"
STARTED = "2026-09-14T10:00:00.000Z"


@dataclass(frozen=True, slots=True)
class Rig:
    """A running testee and the suite's side of the broker."""

    testee: Testee
    client: Client
    transport: MemoryTransport  #: the suite's own transport (raw operations)
    broker: str


@contextlib.asynccontextmanager
async def running(*, max_payload: int | None = None, **options: Any) -> AsyncIterator[Rig]:
    """A testee on a fresh broker, and a client on a second transport of that broker."""
    name = f"testee{uuid.uuid4().hex}"
    MemoryBroker.reset(name)
    extra = {} if max_payload is None else {"max_payload": max_payload}
    testee_side, suite_side = MemoryTransport(name, **extra), MemoryTransport(name)
    try:
        async with (
            testee_side,
            suite_side,
            Testee(testee_side, **options) as testee,
            Client(suite_side, source=SUITE_SOURCE, timeout=WAIT) as client,
        ):
            yield Rig(testee, client, suite_side, name)
    finally:
        MemoryBroker.reset(name)


async def counters(rig: Rig) -> dict[str, Any]:
    """The counters document, over the wire."""
    reply = await rig.client.request(TESTEE_TYPES["counters"], {})
    assert isinstance(reply.data, dict)
    return reply.data


async def until(rig: Rig, probe: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Ask for the counters until ``probe`` accepts them; fail after WAIT seconds."""
    with anyio.fail_after(WAIT):
        while True:
            document = await counters(rig)
            if probe(document):
                return document
            await anyio.sleep(0.01)


async def failure(call: Awaitable[Any]) -> ExchangeError:
    """The ExchangeError ``call`` raises."""
    with pytest.raises(ExchangeError) as caught:
        await call
    return caught.value


def raw_request(op: str, data: Any, *, reply_to: str, timeout_s: float = WAIT,
                **members: Any) -> Envelope:  # fmt: skip
    """A request envelope for the testee operation ``op``, as a raw peer would write it."""
    deadline = Deadline.after(int(time.time() * 1000), timeout_s).to_timestamp()
    return Envelope.new(kind=Kind.REQUEST, type=TESTEE_TYPES[op], source=SUITE_SOURCE,
                        reply_to=reply_to, deadline=deadline, data=data, **members)  # fmt: skip


async def send(rig: Rig, envelope: Envelope) -> None:
    """Put ``envelope`` on its type's request address."""
    reply_to = envelope.reply_to or ""
    body = encode(envelope)
    await rig.transport.send_request(envelope.type, body, reply_to=reply_to, message_id=envelope.id)


# -- operations ---------------------------------------------------------------------------


async def _drain(stream: Any) -> None:
    """Read ``stream`` to its end."""
    async with stream as opened:
        async for _ in opened:
            pass


async def _streamed(client: Client) -> Kind:
    """The kind of the terminal message of an empty stream."""
    async with client.stream(TESTEE_TYPES["stream"], {"n": 0}) as stream:
        assert [] == [chunk async for chunk in stream]
    assert stream.result is not None
    return stream.result.kind


@pytest.mark.anyio
async def test_every_operation_answers() -> None:
    """Every operation of the testee contract is served, the job through its queue [CONF-004]."""
    async with running() as rig:
        client = rig.client
        with anyio.fail_after(WAIT):
            kinds = [
                (await client.request(TESTEE_TYPES["echo"], 1)).kind,
                (await failure(client.request(TESTEE_TYPES["fail"], {"code": "NOT_FOUND"}))).code,
                (await client.request(TESTEE_TYPES["sleep"], {"ms": 0})).kind,
                await _streamed(client),
                (await client.request(TESTEE_TYPES["emit"], {"type": "x.y", "count": 0})).kind,
                (await client.request(TESTEE_TYPES["counters"], {})).kind,
                (await (await client.submit(TESTEE_QUEUE, TESTEE_TYPES["job"], {})).result()).kind,
            ]
    response = Kind.RESPONSE
    assert [response, ErrorCode.NOT_FOUND, response, Kind.CHUNK, response, response,
            response] == kinds  # fmt: skip


@pytest.mark.anyio
async def test_serve_group_is_llmp_testee() -> None:
    """A competing member of group llmp-testee shares the requests with the testee [CONF-003]."""
    async with running() as rig:
        competitor = await rig.transport.serve(TESTEE_TYPES["echo"], group=TESTEE_SERVICE)
        inbox = await rig.transport.open_inbox()
        seen = {"taken": 0, "answered": 0}

        async def count(what: str, deliveries: AsyncIterator[Any]) -> None:
            async for _ in deliveries:
                seen[what] += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(count, "taken", competitor.__aiter__())
            tg.start_soon(count, "answered", inbox.subscription.__aiter__())
            for index in range(20):
                await send(rig, raw_request("echo", index, reply_to=inbox.address))
            with anyio.fail_after(WAIT):
                while seen["taken"] + seen["answered"] < 20:
                    await anyio.sleep(0.005)
            await anyio.sleep(0.1)  # a testee outside the group would answer all 20 as well
            tg.cancel_scope.cancel()
        await competitor.aclose()
        await inbox.subscription.aclose()
    assert 20 == seen["taken"] + seen["answered"]
    assert seen["answered"] > 0


@pytest.mark.anyio
async def test_echo() -> None:
    """echo answers with the request's data unchanged, and with no data for none [CONF-005]."""
    values: list[Any] = [{"a": [1, 2.5, None, True], "b": {"c": "é"}}, [], "text", 0, None]
    async with running() as rig:
        with anyio.fail_after(WAIT):
            replies = [await rig.client.request(TESTEE_TYPES["echo"], v) for v in values]
    assert values == [reply.data for reply in replies]
    assert "data" not in replies[-1].to_dict()


@pytest.mark.anyio
async def test_fail() -> None:
    """fail answers with exactly the error given; retryable defaults by the registry [CONF-006]."""
    given = {
        "code": "RATE_LIMITED",
        "message": "slow down",
        "retryable": False,
        "retry_after_ms": 250,
        "details": [{"type": "acme.quota", "left": 0}],
    }
    async with running() as rig:
        with anyio.fail_after(WAIT):
            full = await failure(rig.client.request(TESTEE_TYPES["fail"], given))
            default = await failure(
                rig.client.request(TESTEE_TYPES["fail"], {"code": "OVERLOADED"})
            )
            refused = await failure(
                rig.client.request(TESTEE_TYPES["fail"], {"code": "CONTENT_REFUSED"})
            )
            unknown = await failure(
                rig.client.request(TESTEE_TYPES["fail"], {"code": "ACME_NEW_CODE", "message": "?"})
            )
    assert full.envelope is not None
    error = dict(full.envelope.error)
    assert "llmp://llmp-testee" == error.pop("origin")
    assert given == error
    assert (True, False) == (default.retryable, refused.retryable)
    assert unknown.envelope is not None
    assert ("ACME_NEW_CODE", "?", False) == (
        unknown.envelope.error["code"],
        unknown.envelope.error["message"],
        unknown.retryable,
    )


@pytest.mark.anyio
async def test_sleep() -> None:
    """sleep answers {"slept_ms": ms}, not sooner, and records it as completed [CONF-007]."""
    async with running() as rig:
        started = time.perf_counter()
        with anyio.fail_after(WAIT):
            reply = await rig.client.request(TESTEE_TYPES["sleep"], {"ms": 80})
        elapsed = time.perf_counter() - started
        document = await counters(rig)
    assert {"slept_ms": 80} == reply.data
    assert elapsed >= 0.075
    assert "completed" == document["outcomes"][reply.correlation_id]


@pytest.mark.anyio
async def test_sleep_cancel_counted_before_reply() -> None:
    """A cancelled sleep answers CANCELLED, counted as cancelled before the reply [CONF-015]."""
    async with running() as rig:
        inbox = await rig.transport.open_inbox()
        key = f"k-{uuid.uuid4().hex}"
        request = raw_request("sleep", {"ms": 10_000}, reply_to=inbox.address,
                              idempotency_key=key)  # fmt: skip
        await send(rig, request)
        await until(rig, lambda doc: doc["executions"].get(key) == 1)  # the handler started
        cancel = Envelope.new(kind=Kind.CANCEL, type=request.type, source=SUITE_SOURCE,
                              correlation_id=request.id)  # fmt: skip
        await rig.transport.publish_cancel(request.type, encode(cancel))
        with anyio.fail_after(WAIT):
            reply = decode((await inbox.subscription.__aiter__().__anext__()).body)
        document = await counters(rig)
        await inbox.subscription.aclose()
    assert (Kind.ERROR, "CANCELLED") == (reply.kind, (reply.error or {}).get("code"))
    assert "cancelled" == document["outcomes"][request.id]


@pytest.mark.anyio
async def test_sleep_deadline_counted_before_reply() -> None:
    """A sleep past its deadline answers DEADLINE_EXCEEDED, counted as expired first [CONF-015]."""
    async with running() as rig:
        inbox = await rig.transport.open_inbox()
        request = raw_request("sleep", {"ms": 10_000}, reply_to=inbox.address, timeout_s=0.2)
        await send(rig, request)
        with anyio.fail_after(WAIT):
            reply = decode((await inbox.subscription.__aiter__().__anext__()).body)
        document = await counters(rig)
        await inbox.subscription.aclose()
    assert (Kind.ERROR, "DEADLINE_EXCEEDED") == (reply.kind, (reply.error or {}).get("code"))
    assert "expired" == document["outcomes"][request.id]


@pytest.mark.anyio
async def test_sleep_abandoned_by_the_client_is_counted_cancelled() -> None:
    """A call whose task is cancelled sends a cancel; the testee records the sleep as cancelled."""
    async with running() as rig:
        key = f"k-{uuid.uuid4().hex}"
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: rig.client.request(TESTEE_TYPES["sleep"], {"ms": 10_000},
                                                     idempotency_key=key))  # fmt: skip
            await until(rig, lambda doc: doc["executions"].get(key) == 1)
            tg.cancel_scope.cancel()
        document = await until(rig, lambda doc: "cancelled" in doc["outcomes"].values())
        ids = [rid for rid, outcome in document["outcomes"].items() if outcome == "cancelled"]
    assert 1 == len(ids)


@pytest.mark.anyio
async def test_stream() -> None:
    """stream sends n chunks {"index": i}, then the final chunk with usage [CONF-008]."""
    async with running() as rig:
        with anyio.fail_after(WAIT):
            async with rig.client.stream(
                TESTEE_TYPES["stream"], {"n": 3, "delay_ms": 5, "finish_reason": "length"}
            ) as s:
                chunks = [chunk async for chunk in s]
            async with rig.client.stream(TESTEE_TYPES["stream"], {"n": 0}) as empty:
                nothing = [chunk async for chunk in empty]
        document = await counters(rig)
    assert [(0, {"index": 0}), (1, {"index": 1}), (2, {"index": 2})] == [
        (c.seq, c.data) for c in chunks
    ]
    final = s.result
    assert final is not None
    assert (3, True, "length", {"output_tokens": 3}) == (
        final.seq,
        final.final,
        final.finish_reason,
        final.usage,
    )
    assert [] == nothing
    assert empty.result is not None
    assert ("stop", {"output_tokens": 0}) == (empty.result.finish_reason, empty.result.usage)
    assert "completed" == document["outcomes"][s.id] == document["outcomes"][empty.id]


@pytest.mark.anyio
async def test_stream_cancel_and_deadline_are_counted() -> None:
    """A stream left early is counted cancelled; one cut by its deadline, expired."""
    async with running() as rig:
        with anyio.fail_after(WAIT):
            async with rig.client.stream(TESTEE_TYPES["stream"], {"n": 500, "delay_ms": 10}) as s:
                async for chunk in s:
                    if chunk.seq == 1:
                        break
            late = rig.client.stream(TESTEE_TYPES["stream"], {"n": 500, "delay_ms": 20},
                                     timeout=0.2)  # fmt: skip
            caught = await failure(_drain(late))
        document = await until(rig, lambda doc: {s.id, late.id} <= doc["outcomes"].keys())
    assert ErrorCode.DEADLINE_EXCEEDED == caught.code
    assert ("cancelled", "expired") == (document["outcomes"][s.id], document["outcomes"][late.id])


@pytest.mark.anyio
async def test_emit() -> None:
    """emit publishes count events of the type with the data, then answers [CONF-009]."""
    topic = f"{EVENTS}.e{uuid.uuid4().hex[:12]}"
    async with running() as rig:
        events = await rig.transport.subscribe_events(topic)
        with anyio.fail_after(WAIT):
            emit = {"type": topic, "count": 3, "data": {"v": 1}}
            reply = await rig.client.request(TESTEE_TYPES["emit"], emit)
            received = []
            async for delivery in events:
                received.append(decode(delivery.body))
                if len(received) == 3:
                    break
        ids = {event.id for event in received}
        document = await until(rig, lambda doc: ids <= doc["events"]["b"].keys())
        await events.aclose()
    assert {"emitted": 3} == reply.data
    assert [(Kind.EVENT, topic, {"v": 1})] * 3 == [(e.kind, e.type, e.data) for e in received]
    assert {reply.correlation_id} == {e.causation_id for e in received}
    assert dict.fromkeys(ids, 1) == document["events"]["a"] == document["events"]["b"]


@pytest.mark.anyio
async def test_events_counted_once_per_group() -> None:
    """Group a (events.*) and group b (events.>) each count every event once [CONF-013]."""
    token = f"g{uuid.uuid4().hex[:12]}"
    async with running() as rig:
        with anyio.fail_after(WAIT):
            shallow = [(await rig.client.publish(f"{EVENTS}.{token}", i)).id for i in range(10)]
            deep = [(await rig.client.publish(f"{EVENTS}.{token}.gpu", i)).id for i in range(2)]
        document = await until(rig, lambda doc: len(doc["events"]["b"]) == 12
                               and len(doc["events"]["a"]) >= 10)  # fmt: skip
        await anyio.sleep(0.1)  # a second receipt in a group would show by now
        document = await counters(rig)
    assert dict.fromkeys(shallow, 1) == document["events"]["a"]
    assert dict.fromkeys(shallow + deep, 1) == document["events"]["b"]


@pytest.mark.anyio
async def test_job_fail_first() -> None:
    """A job fails its first K deliveries, then answers {"deliveries": K+1} [CONF-010]."""
    async with running() as rig:
        with anyio.fail_after(WAIT):
            first = await rig.client.submit(TESTEE_QUEUE, TESTEE_TYPES["job"], {})
            third = await rig.client.submit(TESTEE_QUEUE, TESTEE_TYPES["job"], {"fail_first": 2})
            replies = [(await first.result()).data, (await third.result()).data]
        document = await counters(rig)
    assert [{"deliveries": 1}, {"deliveries": 3}] == replies
    assert (1, 3) == (document["jobs"][first.id], document["jobs"][third.id])
    assert "completed" == document["outcomes"][first.id] == document["outcomes"][third.id]


@pytest.mark.anyio
async def test_job_dead_lettered() -> None:
    """fail_first 3 exhausts max_deliveries 3: DEAD_LETTERED, dead-letter queue [CONF-012]."""
    async with running() as rig:
        with anyio.fail_after(WAIT):
            handle = await rig.client.submit(TESTEE_QUEUE, TESTEE_TYPES["job"], {"fail_first": 3})
            error = await failure(handle.result())
            dead = await rig.transport.dead_letters(TESTEE_QUEUE)
            job = await dead.__aiter__().__anext__()
            await job.ack()
            await dead.aclose()
        document = await counters(rig)
    assert ErrorCode.DEAD_LETTERED == error.code
    assert handle.id == decode(job.body).id
    assert job.reason is not None
    assert job.reason.endswith("max_deliveries")
    assert (3, "failed") == (document["jobs"][handle.id], document["outcomes"][handle.id])


@pytest.mark.anyio
async def test_job_concurrency() -> None:
    """The worker runs at most 4 jobs at once: 8 jobs of 250 ms take two rounds [CONF-012]."""
    async with running() as rig:
        started = time.perf_counter()
        with anyio.fail_after(WAIT * 2):
            handles = [await rig.client.submit(TESTEE_QUEUE, TESTEE_TYPES["job"],
                                               {"sleep_ms": 250}) for _ in range(8)]  # fmt: skip
            for handle in handles:
                await handle.result()
        elapsed = time.perf_counter() - started
    assert elapsed >= 0.49


@pytest.mark.anyio
async def test_job_of_another_type_is_refused() -> None:
    """A job on the testee's queue whose type is not llmp.testee.job is answered UNKNOWN_TYPE."""
    async with running() as rig:
        with anyio.fail_after(WAIT):
            handle = await rig.client.submit(TESTEE_QUEUE, TESTEE_TYPES["echo"], 1)
            error = await failure(handle.result())
    assert ErrorCode.UNKNOWN_TYPE == error.code


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("op", "data"),
    [
        ("sleep", {}),
        ("sleep", {"ms": -1}),
        ("sleep", {"ms": "10"}),
        ("sleep", {"ms": True}),
        ("sleep", {"ms": 600_001}),
        ("sleep", [10]),
        ("stream", {"n": 10_001}),
        ("stream", {"n": 1, "finish_reason": 3}),
        ("emit", {"type": "not a type", "count": 1}),
        ("emit", {"type": "x.y"}),
        ("fail", {}),
        ("fail", {"code": "lower_case"}),
        ("fail", {"code": "NOT_FOUND", "details": [{"no": "type"}]}),
        ("fail", {"code": "NOT_FOUND", "retryable": "yes"}),
        ("fail", {"code": "NOT_FOUND", "retry_after_ms": -5}),
    ],
)
async def test_invalid_data(op: str, data: Any) -> None:
    """Data that does not fit the operation is answered INVALID_PARAMS [CONF-011]."""
    async with running() as rig:
        with anyio.fail_after(WAIT):
            error = await failure(rig.client.request(TESTEE_TYPES[op], data))
    assert ErrorCode.INVALID_PARAMS == error.code


@pytest.mark.anyio
async def test_invalid_job_data() -> None:
    """A job whose data does not fit is answered INVALID_PARAMS and counted as failed [CONF-011]."""
    async with running() as rig:
        with anyio.fail_after(WAIT):
            handle = await rig.client.submit(TESTEE_QUEUE, TESTEE_TYPES["job"], {"fail_first": "x"})
            error = await failure(handle.result())
        document = await counters(rig)
    assert ErrorCode.INVALID_PARAMS == error.code
    assert (1, "failed") == (document["jobs"][handle.id], document["outcomes"][handle.id])


# -- counters -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_counters_document() -> None:
    """The counters document has its four members, shaped as specified, and is the testee's own."""
    async with running() as rig:
        with anyio.fail_after(WAIT):
            await rig.client.request(TESTEE_TYPES["echo"], 1, idempotency_key="k-doc")
            await rig.client.request(TESTEE_TYPES["sleep"], {"ms": 1})
            await rig.client.publish(f"{EVENTS}.doc", None)
            await (await rig.client.submit(TESTEE_QUEUE, TESTEE_TYPES["job"], {})).result()
        await until(rig, lambda doc: len(doc["events"]["b"]) == 1)
        document = await counters(rig)
        own = rig.testee.counters.document()
    assert ["events", "executions", "jobs", "outcomes"] == sorted(document)
    assert ["a", "b"] == sorted(document["events"])
    assert {"k-doc": 1} == document["executions"]
    assert {"completed"} == set(document["outcomes"].values())
    assert 2 == len(document["outcomes"])
    assert [1] == list(document["jobs"].values())
    assert own == document


@pytest.mark.anyio
async def test_idempotent_repeat_is_not_an_execution() -> None:
    """A repeat answered from the idempotency record does not count as an execution [CONF-014]."""
    async with running() as rig:
        with anyio.fail_after(WAIT):
            first = await rig.client.request(TESTEE_TYPES["echo"], {"n": 1}, idempotency_key="k-1")
            again = await rig.client.request(TESTEE_TYPES["echo"], {"n": 1}, idempotency_key="k-1")
            for _ in range(2):
                async with rig.client.stream(TESTEE_TYPES["stream"], {"n": 2},
                                             idempotency_key="k-2") as s:  # fmt: skip
                    assert 2 == len([c async for c in s])
            await rig.client.request(TESTEE_TYPES["sleep"], {"ms": 1}, idempotency_key="k-3")
        document = await counters(rig)
    assert first.data == again.data
    assert {"k-1": 1, "k-2": 1, "k-3": 1} == document["executions"]


@pytest.mark.anyio
async def test_counters_bounded() -> None:
    """Each map keeps its newest entries, and a reply holds what fits the payload [CONF-016]."""
    async with running(counter_limit=3) as rig:
        with anyio.fail_after(WAIT):
            for index in range(5):
                await rig.client.request(TESTEE_TYPES["echo"], index, idempotency_key=f"k-{index}")
        document = await counters(rig)
    assert ["k-2", "k-3", "k-4"] == list(document["executions"])
    async with running(max_payload=8192) as rig:
        keys = [f"k-{index:03d}-{'x' * 100}" for index in range(200)]
        with anyio.fail_after(WAIT):
            for key in keys:
                await rig.client.request(TESTEE_TYPES["echo"], None, idempotency_key=key)
        document = await counters(rig)
    kept = list(document["executions"])
    assert 0 < len(kept) < len(keys)
    assert keys[-len(kept) :] == kept


# -- the suite's rules --------------------------------------------------------------------


def test_run_names_unique() -> None:
    """The suite's names carry its run id and never repeat within a run [CONF-017]."""
    transport = RecordingTransport(MemoryTransport("names"))
    client = Client(transport, source=SUITE_SOURCE)
    one = CheckContext(transport, client, adapter_mode=True, run_id="5f3a9c1e")
    other = CheckContext(transport, client, adapter_mode=True, run_id="0b7d2a44")
    names = [one.unique("k") for _ in range(50)] + [other.unique("k") for _ in range(50)]
    assert len(names) == len(set(names))
    assert all("5f3a9c1e" in name for name in names[:50])
    assert all("0b7d2a44" in name for name in names[50:])


def _check(function: Any, *, level: Level = Level.MUST, needs: frozenset[str] = frozenset(),
           adapter_only: bool = False, timeout_s: float = 2.0,
           profile: Profile = Profile.RPC) -> Check:  # fmt: skip
    return Check(id="test-check", requirement="RR-004", level=level, profile=profile,
                 description="a check made up by the test", function=function, needs=needs,
                 adapter_only=adapter_only, timeout_s=timeout_s)  # fmt: skip


async def _echo_then(ctx: CheckContext, outcome: BaseException | None = None) -> None:
    await ctx.call("echo", {"probe": True})
    if outcome is not None:
        raise outcome


async def _passes(ctx: CheckContext) -> None:
    await _echo_then(ctx)


async def _finds_fault(ctx: CheckContext) -> None:
    await _echo_then(ctx, CheckFailed("the reply was wrong"))


async def _finds_no_capability(ctx: CheckContext) -> None:
    await _echo_then(ctx, Unsupported("no such capability"))


async def _breaks(ctx: CheckContext) -> None:
    await _echo_then(ctx, ValueError("a bug"))


async def _hangs(ctx: CheckContext) -> None:
    await anyio.sleep(10)


async def _measures(ctx: CheckContext) -> dict[str, Any]:
    await _echo_then(ctx)
    return {"p50_ms": 0.1, "raw_p50_ms": 0.05}


@contextlib.asynccontextmanager
async def suite_context(*, adapter_mode: bool = True) -> AsyncIterator[CheckContext]:
    """A check context on a recording transport, with the reference testee behind it."""
    async with running() as rig:
        recording = RecordingTransport(MemoryTransport(rig.broker))
        async with recording, Client(recording, source=SUITE_SOURCE, timeout=WAIT) as client:
            yield CheckContext(recording, client, adapter_mode=adapter_mode, run_id="r1")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("check", "adapter_mode", "expected"),
    [
        (_check(_passes), True, Outcome.PASS),
        (_check(_finds_fault), True, Outcome.FAIL),
        (_check(_finds_fault, level=Level.SHOULD), True, Outcome.NON_STRICT),
        (_check(_finds_fault, level=Level.MAY), True, Outcome.NON_STRICT),
        (_check(_breaks), True, Outcome.FAIL),
        (_check(_hangs, timeout_s=0.05), True, Outcome.FAIL),
        (_check(_finds_no_capability), True, Outcome.UNSUPPORTED),
        (_check(_measures, level=Level.MAY), True, Outcome.INFORMATIONAL),
        (_check(_finds_fault, needs=frozenset({"teleportation"})), True, Outcome.UNSUPPORTED),
        (_check(_finds_fault, adapter_only=True), False, Outcome.UNSUPPORTED),
        (_check(_passes, adapter_only=True), True, Outcome.PASS),
    ],
    ids=[
        "pass",
        "must-fail",
        "should-non-strict",
        "may-non-strict",
        "error-fail",
        "timeout-fail",
        "unsupported-raised",
        "informational",
        "needs-undeclared",
        "adapter-only-in-testee-mode",
        "adapter-only-in-adapter-mode",
    ],
)
async def test_outcome_rules(check: Check, adapter_mode: bool, expected: Outcome) -> None:
    """Each check gets the one outcome the first applicable row of the table gives [CONF-001]."""
    async with suite_context(adapter_mode=adapter_mode) as ctx:
        result = await run_one(check, ctx)
    assert expected == result.outcome


def _result(
    outcome: Outcome, level: Level = Level.MUST, expected: str | None = None
) -> CheckResult:
    return CheckResult(check=_check(_passes, level=level), outcome=outcome, duration_ms=1.0,
                       expected_failure=expected)  # fmt: skip


@pytest.mark.parametrize(
    ("results", "stale", "ok"),
    [
        ([_result(Outcome.PASS), _result(Outcome.UNSUPPORTED)], [], True),
        ([_result(Outcome.FAIL)], [], False),
        ([_result(Outcome.FAIL, expected="known, issue 7")], [], True),
        ([_result(Outcome.NON_STRICT, Level.SHOULD)], [], True),
        ([_result(Outcome.INFORMATIONAL, Level.MAY)], [], True),
        ([_result(Outcome.PASS, expected="known, issue 7")], ["test-check"], False),
    ],
    ids=["pass", "must-fail", "expected-fail", "non-strict", "informational", "stale"],
)
def test_verdict_rules(results: list[CheckResult], stale: list[str], ok: bool) -> None:
    """ok: no unexpected MUST failure and no listed check that passed [CONF-002]."""
    report = Report(transport="memory://x", implementation="test", started=STARTED,
                    checks=results, stale_expected_failures=stale)  # fmt: skip
    assert ok == report.ok
    assert ok == report.to_json()["ok"]


@pytest.mark.anyio
async def test_stale_expected_failure_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listed check that passes against the reference makes the whole run fail [CONF-002]."""
    catalogue()  # load the real checks first, so that the one added below is the only extra
    chosen = replace(_check(_passes), id="test-stale-echo")
    monkeypatch.setitem(_catalogue._REGISTRY, chosen.id, chosen)  # noqa: SLF001 - a test check
    name = f"stale{uuid.uuid4().hex}"
    plan = RunPlan(check_ids=frozenset({chosen.id}), expected_failures={chosen.id: "was broken"})

    def factory() -> Transport:
        return MemoryTransport(name)

    try:
        with anyio.fail_after(WAIT * 3):
            report = await run_suite(factory, plan, transport_label=f"memory://{name}",
                                     implementation="the reference testee")  # fmt: skip
    finally:
        MemoryBroker.reset(name)
    assert [Outcome.PASS] == [r.outcome for r in report.checks]
    assert ([chosen.id], False) == (report.stale_expected_failures, report.ok)


def test_report_json_members() -> None:
    """report.json and each check entry hold the members of the chapter's tables [CONF-019]."""
    failed = _result(Outcome.FAIL, expected="known")
    failed.wire = [WireRecord(direction="sent", operation="send_request", address="t", body="{}",
                              at_ms=0.5)]  # fmt: skip
    measured = _result(Outcome.INFORMATIONAL, Level.MAY)
    measured.figures = {"p50_ms": 0.2}
    report = Report(transport="memory://x", implementation="test",
                    started=STARTED, finished="2026-09-14T10:00:01.000Z",
                    checks=[failed, measured])  # fmt: skip
    document = report.to_json()
    assert {"llmp_version", "transport", "implementation", "started", "finished", "ok", "summary",
            "stale_expected_failures", "checks"} == set(document)  # fmt: skip
    assert {"must", "should", "may", "all"} == set(document["summary"])
    assert {"passed", "failed", "non_strict", "informational", "unsupported",
            "expected_failures"} == set(document["summary"]["all"])  # fmt: skip
    common = {"id", "requirement", "requirement_text", "level", "profile", "description",
              "outcome", "duration_ms", "message"}  # fmt: skip
    first, second = document["checks"]
    assert common | {"expected_failure", "wire"} == set(first)
    assert common | {"figures"} == set(second)
    assert {"direction", "operation", "address", "body", "at_ms"} == set(first["wire"][0])


@pytest.mark.anyio
async def test_wire_log_on_failure() -> None:
    """A failed check keeps the wire log of its exchange; a passed one keeps none [CONF-020]."""
    async with suite_context() as ctx:
        failed = await run_one(_check(_finds_fault), ctx)
        passed = await run_one(_check(_passes), ctx)
        lax = await run_one(_check(_finds_fault, level=Level.SHOULD), ctx)
    assert [("sent", "send_request"), ("received", "inbox")] == [
        (w.direction, w.operation) for w in failed.wire
    ]
    assert '"probe":true' in failed.wire[0].body
    assert decode(failed.wire[1].body.encode()).kind is Kind.RESPONSE
    assert [] == passed.wire
    assert 2 == len(lax.wire)
    assert "wire" in failed.to_json()
    assert "wire" not in passed.to_json()


@pytest.mark.anyio
async def test_performance_checks_informational() -> None:
    """Performance checks are MAY checks, and their figures never fail a run [CONF-021]."""
    performance = [c for c in catalogue() if c.profile is Profile.PERFORMANCE]
    assert [] == [c.id for c in performance if c.level is not Level.MAY]
    async with suite_context() as ctx:
        result = await run_one(_check(_measures, level=Level.MAY, profile=Profile.PERFORMANCE), ctx)
    report = Report(transport="memory://x", implementation="test",
                    started=STARTED, checks=[result])  # fmt: skip
    assert (Outcome.INFORMATIONAL, {"p50_ms": 0.1, "raw_p50_ms": 0.05}) == (
        result.outcome,
        result.figures,
    )
    assert report.ok


# -- the testee command -------------------------------------------------------------------


def _testee_process(url: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "conformance"), env.get("PYTHONPATH", "")]
    )
    code = ("import sys; from llmproto_conformance._testee_command import testee_main; "
            f"sys.exit(testee_main({url!r}))")  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def test_testee_main_ready_line_and_sigint() -> None:
    """testee_main prints its ready line once serving and exits 0 on SIGINT [CONF-018]."""
    with _testee_process("memory://cli") as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # the process flushes it once it serves
            process.send_signal(signal.SIGINT)
            rest, _ = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
    assert "llmproto testee serving on memory://cli (service llmp-testee)\n" == line
    assert (0, "") == (process.returncode, rest)


def test_testee_main_refuses_a_bad_url() -> None:
    """A transport URL that cannot be used ends the command at once with status 2."""
    with _testee_process("bogus://nowhere") as process:
        try:
            out, err = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
    assert (2, "") == (process.returncode, out)
    assert "unsupported transport scheme" in err
