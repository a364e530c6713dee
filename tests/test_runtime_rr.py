"""Request-response through the runtime: a Service and a Client over the memory transport."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import anyio
import orjson
import pytest

from llmproto_ref import (
    Client,
    Deadline,
    Envelope,
    ErrorCode,
    ExchangeError,
    Final,
    Kind,
    Request,
    decode,
    encode,
    new_id,
)
from llmproto_ref._clock import now_ms
from runtime_pair import WAIT, RuntimePair, eventually, quiet, run_in_background

pytestmark = pytest.mark.anyio


async def test_response_carries_the_handlers_value() -> None:
    """The handler's return value comes back as the response, correlated to the request."""
    pair = RuntimePair()
    seen: list[str] = []

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        seen.append(request.envelope.id)
        return {"echo": request.data}

    async with pair:
        with anyio.fail_after(WAIT):
            reply = await pair.client.request("t.echo", {"x": [1, 2]})
    assert (Kind.RESPONSE, {"echo": {"x": [1, 2]}}) == (reply.kind, reply.data)
    assert [reply.correlation_id] == seen
    assert 0 == pair.client.pending


async def test_sync_handler_and_final_members() -> None:
    """A plain function handler works, and Final sets finish_reason and usage."""
    pair = RuntimePair()

    @pair.service.handler("t.final")
    def final(request: Request) -> Any:
        return Final(data="done", finish_reason="length", usage={"output_tokens": 7})

    async with pair:
        with anyio.fail_after(WAIT):
            reply = await pair.client.request("t.final")
    assert ("done", "length", {"output_tokens": 7}) == (
        reply.data,
        reply.finish_reason,
        reply.usage,
    )


async def test_exchange_error_arrives_intact() -> None:
    """An ExchangeError raised by the handler reaches the caller with every field.

    Requirements: ERR-010.
    """
    pair = RuntimePair()
    details = ({"type": "llmp.quota", "limit": 3}, {"type": "acme.hint", "text": "later"})

    @pair.service.handler("t.busy")
    async def busy(request: Request) -> Any:
        raise ExchangeError(
            ErrorCode.OVERLOADED, "too busy", retryable=True, retry_after_ms=250, details=details
        )

    async with pair:
        with anyio.fail_after(WAIT), pytest.raises(ExchangeError) as caught:
            await pair.client.request("t.busy")
    err = caught.value
    assert (ErrorCode.OVERLOADED, "too busy", True, 250, details) == (
        err.code,
        err.message,
        err.retryable,
        err.retry_after_ms,
        err.details,
    )
    assert isinstance(err.envelope, Envelope)
    assert "llmp://svc" == (err.envelope.error or {})["origin"]


async def test_plain_exception_becomes_internal_and_service_keeps_serving() -> None:
    """A handler bug answers INTERNAL, is counted, and the next request still works.

    Requirements: RR-007.
    """
    pair = RuntimePair()
    calls = 0

    @pair.service.handler("t.flaky")
    async def flaky(request: Request) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("boom")
        return "fine"

    async with pair:
        with anyio.fail_after(WAIT):
            with pytest.raises(ExchangeError) as caught:
                await pair.client.request("t.flaky")
            second = await pair.client.request("t.flaky")
    assert (ErrorCode.INTERNAL, "the handler failed with ValueError", False) == (
        caught.value.code,
        caught.value.message,
        caught.value.retryable,
    )
    assert "fine" == second.data
    assert 1 == pair.service.stats.handler_errors


async def test_no_responders_at_once() -> None:
    """A request for a type nobody serves fails with NO_RESPONDERS without waiting.

    Requirements: RR-003.
    """
    async with RuntimePair() as pair:
        with anyio.fail_after(1.0), pytest.raises(ExchangeError) as caught:
            await pair.client.request("t.nobody", timeout=30)
        assert ErrorCode.NO_RESPONDERS == caught.value.code
        assert 0 == pair.client.pending
        figures = pair.client.metrics.snapshot()["request"]["t.nobody"]
        assert (1, 0, {"NO_RESPONDERS": 1}) == (
            figures["sent"],
            figures["succeeded"],
            figures["failed"],
        )


