"""What the transport-contract checks share: fresh transports, taps, and waiting.

Theory of operation
-------------------
The transport checks run in adapter mode only. Each opens its own connections with
``ctx.open_transport()`` (:func:`fresh_transports`) and calls the contract's operations with
plain bytes, no envelopes and no testee, so what they judge is the binding alone. Every name
is unique to the run (:func:`name_prefix`) and leases are short (150 to 300 ms). Whatever a
subscription or consumer yields is drained in the background by a :class:`Tap`, which records
the arrival time of each item (and may settle it); a check then waits for a count to arrive,
or through a quiet period in which nothing more may arrive. :class:`Background` owns those
tasks and unwraps the exception group a task group raises, so a check's
:class:`~llmproto_conformance._model.CheckFailed` reaches the runner as itself. The queue,
events and performance checks use the same two.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import anyio
from anyio.abc import TaskGroup

from llmproto_conformance._context import CheckContext
from llmproto_conformance._model import CheckFailed, Unsupported
from llmproto_ref import Delivery, ErrorCode, Job, LlmpError, Transport, TransportError

__all__ = (
    "QUIET_S",
    "SLACK_S",
    "WAIT_S",
    "Background",
    "Tap",
    "ack_job",
    "await_total",
    "expect_code",
    "expect_once",
    "fresh_transports",
    "merged_bodies",
    "name_prefix",
    "transport_opener",
)

#: How long a check waits for something that must arrive.
WAIT_S = 2.0
#: How long a check watches for something that must not arrive.
QUIET_S = 0.25
#: Slack for timer granularity when a check compares an interval with a lease or a delay.
SLACK_S = 0.02


class _Message(Protocol):
    @property
    def body(self) -> bytes: ...


M = TypeVar("M", bound=_Message)


class Tap(Generic[M]):
    """What one subscription or consumer yielded, in order, with monotonic arrival times.

    :param settle: awaited for each item as it arrives (e.g. ``Job.ack``).
    """

    def __init__(self, settle: Callable[[M], Awaitable[None]] | None = None) -> None:
        self.items: list[M] = []
        self.times: list[float] = []
        self.error: LlmpError | None = None  #: what ended the source, if it failed
        self._settle = settle

    async def drain(self, source: AsyncIterable[M]) -> None:
        """Collect until the source ends or the task is cancelled."""
        try:
            async for item in source:
                self.items.append(item)
                self.times.append(time.monotonic())
                if self._settle is not None:
                    await self._settle(item)
        except LlmpError as exc:
            self.error = exc

    def bodies(self) -> list[bytes]:
        """The bodies received so far."""
        return [item.body for item in self.items]

    async def wait(self, count: int, timeout_s: float = WAIT_S) -> bool:
        """Whether ``count`` items arrived within ``timeout_s``."""
        with anyio.move_on_after(timeout_s):
            while len(self.items) < count:
                await anyio.sleep(0.005)
        return len(self.items) >= count


class Background:
    """Background tasks of one check; leaving the block cancels them.

    A failure raised in the block, or by a task, is re-raised as itself rather than inside
    the exception group a task group raises, so the runner classifies it.
    """

    def __init__(self) -> None:
        self._tg: TaskGroup = anyio.create_task_group()

    async def __aenter__(self) -> Background:
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tg.cancel_scope.cancel()
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            leaf = _first_failure(group)
            if leaf is None:
                raise
            raise leaf from None

    def start(self, function: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``function(*args)`` until the block ends."""
        self._tg.start_soon(function, *args)

    def tap(
        self, source: AsyncIterable[M], settle: Callable[[M], Awaitable[None]] | None = None
    ) -> Tap[M]:
        """Drain ``source`` into a new :class:`Tap`."""
        tap: Tap[M] = Tap(settle)
        self._tg.start_soon(tap.drain, source)
        return tap


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    cancelled = anyio.get_cancelled_exc_class()
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_failure(exc)
            if found is not None:
                return found
        elif not isinstance(exc, cancelled):
            return exc
    return None


async def ack_job(job: Job) -> None:
    await job.ack()


@contextlib.asynccontextmanager
async def fresh_transports(ctx: CheckContext, count: int) -> AsyncIterator[list[Transport]]:
    """``count`` fresh, entered transports of the kind under test."""
    opener = transport_opener(ctx)
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(opener()) for _ in range(count)]


def transport_opener(ctx: CheckContext) -> Callable[[], Transport]:
    if ctx.open_transport is None:
        raise Unsupported("a transport-contract check needs fresh transports (adapter mode)")
    return ctx.open_transport


def name_prefix(ctx: CheckContext) -> str:
    """A dotted name prefix unique to this run and check, e.g. ``llmp.check.t-1a2b3c4d-7``."""
    return f"llmp.check.{ctx.unique('t')}"


def expect_once(ctx: CheckContext, got: list[bytes], sent: list[bytes], where: str) -> None:
    """``got`` holds each of ``sent`` exactly once (in any order)."""
    missing = [b for b in sent if b not in got]
    repeated = sorted({b for b in got if got.count(b) > 1})
    unexpected = sorted({b for b in got if b not in sent})
    ctx.expect(not missing, f"{where}: {len(missing)} of {len(sent)} never arrived: {missing[:3]}")
    ctx.expect(not repeated, f"{where}: delivered more than once: {repeated[:3]}")
    ctx.expect(not unexpected, f"{where}: received what was never sent to it: {unexpected[:3]}")


async def await_total(taps: list[Tap[Delivery]], count: int, timeout_s: float = WAIT_S) -> bool:
    """Whether the taps together received ``count`` items within ``timeout_s``."""
    with anyio.move_on_after(timeout_s):
        while sum(len(t.items) for t in taps) < count:
            await anyio.sleep(0.005)
    return sum(len(t.items) for t in taps) >= count


def merged_bodies(taps: list[Tap[Delivery]]) -> list[bytes]:
    return [body for tap in taps for body in tap.bodies()]


async def expect_code(
    ctx: CheckContext, code: ErrorCode, what: str, operation: Callable[[], Awaitable[Any]]
) -> None:
    """``operation()`` must raise a transport error with ``code`` (TRN-002, TRN-026)."""
    try:
        result = await operation()
    except TransportError as exc:
        ctx.expect(exc.code == code, f"{what} raised {exc.code}, expected {code}: {exc.message}")
        return
    except Exception as exc:  # any other exception is the finding (TRN-002)
        raise CheckFailed(
            f"{what} raised {type(exc).__name__} instead of a transport error {code} "
            f"(TRN-002): {exc}"
        ) from exc
    closer = getattr(result, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()
    raise CheckFailed(f"{what} succeeded; expected {code}")
