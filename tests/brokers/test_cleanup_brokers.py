"""``delete_queue`` on NATS and RabbitMQ, and a conformance run that cleans up after itself.

``delete_queue`` is the optional transport operation of spec/transport.md (Work queues, the
note after TRN-019). Each test names its queues after ``run_id``; what a failing test leaves is
deleted with the brokers' own clients in ``finally``. The memory transport's side is in
tests/test_cleanup.py.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterable

import aio_pika
import aio_pika.exceptions
import anyio
import nats
import nats.js
import nats.js.errors
import pytest

from llmproto_conformance._context import TESTEE_QUEUE
from llmproto_conformance._model import Outcome, Profile
from llmproto_conformance._report import Report
from llmproto_conformance._runner import RunPlan, run_suite
from llmproto_nats import NatsTransport
from llmproto_nats._jetstream import stream_name
from llmproto_rabbitmq import RabbitMQTransport, dead_letter_queue, delay_queue, work_queue
from llmproto_ref import Consumer, Job, QueueOptions, Transport

pytestmark = pytest.mark.anyio
WAIT = 5.0
DELAY_MS = 300  #: the delay of trn-delayed-nack, and of the tests' own nacks
OPTIONS = QueueOptions(prefetch=4, lease_ms=10_000, max_deliveries=3)
#: Transport checks that declare queues of their own (``llmp.check.…``), and a queue check.
CHECKS = frozenset({"trn-enqueue-stored", "trn-delayed-nack", "trn-dead-letter",
                    "wq-job-result"})  # fmt: skip
PLAN = RunPlan(profiles=frozenset({Profile.QUEUE, Profile.TRANSPORT}), check_ids=CHECKS)
_RUN_PREFIX = re.compile(r"^llmp\.check\.t-[0-9a-f]+-")


async def _take(consumer: Consumer) -> Job:
    with anyio.fail_after(WAIT):
        return await anext(aiter(consumer))


async def _ended(consumer: Consumer) -> bool:
    """Whether ``consumer``'s iteration ends (rather than yielding a job) within WAIT."""
    with anyio.fail_after(WAIT):
        async for _ in consumer:
            return False
    return True


async def _exercise(transport: Transport, queue: str) -> tuple[Consumer, Consumer]:
    """Everything a queue can make on a broker: jobs, a delayed nack, a dead letter."""
    await transport.enqueue(queue, b"delayed", message_id="m1")
    await transport.enqueue(queue, b"dead", message_id="m2")
    await transport.enqueue(queue, b"waiting", message_id="m3")
    consumer = await transport.consume(queue, OPTIONS)
    first, second = await _take(consumer), await _take(consumer)
    await first.nack(delay_ms=DELAY_MS)
    await second.terminate(reason="gone")
    dead = await transport.dead_letters(queue)
    letter = await _take(dead)
    assert letter.reason == "terminated: gone"
    return consumer, dead


def _noting(factory: Callable[[], Transport], names: list[str]) -> Callable[[], Transport]:
    """``factory``, its transports noting in ``names`` each queue given to them.

    The transports stay what the factory makes (their own class, with ``delete_queue``); only
    their queue operations are wrapped, on the instance.
    """

    def wrap(method: Callable[..., object]) -> Callable[..., object]:
        def noted(queue: str, *args: object, **kwargs: object) -> object:
            if _RUN_PREFIX.match(queue) and queue not in names:
                names.append(queue)
            return method(queue, *args, **kwargs)

        return noted

    def opened() -> Transport:
        transport = factory()
        for operation in ("enqueue", "consume", "dead_letters"):
            setattr(transport, operation, wrap(getattr(transport, operation)))
        return transport

    return opened


def _run_ids(names: Iterable[str]) -> set[str]:
    """The ``llmp.check.t-<run>-`` prefixes of ``names``."""
    return {m.group() for name in names if (m := _RUN_PREFIX.match(name))}


def _outcomes(report: Report) -> dict[str, Outcome]:
    return {r.check.id: r.outcome for r in report.checks}


# -- NATS ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _jetstream(url: str) -> AsyncIterator[nats.js.JetStreamContext]:
    nc = await nats.connect(url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def _stream_exists(js: nats.js.JetStreamContext, queue: str) -> bool:
    try:
        await js.stream_info(stream_name(queue))
    except nats.js.errors.NotFoundError:
        return False
    return True


async def _drop_streams(url: str, queues: Iterable[str]) -> None:
    async with _jetstream(url) as js:
        for queue in queues:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream_name(queue))


async def test_nats_delete_queue_deletes_the_stream(nats_url: str, run_id: str) -> None:
    """The stream (jobs, dead letters, both consumers) is gone; consumers end; a second
    delete and the delete of a queue never used are fine."""
    queue = f"{run_id}.jobs"
    try:
        async with NatsTransport.from_url(nats_url) as t, _jetstream(nats_url) as js:
            consumer, dead = await _exercise(t, queue)
            assert await _stream_exists(js, queue)
            await t.delete_queue(queue)
            with pytest.raises(nats.js.errors.NotFoundError):
                await js.stream_info(stream_name(queue))
            assert await _ended(consumer)
            assert await _ended(dead)
            await t.delete_queue(queue)
            await t.delete_queue(f"{run_id}.never")
            # The queue comes back empty on its next use, dedup window included.
            await t.enqueue(queue, b"fresh", message_id="m1")
            again = await t.consume(queue, OPTIONS)
            job = await _take(again)
            assert job.body == b"fresh"
            await job.ack()
            await t.delete_queue(queue)
            assert not await _stream_exists(js, queue)
    finally:
        await _drop_streams(nats_url, [queue])


