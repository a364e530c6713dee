"""Readers: tasks that read one subscription and run what they read themselves.

Theory of operation
-------------------
Handing each delivery from an intake task to a pool task costs a wake-up of the event loop
per message, and on this machine that hand-over was 40% of the service's CPU for a stream of
events. :class:`Readers` removes it (the leader/follower pattern): the task that takes a
delivery from the subscription runs its handler too, and another reader takes its place at
the subscription only when none is waiting there already.

A reader that takes a delivery first takes a slot of the pool's limit
(:meth:`~llmproto_ref._pool.TaskPool.acquire_slot`, shared with the pool's own jobs, so
``max_concurrency`` bounds both); while it waits for one it takes no further delivery, so with
every slot held the deliveries stay with the binding (back-pressure). Holding the slot, and
seeing no other reader waiting (and none on its way), it arms one: it wakes a reader idle for
this subscription or starts a task. Then it runs the handler and gives the slot back.
Afterwards it waits at the subscription again, unless :data:`WAITING` readers wait there
already, in which case it idles until armed. With one message at a time, two readers take
turns and no message costs more than the wake-up of the reader it arrives for; a burst is
run by the reader that is awake, one message after the other without a task switch
(yielding every :data:`YIELD_EVERY` messages so other tasks are not starved), while armed
readers take over whenever a handler waits for something.

Several tasks read one subscription at once, which the transport contract allows; an async
generator cannot be read that way, and the service keeps its single intake task for one.

Each reader task has a :class:`~llmproto_ref._pool.JobScope` as pool tasks do: a handler
claims it for cancellation, and a reader whose scope was cancelled makes a fresh one; a
delivery that came as the scope was cancelled is run in the fresh scope, not dropped.
:meth:`Readers.stop` (the service is stopping) cancels the readers waiting at the
subscription and ends the idle ones; a reader running a handler finishes it and then ends,
and a delivery still waiting for a slot is counted as unstarted instead of run. When the
subscription ends or fails, the readers read no more but run what they hold.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.lowlevel

from llmproto_ref._clock import now_us
from llmproto_ref._pool import _JOB_SCOPE, JobScope, TaskPool
from llmproto_ref._transport import Delivery

__all__ = ("WAITING", "YIELD_EVERY", "Readers")

WAITING = 2  #: readers kept waiting at one subscription once their handler ended
YIELD_EVERY = 64  #: deliveries one reader runs back to back before letting other tasks run

Run = Callable[[Delivery, int], Awaitable[None]]  #: handle a delivery received at a time (µs)
_log = logging.getLogger("llmproto_ref.service")


class Readers:
    """The readers of one subscription (see the module notes).

    :param pool: whose slots bound the runs and whose task group the readers live in.
    :param deliveries: the subscription's iterator; several tasks await it at once.
    :param run: what to do with each delivery and the time it was taken (``now_us``).
    :param on_failure: called once if the subscription fails (the readers then end).
    :param on_unstarted: called for a delivery taken while every slot was held, when the
        readers were stopped before one came free (it is not run: the service is stopping).
    """

    def __init__(
        self,
        pool: TaskPool,
        deliveries: AsyncIterator[Delivery],
        run: Run,
        on_failure: Callable[[Exception], None],
        on_unstarted: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._next = deliveries.__anext__
        self._run = run
        self._on_failure = on_failure
        self._on_unstarted = on_unstarted
        self._waiting: set[JobScope] = set()  #: readers awaiting a delivery
        self._coming = 0  #: readers armed that do not wait yet
        self._idle: list[anyio.Event] = []  #: readers waiting to be armed
        self._stopping = False  #: stop() was called: the service is stopping
        self._ended = False  #: the subscription ended or failed
        self.tasks = 0  #: reader tasks alive

    def start(self) -> None:
        """Start the first reader."""
        self._arm()

    def stop(self) -> None:
        """Stop reading: waiting readers are cancelled, idle ones end, running ones end after
        their handler. A delivery a reader holds without a slot yet is not run."""
        self._stopping = True
        for shared in self._waiting:
            shared.scope.cancel()
        self._wake_idle()

    def stopped(self) -> bool:
        """Whether the readers read no more (stopped, or the subscription ended)."""
        return self._stopping or self._ended

    def _end(self) -> None:
        """The subscription ended: no more reading; what readers hold still runs."""
        self._ended = True
        self._wake_idle()

    def _wake_idle(self) -> None:
        for wake in self._idle:
            wake.set()
        self._idle.clear()

    def _arm(self) -> None:
        self._coming += 1
        if self._idle:
            self._idle.pop().set()
        else:
            self.tasks += 1
            self._pool.start_task(self._read)

    async def _read(self) -> None:
        shared = JobScope()
        _JOB_SCOPE.set(shared)  # this task's own context; the handlers run in it
        armed = True  # started by _arm: counted in _coming until it waits
        held: _Held | None = None
        try:
            while True:
                given, held = held, None  # run once, even if the scope is cancelled meanwhile
                with shared.scope as scope:
                    held = await self._serve(shared, scope, armed=armed, held=given)
                armed = False
                shared.scope = anyio.CancelScope()  # cancelled: a fresh one, if it goes on
                if held is None and self.stopped():
                    return
        finally:
            self.tasks -= 1

    async def _serve(
        self, shared: JobScope, scope: anyio.CancelScope, *, armed: bool, held: _Held | None
    ) -> _Held | None:
        """Take and run deliveries in ``scope`` until the readers stop or the scope is
        cancelled; returns a delivery taken as the scope was cancelled, to be run in a fresh
        scope (``held``: one such delivery, run first)."""
        waiting = self._waiting
        in_row = 0
        if held is not None and not await self._run_one(held, shared):
            return None
        while True:
            if in_row >= YIELD_EVERY:
                in_row = 0
                await anyio.lowlevel.checkpoint()
            if self.stopped():
                return None
            waiting.add(shared)
            if armed:
                armed = False
                self._coming -= 1
            try:
                delivery = await self._next()
            except StopAsyncIteration:
                self._end()
                return None
            except Exception as exc:  # noqa: BLE001 - a broken binding ends only these readers
                if not self.stopped():
                    self._end()
                    self._on_failure(exc)
                return None
            finally:
                waiting.discard(shared)
            taken = _Held(delivery, now_us())
            if scope.cancel_called:  # cancelled as the delivery came: it runs in a fresh scope
                return taken
            if not await self._run_one(taken, shared):
                return None
            in_row += 1
            if _cancelled(scope):  # a cancel meant for the handler: go on in a fresh scope
                return None
            if len(waiting) + self._coming >= WAITING and not self.stopped():
                armed = await self._idle_until_armed()
                if not armed:
                    return None

    async def _run_one(self, held: _Held, shared: JobScope) -> bool:
        """Run one delivery in a slot of the pool, arming another reader first if none waits
        at the subscription; ``False`` if it was not run (the service is stopping).

        The slot comes first, so a reader waiting for one takes no further delivery: while
        every slot is held, deliveries stay with the binding (back-pressure).
        """
        pool = self._pool
        if not pool.take_slot():
            with anyio.CancelScope(shield=True):  # the delivery is taken: wait for a slot
                await pool.acquire_slot()
            if self._stopping:  # what has not started does not start now
                pool.release_slot()
                self._on_unstarted()
                return False
        if not self._waiting and not self._coming and not self.stopped():
            self._arm()  # someone must wait for the next delivery while this one runs
        shared.job_started()
        try:
            await self._run(held.delivery, held.received_us)
        except Exception:  # noqa: BLE001 - the service's runs catch what they expect
            pool.failures += 1
        finally:
            shared.job_ended()
            pool.release_slot()
        return True

    async def _idle_until_armed(self) -> bool:
        """Wait to be armed; ``False`` when the readers stopped instead."""
        wake = anyio.Event()
        self._idle.append(wake)
        try:
            await wake.wait()
        except BaseException:
            if wake in self._idle:
                self._idle.remove(wake)
            elif not self.stopped():
                self._coming -= 1  # armed as it was cancelled: it does not come
            raise
        return not self.stopped()


def _cancelled(scope: anyio.CancelScope) -> bool:
    """Whether ``scope`` was cancelled (a call, so a type checker reads it afresh)."""
    return scope.cancel_called


@dataclass(frozen=True, slots=True)
class _Held:
    """A delivery a reader took, and when (``now_us``)."""

    delivery: Delivery
    received_us: int
