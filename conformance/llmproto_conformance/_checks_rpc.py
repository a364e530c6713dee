"""Checks of profiles ``rpc`` and ``sync``: replies, deadlines, idempotency, blocking calls.

Theory of operation
-------------------
Most checks send their request as raw bytes (:class:`~llmproto_conformance._checks_core.RawCall`)
rather than through the suite's client, because the client would hide what a broken testee
does: it drops a second reply, waits out a reply with the wrong ``correlation_id``, and turns
both into a timeout. Raw, the check sees every message and can say what was wrong with it.
The testee's counters (executions per idempotency key, outcomes per request id) show what
happened inside it: whether a handler ran, and how it ended.

The ``sync`` checks drive the reference :class:`~llmproto_ref.SyncClient` from worker threads,
on the suite's own transport through a blocking portal of the suite's event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import orjson
from anyio.from_thread import BlockingPortal

from llmproto_conformance._catalogue import check
from llmproto_conformance._checks_core import (
    GRACE_S,
    WAIT_S,
    RawCall,
    deadline_in,
    describe,
    expect_still_answering,
    now_us,
    request_message,
)
from llmproto_conformance._context import SUITE_SOURCE, TESTEE_TYPES, CheckContext, error_of
from llmproto_conformance._model import CheckFailed, Level, Profile
from llmproto_ref import (
    Deadline,
    Envelope,
    EnvelopeError,
    ErrorCode,
    ExchangeError,
    Kind,
    SyncClient,
    decode,
    encode,
    new_id,
)

__all__ = ()

ECHO, FAIL, SLEEP = TESTEE_TYPES["echo"], TESTEE_TYPES["fail"], TESTEE_TYPES["sleep"]
#: How early a DEADLINE_EXCEEDED may come (the clocks of suite and testee differ a little).
EARLY_S = 0.25
#: How late after the deadline a DEADLINE_EXCEEDED may come.
LATE_S = 1.0
#: A payload that exercises JSON: unicode, numbers, null, booleans, nesting, empties.
SAMPLE = {
    "text": 'h\u00e9llo \u2713 \U0001f600 "quoted" \\ back',
    "numbers": [0, -1, 2.5, 1e-7, 9007199254740991],
    "nested": {"a": None, "b": True, "c": [[], {}], "d": {"e": [False]}},
    "empty": "",
}


def _code(reply: Envelope) -> Any:
    return error_of(reply).get("code")


def _outcome(counters: dict[str, Any], request_id: str) -> Any:
    outcomes = counters.get("outcomes")
    return outcomes.get(request_id) if isinstance(outcomes, dict) else None


def _executions(counters: dict[str, Any], key: str) -> int:
    executions = counters.get("executions")
    value = executions.get(key, 0) if isinstance(executions, dict) else 0
    return int(value) if isinstance(value, int) else -1


def _deadline_offset_s(call: RawCall, deadline: str) -> float:
    """When ``deadline`` falls, in seconds after the call was sent (by this host's clock)."""
    return Deadline.from_timestamp(deadline).at_ms / 1000 - call.sent_wall


# -- request-response ---------------------------------------------------------------------


@check(
    id="rr-echo-round-trip",
    requirement="RR-004",
    level=Level.MUST,
    profile=Profile.RPC,
    description="an echo request gets one response whose data is the request's, unchanged",
)
async def check_echo_round_trip(ctx: CheckContext) -> None:
    """The reply is a response, and the payload survived the round trip."""
    async with RawCall(ctx, ECHO, request_message(ctx, "echo", SAMPLE)) as call:
        reply = await call.terminal()
    ctx.expect(Kind.RESPONSE is reply.kind, f"the echo was answered with {describe(reply)}")
    ctx.expect(SAMPLE == reply.data, f"the echo came back as {reply.data!r}")


@check(
    id="rr-reply-correlation",
    requirement="ENV-017",
    level=Level.MUST,
    profile=Profile.RPC,
    description="a response and an error reply carry the request's id as correlation_id",
)
async def check_reply_correlation(ctx: CheckContext) -> None:
    """Both kinds of terminal reply are correlated to their request."""
    for op, data in (("echo", {"n": 1}), ("fail", {"code": "INVALID_PARAMS", "message": "m"})):
        members = request_message(ctx, op, data)
        async with RawCall(ctx, TESTEE_TYPES[op], members) as call:
            reply = await call.terminal()
        ctx.expect(
            members["id"] == reply.correlation_id,
            f"the {reply.kind} to {op} has correlation_id {reply.correlation_id!r}, "
            f"the request's id is {members['id']!r}",
        )


@check(
    id="rr-reply-type",
    requirement="ENV-042",
    level=Level.MUST,
    profile=Profile.RPC,
    description="a response and an error reply carry the request's type",
)
async def check_reply_type(ctx: CheckContext) -> None:
    """Neither reply renames the operation."""
    for op, data in (("echo", {"n": 1}), ("fail", {"code": "NOT_FOUND", "message": "m"})):
        async with RawCall(ctx, TESTEE_TYPES[op], request_message(ctx, op, data)) as call:
            reply = await call.terminal()
        ctx.expect(
            TESTEE_TYPES[op] == reply.type,
            f"the {reply.kind} to {TESTEE_TYPES[op]} has type {reply.type!r}",
        )


@check(
    id="rr-single-terminal-reply",
    requirement="TERM-005",
    level=Level.MUST,
    profile=Profile.RPC,
    description="a request gets exactly one terminal reply and nothing after it",
)
async def check_single_terminal_reply(ctx: CheckContext) -> None:
    """A response, an error and a (short) sleep: one message each, then silence."""
    cases = (("echo", {"n": 1}), ("fail", {"code": "OVERLOADED", "message": "m"}),
             ("sleep", {"ms": 20}))  # fmt: skip
    for op, data in cases:
        async with RawCall(ctx, TESTEE_TYPES[op], request_message(ctx, op, data)) as call:
            await call.terminal()
            await call.silence(after=f"the terminal reply to {op}")
        ctx.expect(1 == len(call.replies), f"{op} was answered with {len(call.replies)} messages")


@check(
    id="rr-timing-stamps",
    requirement="MET-001",
    level=Level.SHOULD,
    profile=Profile.RPC,
    description="a response copies call and sent and adds received <= handled",
)
async def check_timing_stamps(ctx: CheckContext) -> None:
    """The four stamps are there, in microseconds, in order."""
    call_us = now_us()
    sent_us = call_us + 7
    members = request_message(
        ctx, "echo", {"timed": True}, timing={"call": call_us, "sent": sent_us}
    )
    async with RawCall(ctx, ECHO, members) as call:
        reply = await call.terminal()
    back = now_us()
    timing = reply.timing
    if timing is None:
        raise CheckFailed("the response carries no timing member")
    missing = [name for name in ("call", "sent", "received", "handled") if name not in timing]
    ctx.expect(not missing, f"the response's timing lacks {missing}: {dict(timing)!r}")
    ctx.expect(
        (call_us, sent_us) == (timing["call"], timing["sent"]),
        f"call/sent came back as {timing['call']}/{timing['sent']}, sent {call_us}/{sent_us}",
    )
    received, handled = timing["received"], timing["handled"]
    ctx.expect(received <= handled, f"received {received} is after handled {handled}")
    slack = 60_000_000  # a minute of clock difference; catches milliseconds for microseconds
    ctx.expect(
        call_us - slack <= received <= back + slack and call_us - slack <= handled <= back + slack,
        f"received/handled {received}/{handled} are not microseconds near {call_us}..{back}",
    )


@check(
    id="rr-no-responders",
    requirement="RR-003",
    level=Level.MUST,
    profile=Profile.RPC,
    description="a request for a type nobody serves fails with NO_RESPONDERS at once",
    needs=frozenset({"no_responders"}),
)
async def check_no_responders(ctx: CheckContext) -> None:
    """Well before the 5 s deadline: within one second."""
    type_ = f"llmp.conformance.unserved.{ctx.unique('t')}"
    started = time.monotonic()
    try:
        await ctx.client.request(type_, {}, timeout=5.0)
    except ExchangeError as exc:
        took = time.monotonic() - started
        ctx.expect(
            ErrorCode.NO_RESPONDERS == exc.code,
            f"a request for an unserved type failed with {exc.code}: {exc.message}",
        )
        ctx.expect(took < 1.0, f"NO_RESPONDERS took {took:.2f} s (deadline 5 s)")
        return
    raise CheckFailed(f"a request for the unserved type {type_} was answered")


@check(
    id="rr-concurrent-correlation",
    requirement="RR-004",
    level=Level.MUST,
    profile=Profile.RPC,
    description="100 concurrent echoes each get their own answer, within 5 s",
)
async def check_concurrent_correlation(ctx: CheckContext) -> None:
    """Replies are matched by correlation_id only, so a mix-up shows as a wrong payload."""
    count = 100
    wrong: list[str] = []
    tag = ctx.unique("c")

    async def one(index: int) -> None:
        asked = {"index": index, "tag": tag, "pad": "x" * (index % 7)}
        try:
            reply = await ctx.call("echo", asked, timeout=5.0)
        except ExchangeError as exc:
            wrong.append(f"#{index}: {exc.code}")
            return
        if asked != reply.data:
            wrong.append(f"#{index}: got {reply.data!r}")

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for index in range(count):
            group.start_soon(one, index)
    took = time.monotonic() - started
    ctx.expect(not wrong, f"{len(wrong)} of {count} echoes went wrong: " + "; ".join(wrong[:5]))
    ctx.expect(took < 5.0, f"{count} concurrent echoes took {took:.2f} s")


def _misdirected(ctx: CheckContext, kind: Kind) -> bytes:
    members: dict[str, Any] = {}
    if kind in (Kind.RESPONSE, Kind.CHUNK, Kind.CANCEL):
        members["correlation_id"] = new_id()
    if kind is Kind.CHUNK:
        members["seq"] = 0
    if kind is not Kind.CANCEL:
        members["data"] = {"misdirected": str(kind)}
    return encode(Envelope.new(kind=kind, type=ECHO, source=SUITE_SOURCE, **members))


@check(
    id="rr-misdirected-kind",
    requirement="RR-005",
    level=Level.MUST,
    profile=Profile.RPC,
    description="an event, response, chunk or cancel sent to a request address gets PROTOCOL_ERROR",
)
async def check_misdirected_kind(ctx: CheckContext) -> None:
    """Each non-request kind is refused, with the binding's reply address."""
    for kind in (Kind.EVENT, Kind.RESPONSE, Kind.CHUNK, Kind.CANCEL):
        body = _misdirected(ctx, kind)
        async with RawCall(ctx, ECHO, body) as call:
            reply = await call.terminal()
            await call.silence(after=f"the answer to a {kind}")
        ctx.expect(
            Kind.ERROR is reply.kind and "PROTOCOL_ERROR" == _code(reply),
            f"a {kind} sent to {ECHO} was answered with {describe(reply)}",
        )
    await expect_still_answering(ctx, "misdirected messages")


@check(
    id="rr-misdirected-error-dropped",
    requirement="RR-005",
    level=Level.MUST,
    profile=Profile.RPC,
    description="an error sent to a request address is not answered",
)
async def check_misdirected_error_dropped(ctx: CheckContext) -> None:
    """Answering errors with errors lets two peers loop."""
    error = {"code": "INTERNAL", "message": "a stray error", "retryable": False}
    body = encode(Envelope.new(kind=Kind.ERROR, type=ECHO, source=SUITE_SOURCE,
                               correlation_id=new_id(), error=error))  # fmt: skip
    async with RawCall(ctx, ECHO, body) as call:
        await call.silence(2 * GRACE_S, after="an error sent to a request address")
    await expect_still_answering(ctx, "a stray error")


# -- deadlines ----------------------------------------------------------------------------


@check(
    id="dl-expired-on-arrival",
    requirement="DL-004",
    level=Level.MUST,
    profile=Profile.RPC,
    description="a request whose deadline has passed gets DEADLINE_EXCEEDED and never runs",
)
async def check_expired_on_arrival(ctx: CheckContext) -> None:
    """The deadline lies a second in the past when the request is sent."""
    key = ctx.unique("expired")
    members = request_message(ctx, "sleep", {"ms": 0}, deadline=deadline_in(-1.0),
                              idempotency_key=key)  # fmt: skip
    async with RawCall(ctx, SLEEP, members) as call:
        reply = await call.terminal()
    ctx.expect(
        Kind.ERROR is reply.kind and "DEADLINE_EXCEEDED" == _code(reply),
        f"an expired request was answered with {describe(reply)}",
    )
    counters = await ctx.counters()
    runs, outcome = _executions(counters, key), _outcome(counters, members["id"])
    ctx.expect(0 == runs, f"the handler of an expired request ran {runs} time(s)")
    ctx.expect(outcome in (None, "expired"), f"the expired request's outcome is {outcome!r}")


@check(
    id="dl-stopped-at-deadline",
    requirement="DL-004",
    level=Level.MUST,
    profile=Profile.RPC,
    description="a handler still running at the deadline is answered DEADLINE_EXCEEDED then",
)
async def check_stopped_at_deadline(ctx: CheckContext) -> None:
    """A 3 s sleep with a 0.4 s deadline: the error comes then, not before, not long after."""
    deadline = deadline_in(0.4)
    members = request_message(ctx, "sleep", {"ms": 3000}, deadline=deadline)
    async with RawCall(ctx, SLEEP, members) as call:
        reply = await call.terminal()
        arrived = call.elapsed()
    due = _deadline_offset_s(call, deadline)
    ctx.expect(
        Kind.ERROR is reply.kind and "DEADLINE_EXCEEDED" == _code(reply),
        f"a sleep past its deadline was answered with {describe(reply)}",
    )
    ctx.expect(
        due - EARLY_S <= arrived <= due + LATE_S,
        f"DEADLINE_EXCEEDED arrived {arrived:.3f} s after sending, the deadline was at {due:.3f} s",
    )


@check(
    id="dl-handler-stopped",
    requirement="DL-004",
    level=Level.MUST,
    profile=Profile.RPC,
    description="the handler is stopped at the deadline: its outcome is expired, not completed",
)
async def check_handler_stopped(ctx: CheckContext) -> None:
    """After the sleep would have finished, the testee's outcome for it is still expired."""
    members = request_message(ctx, "sleep", {"ms": 1000}, deadline=deadline_in(0.3))
    async with RawCall(ctx, SLEEP, members) as call:
        reply = await call.terminal()
        await call.silence(1.2 - call.elapsed(), after="DEADLINE_EXCEEDED")
    ctx.expect(Kind.ERROR is reply.kind, f"a sleep past its deadline got {describe(reply)}")
    outcome = _outcome(await ctx.counters(), members["id"])
    ctx.expect("expired" == outcome, f"the testee's outcome for the request is {outcome!r}")


# -- idempotency --------------------------------------------------------------------------


@check(
    id="idem-replay",
    requirement="IDEM-001",
    level=Level.MUST,
    profile=Profile.RPC,
    description="a repeat of a finished request gets the stored reply, correlated anew, "
    "without a second execution",
)
async def check_replay(ctx: CheckContext) -> None:
    """Two requests with one key: one execution, the same answer, each correlated to its own."""
    key, data = ctx.unique("replay"), {"replay": [1, 2, 3]}
    first = await ctx.call("echo", data, idempotency_key=key, timeout=WAIT_S)
    members = request_message(ctx, "echo", data, idempotency_key=key)
    async with RawCall(ctx, ECHO, members) as call:
        second = await call.terminal()
    ctx.expect(
        Kind.RESPONSE is second.kind and data == second.data,
        f"the repeat got {describe(second)} with data {second.data!r}",
    )
    ctx.expect(
        members["id"] == second.correlation_id,
        f"the replay's correlation_id is {second.correlation_id!r}, not the repeat's id",
    )
    ctx.expect(first.id != second.id, "the replay re-sent the first reply's id")
    runs = _executions(await ctx.counters(), key)
    ctx.expect(1 == runs, f"two requests with one idempotency key ran {runs} time(s)")


@check(
    id="idem-error-replayed",
    requirement="IDEM-001",
    level=Level.MUST,
    profile=Profile.RPC,
    description="a repeat of a request that failed non-retryably gets the same error, "
    "without a second execution",
)
async def check_error_replayed(ctx: CheckContext) -> None:
    """A non-retryable error is an outcome too."""
    key = ctx.unique("error-replay")
    data = {"code": "CONTENT_REFUSED", "message": "refused once", "retryable": False}
    codes = []
    for _ in range(2):
        async with RawCall(
            ctx, FAIL, request_message(ctx, "fail", data, idempotency_key=key)
        ) as call:
            codes.append(_code(await call.terminal()))
    ctx.expect(["CONTENT_REFUSED"] * 2 == codes, f"the two requests got {codes}")
    runs = _executions(await ctx.counters(), key)
    ctx.expect(1 == runs, f"the failing request ran {runs} time(s)")


@check(
    id="idem-in-progress",
    requirement="IDEM-002",
    level=Level.MUST,
    profile=Profile.RPC,
    description="a repeat while the first request still runs gets IN_PROGRESS, retryable",
)
async def check_in_progress(ctx: CheckContext) -> None:
    """The repeat arrives 0.2 s into a 0.8 s sleep."""
    key = ctx.unique("running")
    first = request_message(ctx, "sleep", {"ms": 800}, idempotency_key=key)
    async with RawCall(ctx, SLEEP, first) as running:
        await anyio.sleep(0.2)
        repeat = request_message(ctx, "sleep", {"ms": 800}, idempotency_key=key)
        async with RawCall(ctx, SLEEP, repeat) as call:
            reply = await call.terminal()
        done = await running.terminal()
    error = error_of(reply)
    ctx.expect("IN_PROGRESS" == error.get("code"), f"the repeat got {error.get('code')}")
    ctx.expect(
        error.get("retryable") is True, f"IN_PROGRESS with retryable={error.get('retryable')!r}"
    )
    ctx.expect(Kind.RESPONSE is done.kind, f"the first request ended with {describe(done)}")
    runs = _executions(await ctx.counters(), key)
    ctx.expect(1 == runs, f"the key ran {runs} time(s)")


@check(
    id="idem-key-reused",
    requirement="IDEM-003",
    level=Level.MUST,
    profile=Profile.RPC,
    description="a key used again with different content gets IDEMPOTENCY_KEY_REUSED "
    "and does not run",
)
async def check_key_reused(ctx: CheckContext) -> None:
    """Same key, different data."""
    key = ctx.unique("reused")
    await ctx.call("echo", {"first": True}, idempotency_key=key, timeout=WAIT_S)
    members = request_message(ctx, "echo", {"first": False}, idempotency_key=key)
    async with RawCall(ctx, ECHO, members) as call:
        reply = await call.terminal()
    ctx.expect(
        Kind.ERROR is reply.kind and "IDEMPOTENCY_KEY_REUSED" == _code(reply),
        f"the reused key got {describe(reply)}",
    )
    runs = _executions(await ctx.counters(), key)
    ctx.expect(1 == runs, f"the key ran {runs} time(s)")


@check(
    id="idem-retryable-forgotten",
    requirement="IDEM-005",
    level=Level.MUST,
    profile=Profile.RPC,
    description="after a retryable failure the key is forgotten, so a retry runs again",
)
async def check_retryable_forgotten(ctx: CheckContext) -> None:
    """Two requests with one key that fail retryably: two executions."""
    key = ctx.unique("retry")
    data = {"code": "UPSTREAM_ERROR", "message": "flaky", "retryable": True}
    for _ in range(2):
        async with RawCall(
            ctx, FAIL, request_message(ctx, "fail", data, idempotency_key=key)
        ) as call:
            code = _code(await call.terminal())
        ctx.expect("UPSTREAM_ERROR" == code, f"a retryable failure came back as {code}")
    runs = _executions(await ctx.counters(), key)
    ctx.expect(2 == runs, f"the retried key ran {runs} time(s), expected 2")


# -- the synchronous call -----------------------------------------------------------------


async def _in_thread(ctx: CheckContext, scenario: Callable[[SyncClient], None]) -> None:
    """Run ``scenario`` in a worker thread with a SyncClient on the suite's transport.

    What the scenario raises is raised here, outside the client and the portal: the task
    groups of both would wrap it in an exception group.
    """
    failures: list[Exception] = []
    async with BlockingPortal() as portal:

        def run() -> None:
            try:
                with SyncClient(
                    ctx.transport, source=SUITE_SOURCE, portal=portal, timeout=WAIT_S
                ) as sc:
                    try:
                        scenario(sc)
                    except Exception as exc:  # noqa: BLE001 - raised again by the check below
                        failures.append(exc)
            except Exception as exc:  # noqa: BLE001 - the same, for the client's own failures
                failures.append(exc)

        await anyio.to_thread.run_sync(run)
    if failures:
        raise failures[0]


@check(
    id="sync-call-returns",
    requirement="SYNC-002",
    level=Level.MUST,
    profile=Profile.SYNC,
    description="a blocking call returns the response, and raises an error reply's code",
)
async def check_sync_call_returns(ctx: CheckContext) -> None:
    """One echo and one failure from a plain thread."""
    seen: dict[str, Any] = {}

    def scenario(sc: SyncClient) -> None:
        seen["echo"] = sc.request(ECHO, SAMPLE).data
        try:
            sc.request(FAIL, {"code": "QUOTA_EXHAUSTED", "message": "budget"})
        except ExchangeError as exc:
            seen["fail"] = str(exc.code)

    await _in_thread(ctx, scenario)
    ctx.expect(SAMPLE == seen.get("echo"), f"the blocking echo returned {seen.get('echo')!r}")
    ctx.expect(
        "QUOTA_EXHAUSTED" == seen.get("fail"), f"the blocking failure raised {seen.get('fail')!r}"
    )


@check(
    id="sync-deadline",
    requirement="SYNC-002",
    level=Level.MUST,
    profile=Profile.SYNC,
    description="a blocking call raises DEADLINE_EXCEEDED and does not block past its deadline",
)
async def check_sync_deadline(ctx: CheckContext) -> None:
    """A 3 s sleep with a 0.4 s timeout."""
    seen: dict[str, Any] = {}

    def scenario(sc: SyncClient) -> None:
        started = time.monotonic()
        try:
            sc.request(SLEEP, {"ms": 3000}, timeout=0.4)
            seen["code"] = "a response"
        except ExchangeError as exc:
            seen["code"] = str(exc.code)
        seen["took"] = time.monotonic() - started

    await _in_thread(ctx, scenario)
    ctx.expect("DEADLINE_EXCEEDED" == seen["code"], f"the blocking call ended with {seen['code']}")
    ctx.expect(seen["took"] <= 0.4 + LATE_S, f"the blocking call blocked {seen['took']:.2f} s")


@check(
    id="sync-same-envelopes",
    requirement="SYNC-001",
    level=Level.MUST,
    profile=Profile.SYNC,
    description="a blocking call sends the request-response envelopes: reply_to, deadline, "
    "timing, and gets a correlated response",
)
async def check_sync_same_envelopes(ctx: CheckContext) -> None:
    """The request on the wire has the members an asynchronous call's has."""
    tag = ctx.unique("sync")
    replies: list[Envelope] = []

    def scenario(sc: SyncClient) -> None:
        replies.append(sc.request(ECHO, {"sync": tag}))

    await ctx.call("echo", {"async": tag}, timeout=WAIT_S)
    await _in_thread(ctx, scenario)
    sent: dict[str, Envelope] = {}
    for record in ctx.transport.log:
        if record.operation != "send_request" or tag not in record.body:
            continue
        try:
            envelope = decode(record.body)
        except EnvelopeError as exc:
            raise CheckFailed(f"the blocking call sent an invalid envelope: {exc}") from exc
        sent["sync" if "sync" in (envelope.data or {}) else "async"] = envelope
    ctx.expect({"sync", "async"} <= set(sent), f"requests found on the wire: {sorted(sent)}")
    request, reference = sent["sync"], sent["async"]
    ctx.expect(
        set(reference.members) == set(request.members),
        f"the blocking call sent {sorted(request.members)}, "
        f"an asynchronous call {sorted(reference.members)}",
    )
    ctx.expect(
        Kind.REQUEST is request.kind
        and request.reply_to is not None
        and request.deadline is not None,
        f"the blocking call's request: {orjson.dumps(request.to_dict()).decode()}",
    )
    ctx.expect(
        bool(replies) and request.id == replies[0].correlation_id,
        "the blocking call returned a reply not correlated to its request",
    )


@check(
    id="sync-threads-independent",
    requirement="SYNC-003",
    level=Level.MUST,
    profile=Profile.SYNC,
    description="a blocking call from one thread does not wait for another thread's call",
)
async def check_sync_threads_independent(ctx: CheckContext) -> None:
    """An echo from thread B returns while thread A still waits for a 1 s sleep."""
    seen: dict[str, Any] = {}

    def scenario(sc: SyncClient) -> None:
        def slow() -> None:
            try:
                seen["slow"] = sc.request(SLEEP, {"ms": 1000}).data
            except ExchangeError as exc:
                seen["slow"] = str(exc.code)
            except Exception as exc:  # noqa: BLE001 - a broken peer must not kill the thread noisily
                seen["slow"] = repr(exc)
            seen["slow_done"] = time.monotonic()

        other = threading.Thread(target=slow)
        other.start()
        time.sleep(0.15)
        started = time.monotonic()
        seen["echo"] = sc.request(ECHO, {"fast": True}).data
        seen["echo_done"] = time.monotonic()
        seen["echo_took"] = seen["echo_done"] - started
        other.join(timeout=WAIT_S)

    await _in_thread(ctx, scenario)
    ctx.expect({"fast": True} == seen.get("echo"), f"the fast call returned {seen.get('echo')!r}")
    ctx.expect("slow" in seen, "the slow call did not return")
    ctx.expect(
        seen["echo_took"] < 0.5 and seen["echo_done"] < seen["slow_done"],
        f"the fast call took {seen['echo_took']:.2f} s, returning "
        f"{'after' if seen['echo_done'] >= seen['slow_done'] else 'before'} the slow one",
    )
