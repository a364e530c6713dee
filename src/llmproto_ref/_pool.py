"""Reusable tasks of the runtime: the handler pool, the deadline timer, the lease keeper.

Theory of operation
-------------------
Starting an anyio task costs about 25 µs here, more than decoding, validating and encoding a
message together, so the service does not start one per message. A :class:`TaskPool` keeps the
tasks it started and hands each new job to an idle one; it starts another only when none is
idle, up to ``limit``. With every task busy, :meth:`TaskPool.submit` waits, which pushes back on
the intake loop that called it.

The hand-over is direct: an idle task waits on an event of its own, and :meth:`TaskPool.submit`
puts the job in its slot and sets the event, without a checkpoint on either side (a memory
object stream would add one to the sender and one to the receiver). A task that finishes a job
takes the oldest job waiting for a task before it goes idle, so a waiting submitter is released
in the order it came.

Entering and leaving an anyio cancel scope costs more than decoding a message (about 4 µs on
asyncio, 7 µs on trio here), so a pool task does not make one per job: it enters one scope and
runs job after job inside it, until a job cancels it; then it leaves it and enters a fresh one.
A job reaches that scope through :func:`current_job_scope` and :meth:`JobScope.claim`, cancels
it only while its cancellable part runs (the service: the handler), and once it was cancelled
calls :meth:`JobScope.shield` before it awaits anything more: the rest of the job runs shielded,
as it would have run outside a scope of its own, and the task leaves the shield after the job.

A cancel scope with a deadline costs a timer handle of the event loop on top of the scope
(about 3.5 µs here, twice a plain scope), per request. A :class:`DeadlineTimer` serves every
deadline of a client or service with one task and one heap instead: scheduling is a heap push,
an entry whose item is no longer live is skipped when it comes due, and the heap is rebuilt
without dead entries whenever it has doubled since the last rebuild. The task is woken only for
a deadline sooner than the one it sleeps until, so it mostly sleeps for a whole timeout.

A :class:`LeaseKeeper` likewise extends the leases of every running job of one worker from one
task, instead of a task group and a task per job [WQ-005]. All its jobs share one period, so they
are due in the order they were taken, and a job that ends waits for an extension of its lease
that is under way to stop before the job is settled, as a per-job task would have been stopped.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from llmproto_ref._clock import now_ms
from llmproto_ref._transport import Job as QueueJob
from llmproto_ref._transport import TransportError

__all__ = ("DeadlineTimer", "JobScope", "LeaseKeeper", "TaskPool", "current_job_scope")

Job = Callable[[], Awaitable[None]]
T = TypeVar("T")


class JobScope:
    """The cancel scope a pool task runs its jobs in (see the module notes)."""

    __slots__ = ("_claimable", "_shield", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()  #: entered by the pool task; replaced once cancelled
        self._claimable = False  #: a job runs and has not claimed the scope yet
        self._shield: anyio.CancelScope | None = None

    def claim(self) -> anyio.CancelScope | None:
        """The entered scope for the running job, once per job; ``None`` if not to be had.

        A second caller in the same job, or a task the job started (which inherits the
        context), gets ``None`` and must use a scope of its own.
        """
        if not self._claimable:
            return None
        self._claimable = False
        return self.scope

    def shield(self) -> None:
        """Shield the rest of the running job from the cancelled scope (until the job ends)."""
        if self._shield is None:
            shield = anyio.CancelScope(shield=True)
            shield.__enter__()
            self._shield = shield

    def job_started(self) -> None:
        """The pool task starts a job (it may claim the scope)."""
        self._claimable = True

    def job_ended(self) -> None:
        """The job ended: leave its shield, if it entered one."""
        self._claimable = False
        shield, self._shield = self._shield, None
        if shield is not None:  # the innermost scope again: the job's own scopes are closed
            shield.__exit__(None, None, None)


_JOB_SCOPE: contextvars.ContextVar[JobScope | None] = contextvars.ContextVar(
    "llmproto_job_scope", default=None
)


def current_job_scope() -> JobScope | None:
    """The :class:`JobScope` of the pool task running the caller, if a pool task runs it."""
    return _JOB_SCOPE.get()


class _Idle:
    """An idle task's slot: the job handed to it (``None``: the pool closed) and its wake-up."""

    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: Job | None = None
        self.wake = anyio.Event()


