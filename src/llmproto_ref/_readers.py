"""Readers: tasks that read one subscription and run what they read themselves.

Theory of operation
-------------------
Handing each delivery from an intake task to a pool task costs a wake-up of the event loop
per message, and on this machine that hand-over was 40% of the service's CPU for a stream of
events. :class:`Readers` removes it (the leader/follower pattern): the task that takes a
delivery from the subscription runs its handler too, and another reader takes its place at
the subscription only when none is waiting there already.

A reader that takes a delivery and sees no other reader waiting (and none on its way) arms
one: it wakes a reader idle for this subscription or starts a task. Then it takes a slot of
the pool's limit (:meth:`~llmproto_ref._pool.TaskPool.acquire_slot`, shared with the pool's
own jobs, so ``max_concurrency`` bounds both), runs the handler and gives the slot back.
Afterwards it waits at the subscription again, unless :data:`WAITING` readers wait there
already, in which case it idles until armed. With one message at a time, two readers take
turns and no message costs more than the wake-up of the reader it arrives for; a burst is
run by the reader that is awake, one message after the other without a task switch
(yielding every :data:`YIELD_EVERY` messages so other tasks are not starved), while armed
readers take over whenever a handler waits for something.

Several tasks read one subscription at once, which the transport contract allows; an async
generator cannot be read that way, and the service keeps its single intake task for one.

Each reader task has a :class:`~llmproto_ref._pool.JobScope` as pool tasks do: a handler
claims it for cancellation, and a reader whose scope was cancelled makes a fresh one.
:meth:`Readers.stop` cancels the readers waiting at the subscription and ends the idle ones;
a reader running a handler finishes it and then ends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

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
        self._stopped = False
        self.tasks = 0  #: reader tasks alive

    def start(self) -> None:
        """Start the first reader."""
        self._arm()

    def stop(self) -> None:
        """Stop reading: waiting readers are cancelled, idle ones end, running ones end after
        their handler."""
        self._stopped = True
        for shared in self._waiting:
            shared.scope.cancel()
        for wake in self._idle:
            wake.set()
        self._idle.clear()

    def stopped(self) -> bool:
        """Whether :meth:`stop` was called (or the subscription ended)."""
        return self._stopped

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
        try:
            while not self._stopped:
                with shared.scope as scope:
                    await self._serve(shared, scope, armed=armed)
                armed = False
                shared.scope = anyio.CancelScope()  # cancelled: a fresh one, if it goes on
        finally:
            self.tasks -= 1

    async def _serve(self, shared: JobScope, scope: anyio.CancelScope, *, armed: bool) -> None:
        """Take and run deliveries in ``scope`` until stopped or the scope is cancelled."""
        waiting, pool = self._waiting, self._pool
        in_row = 0
        while not self._stopped:
            if in_row >= YIELD_EVERY:
                in_row = 0
                await anyio.lowlevel.checkpoint()
            waiting.add(shared)
            if armed:
                armed = False
                self._coming -= 1
            try:
                delivery = await self._next()
            except StopAsyncIteration:
                self.stop()
                return
            except Exception as exc:  # noqa: BLE001 - a broken binding ends only these readers
                if not self._stopped:
                    self.stop()
                    self._on_failure(exc)
                return
            finally:
                waiting.discard(shared)
            received = now_us()
            if not waiting and not self._coming and not self._stopped:
                self._arm()  # someone must wait for the next delivery while this one runs
            if not pool.take_slot():
                with anyio.CancelScope(shield=True):  # the delivery is taken: wait for a slot
                    await pool.acquire_slot()
                if self.stopped():  # stopping: what has not started does not start now
                    pool.release_slot()
                    self._on_unstarted()
                    return
            shared.job_started()
            try:
                await self._run(delivery, received)
            except Exception:  # noqa: BLE001 - the service's runs catch what they expect
                pool.failures += 1
            finally:
                shared.job_ended()
                pool.release_slot()
            in_row += 1
            if scope.cancel_called:
                return
            if len(waiting) + self._coming >= WAITING and not self._stopped:
                armed = await self._idle_until_armed()
                if not armed:
                    return

    async def _idle_until_armed(self) -> bool:
        """Wait to be armed; ``False`` when stopped instead."""
        wake = anyio.Event()
        self._idle.append(wake)
        try:
            await wake.wait()
        except BaseException:
            if wake in self._idle:
                self._idle.remove(wake)
            elif not self._stopped:
                self._coming -= 1  # armed as it was cancelled: it does not come
            raise
        return not self._stopped
