"""Work queues through the runtime: workers, retries, dead letters, leases, shutdown."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from llmproto_ref import (
    Consumer,
    Envelope,
    ErrorCode,
    ExchangeError,
    Job,
    Kind,
    MemoryTransport,
    QueueOptions,
    Request,
    Service,
    Subscription,
    decode,
    encode,
)
from runtime_pair import WAIT, RuntimePair, eventually, quiet

pytestmark = pytest.mark.anyio

QUEUE = "jobs"


async def _dead_letters(pair: RuntimePair, count: int, *, timeout: float = WAIT) -> list[Job]:
    """The first ``count`` jobs on the dead-letter queue of QUEUE."""
    consumer = await pair.raw_transport.dead_letters(QUEUE)
    found: list[Job] = []
    with anyio.fail_after(timeout):
        async for job in consumer:
            found.append(job)
            await job.ack()
            if len(found) == count:
                break
    await consumer.aclose()
    return found


async def _nothing_on(pair: RuntimePair, *, dead: bool, watch: float = 0.15) -> bool:
    """Whether QUEUE (or its dead-letter queue) yields nothing for ``watch`` seconds."""
    consumer = await (
        pair.raw_transport.dead_letters(QUEUE)
        if dead
        else pair.raw_transport.consume(QUEUE, QueueOptions())
    )
    got: list[Job] = []
    with anyio.move_on_after(watch):
        async for job in consumer:
            got.append(job)
            break
    await consumer.aclose()
    return not got


async def test_submit_and_result() -> None:
    """A submitted job is run by a worker and its result comes back."""
    pair = RuntimePair()

    @pair.service.worker(QUEUE)
    async def work(request: Request) -> Any:
        return {"doubled": request.data * 2, "delivery": request.delivery_count}

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit(QUEUE, "t.job", 21)
            reply = await handle.result()
    assert (Kind.RESPONSE, handle.id, {"doubled": 42, "delivery": 1}) == (
        reply.kind,
        reply.correlation_id,
        reply.data,
    )
    figures = pair.client.metrics.snapshot()["queue"]["t.job"]
    assert (1, 1) == (figures["sent"], figures["succeeded"])


async def test_submit_without_result_runs_the_job() -> None:
    """A job submitted with result=False is still run, and result() refuses to wait."""
    pair = RuntimePair()
    done = anyio.Event()

    @pair.service.worker(QUEUE)
    async def work(request: Request) -> Any:
        done.set()

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit(QUEUE, "t.job", result=False)
            await done.wait()
        with pytest.raises(ValueError, match="result=False"):
            await handle.result()
    assert handle.request.reply_to is None


async def test_competing_workers_share_the_work_each_job_once() -> None:
    """Two services on one queue split the jobs and every job runs exactly once."""
    pair = RuntimePair()
    runs: dict[int, list[str]] = {}

    def worker_for(service: Service, label: str) -> None:
        @service.worker(QUEUE, concurrency=2)
        async def work(request: Request) -> Any:
            runs.setdefault(request.data, []).append(label)
            await anyio.sleep(0.01)
            return request.data

    worker_for(pair.service, "one")
    other_transport = pair.transport()
    other = Service(other_transport, name="svc")
    worker_for(other, "two")
    async with pair, other_transport, other:
        with anyio.fail_after(WAIT):
            handles = [await pair.client.submit(QUEUE, "t.job", n) for n in range(20)]
            results = [(await h.result()).data for h in handles]
    assert list(range(20)) == results
    assert [1] * 20 == [len(runs[n]) for n in range(20)]
    labels = [label for ran in runs.values() for label in ran]
    assert {"one", "two"} == set(labels)


@pytest.mark.parametrize("prefetch", [None, 10], ids=["default-prefetch", "prefetch-10"])
async def test_concurrency_limit_is_honoured(prefetch: int | None) -> None:
    """A worker with concurrency 3 never runs more than 3 jobs at once, and does reach 3."""
    pair = RuntimePair()
    running = peak = 0
    options = None if prefetch is None else QueueOptions(prefetch=prefetch)

    @pair.service.worker(QUEUE, concurrency=3, options=options)
    async def work(request: Request) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.02)
        running -= 1

    async with pair:
        with anyio.fail_after(WAIT):
            handles = [await pair.client.submit(QUEUE, "t.job", n) for n in range(12)]
            for handle in handles:
                await handle.result()
    assert 3 == peak


@pytest.mark.parametrize("failure", ["retryable-error", "plain-exception"])
async def test_job_failing_first_deliveries_succeeds_later(failure: str) -> None:
    """A job that fails its first 2 deliveries succeeds on the 3rd, with no error reply before."""
    pair = RuntimePair()
    deliveries: list[int] = []

    @pair.service.worker(QUEUE, options=QueueOptions(prefetch=4, max_deliveries=5))
    async def work(request: Request) -> Any:
        deliveries.append(request.delivery_count)
        if request.delivery_count <= 2:
            if failure == "plain-exception":
                raise RuntimeError("not yet")
            raise ExchangeError(ErrorCode.UNAVAILABLE, "not yet", retryable=True)
        return "finally"

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit(QUEUE, "t.job")
            reply = await handle.result()
    assert "finally" == reply.data
    assert [1, 2, 3] == deliveries
    assert [Kind.RESPONSE] == [e.kind for e in pair.client_transport.replies_to(handle.id)]


async def _poison(pair: RuntimePair, deliveries: list[int]) -> tuple[ExchangeError, Job, str]:
    """Submit a job that always fails retryably; its error, dead letter and id."""

    @pair.service.worker(QUEUE, options=QueueOptions(prefetch=4, max_deliveries=3))
    async def work(request: Request) -> Any:
        deliveries.append(request.delivery_count)
        raise ExchangeError(ErrorCode.UPSTREAM_ERROR, "provider down", retryable=True)

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit(QUEUE, "t.poison", "payload")
            with pytest.raises(ExchangeError) as caught:
                await handle.result()
            (dead,) = await _dead_letters(pair, 1)
    return caught.value, dead, handle.id


async def test_poison_job_is_dead_lettered() -> None:
    """A job that always fails retryably is answered DEAD_LETTERED after max_deliveries.

    Requirements: MET-004.
    """
    pair = RuntimePair()
    deliveries: list[int] = []
    error, dead, job_id = await _poison(pair, deliveries)
    assert ErrorCode.DEAD_LETTERED == error.code
    assert "provider down" in error.message
    assert [1, 2, 3] == deliveries
    assert job_id == decode(dead.body).id
    assert (dead.reason or "").endswith("max_deliveries")  # exactly that: see the xfail below
    assert [Kind.ERROR] == [e.kind for e in pair.client_transport.replies_to(job_id)]
    assert 1 == pair.service.stats.dead_lettered


async def test_non_retryable_failure_is_answered_and_acked() -> None:
    """A non-retryable failure is answered at once and never delivered again."""
    pair = RuntimePair()
    runs = 0

    @pair.service.worker(QUEUE, options=QueueOptions(prefetch=4, lease_ms=100))
    async def work(request: Request) -> Any:
        nonlocal runs
        runs += 1
        raise ExchangeError(ErrorCode.INVALID_PARAMS, "bad input")

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit(QUEUE, "t.job")
            with pytest.raises(ExchangeError) as caught:
                await handle.result()
            await quiet(0.25)  # more than two leases: an unacked job would be back by now
            assert await _nothing_on(pair, dead=True)
    assert (ErrorCode.INVALID_PARAMS, "bad input") == (caught.value.code, caught.value.message)
    assert 1 == runs
    assert (0, 0) == (pair.broker.stats.expired_leases, pair.broker.stats.dead_lettered)


async def test_duplicate_submission_with_same_idempotency_key_runs_once() -> None:
    """The same job enqueued twice (fresh ids, one key) runs once; both get the same result."""
    pair = RuntimePair()
    runs = 0

    @pair.service.worker(QUEUE, concurrency=2, options=QueueOptions(prefetch=2, lease_ms=200))
    async def work(request: Request) -> Any:
        nonlocal runs
        runs += 1
        await anyio.sleep(0.05)
        return {"run": runs, "data": request.data}

    async with pair:
        with anyio.fail_after(WAIT):
            first = await pair.client.submit(QUEUE, "t.job", {"a": 1}, idempotency_key="k-1")
            second = await pair.client.submit(QUEUE, "t.job", {"a": 1}, idempotency_key="k-1")
            replies = [await first.result(), await second.result()]
    assert first.id != second.id
    assert [{"run": 1, "data": {"a": 1}}] * 2 == [r.data for r in replies]
    assert [first.id, second.id] == [r.correlation_id for r in replies]
    assert 1 == runs
    assert 1 == pair.service.idempotency.executions[(pair.client.source, "k-1")]


async def test_redelivery_after_lease_expiry_replays_instead_of_rerunning() -> None:
    """A job redelivered after its lease ran out (ack too late) is answered from the store."""
    pair = RuntimePair()
    runs = 0

    @pair.service.worker(QUEUE, concurrency=1, options=QueueOptions(prefetch=1, lease_ms=100))
    def work(request: Request) -> Any:
        nonlocal runs
        runs += 1
        time.sleep(0.25)  # blocks the loop: the lease cannot be extended and runs out
        return {"run": runs}

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit(QUEUE, "t.job", idempotency_key="k-2")
            reply = await handle.result()
            await eventually(lambda: len(pair.client_transport.replies_to(handle.id)) == 2)
            await eventually(lambda: pair.client.correlator.late_dropped == 1)
    assert {"run": 1} == reply.data
    assert [{"run": 1}] * 2 == [e.data for e in pair.client_transport.replies_to(handle.id)]
    assert 1 == runs
    assert 1 == pair.service.idempotency.executions[(pair.client.source, "k-2")]
    assert pair.broker.stats.expired_leases >= 1


async def _expire_in_queue(pair: RuntimePair, runs: list[int]) -> tuple[ExchangeError, Job, str]:
    """Submit a job nobody works on until its deadline passed, then start the worker."""

    @pair.service.worker(QUEUE)
    async def work(request: Request) -> Any:
        runs.append(request.delivery_count)

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit(QUEUE, "t.job", timeout=0.1)
            with pytest.raises(ExchangeError) as caught:
                await handle.result()  # nobody works the queue yet
            async with pair.service:
                (dead,) = await _dead_letters(pair, 1)
                await eventually(lambda: len(pair.client_transport.replies_to(handle.id)) == 1)
    return caught.value, dead, handle.id


async def test_deadline_expiry_while_queued() -> None:
    """A job whose deadline passed in the queue is dead-lettered as expired and never run.

    Requirements: DL-001, DL-004.
    """
    pair = RuntimePair(serve=False)
    runs: list[int] = []
    error, dead, job_id = await _expire_in_queue(pair, runs)
    assert ErrorCode.DEADLINE_EXCEEDED == error.code  # the requester's own wait ended first
    assert (dead.reason or "").endswith("expired")  # exactly that: see the xfail below
    assert [] == runs
    (late,) = pair.client_transport.replies_to(job_id)
    assert "DEADLINE_EXCEEDED" == (late.error or {})["code"]
    assert (0, 1) == (pair.client.pending, pair.client.correlator.late_dropped)


@pytest.mark.parametrize("reason", ["max_deliveries", "expired"])
async def test_dead_letter_reason_is_the_protocol_word(reason: str) -> None:
    """Poison and expired jobs carry the worker's reason, recorded as ``terminated: <reason>``.

    Requirements: WQ-001, WQ-004, TRN-018.
    """
    if reason == "max_deliveries":
        _, dead, _ = await _poison(RuntimePair(), [])
    else:
        _, dead, _ = await _expire_in_queue(RuntimePair(serve=False), [])
    assert f"terminated: {reason}" == dead.reason


async def test_deadline_expiry_while_running() -> None:
    """A job running past its deadline is stopped, answered DEADLINE_EXCEEDED, not redelivered.

    Requirements: DL-004.
    """
    pair = RuntimePair()
    runs = 0
    stopped = anyio.Event()

    @pair.service.worker(QUEUE, options=QueueOptions(prefetch=4, lease_ms=100))
    async def work(request: Request) -> Any:
        nonlocal runs
        runs += 1
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            stopped.set()
            raise

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit(QUEUE, "t.job", timeout=0.2)
            with pytest.raises(ExchangeError) as caught:
                await handle.result()
            await stopped.wait()
            await eventually(lambda: len(pair.client_transport.replies_to(handle.id)) == 1)
            await quiet(0.25)
            assert await _nothing_on(pair, dead=True)
    assert ErrorCode.DEADLINE_EXCEEDED == caught.value.code
    (reply,) = pair.client_transport.replies_to(handle.id)
    assert "DEADLINE_EXCEEDED" == (reply.error or {})["code"]
    assert 1 == runs


async def test_long_job_extends_its_lease_and_is_not_redelivered() -> None:
    """A job running three times its lease keeps the lease and runs once.

    Requirements: WQ-005.
    """
    pair = RuntimePair()
    runs = 0

    @pair.service.worker(QUEUE, options=QueueOptions(prefetch=4, lease_ms=120))
    async def work(request: Request) -> Any:
        nonlocal runs
        runs += 1
        await anyio.sleep(0.36)
        return "long"

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit(QUEUE, "t.job")
            assert "long" == (await handle.result()).data
    assert 1 == runs
    assert (0, 0) == (pair.broker.stats.expired_leases, pair.broker.stats.stale_settles)


async def test_shutdown_lets_a_started_job_finish_and_acks_it() -> None:
    """At shutdown a started job finishes inside the grace period, is answered and acked.

    Requirements: WQ-008.
    """
    pair = RuntimePair(serve=False, grace=2.0)
    started, finished = anyio.Event(), anyio.Event()

    @pair.service.worker(QUEUE, options=QueueOptions(prefetch=4, lease_ms=100))
    async def work(request: Request) -> Any:
        started.set()
        await anyio.sleep(0.15)
        finished.set()
        return "finished"

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit(QUEUE, "t.job")
            async with pair.service:
                await started.wait()
            assert finished.is_set()  # leaving the block waited for it
            assert "finished" == (await handle.result()).data
            await quiet(0.2)  # two leases: an unacked job would be back on the queue
            assert await _nothing_on(pair, dead=False)
            assert await _nothing_on(pair, dead=True)


async def test_shutdown_after_grace_does_not_ack_and_work_is_redelivered() -> None:
    """A job cancelled by shutdown after the grace period is not acked; a new worker gets it.

    Requirements: WQ-008.
    """
    pair = RuntimePair(serve=False, grace=0.1)
    stopped = anyio.Event()

    @pair.service.worker(QUEUE, options=QueueOptions(prefetch=4, lease_ms=5_000))
    async def stuck(request: Request) -> Any:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            stopped.set()
            raise

    successor_transport = pair.transport()
    successor = Service(successor_transport, name="svc")

    @successor.worker(QUEUE)
    async def work(request: Request) -> Any:
        return {"delivery": request.delivery_count}

    async with pair:
        with anyio.fail_after(WAIT):
            handle = await pair.client.submit(QUEUE, "t.job")
            async with pair.service:
                await eventually(lambda: bool(pair.service.running))
            assert stopped.is_set()
            assert [] == pair.client_transport.replies_to(handle.id)  # no answer, no ack
            async with successor_transport, successor:
                reply = await handle.result()  # well before the 5 s lease would run out
            assert await _nothing_on(pair, dead=True)
    assert {"delivery": 2} == reply.data
    assert 0 == pair.service.stats.dead_lettered


async def test_shutdown_leaves_unstarted_jobs_on_the_queue() -> None:
    """Jobs the worker had not started stay queued, undelivered, for the next worker.

    Requirements: WQ-008.
    """
    pair = RuntimePair(serve=False, grace=2.0)
    started: list[int] = []

    @pair.service.worker(QUEUE, concurrency=1, options=QueueOptions(prefetch=1, lease_ms=1_000))
    async def work(request: Request) -> Any:
        started.append(request.data)
        await anyio.sleep(0.1)
        return request.data

    async with pair:
        with anyio.fail_after(WAIT):
            handles = [await pair.client.submit(QUEUE, "t.job", n) for n in range(3)]
            async with pair.service:
                await eventually(lambda: bool(started))
            assert 0 == (await handles[0].result()).data
            consumer = await pair.raw_transport.consume(QUEUE, QueueOptions())
            left = []
            async for job in consumer:
                left.append(job)
                if len(left) == 2:
                    break
            await consumer.aclose()
    assert [0] == started
    assert [1, 1] == [job.delivery_count for job in left]
    assert {handles[1].id, handles[2].id} == {decode(job.body).id for job in left}


async def test_invalid_envelopes_on_the_queue_are_dead_lettered_with_their_reason() -> None:
    """Bytes that are not a request envelope go to the dead-letter queue, saying why.

    Requirements: WQ-002.
    """
    pair = RuntimePair()

    @pair.service.worker(QUEUE)
    async def work(request: Request) -> Any:
        return request.data

    async with pair:
        event = Envelope.new(kind=Kind.EVENT, type="t.job", source=pair.raw.source)
        await pair.raw_transport.enqueue(QUEUE, b"{not json", message_id="bad-1")
        await pair.raw_transport.enqueue(QUEUE, encode(event), message_id="bad-2")
        with anyio.fail_after(WAIT):
            dead = await _dead_letters(pair, 2)
            reply = await (await pair.client.submit(QUEUE, "t.job", "still works")).result()
    reasons = sorted(job.reason or "" for job in dead)
    assert 2 == len(reasons)
    assert "an event is not a job" in reasons[0]
    assert "invalid envelope: INVALID_ENVELOPE" in reasons[1]
    assert "still works" == reply.data
    assert 2 == pair.service.stats.dead_lettered


class _GeneratorIntake(MemoryTransport):
    """A transport whose subscriptions and consumers iterate through async generators that
    record whether their ``finally`` ran (the cleanup a wrapping binding puts there)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.started: list[str] = []
        self.finished: list[str] = []
        self.generators: list[AsyncIterator[Any]] = []

    async def _wrapped(self, what: str, inner: AsyncIterator[Any]) -> AsyncIterator[Any]:
        self.started.append(what)
        try:
            async for item in inner:
                yield item
        finally:
            self.finished.append(what)

    async def serve(self, type_pattern: str, *, group: str) -> Subscription:
        return _Wrapped(self, "requests", await super().serve(type_pattern, group=group))

    async def consume(self, queue: str, options: QueueOptions) -> Consumer:
        return _Wrapped(self, "jobs", await super().consume(queue, options))


