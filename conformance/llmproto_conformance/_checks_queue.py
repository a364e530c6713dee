"""Checks of profile ``queue``: the testee's worker on ``llmp.testee.jobs`` (spec/work-queue.md).

Theory of operation
-------------------
The testee consumes ``llmp.testee.jobs`` with ``max_deliveries`` 3, ``lease_ms`` 2 000 and at
most 4 jobs at once; a job ``{"fail_first": K, "sleep_ms": S}`` sleeps S ms, fails its first K
deliveries with a retryable error and answers ``{"deliveries": n}`` on delivery n = K + 1
(spec/conformance.md). Where the outcome is all a check needs, it submits through the suite's
client; where a second reply, or no reply, is the finding, it enqueues raw bytes with an inbox
of its own (:class:`_Jobs`) and sees every message. The testee's ``jobs`` counter says how
often the worker's handler saw each job, ``executions`` how often a handler ran per
idempotency key. Dead letters are read from the queue's dead-letter queue when the transport
declares ``dead_letters``; dead letters of other runs met on the way are acknowledged, since
nothing else reads them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import anyio

from llmproto_conformance._catalogue import check
from llmproto_conformance._checks_core import deadline_in
from llmproto_conformance._context import TESTEE_QUEUE, TESTEE_TYPES, CheckContext, error_of
from llmproto_conformance._model import CheckFailed, Level, Profile
from llmproto_conformance._transport_kit import QUIET_S, Background, Tap
from llmproto_ref import (
    Delivery,
    Envelope,
    EnvelopeError,
    ErrorCode,
    ExchangeError,
    Inbox,
    Job,
    Kind,
    QueueOptions,
    decode,
    encode,
)

__all__ = ()

JOB = TESTEE_TYPES["job"]
#: The testee queue's settings (spec/conformance.md); a suite consumer must use the same.
TESTEE_OPTIONS = QueueOptions(prefetch=8, lease_ms=2000, max_deliveries=3)
#: Jobs the testee runs at once.
TESTEE_SLOTS = 4
#: How long a check waits for a job's reply.
WAIT_S = 5.0
QUEUES = frozenset({"durable_queues"})


async def _submit(ctx: CheckContext, data: Mapping[str, Any], **members: Any) -> Envelope:
    """Submit a job through the suite's client and wait for its response."""
    handle = await ctx.client.submit(TESTEE_QUEUE, JOB, dict(data), timeout=WAIT_S, **members)
    return await handle.result()


async def _deliveries(ctx: CheckContext, job_id: str) -> int:
    """How often the testee's handler saw job ``job_id`` (0: never)."""
    return int((await ctx.counters()).get("jobs", {}).get(job_id, 0))


class _Jobs:
    """Jobs enqueued as raw bytes, all answered to one inbox of the suite's transport.

    ``async with _Jobs(ctx) as jobs``; :meth:`enqueue` sends one, :meth:`replies` decodes
    what came back, :meth:`wait` waits for a number of replies.
    """

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.address = ""
        self._background = Background()
        self._inbox: Inbox | None = None
        self._replies: Tap[Delivery] | None = None

    async def __aenter__(self) -> _Jobs:
        self._inbox = await self.ctx.transport.open_inbox()
        self.address = self._inbox.address
        await self._background.__aenter__()
        self._replies = self._background.tap(self._inbox.subscription)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._background.__aexit__(exc_type, exc, tb)
        finally:
            if self._inbox is not None:
                with anyio.CancelScope(shield=True):
                    await self._inbox.subscription.aclose()

    async def enqueue(self, data: Any, *, reply: bool = True, **members: Any) -> Envelope:
        """Put a job on the testee's queue, answered to this inbox when ``reply``."""
        members.setdefault("deadline", deadline_in(10.0))
        envelope = self.ctx.request_bytes(
            "job", data, reply_to=self.address if reply else None, **members
        )
        await self.ctx.transport.enqueue(TESTEE_QUEUE, encode(envelope), message_id=envelope.id)
        return envelope

    def replies(self) -> list[Envelope]:
        """Every reply so far, decoded.

        :raises CheckFailed: for a reply that does not decode.
        """
        out: list[Envelope] = []
        for delivery in self._tap.items:
            try:
                out.append(decode(delivery.body))
            except EnvelopeError as exc:
                raise CheckFailed(
                    f"a reply does not decode ({exc}): {delivery.body[:200]!r}"
                ) from exc
        return out

    async def wait(self, count: int, timeout_s: float = WAIT_S) -> bool:
        """Whether ``count`` replies arrived within ``timeout_s``."""
        return await self._tap.wait(count, timeout_s)

    @property
    def last_arrival(self) -> float:
        """``time.monotonic()`` of the latest reply."""
        return self._tap.times[-1] if self._tap.times else time.monotonic()

    @property
    def _tap(self) -> Tap[Delivery]:
        if self._replies is None:
            raise RuntimeError("use _Jobs with 'async with'")
        return self._replies