async def test_unknown_type_for_a_request_no_handler_serves() -> None:
    """A request whose type no registration matches (pattern handler miss) gets UNKNOWN_TYPE.

    Requirements: RR-006.
    """
    pair = RuntimePair()
    ran: list[str] = []

    @pair.service.handler("t.pat.*")
    async def pattern(request: Request) -> Any:
        ran.append(request.type)
        return request.type

    async with pair:
        with anyio.fail_after(WAIT):
            matched = await pair.client.request("t.pat.one")
            # the binding routed by address, but the envelope names another type
            request = await pair.raw.request("t.other.two")
            await pair.raw.send_request("t.pat.two", encode(request))
            error = await pair.raw.next_reply()
    assert "t.pat.one" == matched.data
    assert (Kind.ERROR, request.id, "UNKNOWN_TYPE") == (
        error.kind,
        error.correlation_id,
        (error.error or {})["code"],
    )
    assert ["t.pat.one"] == ran


async def test_deadline_expiry_while_running() -> None:
    """The caller gets DEADLINE_EXCEEDED, the handler is cancelled, its late reply is counted.

    Requirements: DL-004, DL-005.
    """
    pair = RuntimePair()
    cancelled = anyio.Event()

    @pair.service.handler("t.slow")
    async def slow(request: Request) -> Any:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)  # make sure the service's reply arrives late
            raise
        return "never"

    async with pair:
        with anyio.fail_after(WAIT):
            with pytest.raises(ExchangeError) as caught:
                await pair.client.request("t.slow", timeout=0.2)
            assert ErrorCode.DEADLINE_EXCEEDED == caught.value.code
            await cancelled.wait()
            await eventually(lambda: pair.client.correlator.late_dropped == 1)
        assert 0 == pair.client.pending
        assert {"DEADLINE_EXCEEDED": 1} == pair.service.metrics.snapshot()["request"]["t.slow"][
            "failed"
        ]
        rid = pair.client_transport.sent_requests()[0].id
        late = pair.client_transport.replies_to(rid)
        assert [("DEADLINE_EXCEEDED", rid)] == [
            ((e.error or {})["code"], e.correlation_id) for e in late if e.error
        ]


async def test_deadline_already_passed_on_arrival() -> None:
    """A request that arrives after its deadline is answered DEADLINE_EXCEEDED, never run.

    Requirements: DL-001, DL-004.
    """
    pair = RuntimePair()
    ran = 0

    @pair.service.handler("t.late")
    async def late(request: Request) -> Any:
        nonlocal ran
        ran += 1
        return "ran"

    async with pair:
        request = await pair.raw.request(
            "t.late", deadline=Deadline(now_ms() - 1000).to_timestamp()
        )
        with anyio.fail_after(WAIT):
            await pair.raw.send_request("t.late", encode(request))
            error = await pair.raw.next_reply()
    assert (Kind.ERROR, request.id, "DEADLINE_EXCEEDED") == (
        error.kind,
        error.correlation_id,
        (error.error or {})["code"],
    )
    assert 0 == ran


async def test_late_reply_after_timeout_is_dropped_and_counted() -> None:
    """A reply after the caller timed out is dropped, counted as late, and leaks nothing.

    Requirements: DL-005.
    """
    async with RuntimePair() as pair:
        requests = await pair.raw_transport.serve("t.raw", group="raw")
        with anyio.fail_after(WAIT):
            with pytest.raises(ExchangeError) as caught:
                await pair.client.request("t.raw", timeout=0.1)
            assert ErrorCode.DEADLINE_EXCEEDED == caught.value.code
            assert 0 == pair.client.pending
            delivery = await requests.__aiter__().__anext__()
            request = decode(delivery.body)
            await pair.raw.reply(request.reply_to or "", pair.raw.response(request.id, "t.raw"))
            await eventually(lambda: pair.client.correlator.late_dropped == 1)
        assert (0, 0, 0) == (
            pair.client.pending,
            pair.client.correlator.unknown_dropped,
            pair.client.malformed_replies,
        )
        figures = pair.client.metrics.snapshot()["request"]["t.raw"]
        assert (1, {"DEADLINE_EXCEEDED": 1}) == (figures["late_dropped"], figures["failed"])


