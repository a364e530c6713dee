"""The service: handlers for requests, streams, events and work-queue jobs (spec/patterns.md).

Theory of operation
-------------------
``async with Service(...)`` opens one intake loop per registration (a ``serve`` subscription
per request type plus its cancel subscription, an event subscription, a queue consumer) and
runs every message in its own task, bounded by a concurrency limit that also pushes back on
intake. What happens to each message is in :mod:`llmproto_ref._serving`. Leaving the block
shuts down gracefully [WQ-008]: intake stops first, handlers already started get ``grace``
seconds to finish, the rest are cancelled; work-queue jobs that did not finish are never
acked, so the broker delivers them again.

Security is configuration: with ``security=`` every request, event, job and cancel is checked
by the :class:`~llmproto_ref.SecurityPolicy` right after it decoded, and one the policy refuses
is treated exactly as one that did not decode (answered with the policy's code and pointer,
dropped, or terminated); with ``signer=`` every reply is signed as the last step before it is
encoded. Without either the service does one ``is None`` test per message and nothing more.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup

from llmproto_ref._clock import now_us
from llmproto_ref._errors import EnvelopeError
from llmproto_ref._idempotency import IdempotencyStore
from llmproto_ref._limits import DEFAULT_LIMITS, Limits
from llmproto_ref._metrics import Metrics
from llmproto_ref._policy import SecurityPolicy
from llmproto_ref._pool import TaskPool
from llmproto_ref._readers import Readers
from llmproto_ref._serving import Running, Serving
from llmproto_ref._signing import Signer
from llmproto_ref._transport import (
    Consumer,
    Delivery,
    QueueOptions,
    Subscription,
    Transport,
    pattern_matches,
    validate_pattern,
    validate_queue_name,
)

__all__ = ("Registration", "Service", "ServiceStats")

F = TypeVar("F", bound=Callable[..., Any])
_log = logging.getLogger("llmproto_ref.service")
_FINISH_S = 5.0  #: how long an intake loop waits for an async generator's cleanup


async def _finish(iterator: object) -> None:
    """Close an intake's iterator when it is an async generator, so its ``finally`` blocks
    (closing streams it opened, for instance) run now in this task rather than whenever the
    garbage collector finds it, possibly after the event loop has gone."""
    if inspect.isasyncgen(iterator):
        with anyio.move_on_after(_FINISH_S, shield=True):
            await iterator.aclose()


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """One registered handler."""

    pattern: str  #: request type, event pattern or queue name
    function: Callable[..., Any]
    streaming: bool = False  #: a generator: its items are chunks
    thread: bool = False  #: run in a worker thread (blocking or CPU-heavy code)
    group: str | None = None  #: event subscriber group
    concurrency: int = 1  #: work-queue workers: jobs run at once
    options: QueueOptions = field(default_factory=QueueOptions)


@dataclass(slots=True)
class ServiceStats:
    """Counters of what the service received and could not handle normally."""

    rejected: int = 0  #: messages that failed to decode (or the policy) and were answered
    dropped: int = 0  #: messages that failed to decode (or the policy), with no reply address
    reply_failures: int = 0  #: replies the transport could not send
    late_cancels: int = 0  #: cancels for exchanges that had already ended
    dead_lettered: int = 0  #: jobs this service moved to the dead-letter queue
    handler_errors: int = 0  #: handler exceptions that were not ExchangeError
    intake_failures: int = 0  #: subscriptions or consumers that ended with an error
    #: requests and events taken as the service stopped, while every handler slot was held,
    #: and so never started
    unstarted: int = 0


class Service:
    """Serves requests, streams, events and queue jobs over one transport.

    :param transport: an entered transport (the service does not own it).
    :param name: the service's name; request types are served in a group of this name.
    :param source: the ``source`` of what it sends (default ``llmp://<name>``).
    :param max_concurrency: most request and event handlers running at once.
    :param grace: seconds started handlers get to finish at shutdown.
    :param idempotency: the store that makes execution at-most-once per idempotency key.
    :param understood: extension names this service implements (``critical``); ``enc`` is
        added when ``security`` holds decryption keys.
    :param security: the policy every received request, event, job and cancel must pass
        (spec/security.md, Verification order). A message it refuses is handled as one that
        did not decode: answered with the policy's code and ``llmp.pointer`` detail when it has
        a reply address, else dropped, and a job is terminated; each is counted in
        :attr:`stats` and kept in :attr:`rejections`. Handlers see the policy's view of the
        message (no ``auth`` [SEC-032], the payload decrypted) and its
        :class:`~llmproto_ref.Verified` as ``Request.verified``. No binding authenticates the
        sender today, so the policy gets no principal (SEC-026 does not apply yet).
    :param signer: signs every reply (responses, chunks, errors, rejections) [SEC-010].
    """

    def __init__(
        self,
        transport: Transport,
        *,
        name: str,
        source: str | None = None,
        max_concurrency: int = 256,
        grace: float = 10.0,
        limits: Limits = DEFAULT_LIMITS,
        idempotency: IdempotencyStore | None = None,
        understood: frozenset[str] = frozenset(),
        security: SecurityPolicy | None = None,
        signer: Signer | None = None,
    ) -> None:
        validate_queue_name(name)
        self.transport = transport
        self.name = name
        self.source = source or f"llmp://{name}"
        self.grace = grace
        self.metrics = Metrics()
        self.stats = ServiceStats()
        #: (code, pointer, requirement) of the latest messages this service rejected [ENV-038]
        self.rejections: deque[tuple[str, str, str]] = deque(maxlen=256)
        self.idempotency = idempotency or IdempotencyStore()
        self._pool = TaskPool(max_concurrency)
        self._readers: list[Readers] = []
        self._handlers: dict[str, Registration] = {}
        self._events: list[Registration] = []
        self._workers: list[Registration] = []
        self.security = security
        self.signer = signer
        if security is not None:
            understood = understood | security.understood
        self._serving = Serving(
            self, limits=limits, understood=understood, security=security, signer=signer
        )
        self._intake: TaskGroup | None = None
        self._work: TaskGroup | None = None
        self._closing: list[Subscription | Consumer] = []

    # -- registration ----------------------------------------------------------------

    def handler(
        self,
        type: str,
        *,
        thread: bool = False,
    ) -> Callable[[F], F]:
        """Register a request handler for ``type`` (a generator function streams)."""
        validate_pattern(type)

        def register(function: F) -> F:
            streaming = inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(
                function
            )
            self._handlers[type] = Registration(
                pattern=type, function=function, streaming=streaming, thread=thread
            )
            return function

        return register

    def on_event(
        self, pattern: str, *, group: str | None = None, thread: bool = False
    ) -> Callable[[F], F]:
        """Register an event handler for ``pattern`` (``*`` one token, ``>`` the rest)."""
        validate_pattern(pattern)
        if group is not None:
            validate_queue_name(group)

        def register(function: F) -> F:
            self._events.append(
                Registration(pattern=pattern, function=function, group=group, thread=thread)
            )
            return function

        return register

    def worker(
        self,
        queue: str,
        *,
        concurrency: int = 4,
        options: QueueOptions | None = None,
        thread: bool = False,
    ) -> Callable[[F], F]:
        """Register a work-queue worker for ``queue``, running up to ``concurrency`` jobs."""
        validate_queue_name(queue)
        if concurrency < 1:
            raise ValueError("concurrency must be positive")
        opts = options or QueueOptions(prefetch=max(concurrency, 1))

        def register(function: F) -> F:
            self._workers.append(
                Registration(
                    pattern=queue,
                    function=function,
                    thread=thread,
                    concurrency=concurrency,
                    options=opts,
                )
            )
            return function

        return register

    def record_rejection(self, error: EnvelopeError) -> None:
        """Keep and log a rejected message's code, pointer and requirement [ENV-038]."""
        self.rejections.append((str(error.code), error.pointer, error.requirement))
        _log.info("%s rejected a message: %s", self.name, error)

    def registration(self, type_: str) -> Registration | None:
        """The request handler serving ``type_``."""
        found = self._handlers.get(type_)
        if found is not None:
            return found
        for reg in self._handlers.values():
            if pattern_matches(reg.pattern, type_):
                return reg
        return None

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Service:
        self._work = anyio.create_task_group()
        await self._work.__aenter__()
        self._work.start_soon(self._serving.timer.run)  # handlers' deadlines [DL-004]
        for reg in self._workers:  # leases are extended until the last job ends [WQ-005]
            self._work.start_soon(self._serving.lease_keeper(reg).run)
        await self._pool.__aenter__()
        self._intake = anyio.create_task_group()
        await self._intake.__aenter__()
        for reg in self._handlers.values():
            requests = await self.transport.serve(reg.pattern, group=self.name)
            cancels = await self.transport.serve_cancels(reg.pattern)
            self._closing += [requests, cancels]
            self._read(requests, self._serving.on_request, self._take_requests)
            self._intake.start_soon(self._guarded, self._take_cancels, cancels)
        for reg in self._events:
            events = await self.transport.subscribe_events(reg.pattern, group=reg.group)
            self._closing.append(events)
            run = functools.partial(self._serving.on_event, reg)
            self._read(events, run, functools.partial(self._take_events, reg))
        for reg in self._workers:
            consumer = await self.transport.consume(reg.pattern, reg.options)
            self._intake.start_soon(self._guarded, self._take_jobs, reg, consumer)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._intake is None or self._work is None:
            return
        self._intake.cancel_scope.cancel()  # stop taking new work first
        for readers in self._readers:
            readers.stop()
        self._readers.clear()
        await self._intake.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            await self._pool.wait_drained(self.grace)
        self._serving.stop_all()
        await self._pool.__aexit__(None, None, None)
        self._work.cancel_scope.cancel()  # the deadline timer: no handler is left
        await self._work.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            for closable in self._closing:
                await closable.aclose()
        self._closing.clear()

    async def serve_forever(self) -> None:
        """Run until this task is cancelled (``async with`` the service first)."""
        await anyio.sleep_forever()

    @property
    def running(self) -> dict[str, Running]:
        """Handlers running now, by request id."""
        return self._serving.running

    # -- intake loops ----------------------------------------------------------------

    def _read(
        self,
        subscription: Subscription,
        run: Callable[[Delivery, int], Awaitable[None]],
        intake: Callable[[AsyncIterator[Delivery]], Awaitable[None]],
    ) -> None:
        """Read ``subscription`` with :class:`Readers` that run each delivery themselves, or,
        when its iterator is an async generator (which one task at a time may await), with
        one ``intake`` task handing deliveries to the pool."""
        deliveries = subscription.__aiter__()
        if inspect.isasyncgen(deliveries) and self._intake is not None:
            self._intake.start_soon(self._guarded, intake, deliveries)
            return
        readers = Readers(self._pool, deliveries, run, self._intake_failed, self._unstarted)
        self._readers.append(readers)
        readers.start()

    async def _guarded(self, intake: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run one intake loop; a failing subscription ends only itself, not the service."""
        try:
            await intake(*args)
        except Exception as exc:  # noqa: BLE001 - a broken binding must not stop the others
            self._intake_failed(exc)

    def _unstarted(self) -> None:
        self.stats.unstarted += 1

    def _intake_failed(self, exc: Exception) -> None:
        self.stats.intake_failures += 1
        _log.warning("%s: an intake loop ended with %s: %s", self.name,
                     type(exc).__name__, exc)  # fmt: skip

    async def _take_requests(self, deliveries: AsyncIterator[Delivery]) -> None:
        on_request = self._serving.on_request
        try:
            async for delivery in deliveries:
                await self._pool.submit(functools.partial(on_request, delivery, now_us()))
        finally:
            await _finish(deliveries)

    async def _take_cancels(self, cancels: Subscription) -> None:
        deliveries = cancels.__aiter__()
        try:
            async for delivery in deliveries:
                self._serving.on_cancel(delivery)
        finally:
            await _finish(deliveries)

    async def _take_events(self, reg: Registration, deliveries: AsyncIterator[Delivery]) -> None:
        on_event = self._serving.on_event
        try:
            async for delivery in deliveries:
                await self._pool.submit(functools.partial(on_event, reg, delivery))
        finally:
            await _finish(deliveries)

    async def _take_jobs(self, reg: Registration, consumer: Consumer) -> None:
        """One taker per handler slot: each waits for a job only while it holds a free slot
        [WQ-006], so a binding sees as many readers as the worker can start jobs, and can
        fetch (or grant credit for) that many at once instead of one at a time.

        An async generator cannot be awaited by two tasks at once, so a consumer whose
        iterator is one is read by a single taker (spec/transport.md, Work queues).
        """
        self._closing.append(consumer)
        slots = anyio.Semaphore(reg.concurrency)
        iterator = consumer.__aiter__()
        readers = 1 if inspect.isasyncgen(iterator) else reg.concurrency

        async def taker() -> None:
            while True:
                await slots.acquire()  # take a job only when a slot is free [WQ-006]
                try:
                    job = await iterator.__anext__()
                except StopAsyncIteration:
                    slots.release()
                    return
                except BaseException:
                    slots.release()
                    raise
                received = now_us()

                async def handle(j: Any = job, r: int = received) -> None:
                    try:
                        await self._serving.on_job(reg, j, r)
                    finally:
                        slots.release()

                await self._pool.submit(handle)

        try:
            async with anyio.create_task_group() as takers:
                for _ in range(readers):
                    takers.start_soon(taker)
        finally:
            await _finish(iterator)
