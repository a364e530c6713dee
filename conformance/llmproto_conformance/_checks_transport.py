"""Transport-contract checks (spec/transport.md), run against fresh transports directly.

Theory of operation
-------------------
These checks run in adapter mode only. Each opens its own connections with
``ctx.open_transport()`` and calls the contract's operations with plain bytes, no envelopes and
no testee, so what they judge is the binding alone. Every name is unique to the run
(``ctx.unique``) and leases are short (150 to 300 ms). Whatever a subscription or consumer
yields is drained in the background by a :class:`Tap`, which records the arrival time of each
item (and may settle it); a check then waits for a count to arrive, or through a quiet period
in which nothing more may arrive. :class:`Background` owns those tasks and unwraps the
exception group a task group raises, so a check's :class:`CheckFailed` reaches the runner as
itself. The queue, events and performance checks use the same two.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import anyio
from anyio.abc import TaskGroup

from llmproto_conformance._catalogue import check
from llmproto_conformance._context import CheckContext
from llmproto_conformance._model import CheckFailed, Level, Profile, Unsupported
from llmproto_ref import (
    Delivery,
    ErrorCode,
    Job,
    LlmpError,
    Notice,
    QueueOptions,
    Transport,
    TransportError,
)

__all__ = ("QUIET_S", "WAIT_S", "Background", "Tap")

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


async def _ack(job: Job) -> None:
    await job.ack()


@contextlib.asynccontextmanager
async def _transports(ctx: CheckContext, count: int) -> AsyncIterator[list[Transport]]:
    """``count`` fresh, entered transports of the kind under test."""
    opener = _opener(ctx)
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(opener()) for _ in range(count)]


def _opener(ctx: CheckContext) -> Callable[[], Transport]:
    if ctx.open_transport is None:
        raise Unsupported("a transport-contract check needs fresh transports (adapter mode)")
    return ctx.open_transport


def _prefix(ctx: CheckContext) -> str:
    """A dotted name prefix unique to this run and check, e.g. ``llmp.check.t-1a2b3c4d-7``."""
    return f"llmp.check.{ctx.unique('t')}"


def _expect_once(ctx: CheckContext, got: list[bytes], sent: list[bytes], where: str) -> None:
    """``got`` holds each of ``sent`` exactly once (in any order)."""
    missing = [b for b in sent if b not in got]
    repeated = sorted({b for b in got if got.count(b) > 1})
    unexpected = sorted({b for b in got if b not in sent})
    ctx.expect(not missing, f"{where}: {len(missing)} of {len(sent)} never arrived: {missing[:3]}")
    ctx.expect(not repeated, f"{where}: delivered more than once: {repeated[:3]}")
    ctx.expect(not unexpected, f"{where}: received what was never sent to it: {unexpected[:3]}")


async def _total(taps: list[Tap[Delivery]], count: int, timeout_s: float = WAIT_S) -> bool:
    """Whether the taps together received ``count`` items within ``timeout_s``."""
    with anyio.move_on_after(timeout_s):
        while sum(len(t.items) for t in taps) < count:
            await anyio.sleep(0.005)
    return sum(len(t.items) for t in taps) >= count


def _merged(taps: list[Tap[Delivery]]) -> list[bytes]:
    return [body for tap in taps for body in tap.bodies()]


# -- principles and lifecycle --------------------------------------------------------------


@check(
    id="trn-opaque-bytes",
    requirement="TRN-001",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="requests, replies, events, cancels and jobs arrive as exactly the bytes sent",
    adapter_only=True,
)
async def check_opaque_bytes(ctx: CheckContext) -> None:
    """Bytes that are no envelope (every byte value, broken JSON) must pass untouched."""
    p = _prefix(ctx)
    body = bytes(range(256)) + b'{"llmp": not json, "id": \xff}'
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        inbox = await t1.open_inbox()
        taps: dict[str, Tap[Any]] = {
            "send_request": bg.tap(await t2.serve(f"{p}.req", group="g")),
            "send_reply": bg.tap(inbox.subscription),
            "publish_event": bg.tap(await t2.subscribe_events(f"{p}.evt")),
            "publish_cancel": bg.tap(await t2.serve_cancels(f"{p}.req")),
        }
        if ctx.capabilities.durable_queues:
            options = QueueOptions(prefetch=1, lease_ms=5000)
            taps["enqueue"] = bg.tap(await t2.consume(f"{p}.q", options), _ack)
            await t1.enqueue(f"{p}.q", body, message_id=ctx.unique("m"))
        await t1.send_request(f"{p}.req", body, reply_to=inbox.address, message_id=ctx.unique("m"))
        await t2.send_reply(inbox.address, body)
        await t1.publish_event(f"{p}.evt", body)
        await t1.publish_cancel(f"{p}.req", body)
        for operation, tap in taps.items():
            ctx.expect(await tap.wait(1), f"{operation}: nothing arrived within {WAIT_S:g} s")
            got = tap.items[0].body
            ctx.expect(
                got == body,
                f"{operation} delivered {len(got)} bytes that differ from the {len(body)} sent",
            )


@check(
    id="trn-closed-unavailable",
    requirement="TRN-002",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="operations on a transport not yet opened or closed raise UNAVAILABLE",
    adapter_only=True,
)
async def check_closed_unavailable(ctx: CheckContext) -> None:
    """Only a transport error with a registry code may reach the caller, never a library's."""
    opener = _opener(ctx)
    p = _prefix(ctx)
    never_opened = opener()
    await _expect_unavailable(ctx, never_opened, p, "a transport never opened")
    async with opener() as closed:
        pass
    await _expect_unavailable(ctx, closed, p, "a closed transport")