async def test_reply_racing_the_deadline_has_exactly_one_outcome() -> None:
    """Replies sent around the deadline either complete the call or count as late, never both."""
    async with RuntimePair() as pair:
        requests = await pair.raw_transport.serve("t.edge", group="raw")
        runs = 24
        outcomes: list[str] = []

        async def answer_near_deadline(offset_s: float) -> None:
            delivery = await requests.__aiter__().__anext__()
            request = decode(delivery.body)
            assert request.deadline is not None
            left = Deadline.from_timestamp(request.deadline).remaining_ms(now_ms()) / 1000
            await anyio.sleep(max(0.0, left + offset_s))
            await pair.raw.reply(
                request.reply_to or "", pair.raw.response(request.id, "t.edge", "ok")
            )

        with anyio.fail_after(10):
            for run in range(runs):
                offset = (run - runs // 2) * 0.0005  # -6 ms .. +6 ms around the deadline
                async with anyio.create_task_group() as tg:
                    tg.start_soon(answer_near_deadline, offset)
                    try:
                        reply = await pair.client.request("t.edge", timeout=0.05)
                        outcomes.append(str(reply.data))
                    except ExchangeError as exc:
                        outcomes.append(str(exc.code))
                assert 0 == pair.client.pending
            await quiet(0.05)
        assert set(outcomes) <= {"ok", "DEADLINE_EXCEEDED"}
        assert runs == len(outcomes)
        assert outcomes.count("DEADLINE_EXCEEDED") == pair.client.correlator.late_dropped
        assert 0 == pair.client.correlator.unknown_dropped


async def test_unknown_correlation_is_counted_as_unknown() -> None:
    """A reply matching nothing the client sent is dropped and counted as unknown, not late.

    Requirements: MET-004.
    """
    async with RuntimePair() as pair:
        await pair.raw.reply(pair.inbox, pair.raw.response(new_id(), "t.ghost"))
        await eventually(lambda: pair.client.correlator.unknown_dropped == 1)
        assert (0, 0) == (pair.client.correlator.late_dropped, pair.client.malformed_replies)


def _request_bytes(**changes: Any) -> bytes:
    members = {
        "llmp": "1.0",
        "id": "req-1",
        "kind": "request",
        "type": "t.echo",
        "source": "llmp://tests/raw-peer",
        "time": "2025-01-01T00:00:00.000Z",
        "data": {"x": 1},
    }
    members.update(changes)
    return orjson.dumps({k: v for k, v in members.items() if v is not None})


MALFORMED = [
    pytest.param(
        b"{not json", "INVALID_ENVELOPE", "", "ENV-002", None, "llmp.error", id="not-json"
    ),
    pytest.param(
        b"[1, 2]", "INVALID_ENVELOPE", "", "ENV-001", None, "llmp.error", id="not-an-object"
    ),
    pytest.param(
        _request_bytes(llmp="2.0"),
        "UNSUPPORTED_VERSION",
        "/llmp",
        "ENV-010",
        "req-1",
        "t.echo",
        id="major-version",
    ),
    pytest.param(
        _request_bytes(source=None),
        "INVALID_ENVELOPE",
        "/source",
        "ENV-009",
        "req-1",
        "t.echo",
        id="missing-source",
    ),
    pytest.param(
        _request_bytes(deadline="tomorrow"),
        "INVALID_ENVELOPE",
        "/deadline",
        "ENV-020",
        "req-1",
        "t.echo",
        id="bad-deadline",
    ),
    pytest.param(
        _request_bytes(data="x" * 1_048_600),
        "PAYLOAD_TOO_LARGE",
        "",
        "ENV-006",
        None,
        "llmp.error",
        id="too-large",
    ),
]


@pytest.mark.parametrize(("body", "code", "pointer", "requirement", "cid", "type_"), MALFORMED)
async def test_malformed_request_gets_an_error_reply(
    *, body: bytes, code: str, pointer: str, requirement: str, cid: str | None, type_: str
) -> None:
    """Bytes that do not decode are answered with the code and an llmp.pointer detail.

    Requirements: ENV-036, ERR-009, MET-004.
    """
    pair = RuntimePair()

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    async with pair:
        with anyio.fail_after(WAIT):
            await pair.raw.send_request("t.echo", body)
            error = await pair.raw.next_reply()
            after = await pair.client.request("t.echo", "still here")
    assert (Kind.ERROR, code, cid, type_) == (
        error.kind,
        (error.error or {})["code"],
        error.correlation_id,
        error.type,
    )
    pointer_detail = {"type": "llmp.pointer", "pointer": pointer, "requirement": requirement}
    versions = (
        [{"type": "llmp.versions", "supported": ["1.0"]}] if code == "UNSUPPORTED_VERSION" else []
    )
    assert [pointer_detail, *versions] == (error.error or {})["details"]
    assert "still here" == after.data
    assert (1, 0) == (pair.service.stats.rejected, pair.service.stats.dropped)


async def test_malformed_request_without_reply_address_is_counted() -> None:
    """Undecodable bytes with no reply address are dropped and counted."""
    pair = RuntimePair()

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    async with pair:
        await pair.raw.send_request("t.echo", b"\xff\xfe", reply=False)
        await eventually(lambda: pair.service.stats.dropped == 1)
        with anyio.fail_after(WAIT):
            assert 2 == (await pair.client.request("t.echo", 2)).data
        assert 0 == pair.service.stats.rejected


async def test_non_request_on_request_address_is_a_protocol_error() -> None:
    """An event sent to a request address is answered PROTOCOL_ERROR and not handled.

    Requirements: RR-005.
    """
    pair = RuntimePair()
    ran = 0

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        nonlocal ran
        ran += 1
        return request.data

    async with pair:
        event = Envelope.new(kind=Kind.EVENT, type="t.echo", source=pair.raw.source)
        with anyio.fail_after(WAIT):
            await pair.raw.send_request("t.echo", encode(event))
            error = await pair.raw.next_reply()
    assert (Kind.ERROR, "PROTOCOL_ERROR") == (error.kind, (error.error or {})["code"])
    assert 0 == ran


async def test_malformed_replies_are_counted_not_fatal() -> None:
    """Garbage on the client's inbox is counted and the client keeps working."""
    pair = RuntimePair()

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    async with pair:
        for body in (b"garbage", b"{}", b'{"llmp": "1.0"}'):
            await pair.raw.reply(pair.inbox, body)
        await eventually(lambda: pair.client.malformed_replies == 3)
        with anyio.fail_after(WAIT):
            assert "ok" == (await pair.client.request("t.echo", "ok")).data
        assert 0 == pair.client.correlator.unknown_dropped


async def test_thousand_concurrent_requests_each_get_their_own_answer() -> None:
    """1,000 concurrent requests are each answered with their own payload, in parallel."""
    pair = RuntimePair(max_concurrency=1000)
    handler_s = 0.05

    @pair.service.handler("t.square")
    async def square(request: Request) -> Any:
        await anyio.sleep(handler_s)
        return {"n": request.data["n"], "square": request.data["n"] ** 2}

    answers: dict[int, Any] = {}

    async def one(n: int) -> None:
        reply = await pair.client.request("t.square", {"n": n})
        answers[n] = reply.data

    async with pair:
        started = time.monotonic()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for n in range(1000):
                    tg.start_soon(one, n)
        elapsed = time.monotonic() - started
        assert 0 == pair.client.pending
    assert {n: {"n": n, "square": n * n} for n in range(1000)} == answers
    assert elapsed < 100 * handler_s  # serialized would take 1000x the handler time


async def test_downstream_call_inherits_deadline_and_causation() -> None:
    """A handler's downstream request carries its deadline (never later) and causation_id.

    Requirements: DL-003.
    """
    pair = RuntimePair()
    seen: dict[str, Envelope] = {}

    @pair.service.handler("t.front")
    async def front(request: Request) -> Any:
        seen["front"] = request.envelope
        inherited = await pair.client.request("t.back", "long", timeout=60)
        shorter = await pair.client.request("t.back", "short", timeout=0.5)
        return [inherited.data, shorter.data]

    @pair.service.handler("t.back")
    async def back(request: Request) -> Any:
        seen[request.data] = request.envelope
        return request.data

    async with pair:
        with anyio.fail_after(WAIT):
            reply = await pair.client.request("t.front", timeout=2.0)
    assert ["long", "short"] == reply.data
    front_env, long_env, short_env = seen["front"], seen["long"], seen["short"]
    assert (front_env.id, front_env.id) == (long_env.causation_id, short_env.causation_id)
    assert front_env.deadline == long_env.deadline  # forwarded unchanged, not extended
    assert front_env.deadline is not None
    assert short_env.deadline is not None
    assert Deadline.from_timestamp(short_env.deadline) < Deadline.from_timestamp(front_env.deadline)
    assert front_env.causation_id is None


async def test_thread_handler_does_not_stall_the_loop() -> None:
    """A blocking handler run with thread=True lets another request be answered meanwhile."""
    pair = RuntimePair()
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    @pair.service.handler("t.blocking", thread=True)
    def blocking(request: Request) -> Any:
        started.set()
        release.wait(timeout=5)  # blocks this worker thread, never the event loop
        finished.set()
        return "slow"

    @pair.service.handler("t.quick")
    async def quick(request: Request) -> Any:
        return "quick"

    async with pair:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                slow = await run_in_background(tg, lambda: pair.client.request("t.blocking"))
                await eventually(started.is_set)
                fast = await pair.client.request("t.quick")
                assert not finished.is_set()
                release.set()
    assert "quick" == fast.data
    assert "slow" == slow["result"].data


async def test_timing_stamps_are_present_and_ordered() -> None:
    """The response carries call <= sent <= received <= handled."""
    pair = RuntimePair()

    @pair.service.handler("t.timed")
    async def timed(request: Request) -> Any:
        await anyio.sleep(0.01)
        return None

    async with pair:
        with anyio.fail_after(WAIT):
            reply = await pair.client.request("t.timed")
    timing = reply.timing or {}
    assert ["call", "handled", "received", "sent"] == sorted(timing)
    assert timing["call"] <= timing["sent"] <= timing["received"] <= timing["handled"]
    assert timing["handled"] - timing["received"] >= 10_000  # the handler slept 10 ms
    request = pair.client_transport.sent_requests()[0]
    assert {k: timing[k] for k in ("call", "sent")} == request.timing


async def test_metrics_give_efficiency_and_latency_split_per_pattern_and_type() -> None:
    """The client's snapshot has η and p50/p99 of L, Ts, Tt, Tr per pattern and type.

    Requirements: MET-003.
    """
    pair = RuntimePair()

    @pair.service.handler("t.ok")
    async def ok(request: Request) -> Any:
        return request.data

    @pair.service.handler("t.half")
    async def half(request: Request) -> Any:
        if request.data % 2:
            raise ExchangeError(ErrorCode.INVALID_PARAMS, "odd")
        return request.data

    async with pair:
        with anyio.fail_after(WAIT):
            for n in range(3):
                await pair.client.request("t.ok", n)
            for n in range(4):
                with contextlib.suppress(ExchangeError):
                    await pair.client.request("t.half", n)
        snapshot = pair.client.metrics.snapshot()
    ok_fig, half_fig, total = (snapshot["request"][k] for k in ("t.ok", "t.half", "*"))
    assert (3, 3, 1.0, {}) == (
        ok_fig["sent"],
        ok_fig["succeeded"],
        ok_fig["efficiency"],
        ok_fig["failed"],
    )
    assert (4, 2, 0.5, {"INVALID_PARAMS": 2}) == (
        half_fig["sent"],
        half_fig["succeeded"],
        half_fig["efficiency"],
        half_fig["failed"],
    )
    assert (7, 5) == (total["sent"], total["succeeded"])
    for name in ("latency_ms", "ts_ms", "tt_ms", "tr_ms"):
        p50, p99 = ok_fig[name]["p50"], ok_fig[name]["p99"]
        assert p50 is not None, name
        assert p99 is not None, name
        assert 0 <= p50 <= p99, name
    assert ok_fig["latency_ms"]["p99"] >= ok_fig["tr_ms"]["p99"]


async def test_cancelled_caller_sends_cancel_and_handler_stops() -> None:
    """Cancelling the waiting task broadcasts a cancel; the service stops the handler.

    Requirements: CAN-001, CAN-002, CAN-003, ENV-042.
    """
    pair = RuntimePair()
    started, stopped = anyio.Event(), anyio.Event()

    @pair.service.handler("t.long")
    async def long(request: Request) -> Any:
        started.set()
        try:
            await anyio.sleep(10)
        finally:
            stopped.set()
        return "never"

    async with pair:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pair.client.request, "t.long")
                await started.wait()
                tg.cancel_scope.cancel()
            await stopped.wait()
            await eventually(lambda: pair.client.correlator.late_dropped == 1)
        rid = pair.client_transport.sent_requests()[0].id
        cancels = [decode(body) for body in pair.client_transport.cancels]
        assert [(Kind.CANCEL, rid, "t.long")] == [
            (c.kind, c.correlation_id, c.type) for c in cancels
        ]
        assert 0 == pair.client.pending
        assert [("CANCELLED", rid)] == [
            ((e.error or {})["code"], e.correlation_id)
            for e in pair.client_transport.replies_to(rid)
            if e.error
        ]
        assert 0 == pair.service.stats.late_cancels