def _key(body: bytes) -> str:
    """A dead letter's key: the job id when the body decodes, else the body as text."""
    try:
        return decode(body).id
    except EnvelopeError:
        return body.decode("utf-8", errors="backslashreplace")


async def _dead_letter_reasons(
    ctx: CheckContext, keys: set[str], timeout_s: float = WAIT_S
) -> dict[str, str | None]:
    """The reasons of the testee's dead letters with these keys (see :func:`_key`)."""
    found: dict[str, str | None] = {}

    async def settle(job: Job) -> None:
        key = _key(job.body)
        if key in keys:
            found[key] = job.reason
        await job.ack()

    consumer = await ctx.transport.dead_letters(TESTEE_QUEUE)
    try:
        async with Background() as bg:
            bg.tap(consumer, settle)
            with anyio.move_on_after(timeout_s):
                while not keys <= found.keys():
                    await anyio.sleep(0.01)
    finally:
        with anyio.CancelScope(shield=True):
            await consumer.aclose()
    return found


def _describe(reply: Envelope) -> str:
    if reply.kind is Kind.ERROR:
        return f"error {(reply.error or {}).get('code')}"
    return f"{reply.kind} {reply.data!r}"


@check(
    id="wq-job-result",
    requirement="WQ-003",
    level=Level.MUST,
    profile=Profile.QUEUE,
    description="a submitted job runs once and its one response comes back",
    needs=QUEUES,
)
async def check_job_result(ctx: CheckContext) -> None:
    """A job that does not fail is answered ``{"deliveries": 1}`` after one delivery."""
    try:
        reply = await _submit(ctx, {"fail_first": 0})
    except ExchangeError as exc:
        raise CheckFailed(f"the job failed with {exc.code}: {exc.message}") from exc
    ctx.expect(reply.kind is Kind.RESPONSE, f"the job was answered with a {reply.kind}")
    ctx.expect(reply.data == {"deliveries": 1}, f"the job was answered {reply.data!r}")
    seen = await _deliveries(ctx, reply.correlation_id or "")
    ctx.expect(seen == 1, f"the worker's handler saw the job {seen} times")


@check(
    id="wq-retry-then-succeed",
    requirement="WQ-004",
    level=Level.MUST,
    profile=Profile.QUEUE,
    description="a job failing retryably is delivered again, unanswered until it succeeds",
    needs=QUEUES,
)
async def check_retry_then_succeed(ctx: CheckContext) -> None:
    """fail_first 1 and 2: the first reply is the response of delivery 2 and 3."""
    results: dict[int, Envelope | ExchangeError] = {}

    async def one(fail_first: int) -> None:
        try:
            results[fail_first] = await _submit(ctx, {"fail_first": fail_first})
        except ExchangeError as exc:
            results[fail_first] = exc

    async with anyio.create_task_group() as tg:
        for fail_first in (1, 2):
            tg.start_soon(one, fail_first)
    for fail_first, outcome in sorted(results.items()):
        if isinstance(outcome, ExchangeError):
            raise CheckFailed(
                f"a job failing its first {fail_first} deliveries was answered with "
                f"{outcome.code} ({outcome.message}) instead of being delivered again"
            )
        want = {"deliveries": fail_first + 1}
        ctx.expect(
            outcome.data == want,
            f"fail_first={fail_first}: answered {outcome.data!r}, expected {want}",
        )
        seen = await _deliveries(ctx, outcome.correlation_id or "")
        ctx.expect(
            seen == fail_first + 1, f"fail_first={fail_first}: the handler saw the job {seen} times"
        )