async def test_nats_run_leaves_no_stream_of_its_own(nats_url: str) -> None:
    """A run deletes every stream of the queues it declared, all but the testee's."""
    names: list[str] = []
    factory = _noting(lambda: NatsTransport.from_url(nats_url), names)
    try:
        with anyio.fail_after(45):
            report = await run_suite(factory, PLAN, transport_label=nats_url,
                                     implementation="test")  # fmt: skip
        assert _outcomes(report) == dict.fromkeys(CHECKS, Outcome.PASS)
        assert names, "the checks declared no queue of their own"
        assert report.cleaned_queues is not None
        assert report.cleaned_queues >= len(names)
        assert report.cleanup_failures == 0
        async with _jetstream(nats_url) as js:
            streams = [info.config.name or "" for info in await js.streams_info()]
            prefixes = {p.replace(".", "_") for p in _run_ids(names)}
            left = [s for s in streams if any(p in s for p in prefixes)]
            assert left == []
            assert await _stream_exists(js, TESTEE_QUEUE)  # an external testee may consume it
    finally:
        await _drop_streams(nats_url, names)


# -- RabbitMQ --------------------------------------------------------------------------------


def _amqp_names(queues: Iterable[str]) -> list[str]:
    """The broker queues a queue can make: work, dead letters, the delay queues of DELAY_MS."""
    return [
        name
        for queue in queues
        for name in (
            work_queue(queue),
            dead_letter_queue(queue),
            delay_queue(queue, DELAY_MS),
            delay_queue(queue, DELAY_MS, dead=True),
        )
    ]


async def _existing(url: str, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that a passive declare finds."""
    found = []
    connection = await aio_pika.connect(url)
    async with connection:
        for name in names:
            channel = await connection.channel()  # a failed passive declare closes it
            try:
                await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                continue
            found.append(name)
            await channel.close()
    return found


async def _drop_queues(url: str, queues: Iterable[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in _amqp_names(queues):
            await channel.queue_delete(name)


async def test_rabbitmq_delete_queue_deletes_work_dead_and_delay_queues(
    amqp_url: str, run_id: str
) -> None:
    """The work queue, its dead-letter queue and its delay queue are gone; consumers end; a
    second delete and the delete of a queue never used are fine."""
    queue = f"{run_id}.jobs"
    try:
        async with RabbitMQTransport.from_url(amqp_url) as t:
            consumer, dead = await _exercise(t, queue)
            made = [work_queue(queue), dead_letter_queue(queue), delay_queue(queue, DELAY_MS)]
            assert await _existing(amqp_url, made) == made
            await t.delete_queue(queue)
            assert await _existing(amqp_url, _amqp_names([queue])) == []
            assert await _ended(consumer)
            assert await _ended(dead)
            await t.delete_queue(queue)
            await t.delete_queue(f"{run_id}.never")
            assert await _existing(amqp_url, _amqp_names([f"{run_id}.never"])) == []
            # The queue comes back empty on its next use, dedup window included.
            await t.enqueue(queue, b"fresh", message_id="m1")
            again = await t.consume(queue, OPTIONS)
            job = await _take(again)
            assert job.body == b"fresh"
            await job.ack()
    finally:
        await _drop_queues(amqp_url, [queue])


async def test_rabbitmq_delete_queue_from_another_transport(amqp_url: str, run_id: str) -> None:
    """A fresh transport of the same process finds the delay queues another one declared."""
    queue = f"{run_id}.jobs"
    try:
        async with RabbitMQTransport.from_url(amqp_url) as t:
            await _exercise(t, queue)
        async with RabbitMQTransport.from_url(amqp_url) as fresh:
            await fresh.delete_queue(queue)
        assert await _existing(amqp_url, _amqp_names([queue])) == []
    finally:
        await _drop_queues(amqp_url, [queue])


async def test_rabbitmq_run_leaves_no_queue_of_its_own(amqp_url: str) -> None:
    """A run deletes the work, dead-letter and delay queues of the queues it declared."""
    names: list[str] = []
    factory = _noting(lambda: RabbitMQTransport.from_url(amqp_url), names)
    try:
        with anyio.fail_after(45):
            report = await run_suite(factory, PLAN, transport_label="amqp://127.0.0.1",
                                     implementation="test")  # fmt: skip
        assert _outcomes(report) == dict.fromkeys(CHECKS, Outcome.PASS)
        assert names, "the checks declared no queue of their own"
        assert report.cleaned_queues is not None
        assert report.cleaned_queues >= len(names)
        assert report.cleanup_failures == 0
        assert await _existing(amqp_url, _amqp_names(names)) == []
        assert await _existing(amqp_url, [work_queue(TESTEE_QUEUE)]) == [work_queue(TESTEE_QUEUE)]
    finally:
        await _drop_queues(amqp_url, names)
