"""Deleting queues: the memory transport's ``delete_queue`` and the runner's cleanup.

``delete_queue`` is an optional transport operation (spec/transport.md, Work queues, the note
after TRN-019); the conformance runner uses it to delete the queues a run declared
(conformance/llmproto_conformance/_cleanup.py). The broker tests are in
tests/brokers/test_cleanup_brokers.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from llmproto_conformance._cleanup import NotingTransport, QueueLog, delete_queues
from llmproto_conformance._context import TESTEE_QUEUE
from llmproto_conformance._model import Outcome, Profile
from llmproto_conformance._recording import RecordingTransport
from llmproto_conformance._runner import RunPlan, run_suite
from llmproto_ref import Consumer, ErrorCode, Job, QueueOptions, Transport, TransportError
from llmproto_ref._memory import MemoryBroker, MemoryTransport

pytestmark = pytest.mark.anyio
WAIT = 3.0
OPTIONS = QueueOptions(prefetch=4, lease_ms=5_000, max_deliveries=3)
#: Checks that declare queues of their own (``llmp.check.…``), and one on the testee's queue.
QUEUE_CHECKS = frozenset({"trn-enqueue-stored", "trn-delayed-nack", "trn-dead-letter",
                          "wq-job-result"})  # fmt: skip
QUEUE_PLAN = RunPlan(profiles=frozenset({Profile.QUEUE, Profile.TRANSPORT}),
                     check_ids=QUEUE_CHECKS)  # fmt: skip


@pytest.fixture
def broker_name() -> Iterator[str]:
    """A broker name no other test uses, forgotten afterwards."""
    name = f"t{uuid.uuid4().hex}"
    yield name
    MemoryBroker.reset(name)


@pytest.fixture
async def transport(broker_name: str) -> AsyncIterator[MemoryTransport]:
    """An open memory transport on a fresh broker."""
    async with MemoryTransport(broker_name) as t:
        yield t


async def _next(consumer: Consumer) -> Job | None:
    """The next job of ``consumer``, ``None`` when its iteration ended."""
    with anyio.fail_after(WAIT):
        async for job in consumer:
            return job
    return None


# -- the memory transport's delete_queue ---------------------------------------------------


async def test_delete_queue_removes_the_queue_and_its_dead_letters(
    transport: MemoryTransport,
) -> None:
    """What enqueue, consume, nack(delay) and terminate made is gone; consumers end."""
    await transport.enqueue("work.q", b"delayed", message_id="m1")
    await transport.enqueue("work.q", b"dead", message_id="m2")
    await transport.enqueue("work.q", b"waiting", message_id="m3")
    consumer = await transport.consume("work.q", OPTIONS)
    first = await _next(consumer)
    second = await _next(consumer)
    assert first is not None
    assert second is not None
    await first.nack(delay_ms=60_000)
    await second.terminate(reason="no")
    dead = await transport.dead_letters("work.q")
    letter = await _next(dead)
    assert letter is not None
    assert letter.reason == "terminated: no"
    broker = transport.broker
    assert "work.q" in broker.queue_names
    before = broker.stats

    await transport.delete_queue("work.q")

    assert "work.q" not in broker.queue_names
    assert await _next(consumer) is None  # consumers still open on it end
    assert await _next(dead) is None
    await letter.ack()  # a settle of a delivery of a deleted queue is stale: no error
    assert broker.stats.dead_lettered == before.dead_lettered  # counters keep what it counted
    assert broker.stats.stale_settles >= before.stale_settles
    # The queue comes back empty: no job, delayed job or dead letter of the old one.
    await transport.enqueue("work.q", b"fresh", message_id="m1")  # dedup window forgotten
    again = await transport.consume("work.q", OPTIONS)
    job = await _next(again)
    assert job is not None
    assert job.body == b"fresh"
    await job.ack()
    with anyio.move_on_after(0.1):
        extra = await _next(await transport.dead_letters("work.q"))
        pytest.fail(f"a dead letter survived the deletion: {extra}")


async def test_delete_queue_of_a_missing_queue_is_fine(transport: MemoryTransport) -> None:
    """Deleting a queue that does not exist (or no longer exists) is not an error."""
    await transport.delete_queue("never.used")
    await transport.enqueue("once", b"x", message_id="m")
    await transport.delete_queue("once")
    await transport.delete_queue("once")
    assert "once" not in transport.broker.queue_names


async def test_delete_queue_ends_consumers_of_other_transports(broker_name: str) -> None:
    """The queue belongs to the broker: a consumer on another transport ends as well."""
    async with MemoryTransport(broker_name) as a, MemoryTransport(broker_name) as b:
        consumer = await b.consume("shared.q", OPTIONS)
        async with anyio.create_task_group() as tg:
            ended = anyio.Event()

            async def wait() -> None:
                assert await _next(consumer) is None
                ended.set()

            tg.start_soon(wait)
            await anyio.sleep(0.01)  # the consumer is waiting for a job
            await a.delete_queue("shared.q")
            with anyio.fail_after(WAIT):
                await ended.wait()


async def test_delete_queue_raises_only_transport_errors(broker_name: str) -> None:
    """A malformed name is INVALID_PARAMS; a transport not open is UNAVAILABLE."""
    async with MemoryTransport(broker_name) as t:
        with pytest.raises(TransportError) as caught:
            await t.delete_queue("bad name")
        assert caught.value.code is ErrorCode.INVALID_PARAMS
    with pytest.raises(TransportError) as caught:
        await t.delete_queue("closed.q")
    assert caught.value.code is ErrorCode.UNAVAILABLE


# -- noting the queues a run uses ----------------------------------------------------------


async def test_noting_transport_notes_every_queue_it_is_given(broker_name: str) -> None:
    """enqueue, consume and dead_letters are noted once each, malformed names not at all."""
    log = QueueLog()
    opened: Transport = log.wrap(lambda: MemoryTransport(broker_name))()
    assert isinstance(opened, NotingTransport)
    async with opened as t:
        assert t.name == f"memory://{broker_name}"
        assert t.capabilities.durable_queues
        await t.enqueue("q.a", b"x", message_id="m")
        consumer = await t.consume("q.b", OPTIONS)
        await consumer.aclose()
        dead = await t.dead_letters("q.c")
        await dead.aclose()
        await t.enqueue("q.a", b"y", message_id="n")
        with pytest.raises(TransportError):
            await t.enqueue("bad name", b"z", message_id="o")
        # Everything else passes through untouched.
        inbox = await t.open_inbox()
        sub = await t.serve("svc.op", group="g")
        await t.send_request("svc.op", b"req", reply_to=inbox.address, message_id="r")
        await t.send_reply(inbox.address, b"reply")
        events = await t.subscribe_events("evt.>")
        await t.publish_event("evt.x", b"e")
        cancels = await t.serve_cancels("svc.*")
        await t.publish_cancel("svc.op", b"c")
        for subscription in (inbox.subscription, sub, events, cancels):
            with anyio.fail_after(WAIT):
                async for delivery in subscription:
                    assert delivery.body in (b"req", b"reply", b"e", b"c")
                    break
            await subscription.aclose()
    assert log.names == ["q.a", "q.b", "q.c"]


async def test_delete_queues_without_delete_queue_leaves_everything(broker_name: str) -> None:
    """A binding that does not offer delete_queue is not cleaned up: ``None``."""
    assert await delete_queues(lambda: RecordingTransport(MemoryTransport(broker_name)),
                               ["q.a"]) is None  # fmt: skip


async def test_delete_queues_of_no_queue_makes_no_transport() -> None:
    """A run that declared no queue has nothing to delete and opens nothing for it."""

    def factory() -> Transport:
        raise AssertionError("no transport is needed")

    cleanup = await delete_queues(factory, [])
    assert cleanup is not None
    assert (cleanup.deleted, cleanup.failed) == (0, 0)


# -- the runner's cleanup --------------------------------------------------------------------


def _check_queues(broker_name: str) -> list[str]:
    return sorted(q for q in MemoryBroker.named(broker_name).queue_names if "llmp.check" in q)


async def test_a_run_leaves_no_queue_of_its_own(broker_name: str) -> None:
    """After a run, only the testee's queue is left; the report counts what was deleted."""
    report = await run_suite(lambda: MemoryTransport(broker_name), QUEUE_PLAN,
                             transport_label="memory://x", implementation="test")  # fmt: skip
    assert {r.check.id: r.outcome for r in report.checks} == dict.fromkeys(
        QUEUE_CHECKS, Outcome.PASS
    )
    assert _check_queues(broker_name) == []
    assert MemoryBroker.named(broker_name).queue_names == {TESTEE_QUEUE}  # kept for the testee
    assert report.cleaned_queues is not None
    assert report.cleaned_queues >= 3
    assert report.cleanup_failures == 0
    document = report.to_json()
    assert document["cleaned_queues"] == report.cleaned_queues
    assert document["cleanup_failures"] == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio: see below