@check(
    id="wq-retry-backoff",
    requirement="WQ-007",
    level=Level.SHOULD,
    profile=Profile.QUEUE,
    description="redeliveries are delayed 100 ms, then 200 ms",
    needs=frozenset({"durable_queues", "delayed_nack"}),
)
async def check_retry_backoff(ctx: CheckContext) -> None:
    """fail_first 2 takes 300 ms of backoff at least, and not much more."""
    started = time.monotonic()
    try:
        await _submit(ctx, {"fail_first": 2})
    except ExchangeError as exc:
        raise CheckFailed(f"the job failed with {exc.code}: {exc.message}") from exc
    took = time.monotonic() - started
    ctx.expect(took >= 0.285, f"two retries took {took * 1000:.0f} ms, less than 100 + 200 ms")
    ctx.expect(took <= 1.5, f"two retries took {took * 1000:.0f} ms; 100 + 200 ms expected")


@check(
    id="wq-dead-lettered",
    requirement="WQ-004",
    level=Level.MUST,
    profile=Profile.QUEUE,
    description="a job failing every delivery is answered DEAD_LETTERED after the last one",
    needs=QUEUES,
)
async def check_dead_lettered(ctx: CheckContext) -> None:
    """fail_first 3: three deliveries, one DEAD_LETTERED reply, the job in the dead letters."""
    handle = await ctx.client.submit(TESTEE_QUEUE, JOB, {"fail_first": 3}, timeout=WAIT_S)
    try:
        reply = await handle.result()
    except ExchangeError as exc:
        ctx.expect(
            exc.code == ErrorCode.DEAD_LETTERED,
            f"the first reply was {exc.code} ({exc.message}), not DEAD_LETTERED "
            "after the last delivery",
        )
        ctx.expect(bool(exc.message), "the DEAD_LETTERED error has no message")
    else:
        raise CheckFailed(f"a job failing 3 deliveries of 3 was answered {_describe(reply)}")
    seen = await _deliveries(ctx, handle.id)
    ctx.expect(
        seen == TESTEE_OPTIONS.max_deliveries,
        f"the handler saw the job {seen} times; max_deliveries is 3",
    )
    if ctx.capabilities.dead_letters:
        reasons = await _dead_letter_reasons(ctx, {handle.id})
        ctx.expect(handle.id in reasons, "the job never reached the dead-letter queue")
        reason = reasons[handle.id] or ""
        ctx.expect(
            reason.endswith("max_deliveries"), f"the job was dead-lettered with reason {reason!r}"
        )


@check(
    id="wq-idempotent-replay",
    requirement="IDEM-001",
    level=Level.MUST,
    profile=Profile.QUEUE,
    description="a repeated job with a finished idempotency key gets the stored reply, unrun",
    needs=QUEUES,
)
async def check_idempotent_replay(ctx: CheckContext) -> None:
    """The same key and content twice, one after the other: one execution, two replies."""
    key = ctx.unique("k")
    first = await _submit(ctx, {"fail_first": 0}, idempotency_key=key)
    second_handle = await ctx.client.submit(
        TESTEE_QUEUE, JOB, {"fail_first": 0}, timeout=WAIT_S, idempotency_key=key
    )
    second = await second_handle.result()
    ctx.expect(
        second.data == first.data,
        f"the repeat was answered {second.data!r}, the first {first.data!r}",
    )
    ctx.expect(second.id != first.id, "the replayed reply reuses the first reply's id")
    counters = await ctx.counters()
    runs = counters.get("executions", {}).get(key, 0)
    ctx.expect(runs == 1, f"a job key submitted twice ran {runs} times")
    seen = counters.get("jobs", {}).get(second_handle.id, 0)
    ctx.expect(seen == 0, f"the worker's handler saw the repeat {seen} times")


@check(
    id="wq-idempotent-running",
    requirement="IDEM-002",
    level=Level.MUST,
    profile=Profile.QUEUE,
    description="a job whose idempotency key is running is put back, then answered from the record",
    needs=QUEUES,
)
async def check_idempotent_running(ctx: CheckContext) -> None:
    """Two jobs with one key at once: one execution; both answered with its response."""
    key = ctx.unique("k")
    data = {"fail_first": 0, "sleep_ms": 300}
    outcomes: list[Envelope | ExchangeError] = []

    async def one() -> None:
        try:
            outcomes.append(await _submit(ctx, data, idempotency_key=key))
        except ExchangeError as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
    for outcome in outcomes:
        if isinstance(outcome, ExchangeError):
            raise CheckFailed(
                f"a job repeating a running key was answered {outcome.code} "
                f"({outcome.message}) instead of waiting for the first"
            )
        ctx.expect(outcome.data == {"deliveries": 1}, f"a job was answered {outcome.data!r}")
    runs = (await ctx.counters()).get("executions", {}).get(key, 0)
    ctx.expect(runs == 1, f"two jobs with one idempotency key ran {runs} times")


