"""Work queues of the NATS transport on JetStream (spec/bindings/nats.md, Work queues).

Theory of operation
-------------------
Each queue Q has one stream, named :func:`stream_name` (Q), holding exactly two subjects:
``llmp.wq.<Q>`` (its jobs) and ``llmp.dlq.<Q>`` (its dead letters), with work-queue retention
and file storage [NATS-021]. Two durable pull consumers share it without overlapping: ``work``
filters the jobs and ``dead`` the dead letters. Enqueue is a JetStream publish carrying
``Nats-Msg-Id`` [NATS-022]; it returns only after the PubAck, and a PubAck marked duplicate is a
success [NATS-023].

The consumer (:class:`PullConsumer`) does not use nats-py's ``fetch``, which waits for a whole
batch: it keeps pull requests outstanding on a private inbox for as many jobs as readers are
waiting for (never more than the prefetch leaves room for), and hands each job over the moment
it arrives. Pulling only for waiting readers is what lets a worker whose handler slots are all
busy leave the next jobs to other workers [WQ-006]. The
server answers an expired pull with a ``408`` status that says how many deliveries it did not
use, and a consumer that hears nothing for a while (a lost connection eats pull requests)
forgets its outstanding credit and pulls afresh.

Leases are the consumer's ``ack_wait`` [NATS-024]; ``extend_lease`` sends ``+WPI``
[NATS-025]. The consumer's ``max_deliver`` is one more than the queue's delivery limit, so
the binding itself sees a job that has used up its deliveries: a nack on the last allowed
delivery, a terminate, or a delivery beyond the limit (its lease ran out on the last one)
publishes the job to ``llmp.dlq.<Q>`` with ``llmp-dead-reason`` and then terminates it with
``+TERM`` [NATS-026]. A job is settled once: a second settle, or one after the job's lease ran
out on this side, is *stale*, changes nothing and is counted, so a slow worker never settles
the redelivery another worker holds.

Deleting a queue (the optional ``delete_queue``) deletes its stream, which takes its jobs, its
dead letters and both durable consumers with it; the next use creates them afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from typing import TYPE_CHECKING

import nats.aio.msg
import nats.errors
import nats.js.api
import nats.js.errors
import orjson

from llmproto_nats._errors import translated
from llmproto_nats._mapping import (
    HEADER_DEAD_REASON,
    HEADER_MSG_ID,
    dead_letter_subject,
    encode_header_value,
    queue_subject,
)
from llmproto_nats._subscription import header_value
from llmproto_ref import Job, QueueOptions, TransportError

if TYPE_CHECKING:
    from llmproto_nats._transport import NatsTransport

__all__: tuple[str, ...] = ()  # internal to the transport

WORK_CONSUMER = "work"  #: durable consumer of a queue's jobs
DEAD_CONSUMER = "dead"  #: durable consumer of a queue's dead letters
MAX_DELIVERIES = "max_deliveries"  #: dead-letter reason of a job out of deliveries
_PULL_EXPIRES_S = 2.0  #: lifetime of one pull request
_SILENCE_S = _PULL_EXPIRES_S + 2.0  #: no word from the server this long: pull afresh
_LEASE_MARGIN_S = 0.05  #: the server's ack_wait started before the job reached us
#: Options of a dead-letter queue's consumer: a dead letter is never dead-lettered again.
DEAD_OPTIONS = QueueOptions(prefetch=16, lease_ms=30_000, max_deliveries=1_000_000)


def stream_name(queue: str) -> str:
    """The stream of ``queue``: readable, and distinct for distinct names (``a.b`` vs ``a_b``)."""
    digest = hashlib.sha256(queue.encode()).hexdigest()[:12]
    return f"LLMP_WQ_{queue.replace('.', '_')[:48]}_{digest}"


class QueueStreams:
    """Creates each queue's stream and consumers once per transport, on first use."""

    def __init__(self, transport: NatsTransport) -> None:
        self._transport = transport
        self._ready: set[str] = set()
        self._consumers: dict[tuple[str, str], nats.js.api.ConsumerInfo] = {}
        self._lock = asyncio.Lock()

    def forget(self) -> None:
        """Look the streams up again (after a reconnect a server may have lost them)."""
        self._ready.clear()
        self._consumers.clear()

    async def ensure_stream(self, queue: str) -> str:
        """The stream of ``queue``, created if it does not exist yet."""
        name = stream_name(queue)
        if name in self._ready:
            return name
        async with self._lock:
            if name in self._ready:
                return name
            js = self._transport.jetstream()
            subjects = [queue_subject(queue), dead_letter_subject(queue)]
            with translated(f"setting up the stream of queue {queue!r}"):
                try:
                    await js.stream_info(name)
                except nats.js.errors.NotFoundError:
                    with contextlib.suppress(nats.js.errors.BadRequestError):  # lost a race
                        await js.add_stream(
                            name=name,
                            subjects=subjects,
                            retention=nats.js.api.RetentionPolicy.WORK_QUEUE,
                            storage=nats.js.api.StorageType.FILE,
                            duplicate_window=self._transport.dedup_window_s,
                            max_msg_size=self._transport.capabilities.max_payload,
                        )
                    await js.stream_info(name)
            self._ready.add(name)
            return name

    async def delete_stream(self, queue: str) -> None:
        """Delete the stream of ``queue`` with its consumers; one that does not exist is fine."""
        name = stream_name(queue)
        js = self._transport.jetstream()
        async with self._lock:
            try:
                with (
                    translated(f"deleting the stream of queue {queue!r}"),
                    contextlib.suppress(nats.js.errors.NotFoundError),
                ):
                    await js.delete_stream(name)
            finally:  # even when the outcome is unknown: the next use looks the stream up
                self._ready.discard(name)
                for key in [k for k in self._consumers if k[0] == name]:
                    del self._consumers[key]

    async def ensure_consumer(
        self, queue: str, durable: str, options: QueueOptions
    ) -> nats.js.api.ConsumerInfo:
        """The durable consumer; the first one's lease and delivery limit win, as on memory."""
        stream = await self.ensure_stream(queue)
        key = (stream, durable)
        known = self._consumers.get(key)
        if known is not None:
            return known
        js = self._transport.jetstream()
        subject = queue_subject(queue) if durable == WORK_CONSUMER else dead_letter_subject(queue)
        config = nats.js.api.ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=nats.js.api.AckPolicy.EXPLICIT,
            deliver_policy=nats.js.api.DeliverPolicy.ALL,
            ack_wait=options.lease_ms / 1000,
            max_deliver=options.max_deliveries + 1,
            max_ack_pending=20_000,
            max_waiting=4_096,
        )
        with translated(f"setting up the consumer of queue {queue!r}"):
            try:
                info: nats.js.api.ConsumerInfo = await js.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                with contextlib.suppress(nats.js.errors.BadRequestError):  # lost a race
                    await js.add_consumer(stream, config)
                info = await js.consumer_info(stream, durable)
        self._consumers[key] = info
        return info