class _Wrapped:
    def __init__(self, owner: _GeneratorIntake, what: str, inner: Any) -> None:
        self._owner, self._what, self._inner = owner, what, inner

    def __aiter__(self) -> AsyncIterator[Any]:
        generator = self._owner._wrapped(self._what, self._inner.__aiter__())  # noqa: SLF001
        self._owner.generators.append(generator)  # kept alive: the GC must not close it
        return generator

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_intake_generators_are_closed_when_the_service_stops() -> None:
    """A subscription or consumer iterated by an async generator is closed by the service as
    it stops, so the generator's cleanup runs then, not at garbage collection after the loop
    has gone (where it surfaced as an unclosed-stream warning). The worker is busy as the
    service stops, so its taker waits for a slot with the generator parked at ``yield``,
    where cancelling the taker does not reach it."""
    pair = RuntimePair()
    transport = _GeneratorIntake(pair.broker_name)
    service = Service(transport, name="svc-gen")
    started, release = anyio.Event(), anyio.Event()

    @service.worker(QUEUE, concurrency=1)
    async def work(request: Request) -> Any:
        started.set()
        await release.wait()
        return request.data

    @service.handler("t.gen")
    async def echo(request: Request) -> Any:
        return request.data

    async with pair, transport:
        async with service:
            with anyio.fail_after(WAIT):
                assert "ok" == (await pair.client.request("t.gen", "ok")).data
                handle = await pair.client.submit(QUEUE, "t.job", "done")
                await started.wait()
            assert [] == transport.finished
            release.set()  # the job finishes within the grace period of the shutdown
        assert ["jobs", "requests"] == sorted(transport.finished)
        with anyio.fail_after(WAIT):
            assert "done" == (await handle.result()).data