@check(
    id="wq-expired-job",
    requirement="WQ-001",
    level=Level.MUST,
    profile=Profile.QUEUE,
    description="a job whose deadline passed while queued is not run, answered DEADLINE_EXCEEDED",
    needs=QUEUES,
)
async def check_expired_job(ctx: CheckContext) -> None:
    """A job enqueued with a deadline already past: no run, DEADLINE_EXCEEDED, dead-lettered."""
    key = ctx.unique("k")
    async with _Jobs(ctx) as jobs:
        job = await jobs.enqueue({"fail_first": 0}, deadline=deadline_in(-1.0), idempotency_key=key)
        answered = await jobs.wait(1)
        await anyio.sleep(QUIET_S)
        replies = jobs.replies()
    counters = await ctx.counters()
    ctx.expect(
        counters.get("jobs", {}).get(job.id, 0) == 0,
        "the worker ran a job whose deadline had passed",
    )
    ctx.expect(
        counters.get("executions", {}).get(key, 0) == 0,
        "a handler ran for a job whose deadline had passed",
    )
    reasons = await _dead_letter_reasons(ctx, {job.id}) if ctx.capabilities.dead_letters else {}
    if not answered and reasons.get(job.id) == "expired":
        return  # the broker dropped it for its age: no worker ever took it
    ctx.expect(answered, "a job whose deadline had passed was never answered")
    ctx.expect(len(replies) == 1, f"{len(replies)} replies to one expired job")
    reply = replies[0]
    code = error_of(reply).get("code")
    ctx.expect(
        code == ErrorCode.DEADLINE_EXCEEDED,
        f"an expired job was answered {code}, not DEADLINE_EXCEEDED",
    )
    ctx.expect(reply.correlation_id == job.id, "the reply is not correlated to the job")
    if ctx.capabilities.dead_letters:
        ctx.expect(job.id in reasons, "the expired job never reached the dead-letter queue")
        ctx.expect(
            reasons[job.id] == "terminated: expired",
            f"the expired job was dead-lettered with reason {reasons[job.id]!r}",
        )


@check(
    id="wq-invalid-job",
    requirement="WQ-002",
    level=Level.MUST,
    profile=Profile.QUEUE,
    description="a job that does not decode, or is not a request, is dead-lettered at once",
    needs=frozenset({"durable_queues", "dead_letters"}),
)
async def check_invalid_job(ctx: CheckContext) -> None:
    """Bytes that are no envelope and an event: each terminated with a reason, not retried."""
    garbage = f"not an envelope {ctx.unique('g')}".encode()
    event = Envelope.new(
        kind=Kind.EVENT, type=JOB, source=ctx.client.source, data={"fail_first": 0}
    )
    for body in (garbage, encode(event)):
        await ctx.transport.enqueue(TESTEE_QUEUE, body, message_id=ctx.unique("m"))
    reasons = await _dead_letter_reasons(ctx, {garbage.decode(), event.id})
    for what, key in (("bytes that are no envelope", garbage.decode()), ("an event", event.id)):
        ctx.expect(key in reasons, f"a job of {what} never reached the dead-letter queue")
        reason = reasons[key] or ""
        ctx.expect(
            reason.startswith("terminated: ") and len(reason) > len("terminated: "),
            f"a job of {what} was dead-lettered with reason {reason!r}, not by the "
            "worker with a reason naming the problem",
        )
    seen = await _deliveries(ctx, event.id)
    ctx.expect(seen == 0, f"the worker's handler ran an event as a job {seen} times")