class NatsJob:
    """One delivery of a JetStream consumer as a contract :class:`~llmproto_ref.Job`."""

    __slots__ = ("_consumer", "_msg", "_settled", "delivery_count", "lease_until", "reason")

    def __init__(self, consumer: PullConsumer, msg: nats.aio.msg.Msg, count: int) -> None:
        self._consumer = consumer
        self._msg = msg
        self._settled = False
        self.lease_until = time.monotonic() + consumer.lease_s - _LEASE_MARGIN_S
        self.delivery_count = count
        raw = msg.headers.get(HEADER_DEAD_REASON) if msg.headers else None
        self.reason = None if raw is None else header_value(raw)

    @property
    def body(self) -> bytes:
        return self._msg.data

    def _take(self) -> bool:
        """Claim the one settle; ``False`` (and counted) when the job is no longer ours."""
        if self._settled or time.monotonic() > self.lease_until:
            self._consumer.stale_settles += 1
            self._settled = True
            self._consumer.settled(self)
            return False
        self._settled = True
        self._consumer.settled(self)
        return True

    async def ack(self) -> None:
        if self._take():
            with (
                translated("acknowledging a job"),
                contextlib.suppress(nats.errors.MsgAlreadyAckdError),
            ):
                await self._msg.ack()

    async def nack(self, *, delay_ms: int = 0) -> None:
        if self.delivery_count >= self._consumer.max_deliveries:
            await self._dead_letter(MAX_DELIVERIES)
            return
        if self._take():
            with (
                translated("returning a job"),
                contextlib.suppress(nats.errors.MsgAlreadyAckdError),
            ):
                await self._msg.nak(delay=delay_ms / 1000 if delay_ms > 0 else None)

    async def terminate(self, *, reason: str) -> None:
        await self._dead_letter(f"terminated: {reason}")

    async def extend_lease(self) -> None:
        if self._settled or time.monotonic() > self.lease_until:
            self._consumer.stale_settles += 1
            return
        with translated("extending a job's lease"):
            await self._msg.in_progress()
        self.lease_until = time.monotonic() + self._consumer.lease_s - _LEASE_MARGIN_S

    async def release(self) -> None:
        """The consumer closed before this job was settled: hand it back (-NAK) at once."""
        if self._settled:
            return
        self._settled = True
        with contextlib.suppress(Exception):
            await self._msg.nak()

    async def _dead_letter(self, reason: str) -> None:
        if self._consumer.is_dead_letter_queue:  # a dead letter is never dead-lettered again
            if self._take():
                with (
                    translated("terminating a dead letter"),
                    contextlib.suppress(nats.errors.MsgAlreadyAckdError),
                ):
                    await self._msg.term()
            return
        if self._settled or time.monotonic() > self.lease_until:
            self._consumer.stale_settles += 1
            return
        await self._consumer.move_to_dead_letters(self._msg, reason)
        if self._take():
            with (
                translated("terminating a job"),
                contextlib.suppress(nats.errors.MsgAlreadyAckdError),
            ):
                await self._msg.term()