async def test_cancel_before_the_handler_started_stops_it() -> None:
    """A request cancelled while it waits for a free slot is never run to completion."""
    pair = RuntimePair(max_concurrency=1)
    started = anyio.Event()
    completed: list[str] = []

    @pair.service.handler("t.hold")
    async def hold(request: Request) -> Any:
        started.set()
        await anyio.sleep(0.1)
        completed.append("hold")
        return "held"

    @pair.service.handler("t.queued")
    async def queued(request: Request) -> Any:
        completed.append("queued")
        return "ran"

    async with pair:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pair.client.request, "t.hold")
                await started.wait()  # the only slot is taken
                async with pair.client.stream("t.queued") as stream:
                    assert await stream.cancel()
            await quiet(0.1)
    assert ["hold"] == completed
    assert 0 == pair.service.stats.late_cancels


class _BrokenSubscription:
    """A subscription whose iteration fails the way a broken binding's might."""

    def __aiter__(self) -> _BrokenSubscription:
        return self

    async def __anext__(self) -> Any:
        raise RuntimeError("the binding lost its connection and let the error escape")

    async def aclose(self) -> None:
        return None


async def test_a_failing_subscription_ends_only_its_own_intake() -> None:
    """One intake loop that fails is counted; the service keeps serving its other types."""
    pair = RuntimePair()
    real_serve = pair.service.transport.serve

    async def serve(type_pattern: str, *, group: str) -> Any:
        if type_pattern == "t.broken":
            return _BrokenSubscription()
        return await real_serve(type_pattern, group=group)

    pair.service.transport.serve = serve  # type: ignore[method-assign]

    @pair.service.handler("t.broken")
    async def broken(request: Request) -> Any:
        return None

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    async with pair:
        with anyio.fail_after(WAIT):
            assert "fine" == (await pair.client.request("t.echo", "fine")).data
    assert 1 == pair.service.stats.intake_failures


async def test_an_error_inside_the_client_block_comes_out_as_itself() -> None:
    """An exception raised inside ``async with Client(...)`` is not wrapped in a group."""
    pair = RuntimePair()
    async with pair:
        with pytest.raises(ValueError, match="mine"):
            async with Client(pair.client_transport, source="llmp://other"):
                raise ValueError("mine")