@check(
    id="wq-many-jobs",
    requirement="WQ-003",
    level=Level.MUST,
    profile=Profile.QUEUE,
    description="fifty jobs are each answered once and not delivered again after the answer",
    needs=QUEUES,
    timeout_s=20.0,
)
async def check_many_jobs(ctx: CheckContext) -> None:
    """Fifty jobs at once; then a lease's length of quiet: nothing is answered twice."""
    async with _Jobs(ctx) as jobs:
        sent = [await jobs.enqueue({"fail_first": 0}) for _ in range(50)]
        await jobs.wait(len(sent), 10.0)
        # a job acknowledged late, or never, is delivered again when its lease runs out
        quiet_until = jobs.last_arrival + TESTEE_OPTIONS.lease_ms / 1000 + QUIET_S
        await anyio.sleep(max(0.0, quiet_until - time.monotonic()))
        replies = jobs.replies()
    ids = {job.id for job in sent}
    answered = [r.correlation_id or "" for r in replies]
    missing = ids - set(answered)
    ctx.expect(not missing, f"{len(missing)} of {len(ids)} jobs were never answered")
    twice = sorted({i for i in answered if answered.count(i) > 1})
    ctx.expect(not twice, f"{len(twice)} jobs were answered more than once, e.g. {twice[:2]}")
    wrong = [_describe(r) for r in replies if r.data != {"deliveries": 1}]
    ctx.expect(not wrong, f"{len(wrong)} jobs were answered otherwise: {wrong[:3]}")
    seen = (await ctx.counters()).get("jobs", {})
    again = [i for i in ids if seen.get(i, 0) != 1]
    ctx.expect(not again, f"{len(again)} jobs reached the handler other than once")


@check(
    id="wq-lease-extended",
    requirement="WQ-005",
    level=Level.MUST,
    profile=Profile.QUEUE,
    description="a job running longer than its lease is not delivered to a second worker",
    needs=QUEUES,
)
async def check_lease_extended(ctx: CheckContext) -> None:
    """A job of 2.6 s on a queue with a 2 s lease: one delivery, one reply."""
    async with _Jobs(ctx) as jobs:
        job = await jobs.enqueue({"fail_first": 0, "sleep_ms": 2600})
        ctx.expect(await jobs.wait(1, WAIT_S), "a job of 2.6 s was never answered")
        await anyio.sleep(QUIET_S)
        replies = jobs.replies()
    ctx.expect(
        len(replies) == 1,
        f"a long job was answered {len(replies)} times: {[_describe(r) for r in replies]}",
    )
    ctx.expect(
        replies[0].data == {"deliveries": 1}, f"a long job was answered {_describe(replies[0])}"
    )
    seen = await _deliveries(ctx, job.id)
    ctx.expect(seen == 1, f"a job longer than its lease reached the handler {seen} times")


@check(
    id="wq-slot-free",
    requirement="WQ-006",
    level=Level.MUST,
    profile=Profile.QUEUE,
    description="a worker whose slots are all busy leaves further jobs to other consumers",
    needs=QUEUES,
)
async def check_slot_free(ctx: CheckContext) -> None:
    """Four long jobs fill the testee's slots; the suite's own consumer then gets the next two."""
    data = {"fail_first": 0, "sleep_ms": 1200}
    handles = [
        await ctx.client.submit(TESTEE_QUEUE, JOB, data, timeout=WAIT_S)
        for _ in range(TESTEE_SLOTS)
    ]

    async def all_running() -> bool:
        seen = (await ctx.counters()).get("jobs", {})
        return all(seen.get(h.id, 0) >= 1 for h in handles)

    ctx.expect(await ctx.eventually(all_running), "the testee did not start four jobs at once")
    probes: set[str] = set()

    async def settle(job: Job) -> None:
        if _key(job.body) in probes:
            await job.ack()
        else:
            await job.nack()  # not ours: give it back

    consumer = await ctx.transport.consume(TESTEE_QUEUE, TESTEE_OPTIONS)
    try:
        async with _Jobs(ctx) as jobs, Background() as bg:
            taken = bg.tap(consumer, settle)
            for _ in range(2):
                probes.add((await jobs.enqueue({"fail_first": 0}, reply=False)).id)
            with anyio.move_on_after(0.8):
                while not probes <= {_key(b) for b in taken.bodies()}:
                    await anyio.sleep(0.01)
            mine = probes & {_key(b) for b in taken.bodies()}
    finally:
        with anyio.CancelScope(shield=True):
            await consumer.aclose()
    ctx.expect(
        mine == probes,
        f"the testee took {len(probes - mine)} of 2 jobs while its 4 "
        "slots were busy, away from a consumer that was free",
    )
    for handle in handles:
        await handle.result()