async def _expect_unavailable(ctx: CheckContext, t: Transport, p: str, what: str) -> None:
    operations: dict[str, Callable[[], Awaitable[Any]]] = {
        "serve": lambda: t.serve(f"{p}.a", group="g"),
        "send_request": lambda: t.send_request(f"{p}.a", b"x", reply_to="", message_id="m1"),
        "open_inbox": t.open_inbox,
        "publish_event": lambda: t.publish_event(f"{p}.a", b"x"),
        "subscribe_events": lambda: t.subscribe_events(f"{p}.a"),
        "publish_cancel": lambda: t.publish_cancel(f"{p}.a", b"x"),
        "serve_cancels": lambda: t.serve_cancels(f"{p}.a"),
    }
    if t.capabilities.durable_queues:
        operations["enqueue"] = lambda: t.enqueue(f"{p}.q", b"x", message_id="m2")
        operations["consume"] = lambda: t.consume(f"{p}.q", QueueOptions())
    for name, operation in operations.items():
        await _expect_code(ctx, ErrorCode.UNAVAILABLE, f"{name} on {what}", operation)


async def _expect_code(
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


# -- names and patterns -------------------------------------------------------------------

_BAD_NAMES = (
    "",
    "a..b",
    ".a",
    "a.",
    "a b",
    "a/b",
    "a.#",
    "caf\u00e9",
    "a\n",
    "a.*",
    "a.>",
    "x" * 65,
    ".".join(["t"] * 17),
    ".".join(["x" * 64] * 4),
)
_BAD_PATTERNS = (
    "",
    "a..b",
    "a.",
    "a b",
    "a.#",
    "a.>.b",
    ">.a",
    "a.b*",
    "a.**",
    "x" * 65,
    ".".join(["t"] * 17),
)


@check(
    id="trn-invalid-names",
    requirement="TRN-003",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="malformed names and patterns are refused with INVALID_PARAMS, valid ones taken",
    adapter_only=True,
)
async def check_invalid_names(ctx: CheckContext) -> None:
    """Every operation that takes a name or a pattern judges it by the grammar."""
    p = _prefix(ctx)
    async with _transports(ctx, 1) as (t,):
        queues = t.capabilities.durable_queues
        for bad in _BAD_NAMES:
            checks: dict[str, Callable[[], Awaitable[Any]]] = {
                "send_request": functools.partial(
                    t.send_request, bad, b"x", reply_to="", message_id=ctx.unique("m")
                ),
                "publish_event": functools.partial(t.publish_event, bad, b"x"),
                "publish_cancel": functools.partial(t.publish_cancel, bad, b"x"),
                "serve group": functools.partial(t.serve, f"{p}.a", group=bad),
                "subscribe_events group": functools.partial(
                    t.subscribe_events, f"{p}.a", group=bad
                ),
            }
            if queues:
                checks["enqueue"] = functools.partial(
                    t.enqueue, bad, b"x", message_id=ctx.unique("m")
                )
                checks["consume"] = functools.partial(t.consume, bad, QueueOptions())
                if t.capabilities.dead_letters:
                    checks["dead_letters"] = functools.partial(t.dead_letters, bad)
            for operation, call in checks.items():
                await _expect_code(ctx, ErrorCode.INVALID_PARAMS, f"{operation}({bad!r})", call)
        for bad in _BAD_PATTERNS:
            for operation, pattern_call in {
                "serve": functools.partial(t.serve, bad, group="g"),
                "serve_cancels": functools.partial(t.serve_cancels, bad),
                "subscribe_events": functools.partial(t.subscribe_events, bad),
            }.items():
                await _expect_code(
                    ctx, ErrorCode.INVALID_PARAMS, f"{operation}({bad!r})", pattern_call
                )
        longest = f"{p}." + ".".join(["t" * 63] * 3)
        longest += "." + "u" * (255 - len(longest) - 1)
        valid = [f"{p}.a", "A-b_9." * 7 + "z", f"{p}.{'x' * 64}", longest]
        valid.append(".".join(["v"] * 16))
        patterns = [*valid]
        if t.capabilities.wildcards:
            patterns += [f"{p}.*", f"{p}.>", "*.*.>", ">", f"{p}.*.b.>"]
        for name in valid:
            await _expect_accepted(ctx, f"publish_event({name!r})", t.publish_event(name, b"x"))
        for pattern in patterns:
            sub = await _expect_accepted(
                ctx, f"subscribe_events({pattern!r})", t.subscribe_events(pattern)
            )
            await sub.aclose()


async def _expect_accepted(ctx: CheckContext, what: str, call: Awaitable[Any]) -> Any:
    try:
        return await call
    except TransportError as exc:
        raise CheckFailed(f"{what} refused a valid name with {exc.code}: {exc.message}") from exc


@check(
    id="trn-wildcards",
    requirement="TRN-004",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="'*' matches exactly one token, '>' one or more at the end, literals exactly",
    needs=frozenset({"wildcards"}),
    adapter_only=True,
)
async def check_wildcards(ctx: CheckContext) -> None:
    """The pattern table of spec/transport.md, on event and cancel subscriptions."""
    p = _prefix(ctx)
    rest = p.split(".", 1)[1]
    names = [f"{p}.a", f"{p}.A", f"{p}.a.v2", f"{p}.b.v2", p, f"{p}.a.v2.x"]
    expected = {
        f"{p}.a": [f"{p}.a"],
        f"{p}.*": [f"{p}.a", f"{p}.A"],
        f"{p}.>": [f"{p}.a", f"{p}.A", f"{p}.a.v2", f"{p}.b.v2", f"{p}.a.v2.x"],
        f"{p}.*.v2": [f"{p}.a.v2", f"{p}.b.v2"],
        f"{p}.a.>": [f"{p}.a.v2", f"{p}.a.v2.x"],
        f"*.{rest}.a": [f"{p}.a"],
        f"{p}.*.>": [f"{p}.a.v2", f"{p}.b.v2", f"{p}.a.v2.x"],
    }
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        events = {pat: bg.tap(await t2.subscribe_events(pat)) for pat in expected}
        cancels = {pat: bg.tap(await t2.serve_cancels(pat)) for pat in (f"{p}.*", f"{p}.>")}
        for name in names:
            await t1.publish_event(name, name.encode())
            await t1.publish_cancel(name, name.encode())
        await _total(list(events.values()), sum(len(v) for v in expected.values()))
        await _total(list(cancels.values()), len(expected[f"{p}.*"]) + len(expected[f"{p}.>"]))
        await anyio.sleep(QUIET_S)
        for pattern, tap in events.items():
            want = [n.encode() for n in expected[pattern]]
            _expect_once(ctx, tap.bodies(), want, f"events on pattern {pattern!r}")
        for pattern, tap in cancels.items():
            want = [n.encode() for n in expected[pattern]]
            _expect_once(ctx, tap.bodies(), want, f"cancels on pattern {pattern!r}")


# -- request-response and cancellation ------------------------------------------------------


@check(
    id="trn-request-groups",
    requirement="TRN-005",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="each request reaches exactly one member of each serving group",
    needs=frozenset({"groups"}),
    adapter_only=True,
)
async def check_request_groups(ctx: CheckContext) -> None:
    """Two groups (two members and one) serve a type; twelve requests; one copy per group."""
    p = _prefix(ctx)
    sent = [f"request-{i}".encode() for i in range(12)]
    async with _transports(ctx, 3) as (t1, t2, t3), Background() as bg:
        pair = [
            bg.tap(await t1.serve(f"{p}.req", group="g1")),
            bg.tap(await t2.serve(f"{p}.req", group="g1")),
        ]
        single = bg.tap(await t2.serve(f"{p}.req", group="g2"))
        other = bg.tap(await t1.serve(f"{p}.other", group="g1"))
        wildcard = None
        if t1.capabilities.wildcards:
            wildcard = bg.tap(await t1.serve(f"{p}.*", group="g3"))
        inbox = await t3.open_inbox()
        for body in sent:
            await t3.send_request(
                f"{p}.req", body, reply_to=inbox.address, message_id=ctx.unique("m")
            )
        await _total(pair, len(sent))
        await single.wait(len(sent))
        await anyio.sleep(QUIET_S)
        _expect_once(ctx, _merged(pair), sent, "group g1 (two members)")
        _expect_once(ctx, single.bodies(), sent, "group g2 (one member)")
        if wildcard is not None:
            _expect_once(ctx, wildcard.bodies(), sent, f"group g3 serving {p}.*")
        ctx.expect(not other.items, "a request reached a subscription serving another type")


@check(
    id="trn-no-responders",
    requirement="TRN-006",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a request nobody serves is reported as NO_RESPONDERS, at once or by a notice",
    needs=frozenset({"no_responders"}),
    adapter_only=True,
)
async def check_no_responders(ctx: CheckContext) -> None:
    """send_request raises NO_RESPONDERS, or the inbox gets a notice with the message id."""
    p = _prefix(ctx)
    message_id = ctx.unique("m")
    async with _transports(ctx, 1) as (t,), Background() as bg:
        inbox = await t.open_inbox()
        replies = bg.tap(inbox.subscription)
        try:
            await t.send_request(f"{p}.nobody", b"x", reply_to=inbox.address, message_id=message_id)
        except TransportError as exc:
            ctx.expect(
                exc.code == ErrorCode.NO_RESPONDERS,
                f"send_request raised {exc.code} instead of NO_RESPONDERS",
            )
            return
        ctx.expect(
            await replies.wait(1),
            "a request nobody serves was reported as sent, and no notice followed",
        )
        notice = replies.items[0]
        ctx.expect(
            notice.notice is Notice.NO_RESPONDERS,
            f"the inbox received {notice.body[:60]!r} instead of a no_responders notice",
        )
        ctx.expect(
            notice.message_id == message_id,
            f"the notice names message {notice.message_id!r}, not {message_id!r}",
        )


@check(
    id="trn-inbox-unique",
    requirement="TRN-007",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="inbox addresses are unique and each inbox receives exactly what is sent to it",
    adapter_only=True,
)
async def check_inbox_unique(ctx: CheckContext) -> None:
    """Twenty inboxes on two connections; a reply to each reaches that inbox only."""
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        inboxes = [await t.open_inbox() for t in (t1, t2) for _ in range(10)]
        addresses = [inbox.address for inbox in inboxes]
        ctx.expect(
            len(set(addresses)) == len(addresses), f"two open inboxes share an address: {addresses}"
        )
        taps = [bg.tap(inbox.subscription) for inbox in inboxes]
        for address in addresses:
            for n in range(2):
                await t2.send_reply(address, f"{address}#{n}".encode())
        await _total(taps, 2 * len(addresses))
        await anyio.sleep(QUIET_S)
        for address, tap in zip(addresses, taps, strict=True):
            want = [f"{address}#{n}".encode() for n in range(2)]
            _expect_once(ctx, tap.bodies(), want, f"inbox {address}")


@check(
    id="trn-reply-address",
    requirement="TRN-008",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a delivered request carries the reply address it was sent with, even as bytes",
    adapter_only=True,
)
async def check_reply_address(ctx: CheckContext) -> None:
    """A body that is no envelope still comes with its reply address, and the reply gets back."""
    p = _prefix(ctx)
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        requests = bg.tap(await t2.serve(f"{p}.req", group="g"))
        inbox = await t1.open_inbox()
        replies = bg.tap(inbox.subscription)
        await t1.send_request(
            f"{p}.req",
            b"\xff\xfe not an envelope",
            reply_to=inbox.address,
            message_id=ctx.unique("m"),
        )
        ctx.expect(await requests.wait(1), "the request never arrived")
        reply_to = requests.items[0].reply_to
        # A binding may give each request a reply address of its own (NATS does, so that a
        # 503 names the request); what counts is that answering it reaches the inbox.
        if reply_to is None:
            raise CheckFailed("the delivered request has no reply address")
        await t2.send_reply(reply_to, b"answer")
        ctx.expect(await replies.wait(1), "a reply to the handed-over address never arrived")
        ctx.expect(replies.items[0].body == b"answer", "the reply arrived changed")


@check(
    id="trn-cancel-broadcast",
    requirement="TRN-009",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a cancel reaches every serve_cancels subscription that matches, without groups",
    adapter_only=True,
)
async def check_cancel_broadcast(ctx: CheckContext) -> None:
    """Three subscriptions of the type on two connections each get every cancel, once."""
    p = _prefix(ctx)
    sent = [f"cancel-{i}".encode() for i in range(3)]
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        await t1.serve(f"{p}.req", group="g")  # requests are grouped; cancels are not
        await t2.serve(f"{p}.req", group="g")
        taps = [bg.tap(await t.serve_cancels(f"{p}.req")) for t in (t1, t1, t2)]
        if t1.capabilities.wildcards:
            taps.append(bg.tap(await t2.serve_cancels(f"{p}.*")))
        other = bg.tap(await t2.serve_cancels(f"{p}.other"))
        for body in sent:
            await t1.publish_cancel(f"{p}.req", body)
        await _total(taps, len(taps) * len(sent))
        await anyio.sleep(QUIET_S)
        for n, tap in enumerate(taps):
            _expect_once(ctx, tap.bodies(), sent, f"cancel subscription {n + 1} of {len(taps)}")
        ctx.expect(not other.items, "a cancel reached a subscription for another type")


# -- events ---------------------------------------------------------------------------------


@check(
    id="trn-event-fanout",
    requirement="TRN-010",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="each event reaches every ungrouped subscription and one member of each group",
    adapter_only=True,
)
async def check_event_fanout(ctx: CheckContext) -> None:
    """Ten events; two ungrouped subscribers, a group of two and a group of one (if groups)."""
    p = _prefix(ctx)
    sent = [f"event-{i}".encode() for i in range(10)]
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        ungrouped = [bg.tap(await t.subscribe_events(f"{p}.e")) for t in (t1, t2)]
        pair: list[Tap[Delivery]] = []
        single = None
        if t1.capabilities.groups:
            pair = [bg.tap(await t.subscribe_events(f"{p}.e", group="g")) for t in (t1, t2)]
            single = bg.tap(await t2.subscribe_events(f"{p}.e", group="h"))
        for body in sent:
            await t1.publish_event(f"{p}.e", body)
        try:
            await t1.publish_event(f"{p}.nobody", b"x")
        except TransportError as exc:
            raise CheckFailed(f"an event nobody subscribes to raised {exc.code}") from exc
        for tap in ungrouped:
            await tap.wait(len(sent))
        if pair:
            await _total(pair, len(sent))
        await anyio.sleep(QUIET_S)
        for n, tap in enumerate(ungrouped):
            _expect_once(ctx, tap.bodies(), sent, f"ungrouped subscription {n + 1}")
        if single is not None:
            _expect_once(ctx, _merged(pair), sent, "group g (two members)")
            _expect_once(ctx, single.bodies(), sent, "group h (one member)")


@check(
    id="trn-order",
    requirement="TRN-022",
    level=Level.SHOULD,
    profile=Profile.TRANSPORT,
    description="messages from one sender to one address arrive in the order sent",
    adapter_only=True,
)
async def check_order(ctx: CheckContext) -> None:
    """A hundred events and a hundred replies keep their order."""
    p = _prefix(ctx)
    sent = [f"{i:04d}".encode() for i in range(100)]
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        events = bg.tap(await t2.subscribe_events(f"{p}.e"))
        inbox = await t2.open_inbox()
        replies = bg.tap(inbox.subscription)
        for body in sent:
            await t1.publish_event(f"{p}.e", body)
            await t1.send_reply(inbox.address, body)
        for what, tap in (("events", events), ("replies", replies)):
            ctx.expect(await tap.wait(len(sent)), f"{what}: only {len(tap.items)} arrived")
            got = tap.bodies()
            if got != sent:
                first = next(
                    (i for i, (a, b) in enumerate(zip(got, sent, strict=False)) if a != b),
                    len(sent),
                )
                raise CheckFailed(f"{what} arrived out of order, first at index {first}")


# -- work queues ------------------------------------------------------------------------------


@check(
    id="trn-enqueue-stored",
    requirement="TRN-011",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a job enqueued is stored: a consumer on another connection gets it later",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_enqueue_stored(ctx: CheckContext) -> None:
    """Jobs enqueued on a connection that then closes are delivered to a later consumer."""
    p = _prefix(ctx)
    sent = [f"job-{i}".encode() for i in range(3)]
    async with _opener(ctx)() as producer:
        for body in sent:
            await producer.enqueue(f"{p}.q", body, message_id=ctx.unique("m"))
    async with _transports(ctx, 1) as (t,), Background() as bg:
        jobs = bg.tap(await t.consume(f"{p}.q", QueueOptions(prefetch=4, lease_ms=5000)), _ack)
        await jobs.wait(len(sent))
        await anyio.sleep(QUIET_S)
        _expect_once(ctx, jobs.bodies(), sent, "jobs enqueued before their producer closed")


@check(
    id="trn-enqueue-dedup",
    requirement="TRN-012",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="an enqueue repeating a stored message_id succeeds and stores nothing",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_enqueue_dedup(ctx: CheckContext) -> None:
    """The same message id twice before delivery and once after the ack: one job."""
    p = _prefix(ctx)
    first, second = ctx.unique("m"), ctx.unique("m")
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        await t1.enqueue(f"{p}.q", b"one", message_id=first)
        await t1.enqueue(f"{p}.q", b"one again", message_id=first)
        await t1.enqueue(f"{p}.q", b"two", message_id=second)
        jobs = bg.tap(await t2.consume(f"{p}.q", QueueOptions(prefetch=4, lease_ms=5000)), _ack)
        await jobs.wait(2)
        await anyio.sleep(QUIET_S)
        _expect_once(ctx, jobs.bodies(), [b"one", b"two"], "a queue given one message id twice")
        await t2.enqueue(f"{p}.q", b"one once more", message_id=first)
        await anyio.sleep(QUIET_S)
        ctx.expect(
            len(jobs.items) == 2,
            "an enqueue repeating an acknowledged job's message id stored a new job",
        )


@check(
    id="trn-one-consumer-at-a-time",
    requirement="TRN-013",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="competing consumers share a queue: each job is delivered to one of them, once",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_one_consumer_at_a_time(ctx: CheckContext) -> None:
    """Twenty jobs, two consumers that acknowledge: every job once, none to both."""
    p = _prefix(ctx)
    sent = [f"job-{i}".encode() for i in range(20)]
    options = QueueOptions(prefetch=4, lease_ms=5000)
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        taps = [bg.tap(await t.consume(f"{p}.q", options), _ack) for t in (t1, t2)]
        for body in sent:
            await t1.enqueue(f"{p}.q", body, message_id=ctx.unique("m"))
        with anyio.move_on_after(WAIT_S):
            while sum(len(t.items) for t in taps) < len(sent):
                await anyio.sleep(0.005)
        await anyio.sleep(QUIET_S)
        _expect_once(ctx, [b for t in taps for b in t.bodies()], sent, "two competing consumers")
        counts = sorted({job.delivery_count for t in taps for job in t.items})
        ctx.expect(counts == [1], f"jobs acknowledged at once came with delivery counts {counts}")


@check(
    id="trn-consumer-close-redelivers",
    requirement="TRN-013",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a job whose consumer closed unsettled is delivered again, not lost",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_consumer_close_redelivers(ctx: CheckContext) -> None:
    """A consumer takes a job and closes; another consumer receives the same bytes."""
    p = _prefix(ctx)
    options = QueueOptions(prefetch=1, lease_ms=300)
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        first = await t1.consume(f"{p}.q", options)
        taken = bg.tap(first)
        await t2.enqueue(f"{p}.q", b"unsettled", message_id=ctx.unique("m"))
        ctx.expect(await taken.wait(1), "the job was never delivered")
        await first.aclose()
        again = bg.tap(await t2.consume(f"{p}.q", options), _ack)
        ctx.expect(
            await again.wait(1, 0.3 + WAIT_S),
            "a job whose consumer closed without settling it was never delivered again",
        )
        ctx.expect(again.items[0].body == b"unsettled", "the redelivered job's bytes changed")


@check(
    id="trn-prefetch",
    requirement="TRN-014",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a consumer never holds more unsettled jobs than its prefetch",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_prefetch(ctx: CheckContext) -> None:
    """Five jobs waiting, prefetch 2: two arrive; one ack lets exactly one more in."""
    p = _prefix(ctx)
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        for n in range(5):
            await t1.enqueue(f"{p}.q", f"job-{n}".encode(), message_id=ctx.unique("m"))
        jobs = bg.tap(await t2.consume(f"{p}.q", QueueOptions(prefetch=2, lease_ms=10_000)))
        ctx.expect(await jobs.wait(2), f"only {len(jobs.items)} of 5 waiting jobs arrived")
        await anyio.sleep(QUIET_S)
        ctx.expect(
            len(jobs.items) == 2,
            f"a consumer with prefetch 2 holds {len(jobs.items)} unsettled jobs",
        )
        await jobs.items[0].ack()
        ctx.expect(await jobs.wait(3), "no job arrived after an ack freed a prefetch slot")
        await anyio.sleep(QUIET_S)
        ctx.expect(
            len(jobs.items) == 3,
            f"after one ack the consumer holds {len(jobs.items) - 1} unsettled jobs",
        )


@check(
    id="trn-lease-expiry",
    requirement="TRN-015",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a job not settled or extended within its lease is delivered again, not sooner",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_lease_expiry(ctx: CheckContext) -> None:
    """Lease 200 ms: the unsettled job comes back after the lease; acked, it stays away."""
    p = _prefix(ctx)
    lease_s = 0.2
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        options = QueueOptions(prefetch=4, lease_ms=round(lease_s * 1000))
        jobs = bg.tap(await t2.consume(f"{p}.q", options))
        await t1.enqueue(f"{p}.q", b"leased", message_id=ctx.unique("m"))
        ctx.expect(await jobs.wait(1), "the job was never delivered")
        ctx.expect(
            await jobs.wait(2, lease_s + WAIT_S),
            "a job whose lease ran out was never delivered again",
        )
        gap = jobs.times[1] - jobs.times[0]
        ctx.expect(
            gap >= lease_s - SLACK_S,
            f"delivered again after {gap * 1000:.0f} ms, within its 200 ms lease",
        )
        await jobs.items[1].ack()
        await anyio.sleep(lease_s + QUIET_S)
        ctx.expect(len(jobs.items) == 2, "a job was delivered again after its ack")


@check(
    id="trn-lease-extend",
    requirement="TRN-015",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="extend_lease restarts the lease: a job extended in time is not delivered again",
    needs=frozenset({"durable_queues", "lease_extension"}),
    adapter_only=True,
)
async def check_lease_extend(ctx: CheckContext) -> None:
    """Lease 200 ms, extended every 50 ms for 500 ms: one delivery only."""
    p = _prefix(ctx)
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        jobs = bg.tap(await t2.consume(f"{p}.q", QueueOptions(prefetch=4, lease_ms=200)))
        await t1.enqueue(f"{p}.q", b"extended", message_id=ctx.unique("m"))
        ctx.expect(await jobs.wait(1), "the job was never delivered")
        for _ in range(10):
            await anyio.sleep(0.05)
            await jobs.items[0].extend_lease()
        ctx.expect(
            len(jobs.items) == 1, "a job whose lease was extended every 50 ms was delivered again"
        )
        await jobs.items[0].ack()
        await anyio.sleep(0.2 + QUIET_S)
        ctx.expect(len(jobs.items) == 1, "a job was delivered again after its ack")


@check(
    id="trn-delayed-nack",
    requirement="TRN-016",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a job nacked with a delay is not delivered again before the delay has passed",
    needs=frozenset({"durable_queues", "delayed_nack"}),
    adapter_only=True,
)
async def check_delayed_nack(ctx: CheckContext) -> None:
    """nack(delay_ms=300): the redelivery comes no sooner than 300 ms later."""
    p = _prefix(ctx)
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        jobs = bg.tap(await t2.consume(f"{p}.q", QueueOptions(prefetch=4, lease_ms=10_000)))
        await t1.enqueue(f"{p}.q", b"delayed", message_id=ctx.unique("m"))
        ctx.expect(await jobs.wait(1), "the job was never delivered")
        nacked = time.monotonic()
        await jobs.items[0].nack(delay_ms=300)
        ctx.expect(await jobs.wait(2, 0.3 + WAIT_S), "a job nacked with a delay never came back")
        waited = jobs.times[1] - nacked
        ctx.expect(
            waited >= 0.3 - SLACK_S / 4,
            f"a job nacked with delay_ms=300 came back after {waited * 1000:.0f} ms",
        )
        await jobs.items[1].ack()


@check(
    id="trn-delivery-count",
    requirement="TRN-017",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="each job reports how often it has been delivered, starting at 1",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_delivery_count(ctx: CheckContext) -> None:
    """Nacked twice and then acked: delivery counts 1, 2, 3."""
    p = _prefix(ctx)

    async def settle(job: Job) -> None:
        await (job.nack() if job.delivery_count < 3 else job.ack())

    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        options = QueueOptions(prefetch=4, lease_ms=10_000, max_deliveries=5)
        jobs = bg.tap(await t2.consume(f"{p}.q", options), settle)
        await t1.enqueue(f"{p}.q", b"counted", message_id=ctx.unique("m"))
        await jobs.wait(3)
        await anyio.sleep(QUIET_S)
        counts = [job.delivery_count for job in jobs.items]
        ctx.expect(counts == [1, 2, 3], f"a job nacked twice came with delivery counts {counts}")


@check(
    id="trn-dead-letter",
    requirement="TRN-018",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="terminated and exhausted jobs move to the dead-letter queue with their reason",
    needs=frozenset({"durable_queues", "dead_letters"}),
    adapter_only=True,
)
async def check_dead_letter(ctx: CheckContext) -> None:
    """max_deliveries 2: nacked twice, terminated, lease run out twice; each body and reason."""
    p = _prefix(ctx)
    nacked, terminated, expired = b"nacked twice", b"terminated", b"lease ran out twice"

    async def settle(job: Job) -> None:
        if job.body == nacked:
            await job.nack()
        elif job.body == terminated:
            await job.terminate(reason="given up")

    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        options = QueueOptions(prefetch=4, lease_ms=150, max_deliveries=2)
        jobs = bg.tap(await t2.consume(f"{p}.q", options), settle)
        dead = bg.tap(await t1.dead_letters(f"{p}.q"), _ack)
        for body in (nacked, terminated, expired):
            await t1.enqueue(f"{p}.q", body, message_id=ctx.unique("m"))
        await dead.wait(3, 0.3 + WAIT_S)
        await anyio.sleep(QUIET_S)
        _expect_once(ctx, dead.bodies(), [nacked, terminated, expired], "the dead-letter queue")
        reasons = {job.body: job.reason for job in dead.items}
        for body, reason in (
            (nacked, "max_deliveries"),
            (terminated, "terminated: given up"),
            (expired, "max_deliveries"),
        ):
            ctx.expect(
                reasons[body] == reason,
                f"the job {body!r} was dead-lettered with reason {reasons[body]!r}, "
                f"expected {reason!r}",
            )
        deliveries = sorted(jobs.bodies())
        want = sorted([nacked, nacked, terminated, expired, expired])
        ctx.expect(deliveries == want, f"the queue delivered {deliveries}, expected {want}")


@check(
    id="trn-stale-settle",
    requirement="TRN-019",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="settling a delivery no longer leased raises nothing and changes nothing",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_stale_settle(ctx: CheckContext) -> None:
    """Settled already, lease run out, consumer closed: ack, nack, terminate, extend are no-ops."""
    p = _prefix(ctx)
    options = QueueOptions(prefetch=4, lease_ms=150, max_deliveries=10)
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        jobs = bg.tap(await t2.consume(f"{p}.q", options))
        dead = (
            bg.tap(await t1.dead_letters(f"{p}.q"), _ack) if t1.capabilities.dead_letters else None
        )
        await t1.enqueue(f"{p}.q", b"acked", message_id=ctx.unique("m"))
        ctx.expect(await jobs.wait(1), "the job was never delivered")
        await jobs.items[0].ack()
        await _harmless(jobs.items[0], "that was acknowledged already")
        await t1.enqueue(f"{p}.q", b"lapsed", message_id=ctx.unique("m"))
        ctx.expect(
            await jobs.wait(3, 0.15 + WAIT_S), "a job whose lease ran out was never delivered again"
        )
        await _harmless(jobs.items[1], "whose lease ran out")
        ctx.expect(
            await jobs.wait(4, 0.15 + WAIT_S),
            "settling a lapsed delivery settled the job's next delivery as well",
        )
        await jobs.items[3].ack()
        closing = await t2.consume(f"{p}.closed", QueueOptions(prefetch=1, lease_ms=150))
        held = bg.tap(closing)
        await t1.enqueue(f"{p}.closed", b"orphan", message_id=ctx.unique("m"))
        ctx.expect(await held.wait(1), "the job was never delivered")
        await closing.aclose()
        await _harmless(held.items[0], "whose consumer closed")
        again = bg.tap(await t1.consume(f"{p}.closed", options), _ack)
        ctx.expect(
            await again.wait(1, 0.15 + WAIT_S),
            "settling the delivery of a closed consumer removed the job",
        )
        await anyio.sleep(0.15 + QUIET_S)
        bodies = jobs.bodies()
        ctx.expect(
            bodies == [b"acked", b"lapsed", b"lapsed", b"lapsed"], f"the queue delivered {bodies}"
        )
        if dead is not None:
            ctx.expect(not dead.items, f"stale settles dead-lettered {dead.bodies()}")


async def _harmless(job: Job, when: str) -> None:
    operations: dict[str, Callable[[], Awaitable[None]]] = {
        "ack": job.ack,
        "nack": functools.partial(job.nack, delay_ms=0),
        "terminate": functools.partial(job.terminate, reason="stale"),
        "extend_lease": job.extend_lease,
    }
    for name, operation in operations.items():
        try:
            await operation()
        except Exception as exc:  # raising at all is the finding
            raise CheckFailed(
                f"{name}() of a delivery {when} raised {type(exc).__name__}: {exc}"
            ) from exc


# -- limits and capabilities -----------------------------------------------------------------


@check(
    id="trn-payload-too-large",
    requirement="TRN-024",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a body over max_payload is refused with PAYLOAD_TOO_LARGE; one at it is carried",
    adapter_only=True,
)
async def check_payload_too_large(ctx: CheckContext) -> None:
    """Every sending operation refuses max_payload + 1 bytes, and nothing (truncated) arrives."""
    p = _prefix(ctx)
    async with _transports(ctx, 2) as (t1, t2), Background() as bg:
        limit = t1.capabilities.max_payload
        ctx.expect(limit > 0, f"max_payload is {limit}")
        over = b"o" * (limit + 1)
        inbox = await t1.open_inbox()
        receivers: list[Tap[Any]] = [
            bg.tap(await t2.serve(f"{p}.req", group="g")),
            bg.tap(inbox.subscription),
            bg.tap(await t2.subscribe_events(f"{p}.e")),
            bg.tap(await t2.serve_cancels(f"{p}.req")),
        ]
        sends: dict[str, Callable[[], Awaitable[Any]]] = {
            "send_request": functools.partial(
                t1.send_request,
                f"{p}.req",
                over,
                reply_to=inbox.address,
                message_id=ctx.unique("m"),
            ),
            "send_reply": functools.partial(t2.send_reply, inbox.address, over),
            "publish_event": functools.partial(t1.publish_event, f"{p}.e", over),
            "publish_cancel": functools.partial(t1.publish_cancel, f"{p}.req", over),
        }
        if t1.capabilities.durable_queues:
            receivers.append(bg.tap(await t2.consume(f"{p}.q", QueueOptions()), _ack))
            sends["enqueue"] = functools.partial(
                t1.enqueue, f"{p}.q", over, message_id=ctx.unique("m")
            )
        for operation, send in sends.items():
            await _expect_code(
                ctx, ErrorCode.PAYLOAD_TOO_LARGE, f"{operation} of {limit + 1} bytes", send
            )
        at_limit = b"i" * limit
        await t1.publish_event(f"{p}.e", at_limit)
        ctx.expect(await receivers[2].wait(1), f"an event of max_payload ({limit}) bytes was lost")
        await anyio.sleep(QUIET_S)
        for tap in receivers:
            ctx.expect(
                all(b == at_limit for b in tap.bodies()),
                "a body over max_payload was delivered (truncated or whole)",
            )
        ctx.expect(len(receivers[2].items) == 1, "the event at max_payload arrived twice")


#: The checks whose passing shows each declared capability working (trn-capabilities).
_BY_CAPABILITY: dict[str, tuple[Callable[[CheckContext], Awaitable[Any]], ...]] = {
    "max_payload": (check_payload_too_large,),
    "durable_queues": (check_enqueue_stored,),
    "delayed_nack": (check_delayed_nack,),
    "lease_extension": (check_lease_extend,),
    "dead_letters": (check_dead_letter,),
    "wildcards": (check_wildcards,),
    "groups": (check_request_groups, check_event_fanout),
    "no_responders": (check_no_responders,),
}


@check(
    id="trn-capabilities",
    requirement="TRN-025",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="every declared capability works as the contract defines it",
    adapter_only=True,
    timeout_s=40.0,
)
async def check_capabilities(ctx: CheckContext) -> None:
    """For each capability the binding declares, run the checks that exercise it."""
    capabilities = ctx.capabilities
    failures: list[str] = []
    for name, checks in _BY_CAPABILITY.items():
        declared = getattr(capabilities, name)
        if not declared:
            continue
        for probe in checks:
            try:
                await probe(ctx)
            except (CheckFailed, LlmpError) as exc:
                failures.append(f"{name} is declared, but {probe.__name__[6:]}: {exc}")
    ctx.expect(not failures, "; ".join(failures))
