"""Reusable handler tasks for the service.

Starting an anyio task costs about 25 µs here, more than decoding, validating and encoding a
message together, so the service does not start one per message. A :class:`TaskPool` keeps the
tasks it started and hands each new job to an idle one; it starts another only when none is
idle, up to ``limit``. With every task busy, :meth:`TaskPool.submit` waits, which pushes back on
the intake loop that called it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

__all__ = ("TaskPool",)

Job = Callable[[], Awaitable[None]]


class TaskPool:
    """At most ``limit`` jobs at once, on reused tasks.

    :param limit: most jobs running at once.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self.limit = limit
        self.active = 0  #: jobs handed over and not finished
        self.failures = 0  #: jobs that raised (a bug: the service's jobs catch what they expect)
        self._workers = 0
        self._idle = 0
        self._drained = anyio.Event()
        self._drained.set()
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> TaskPool:
        # created here, not in __init__: a pool that never runs leaves nothing to close
        self._send, self._receive = anyio.create_memory_object_stream[Job](0)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._send.close()  # idle tasks end; busy ones end after their job
        if self._tg is not None:
            await self._tg.__aexit__(exc_type, exc, tb)
        self._receive.close()

    async def submit(self, job: Job) -> None:
        """Run ``job`` on an idle task, a new one, or the next to become free."""
        if self._tg is None:
            raise RuntimeError("the pool is not running")
        if self._idle:
            self._idle -= 1
        elif self._workers < self.limit:
            self._workers += 1
            self._tg.start_soon(self._work)
        self.active += 1
        if self._drained.is_set():
            self._drained = anyio.Event()
        try:
            await self._send.send(job)
        except BaseException:
            self._done()
            raise

    async def wait_drained(self, timeout: float = math.inf) -> bool:
        """Wait until no job runs, at most ``timeout`` seconds; ``True`` if drained."""
        with anyio.move_on_after(timeout):
            await self._drained.wait()
        return self._drained.is_set()

    def _done(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._drained.set()

    async def _work(self) -> None:
        async for job in self._receive:
            try:
                await job()
            except Exception:  # noqa: BLE001 - keep the task; the job's owner counts failures
                self.failures += 1
            finally:
                self._done()
                self._idle += 1