class TaskPool:
    """At most ``limit`` jobs at once, on reused tasks.

    A job holds one of the ``limit`` slots from the moment it is handed to a task until it
    ends; readers (:mod:`llmproto_ref._readers`) take a slot with :meth:`acquire_slot` for
    each delivery they run themselves, so the limit bounds both kinds together. A freed slot
    goes to the oldest waiter: a submitted job (run by the task that freed the slot, or handed
    to an idle one) or a reader.

    :param limit: most jobs running at once.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self.limit = limit
        self.active = 0  #: jobs handed over (or waiting for a slot) and not finished
        self.busy = 0  #: slots held: jobs handed to a task and readers' runs
        self.failures = 0  #: jobs that raised (a bug: the service's jobs catch what they expect)
        self._workers = 0
        self._idle: list[_Idle] = []  #: idle tasks, the most recently busy last
        #: what waits for a slot, oldest first: a job, or ``None`` for a reader
        self._waiting: deque[tuple[Job | None, anyio.Event]] = deque()
        self._closed = False
        self._drained: anyio.Event | None = None  #: made by wait_drained, set when active is 0
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> TaskPool:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True  # idle tasks end now; busy ones end after their job
        for idle in self._idle:
            idle.wake.set()
        self._idle.clear()
        if self._tg is not None:
            await self._tg.__aexit__(exc_type, exc, tb)

    def start_task(self, function: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``function`` in a task of the pool's task group (a reader's task)."""
        if self._tg is None:
            raise RuntimeError("the pool is not running")
        self._tg.start_soon(function)

    async def submit(self, job: Job) -> None:
        """Run ``job`` on an idle task, a new one, or the next to become free."""
        if self._tg is None or self._closed:
            raise RuntimeError("the pool is not running")
        self._began()
        if self.busy < self.limit:
            self.busy += 1
            self._hand(job)
            return
        await self._wait_for_slot(job)  # the task that frees a slot runs the job

    def take_slot(self) -> bool:
        """A slot for a reader about to run what it read, if one is free now."""
        if self.busy < self.limit:
            self.busy += 1
            self._began()
            return True
        return False

    async def acquire_slot(self) -> None:
        """A slot for a reader about to run what it read; waits while all are held."""
        if self.take_slot():
            return
        self._began()
        await self._wait_for_slot(None)

    async def _wait_for_slot(self, job: Job | None) -> None:
        """Queue for the next free slot: for ``job``, or (``None``) for the calling reader."""
        taken = anyio.Event()
        entry = (job, taken)
        self._waiting.append(entry)
        try:
            await taken.wait()
        except BaseException:
            if not taken.is_set():  # no slot came: withdraw
                self._waiting.remove(entry)
                self._done()
            elif job is None:
                self.release_slot()  # given to the reader as it was cancelled
            raise  # (a job given its slot runs on the task that freed it)

    def release_slot(self) -> None:
        """The reader's run ended: its slot goes to the oldest waiter, or is free."""
        self._done()
        job = self._slot_freed()
        if job is not None:
            self._hand(job)

    async def wait_drained(self, timeout: float = math.inf) -> bool:
        """Wait until no job runs, at most ``timeout`` seconds; ``True`` if drained."""
        if self.active == 0:
            return True
        drained = self._drained
        if drained is None:
            drained = self._drained = anyio.Event()
        with anyio.move_on_after(timeout):
            await drained.wait()
        return drained.is_set()

    def _began(self) -> None:
        self.active += 1

    def _done(self) -> None:
        self.active -= 1
        if self.active == 0 and self._drained is not None:
            self._drained.set()
            self._drained = None

    def _hand(self, job: Job) -> None:
        """Give ``job``, which holds a slot, to an idle task or a new one."""
        if self._idle:
            idle = self._idle.pop()
            idle.job = job
            idle.wake.set()
            return
        if self._tg is None:
            raise RuntimeError("the pool is not running")
        self._workers += 1
        self._tg.start_soon(self._work, job)

    def _slot_freed(self) -> Job | None:
        """A slot is free: the oldest waiter gets it; a job that got it is returned, for the
        caller to run or hand over. ``None``: the slot went to a reader, or is free."""
        if self._waiting:
            job, taken = self._waiting.popleft()
            taken.set()
            return job
        self.busy -= 1
        return None

    async def _work(self, first: Job) -> None:
        shared = JobScope()
        _JOB_SCOPE.set(shared)  # this task's own context; the jobs run in it
        job: Job | None = first
        try:
            while job is not None:
                with shared.scope as scope:
                    cancelled, job = await self._run_jobs(job, shared, scope)
                if not cancelled:
                    return
                shared.scope = anyio.CancelScope()  # the scope was cancelled: a fresh one
                if job is None:
                    job = await self._next_job()
        finally:
            self._workers -= 1

    async def _run_jobs(
        self, job: Job, shared: JobScope, scope: anyio.CancelScope
    ) -> tuple[bool, Job | None]:
        """Run jobs in ``scope`` until one cancelled it (``True`` and the job to run next, if
        one has its slot already) or the pool closed (``False, None``)."""
        next_job: Job | None = job
        while next_job is not None:
            shared.job_started()
            try:
                await next_job()
            except Exception:  # noqa: BLE001 - keep the task; the job's owner counts failures
                self.failures += 1
            finally:
                shared.job_ended()
                self._done()
            next_job = self._slot_freed()
            if scope.cancel_called:
                return True, next_job
            if next_job is None:
                next_job = await self._next_job()
        return False, None

    async def _next_job(self) -> Job | None:
        """The next job handed over to this idle task; ``None`` once closed."""
        if self._closed:
            return None
        idle = _Idle()
        self._idle.append(idle)
        try:
            await idle.wake.wait()
        except BaseException:
            if idle in self._idle:
                self._idle.remove(idle)
            elif idle.job is not None:  # handed over as this task was cancelled: never runs
                self._done()
                if (job := self._slot_freed()) is not None:
                    self._hand(job)
            raise
        return idle.job