class PullConsumer:
    """A durable pull consumer as a contract :class:`~llmproto_ref.Consumer`."""

    def __init__(
        self,
        transport: NatsTransport,
        queue: str,
        durable: str,
        options: QueueOptions,
        info: nats.js.api.ConsumerInfo,
    ) -> None:
        self._transport = transport
        self.queue = queue
        self.durable = durable
        self.is_dead_letter_queue = durable == DEAD_CONSUMER
        self.prefetch = options.prefetch
        config = info.config
        self.lease_s = float(config.ack_wait or options.lease_ms / 1000)
        limit = config.max_deliver
        self.max_deliveries = limit - 1 if limit and limit > 1 else options.max_deliveries
        self.stale_settles = 0
        self._stream = info.stream_name
        self._jobs: asyncio.Queue[NatsJob | None] = asyncio.Queue()
        self._held: set[NatsJob] = set()  # handed out or queued, not yet settled
        self._returned: set[asyncio.Task[None]] = set()  # -NAKs of deliveries over prefetch
        self._credit = 0  # deliveries requested and not yet delivered or expired
        self._waiting = 0  # readers waiting in __anext__ for a job
        self._heard = time.monotonic()
        self._wake = asyncio.Event()
        self._closed = False
        self._inbox = ""
        self._sub: object | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        nc = self._transport.connection()
        self._inbox = nc.new_inbox()
        with translated(f"consuming queue {self.queue!r}"):
            self._sub = await nc.subscribe(self._inbox, cb=self._on_message)
        self._task = asyncio.get_running_loop().create_task(self._pull_loop())

    # -- the pull loop ---------------------------------------------------------------------

    async def _pull_loop(self) -> None:
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self.durable}"
        nc = self._transport.connection()
        while not self._closed:
            if time.monotonic() - self._heard > _SILENCE_S:
                self._credit = 0  # the pulls were lost (a reconnect, a restarted server)
                self._heard = time.monotonic()
            # A job whose lease ran out is no longer held: the server redelivers it.
            now = time.monotonic()
            for job in [j for j in self._held if j.lease_until < now]:
                self._held.discard(job)
            # Pull only for readers that wait: a worker asks for a job when a handler slot is
            # free, so jobs it cannot start yet stay with the server for others [WQ-006].
            room = min(self.prefetch - len(self._held), self._waiting) - self._credit
            if room > 0 and nc.is_connected:
                request = {"batch": room, "expires": int(_PULL_EXPIRES_S * 1e9)}
                try:
                    await nc.publish(subject, orjson.dumps(request), reply=self._inbox)
                    self._credit += room
                except (nats.errors.Error, OSError):
                    pass  # not connected: try again after the wait below
            self._wake.clear()
            wait_s = 1.0
            if self._held:
                wait_s = max(0.01, min(wait_s, min(j.lease_until for j in self._held) - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait_s)

    async def _on_message(self, msg: nats.aio.msg.Msg) -> None:
        self._heard = time.monotonic()
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status is not None and not msg.data:
            if status.startswith("100"):
                return  # idle heartbeat
            pending = headers.get("Nats-Pending-Messages") if headers else None
            if pending is not None and pending.isdigit():
                self._credit = max(0, self._credit - int(pending))
            else:
                self._credit = 0
            self._wake.set()
            return
        self._credit = max(0, self._credit - 1)
        try:
            count = msg.metadata.num_delivered or 1
        except (nats.errors.Error, ValueError, IndexError):
            return  # not a JetStream delivery
        if count > self.max_deliveries and not self.is_dead_letter_queue:
            # Its lease ran out on the last allowed delivery: dead-letter it, never run it.
            asyncio.get_running_loop().create_task(self._expire(msg))
            self._wake.set()
            return
        if len(self._held) >= self.prefetch:
            # A pull from before a reconnect was served as well: never hold more than the
            # prefetch; hand the job back at once [NATS-035, TRN-014].
            self._returned.add(asyncio.get_running_loop().create_task(msg.nak()))
            self._returned = {t for t in self._returned if not t.done()}
            return
        job = NatsJob(self, msg, count)
        self._held.add(job)
        self._jobs.put_nowait(job)

    def reconnected(self) -> None:
        """The connection is back: its earlier pull requests may be forgotten (a restarted
        server keeps none), so count none as outstanding and pull again at once [NATS-035]."""
        self._credit = 0
        self._heard = time.monotonic()
        self._wake.set()

    async def _expire(self, msg: nats.aio.msg.Msg) -> None:
        try:
            await self.move_to_dead_letters(msg, MAX_DELIVERIES)
            with translated("terminating a job"):
                await msg.term()
        except TransportError:
            pass  # the server redelivers it (max_deliver is one more); a later try moves it

    def settled(self, job: NatsJob) -> None:
        self._held.discard(job)
        self._wake.set()

    async def move_to_dead_letters(self, msg: nats.aio.msg.Msg, reason: str) -> None:
        """Publish ``msg``'s job to the queue's dead letters with ``reason`` [NATS-026]."""
        msg_id = msg.headers.get(HEADER_MSG_ID, "") if msg.headers else ""
        headers = {HEADER_DEAD_REASON: encode_header_value(reason)}
        if msg_id:
            headers[HEADER_MSG_ID] = msg_id + "~dead"
        js = self._transport.jetstream()
        with translated(f"dead-lettering a job of queue {self.queue!r}"):
            await js.publish(
                dead_letter_subject(self.queue),
                msg.data,
                headers=headers,
                timeout=self._transport.request_timeout_s,
                stream=self._stream,
            )

    # -- the Consumer interface ------------------------------------------------------------

    def __aiter__(self) -> PullConsumer:
        return self

    async def __anext__(self) -> Job:
        if self._jobs.empty():
            self._waiting += 1
            self._wake.set()
            try:
                job = await self._jobs.get()
            finally:
                self._waiting -= 1
        else:
            job = self._jobs.get_nowait()
        if job is None:
            self._jobs.put_nowait(None)
            raise StopAsyncIteration
        return job

    async def aclose(self) -> None:
        """Stop pulling; jobs held and unsettled return after their lease (JetStream's rule)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._jobs.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        sub = self._sub
        self._sub = None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()  # type: ignore[attr-defined]
        # Unsettled jobs go back to the queue at once (-NAK), as on memory; their delivery
        # still counts.
        held, self._held = list(self._held), set()
        for job in held:
            await job.release()

    def end(self) -> None:
        """The transport is closing: end iteration and pulling without I/O."""
        self._closed = True
        self._wake.set()
        self._jobs.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
