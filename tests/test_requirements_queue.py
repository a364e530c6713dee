"""Work-queue requirements of workers: when a job is settled, taken, and given back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from llmproto_ref import (
    Consumer,
    ErrorCode,
    ExchangeError,
    Job,
    MemoryTransport,
    QueueOptions,
    Request,
    Service,
    decode,
)
from llmproto_ref._serving import _backoff_ms
from runtime_pair import WAIT, RuntimePair, eventually, quiet

pytestmark = pytest.mark.anyio

QUEUE = "jobs"


class _LoggedJob:
    """A job whose settlements are written to a shared log, then done."""

    def __init__(self, job: Job, log: list[tuple[str, str, Any]]) -> None:
        self._job = job
        self._log = log
        self._id = decode(job.body).id

    @property
    def body(self) -> bytes:
        return self._job.body

    @property
    def delivery_count(self) -> int:
        return self._job.delivery_count

    @property
    def reason(self) -> str | None:
        return self._job.reason

    async def ack(self) -> None:
        self._log.append((self._id, "ack", None))
        await self._job.ack()

    async def nack(self, *, delay_ms: int = 0) -> None:
        self._log.append((self._id, "nack", delay_ms))
        await self._job.nack(delay_ms=delay_ms)

    async def terminate(self, *, reason: str) -> None:
        self._log.append((self._id, "terminate", reason))
        await self._job.terminate(reason=reason)

    async def extend_lease(self) -> None:
        await self._job.extend_lease()


class _LoggedConsumer:
    """A consumer handing out :class:`_LoggedJob` wrappers."""

    def __init__(self, consumer: Consumer, log: list[tuple[str, str, Any]]) -> None:
        self._consumer = consumer
        self._log = log

    def __aiter__(self) -> AsyncIterator[Job]:
        return self._jobs()

    async def _jobs(self) -> AsyncIterator[Job]:
        async for job in self._consumer:
            yield _LoggedJob(job, self._log)

    async def aclose(self) -> None:
        await self._consumer.aclose()


class _SettlementLog(MemoryTransport):
    """A worker's transport that logs, in order, every reply it sends and every settlement."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.log: list[tuple[str, str, Any]] = []  #: (job id, what, detail)

    async def send_reply(self, address: str, body: bytes) -> None:
        reply = decode(body)
        self.log.append((reply.correlation_id or "", "reply", (reply.error or {}).get("code")))
        await super().send_reply(address, body)

    async def consume(self, queue: str, options: QueueOptions) -> Consumer:
        return _LoggedConsumer(await super().consume(queue, options), self.log)


async def test_a_job_is_settled_only_after_its_reply_and_retried_with_backoff() -> None:
    """Reply then ack; retryable failures nacked unanswered with 100, 200, 400 ms; last one DLQ.

    Requirements: WQ-003, WQ-004, WQ-007.
    """
    pair = RuntimePair()
    worker = _SettlementLog(pair.broker_name)
    service = Service(worker, name="svc")

    @service.worker(QUEUE, concurrency=4, options=QueueOptions(prefetch=4, max_deliveries=4))
    async def work(request: Request) -> Any:
        if request.data == "refuse":
            raise ExchangeError(ErrorCode.INVALID_PARAMS, "no")
        if request.data == "poison" or (request.data == "late" and request.delivery_count < 4):
            raise ExchangeError(ErrorCode.UPSTREAM_ERROR, "down", retryable=True)
        return request.data

    async with pair, worker, service:
        with anyio.fail_after(WAIT):
            handles = {
                data: await pair.client.submit(QUEUE, "t.job", data)
                for data in ("ok", "refuse", "late", "poison")
            }
            for handle in handles.values():
                with contextlib.suppress(ExchangeError):
                    await handle.result()
            await eventually(lambda: sum(what == "terminate" for _, what, _ in worker.log) == 1)
    steps = {
        data: [(what, detail) for rid, what, detail in worker.log if rid == handle.id]
        for data, handle in handles.items()
    }
    backoff = [("nack", 100), ("nack", 200), ("nack", 400)]
    assert {
        "ok": [("reply", None), ("ack", None)],
        "refuse": [("reply", "INVALID_PARAMS"), ("ack", None)],
        "late": [*backoff, ("reply", None), ("ack", None)],
        "poison": [*backoff, ("reply", "DEAD_LETTERED"), ("terminate", "max_deliveries")],
    } == steps
    assert [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000] == [
        _backoff_ms(n) for n in range(1, 10)
    ]


async def test_a_worker_takes_a_job_only_with_a_free_slot() -> None:
    """A busy worker with one slot and prefetch 10 leaves the other jobs for another consumer.

    Requirements: WQ-006.
    """
    pair = RuntimePair()
    started: list[Any] = []
    release = anyio.Event()

    @pair.service.worker(QUEUE, concurrency=1, options=QueueOptions(prefetch=10))
    async def work(request: Request) -> Any:
        started.append(request.data)
        await release.wait()
        return request.data

    async with pair:
        with anyio.fail_after(WAIT):
            handles = [await pair.client.submit(QUEUE, "t.job", n) for n in range(3)]
            await eventually(lambda: bool(started))
            await quiet(0.05)
            other = await pair.raw_transport.consume(QUEUE, QueueOptions())
            taken = [await other.__aiter__().__anext__() for _ in range(2)]
            for job in taken:
                await job.ack()
            release.set()
            assert 0 == (await handles[0].result()).data
    assert [0] == started
    assert [(1, handles[1].id), (1, handles[2].id)] == [
        (job.delivery_count, decode(job.body).id) for job in taken
    ]


async def test_a_shutting_down_worker_takes_no_new_job_during_its_grace_period() -> None:
    """A job enqueued while the worker waits for its running job is left on the queue.

    Requirements: WQ-008.
    """
    pair = RuntimePair(serve=False, grace=2.0)
    started: list[Any] = []
    running, stopping = anyio.Event(), anyio.Event()

    @pair.service.worker(QUEUE, concurrency=2, options=QueueOptions(prefetch=2))
    async def work(request: Request) -> Any:
        started.append(request.data)
        running.set()
        await anyio.sleep(0.3)
        return request.data

    async def serve_until_stopping() -> None:
        async with pair.service:
            await running.wait()
            stopping.set()

    async with pair:
        with anyio.fail_after(WAIT):
            first = await pair.client.submit(QUEUE, "t.job", "first")
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve_until_stopping)
                await stopping.wait()
                await quiet(0.05)  # the shutdown has begun; the first job still runs
                second = await pair.client.submit(QUEUE, "t.job", "second", result=False)
            assert "first" == (await first.result()).data
            left = await pair.raw_transport.consume(QUEUE, QueueOptions())
            job = await left.__aiter__().__anext__()
    assert ["first"] == started
    assert (second.id, 1) == (decode(job.body).id, job.delivery_count)