async def test_a_cancelled_run_still_deletes_its_queues(broker_name: str) -> None:
    """Cancelled while a check runs, the run deletes the queues it had declared so far.

    Asyncio only: on trio, cancelling a run in the middle trips over the nesting of the
    Service's and Client's task groups while they shut down, before the cleanup starts.
    """
    seen: list[str] = []
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while not (names := _check_queues(broker_name)):
                    await anyio.sleep(0.001)
                seen.extend(names)
                scope.cancel()

            tg.start_soon(watch)
            await run_suite(lambda: MemoryTransport(broker_name), QUEUE_PLAN,
                            transport_label="memory://x", implementation="test")  # fmt: skip
            pytest.fail("the run ended before any check declared a queue")
    assert scope.cancelled_caught
    assert seen
    assert _check_queues(broker_name) == []


class _Stubborn(MemoryTransport):
    """A memory transport whose delete_queue fails for the queues of one check."""

    async def delete_queue(self, queue: str) -> None:
        if queue.endswith(".q"):
            raise TransportError(ErrorCode.UNAVAILABLE, "cannot delete it")
        await super().delete_queue(queue)


async def test_failed_deletions_are_counted_not_raised(broker_name: str) -> None:
    """A deletion that fails leaves the queue and counts it; the run's verdict is unchanged."""
    report = await run_suite(lambda: _Stubborn(broker_name), QUEUE_PLAN,
                             transport_label="memory://x", implementation="test")  # fmt: skip
    assert report.ok
    left = _check_queues(broker_name)
    assert left
    assert all(q.endswith(".q") for q in left)
    assert report.cleanup_failures == len(left)


async def test_a_binding_without_delete_queue_is_reported_as_not_cleaned(
    broker_name: str,
) -> None:
    """No delete_queue: the queues stay, and report.json is as before (no cleanup members)."""
    report = await run_suite(lambda: RecordingTransport(MemoryTransport(broker_name)),
                             QUEUE_PLAN, transport_label="memory://x",
                             implementation="test")  # fmt: skip
    assert report.ok
    assert _check_queues(broker_name) != []
    assert report.cleaned_queues is None
    assert "cleaned_queues" not in report.to_json()
