"""Durable work queues of the memory transport (internal to :mod:`llmproto_ref._memory`).

Theory of operation
-------------------
A :class:`_WorkQueue` holds every job of one queue name: ``ready`` (deliverable now),
``delayed`` (a heap of jobs nacked with a delay), and ``leases`` (jobs delivered and not yet
settled, keyed by a delivery token that is unique per delivery). There are no background
tasks: every operation first calls :meth:`_WorkQueue.sweep`, which moves expired leases and
due delayed jobs back to ``ready`` (or to the dead-letter queue), and a consumer with nothing
to take sleeps on a fresh :class:`anyio.Event` for at most the time until the next lease or
delay falls due, then looks again. Events are created by the waiting task, never stored
across event loops, so a broker outlives the loop that created it.

Settling is by token: a settle whose token is no longer leased (settled already, lease
expired, consumer closed) is *stale*. A stale settle returns normally, changes nothing and is
counted in ``stale_settles``, so a late worker can neither crash nor settle the redelivery.
A settle after the lease deadline is stale even if nobody has taken the job again yet: the
lease is the only clock that decides.

Deleting a queue (:meth:`_WorkQueue.delete`) drops its jobs and those of its dead-letter queue
and marks both deleted: their consumers end, and a settle of one of their deliveries is stale.

Times are :func:`time.monotonic` seconds (independent of any event loop's clock).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.lowlevel

from llmproto_ref._registry import ErrorCode
from llmproto_ref._transport import Job, QueueOptions, TransportError

__all__: tuple[str, ...] = ()  # internal: the transport hands these out as Consumer and Job

#: Dead-letter reason of a job that failed ``max_deliveries`` times.
MAX_DELIVERIES = "max_deliveries"

#: Options of a dead-letter queue's consumers; a dead letter is never dead-lettered again.
DEAD_LETTER_OPTIONS = QueueOptions()

_tokens = itertools.count(1)


@dataclass(slots=True, kw_only=True)
class _Record:
    """One stored job (mutable: its delivery count grows)."""

    body: bytes
    message_id: str
    reason: str | None = None
    deliveries: int = 0


@dataclass(slots=True, kw_only=True)
class _Lease:
    """A delivered, unsettled job."""

    record: _Record
    consumer: _Consumer
    deadline: float


class _WorkQueue:
    """One queue's jobs; ``dead`` is its dead-letter queue (``None`` on a dead-letter queue)."""

    def __init__(self, name: str, *, source: _WorkQueue | None = None) -> None:
        dead_letter = source is not None
        self.name = name
        self.source = source  # on a dead-letter queue: the queue whose dead letters it holds
        self.configured = dead_letter  # set by the first consumer (see configure)
        self.lease_s = DEAD_LETTER_OPTIONS.lease_ms / 1000
        self.max_deliveries = DEAD_LETTER_OPTIONS.max_deliveries
        self.ready: deque[_Record] = deque()
        self.delayed: list[tuple[float, int, _Record]] = []
        self.leases: dict[int, _Lease] = {}
        self.lease_heap: list[tuple[float, int]] = []  # (deadline, token); stale entries skipped
        self.seen: dict[str, float] = {}  # message_id -> end of its dedup window
        self.waiters: set[anyio.Event] = set()
        self.dead: _WorkQueue | None = None if dead_letter else _WorkQueue(name, source=self)
        self.deleted = False  # set by delete: its consumers end
        # counters, summed into BrokerStats
        self.stale_settles = 0
        self.duplicates = 0
        self.expired_leases = 0
        self.dead_lettered = 0

    def configure(self, options: QueueOptions) -> None:
        """Take the lease and max_deliveries of the first consumer; later ones change nothing."""
        if not self.configured:
            self.configured = True
            self.lease_s = options.lease_ms / 1000
            self.max_deliveries = options.max_deliveries

    def delete(self) -> None:
        """Drop every job of this queue and of its dead-letter queue; end their consumers."""
        for queue in (self, self.dead):
            if queue is None:
                continue
            queue.deleted = True
            queue.ready.clear()
            queue.delayed.clear()
            queue.leases.clear()
            queue.lease_heap.clear()
            queue.seen.clear()
            queue.notify()

    # -- storing ---------------------------------------------------------------------------

    def put(self, body: bytes, message_id: str, window_s: float) -> None:
        """Store a job unless ``message_id`` was stored within its dedup window."""
        now = time.monotonic()
        seen = self.seen
        while seen:  # oldest first; windows may differ per transport, hence the re-check below
            oldest_id, until = next(iter(seen.items()))
            if until > now:
                break
            del seen[oldest_id]
        window_end = seen.get(message_id)
        if window_end is not None and window_end > now:
            self.duplicates += 1
            return
        seen.pop(message_id, None)
        seen[message_id] = now + window_s
        self.ready.append(_Record(body=body, message_id=message_id))
        self.notify()

    def dead_letter(self, record: _Record, reason: str) -> None:
        """Move ``record`` to the dead-letter queue with ``reason`` (on one, drop it)."""
        if self.dead is None:
            return
        self.dead_lettered += 1
        dead = _Record(body=record.body, message_id=record.message_id, reason=reason)
        self.dead.ready.append(dead)
        self.dead.notify()

    # -- time ------------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Apply every lease expiry and delay that fell due by ``now``.

        A dead-letter queue sweeps its source first: that is where its new jobs come from.
        """
        if self.source is not None:
            self.source.sweep(now)
        changed = False
        heap = self.lease_heap
        while heap and heap[0][0] <= now:
            deadline, token = heapq.heappop(heap)
            lease = self.leases.get(token)
            if lease is None or lease.deadline != deadline:
                continue  # settled or extended since
            del self.leases[token]
            lease.consumer.held -= 1
            self.expired_leases += 1
            self._fail(lease.record, front=True)
            changed = True
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            self.ready.append(heapq.heappop(delayed)[2])
            changed = True
        if changed:
            self.notify()

    def next_due(self, now: float) -> float | None:
        """Seconds until the next lease expiry or delayed job, ``None`` if nothing is pending."""
        heap = self.lease_heap
        while heap and (
            (lease := self.leases.get(heap[0][1])) is None or lease.deadline != heap[0][0]
        ):
            heapq.heappop(heap)
        due = min(
            heap[0][0] if heap else math.inf,
            self.delayed[0][0] if self.delayed else math.inf,
        )
        mine = None if due == math.inf else max(0.0, due - now)
        theirs = None if self.source is None else self.source.next_due(now)
        return theirs if mine is None else mine if theirs is None else min(mine, theirs)

    def notify(self) -> None:
        """Wake every consumer waiting on this queue."""
        for event in self.waiters:
            event.set()
        self.waiters.clear()

    async def wait(self, timeout: float | None) -> None:
        """Sleep until the queue changes or ``timeout`` seconds passed."""
        event = anyio.Event()
        self.waiters.add(event)
        try:
            with anyio.move_on_after(timeout):
                await event.wait()
        finally:
            self.waiters.discard(event)

    # -- delivering and settling -------------------------------------------------------------

    def take(self, consumer: _Consumer, now: float) -> _Job | None:
        """Lease the next ready job to ``consumer``."""
        if not self.ready:
            return None
        record = self.ready.popleft()
        record.deliveries += 1
        token = next(_tokens)
        deadline = now + self.lease_s
        self.leases[token] = _Lease(record=record, consumer=consumer, deadline=deadline)
        heapq.heappush(self.lease_heap, (deadline, token))
        consumer.held += 1
        return _Job(self, token, record)

    def release(self, token: int) -> _Lease | None:
        """End the lease ``token`` if it is still current; count a stale settle otherwise."""
        self.sweep(time.monotonic())
        lease = self.leases.pop(token, None)
        if lease is None:
            self.stale_settles += 1
            return None
        lease.consumer.held -= 1
        return lease

    def requeue(self, record: _Record, *, delay_ms: int) -> None:
        """A failed delivery: deliver again (after ``delay_ms``), or dead-letter it."""
        if delay_ms > 0 and not self._exhausted(record):
            due = time.monotonic() + delay_ms / 1000
            heapq.heappush(self.delayed, (due, next(_tokens), record))
        else:
            self._fail(record, front=False)
        self.notify()

    def _exhausted(self, record: _Record) -> bool:
        return self.dead is not None and record.deliveries >= self.max_deliveries

    def _fail(self, record: _Record, *, front: bool) -> None:
        if self._exhausted(record):
            self.dead_letter(record, MAX_DELIVERIES)
        elif front:
            self.ready.appendleft(record)
        else:
            self.ready.append(record)


class _Job:
    """One delivery of a job (a :class:`~llmproto_ref._transport.Job`)."""

    __slots__ = ("_queue", "_record", "_token", "delivery_count")

    def __init__(self, queue: _WorkQueue, token: int, record: _Record) -> None:
        self._queue = queue
        self._token = token
        self._record = record
        self.delivery_count = record.deliveries

    @property
    def body(self) -> bytes:
        """The envelope bytes."""
        return self._record.body

    @property
    def reason(self) -> str | None:
        """Why the job is on a dead-letter queue; ``None`` on an ordinary queue."""
        return self._record.reason

    async def ack(self) -> None:
        """Remove the job (a no-op, counted, when this delivery is stale)."""
        await anyio.lowlevel.checkpoint()
        if self._queue.release(self._token) is not None:
            self._queue.notify()

    async def nack(self, *, delay_ms: int = 0) -> None:
        """Deliver again after ``delay_ms``, or dead-letter after ``max_deliveries``."""
        if delay_ms < 0:
            raise TransportError(ErrorCode.INVALID_PARAMS, f"negative delay_ms {delay_ms}")
        await anyio.lowlevel.checkpoint()
        if (lease := self._queue.release(self._token)) is not None:
            self._queue.requeue(lease.record, delay_ms=delay_ms)

    async def terminate(self, *, reason: str) -> None:
        """Dead-letter the job with ``terminated: <reason>`` (on a dead-letter queue: drop it)."""
        await anyio.lowlevel.checkpoint()
        queue = self._queue
        if (lease := queue.release(self._token)) is not None:
            queue.dead_letter(lease.record, f"terminated: {reason}")
            queue.notify()

    async def extend_lease(self) -> None:
        """Restart the lease (a no-op, counted as a stale settle, when the delivery is stale)."""
        await anyio.lowlevel.checkpoint()
        queue = self._queue
        now = time.monotonic()
        queue.sweep(now)
        lease = queue.leases.get(self._token)
        if lease is None:
            queue.stale_settles += 1
            return
        lease.deadline = now + queue.lease_s
        heapq.heappush(queue.lease_heap, (lease.deadline, self._token))


class _Consumer:
    """A consumer of one queue (a :class:`~llmproto_ref._transport.Consumer`)."""

    __slots__ = ("_on_close", "_prefetch", "_queue", "closed", "held")

    def __init__(
        self, queue: _WorkQueue, prefetch: int, on_close: Callable[[_Consumer], None]
    ) -> None:
        self._queue = queue
        self._prefetch = prefetch
        self._on_close = on_close
        self.held = 0
        self.closed = False

    def __aiter__(self) -> _Consumer:
        return self

    async def __anext__(self) -> Job:
        await anyio.lowlevel.checkpoint()
        queue = self._queue
        while not self.closed and not queue.deleted:
            now = time.monotonic()
            queue.sweep(now)
            if self.held < self._prefetch and (job := queue.take(self, now)) is not None:
                return job
            await queue.wait(queue.next_due(now))
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop; this consumer's unsettled jobs go back to the queue at once (not dead-lettered)."""
        self.close()
        await anyio.lowlevel.cancel_shielded_checkpoint()

    def close(self) -> None:
        """Synchronous :meth:`aclose`."""
        if self.closed:
            return
        self.closed = True
        queue = self._queue
        mine = sorted(t for t, lease in queue.leases.items() if lease.consumer is self)
        for token in reversed(mine):  # appendleft in reverse keeps delivery order
            queue.ready.appendleft(queue.leases.pop(token).record)
        self.held = 0
        queue.notify()
        self._on_close(self)