class DeadlineTimer(Generic[T]):
    """Calls ``on_due(item)`` once the wall clock reaches the deadline it was given.

    Deadlines are wall-clock instants [DL-001], so the timer keeps them in milliseconds since
    the epoch, as :class:`~llmproto_ref.Deadline` does, and sleeps for the difference. Run
    :meth:`run` in a task for as long as deadlines matter; cancel it to stop.

    :param on_due: what to do when an item's deadline passes (synchronous, must not raise).
    :param live: whether an item still matters; a dead item's entry is dropped unseen.
    """

    def __init__(self, on_due: Callable[[T], None], live: Callable[[T], bool]) -> None:
        self._on_due = on_due
        self._live = live
        self._heap: list[tuple[int, int, T]] = []
        self._order = itertools.count()  # ties never compare the items
        self._rebuild_at = 64
        self._wake: anyio.Event | None = None  #: set to make the task look again
        self._sleeping_until: float = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, at_ms: int, item: T) -> None:
        """Call ``on_due(item)`` at ``at_ms`` (ms since the epoch) unless ``item`` is dead."""
        heap = self._heap
        heapq.heappush(heap, (at_ms, next(self._order), item))
        if len(heap) > self._rebuild_at:
            live = self._live
            heap[:] = [entry for entry in heap if live(entry[2])]
            heapq.heapify(heap)
            self._rebuild_at = 2 * len(heap) + 64
        if at_ms < self._sleeping_until and self._wake is not None:
            self._wake.set()  # sooner than the task sleeps: it must look again

    async def run(self) -> None:
        """Sleep until the earliest deadline, call what is due, repeat; never returns."""
        heap = self._heap
        while True:
            wake = self._wake = anyio.Event()
            # Sleep until the first entry even if its item is dead: a later deadline scheduled
            # meanwhile then needs no wake-up (an empty heap would need one for every entry).
            self._sleeping_until = heap[0][0] if heap else math.inf
            delay = (self._sleeping_until - now_ms()) / 1000
            if delay > 0:
                with anyio.move_on_after(delay):
                    await wake.wait()
            else:
                await anyio.lowlevel.checkpoint()
            now = now_ms()
            while heap and heap[0][0] <= now:
                item = heapq.heappop(heap)[2]
                if self._live(item):
                    self._on_due(item)


class _Lease:
    """One held job: when its lease is next extended, and the extension under way, if any."""

    __slots__ = ("due", "extending", "job", "stopped")

    def __init__(self, job: QueueJob, due: float) -> None:
        self.job = job
        self.due = due  #: anyio time of the next extension
        self.extending: anyio.CancelScope | None = None
        self.stopped: anyio.Event | None = None  #: set when the extension under way ended


class LeaseKeeper:
    """Extends each held job's lease every third of ``lease_ms`` until it is released [WQ-005].

    Run :meth:`run` in a task while jobs may be held; :meth:`hold` a job when its handler
    starts and ``await`` :meth:`release` before settling it.
    """

    def __init__(self, lease_ms: int) -> None:
        self._period = max(0.01, lease_ms / 3000)
        self._held: OrderedDict[_Lease, None] = OrderedDict()  #: by due time (one period)
        self._wake: anyio.Event | None = None  #: set by hold() while run() waits for a job

    def hold(self, job: QueueJob) -> _Lease:
        """Start extending ``job``'s lease (the first extension one period from now)."""
        lease = _Lease(job, anyio.current_time() + self._period)
        self._held[lease] = None
        if self._wake is not None:
            self._wake.set()
        return lease

    async def release(self, lease: _Lease) -> None:
        """Stop extending; return once no extension of this lease is under way."""
        self._held.pop(lease, None)
        if lease.extending is not None and lease.stopped is not None:
            lease.extending.cancel()
            with anyio.CancelScope(shield=True):
                await lease.stopped.wait()

    async def run(self) -> None:
        """Extend what is due, in the order it is due; never returns."""
        held = self._held
        while True:
            if not held:
                wake = self._wake = anyio.Event()
                await wake.wait()  # only an empty keeper needs waking: later jobs are due later
                self._wake = None
                continue
            first = next(iter(held))
            await anyio.sleep(max(0.0, first.due - anyio.current_time()))  # maybe released
            now = anyio.current_time()
            while held:
                lease = next(iter(held))
                if lease.due > now:
                    break
                held.move_to_end(lease)
                lease.due = now + self._period
                await self._extend(lease)

    async def _extend(self, lease: _Lease) -> None:
        lease.extending, lease.stopped = anyio.CancelScope(), anyio.Event()
        try:
            with lease.extending:
                await lease.job.extend_lease()
        except TransportError:
            self._held.pop(lease, None)  # the lease is lost: stop extending it
        finally:
            lease.stopped.set()
            lease.extending = None
