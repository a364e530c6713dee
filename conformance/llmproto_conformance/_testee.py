"""The reference testee: the service the conformance suite drives (spec/conformance.md).

Theory of operation
-------------------
A testee is an ordinary llmproto service named ``llmp-testee`` whose operations let the suite
provoke every behaviour a check needs over the wire alone: echo a payload, fail with a given
error, sleep (to be cut short by a deadline or a cancel), stream chunks, publish events, run
a job that fails its first deliveries. What the suite cannot see in the replies - how often a
handler ran, how an exchange ended on the testee's side, how many members of a group got an
event, how many deliveries a job took - the testee counts, and ``llmp.testee.counters``
returns the counts [CONF-014]. Each handler updates its counters before it returns or raises,
so before the service sends the reply that ends the exchange [CONF-015].

The counters are bounded: each map keeps its newest ``counter_limit`` entries and forgets the
oldest [CONF-016]; the counters reply holds as many of the newest entries as fit in one
envelope, so a testee serving many runs never answers with a reply too large to send.

For the ``security`` profile the testee runs a second service, ``llmp-testee-secure``, with a
:class:`~llmproto_ref.SecurityPolicy` and a signer configured from the published test keys
(:mod:`llmproto_conformance._security_kit`) [CONF-022, CONF-023]: it echoes, echoes behind a
scope, and relays a request downstream with a client of its own, which carries no token of
the caller's [SEC-032].
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
import orjson

from llmproto_conformance._context import (
    TESTEE_QUEUE,
    TESTEE_SECURE_SERVICE,
    TESTEE_SECURE_TYPES,
    TESTEE_SERVICE,
    TESTEE_TYPES,
)
from llmproto_conformance._security_kit import (
    WORKER_KID,
    WORKER_SOURCE,
    published_key,
    secure_policy,
)
from llmproto_ref import (
    DEFAULT_LIMITS,
    Client,
    Envelope,
    EnvelopeError,
    ErrorCode,
    Event,
    ExchangeError,
    Final,
    Kind,
    QueueOptions,
    Request,
    Service,
    Signer,
    Transport,
)

__all__ = (
    "COUNTER_LIMIT",
    "EVENT_GROUPS",
    "TESTEE_CONCURRENCY",
    "TESTEE_QUEUE_OPTIONS",
    "Counters",
    "Testee",
    "TesteeOutcome",
)

#: The work queue's settings (spec/conformance.md, CONF-012).
TESTEE_QUEUE_OPTIONS = QueueOptions(max_deliveries=3, lease_ms=2000, prefetch=8)
#: Jobs the testee's worker runs at once.
TESTEE_CONCURRENCY = 4
#: Event subscriptions by group: (pattern, members) (CONF-013).
EVENT_GROUPS: Mapping[str, tuple[str, int]] = {
    "a": ("llmp.testee.events.*", 2),
    "b": ("llmp.testee.events.>", 1),
}
#: Default bound of each counters map; the spec asks for at least 1,000 (CONF-016).
COUNTER_LIMIT = 10_000

_MAX_SLEEP_MS = 600_000
_MAX_COUNT = 10_000
_MAX_FAIL_FIRST = 1_000
_RELAY_TIMEOUT_S = 5.0  #: the longest a relayed request may take (within the caller's deadline)
_REPLY_HEADROOM = 4096  #: bytes kept free in the counters reply for the envelope's own members
_DEADLINE_SLACK_S = (
    0.25  #: a stop this close to the deadline is the deadline's doing (loaded hosts)
)


class TesteeOutcome(enum.StrEnum):
    """How a sleep, stream or job ended on the testee's side (spec/conformance.md)."""

    COMPLETED = "completed"  #: the handler finished and the reply is a success
    CANCELLED = "cancelled"  #: a cancel (or the shutdown) stopped the handler
    EXPIRED = "expired"  #: the deadline stopped the handler
    FAILED = "failed"  #: the handler failed (invalid data, a job's deliberate failure)


def _bump(counts: OrderedDict[str, int], key: str, limit: int) -> None:
    counts[key] = counts.get(key, 0) + 1
    counts.move_to_end(key)
    while len(counts) > limit:
        counts.popitem(last=False)


def _newest(entries: OrderedDict[str, Any], count: int) -> dict[str, Any]:
    if count >= len(entries):
        return dict(entries)
    if count <= 0:
        return {}
    return dict(list(entries.items())[-count:])


class Counters:
    """What the testee counts, each map bounded to its newest ``limit`` entries.

    :param limit: most entries each map keeps (the oldest go first).
    """

    def __init__(self, limit: int = COUNTER_LIMIT) -> None:
        if limit < 1:
            raise ValueError("the counter limit must be positive")
        self.limit = limit
        #: handler runs per idempotency key
        self.executions: OrderedDict[str, int] = OrderedDict()
        #: how each sleep, stream and job ended, per request id (the latest delivery's)
        self.outcomes: OrderedDict[str, TesteeOutcome] = OrderedDict()
        #: receipts per subscriber group, per event id
        self.events: dict[str, OrderedDict[str, int]] = {g: OrderedDict() for g in EVENT_GROUPS}
        #: deliveries the worker saw, per job (request) id
        self.jobs: OrderedDict[str, int] = OrderedDict()

    def executed(self, key: str) -> None:
        """A handler ran for a request carrying idempotency key ``key``."""
        _bump(self.executions, key, self.limit)

    def ended(self, request_id: str, outcome: TesteeOutcome) -> None:
        """The handler of ``request_id`` ended with ``outcome``."""
        self.outcomes[request_id] = outcome
        self.outcomes.move_to_end(request_id)
        while len(self.outcomes) > self.limit:
            self.outcomes.popitem(last=False)

    def received(self, group: str, event_id: str) -> None:
        """A member of ``group`` handled the event ``event_id``."""
        _bump(self.events[group], event_id, self.limit)

    def delivered(self, request_id: str) -> None:
        """The worker took the job ``request_id`` (once per delivery)."""
        _bump(self.jobs, request_id, self.limit)

    def document(self, newest: int | None = None) -> dict[str, Any]:
        """The counters document; with ``newest``, only that many newest entries per map."""
        count = self.limit if newest is None else newest
        return {
            "executions": _newest(self.executions, count),
            "outcomes": {k: str(v) for k, v in _newest(self.outcomes, count).items()},
            "events": {group: _newest(seen, count) for group, seen in self.events.items()},
            "jobs": _newest(self.jobs, count),
        }


def _params(request: Request) -> dict[str, Any]:
    data = request.data
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ExchangeError(
            ErrorCode.INVALID_PARAMS, f"{request.type} takes an object, not {type(data).__name__}"
        )
    return data


def _integer(data: Mapping[str, Any], name: str, *, high: int, default: int | None = None) -> int:
    value = data.get(name, default)
    if value is None:
        raise ExchangeError(ErrorCode.INVALID_PARAMS, f"{name} is required")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0 is an integer in JSON
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ExchangeError(
            ErrorCode.INVALID_PARAMS, f"{name} must be an integer from 0 to {high}, not {value!r}"
        )
    return value


def _text(data: Mapping[str, Any], name: str, default: str) -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise ExchangeError(ErrorCode.INVALID_PARAMS, f"{name} must be a string, not {value!r}")
    return value


class Testee:
    """Serves the testee contract on ``transport`` until the ``async with`` block ends.

    On a transport that does not declare ``durable_queues`` the testee offers no work queue,
    and without ``wildcards`` and ``groups`` no event subscriptions: the checks that need them
    are unsupported there anyway.

    :param transport: an entered transport (the testee does not own it).
    :param faults: names of deliberate defects, for showing that checks fail; reserved.
    :param counter_limit: most entries each counters map keeps.
    """

    __test__ = False  #: not a pytest test class, despite its name

    def __init__(
        self,
        transport: Transport,
        *,
        faults: frozenset[str] = frozenset(),
        counter_limit: int = COUNTER_LIMIT,
    ) -> None:
        self.transport = transport
        self.faults = faults
        self.counters = Counters(counter_limit)
        self.service = Service(transport, name=TESTEE_SERVICE, grace=1.0)
        self.client = Client(transport, source=self.service.source)
        worker = Signer(published_key(WORKER_KID))
        #: the service that checks security [CONF-022]; it signs its replies [CONF-023]
        self.secure = Service(transport, name=TESTEE_SECURE_SERVICE, source=WORKER_SOURCE,
                              grace=1.0, security=secure_policy(), signer=worker)  # fmt: skip
        #: the secure service's own client downstream: signed, and no caller's token [SEC-032]
        self.secure_client = Client(transport, source=WORKER_SOURCE, signer=worker)
        self._stack = AsyncExitStack()
        self._register()

    def _register(self) -> None:
        """Register every operation, the worker and the subscriptions [CONF-003, CONF-004]."""
        handler = self.service.handler
        handler(TESTEE_TYPES["echo"])(self._echo)
        handler(TESTEE_TYPES["fail"])(self._fail)
        handler(TESTEE_TYPES["sleep"])(self._sleep)
        handler(TESTEE_TYPES["stream"])(self._stream)
        handler(TESTEE_TYPES["emit"])(self._emit)
        handler(TESTEE_TYPES["counters"])(self._counters)
        capabilities = self.transport.capabilities
        if capabilities.durable_queues:
            self.service.worker(
                TESTEE_QUEUE, concurrency=TESTEE_CONCURRENCY, options=TESTEE_QUEUE_OPTIONS
            )(self._job)
        if capabilities.wildcards and capabilities.groups:
            for group, (pattern, members) in EVENT_GROUPS.items():
                for _ in range(members):
                    self.service.on_event(pattern, group=group)(self._receiver(group))
        secure = self.secure.handler
        secure(TESTEE_SECURE_TYPES["echo"])(self._echo)
        secure(TESTEE_SECURE_TYPES["scoped"])(self._echo)
        secure(TESTEE_SECURE_TYPES["relay"])(self._relay)

    async def __aenter__(self) -> Testee:
        await self._stack.__aenter__()
        try:
            await self._stack.enter_async_context(self.client)
            await self._stack.enter_async_context(self.secure_client)
            await self._stack.enter_async_context(self.service)
            await self._stack.enter_async_context(self.secure)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    # -- counting --------------------------------------------------------------------

    def _executed(self, request: Request) -> None:
        key = request.envelope.idempotency_key
        if key is not None:
            self.counters.executed(key)

    def _stop_outcome(self, request: Request, exc: BaseException) -> TesteeOutcome:
        """What stopped a handler that raised ``exc``: a cancel, the deadline, or a failure."""
        stopped = isinstance(exc, anyio.get_cancelled_exc_class())
        running = self.service.running.get(request.envelope.id)
        if isinstance(exc, GeneratorExit):  # a stream closed while it waited at a chunk
            stopped = running is not None and running.scope.cancel_called
        if not stopped:
            return TesteeOutcome.FAILED
        if running is not None and running.cancelled:
            return TesteeOutcome.CANCELLED
        remaining = request.remaining_s()
        if remaining is not None and remaining <= _DEADLINE_SLACK_S:
            return TesteeOutcome.EXPIRED
        return TesteeOutcome.CANCELLED

    # -- operations [CONF-005 .. CONF-011] ---------------------------------------------

    async def _echo(self, request: Request) -> Any:
        self._executed(request)
        return request.data

    async def _fail(self, request: Request) -> Any:
        self._executed(request)
        data = _params(request)
        code = data.get("code")
        if not isinstance(code, str):
            raise ExchangeError(ErrorCode.INVALID_PARAMS, f"code must be a string, not {code!r}")
        message = _text(data, "message", f"failed on request with {code}")
        retryable = data.get("retryable")
        details = data.get("details", [])
        if retryable is not None and not isinstance(retryable, bool):
            raise ExchangeError(ErrorCode.INVALID_PARAMS, "retryable must be a boolean")
        if not isinstance(details, list) or not all(isinstance(d, dict) for d in details):
            raise ExchangeError(ErrorCode.INVALID_PARAMS, "details must be a list of objects")
        if len(message) > 4096 or len(details) > 32:
            raise ExchangeError(ErrorCode.INVALID_PARAMS, "message or details are too long")
        retry_after = data.get("retry_after_ms")
        error = ExchangeError(
            code,
            message,
            retryable=retryable,
            retry_after_ms=None if retry_after is None else _integer(data, "retry_after_ms",
                                                                     high=2**53 - 1),
            details=tuple(details),
        )  # fmt: skip
        try:  # the error reply must be a valid envelope; say so instead of failing to send it
            Envelope.new(kind=Kind.ERROR, type=request.type, source=self.service.source,
                         correlation_id=request.envelope.id,
                         error=error.to_error_object(origin=self.service.source))  # fmt: skip
        except EnvelopeError as exc:
            raise ExchangeError(
                ErrorCode.INVALID_PARAMS, f"not a valid error object: {exc.message}"
            ) from exc
        raise error

    async def _sleep(self, request: Request) -> Any:
        self._executed(request)
        rid = request.envelope.id
        try:
            ms = _integer(_params(request), "ms", high=_MAX_SLEEP_MS)
            await anyio.sleep(ms / 1000)
        except BaseException as exc:
            self.counters.ended(rid, self._stop_outcome(request, exc))
            raise
        self.counters.ended(rid, TesteeOutcome.COMPLETED)
        return {"slept_ms": ms}

    async def _stream(self, request: Request) -> AsyncIterator[Any]:
        self._executed(request)
        rid = request.envelope.id
        try:
            data = _params(request)
            n = _integer(data, "n", high=_MAX_COUNT)
            delay_s = _integer(data, "delay_ms", high=_MAX_SLEEP_MS, default=0) / 1000
            finish_reason = _text(data, "finish_reason", "stop")
            for index in range(n):
                if delay_s:
                    await anyio.sleep(delay_s)
                yield {"index": index}
        except BaseException as exc:
            self.counters.ended(rid, self._stop_outcome(request, exc))
            raise
        self.counters.ended(rid, TesteeOutcome.COMPLETED)  # before the final chunk goes out
        yield Final(finish_reason=finish_reason, usage={"output_tokens": n})

    async def _emit(self, request: Request) -> Any:
        self._executed(request)
        data = _params(request)
        type_ = _text(data, "type", "")
        count = _integer(data, "count", high=_MAX_COUNT)
        payload = data.get("data")
        try:
            Envelope.new(kind=Kind.EVENT, type=type_, source=self.client.source, data=payload)
        except EnvelopeError as exc:
            raise ExchangeError(
                ErrorCode.INVALID_PARAMS, f"cannot publish that event: {exc.message}"
            ) from exc
        for _ in range(count):
            await self.client.publish(type_, payload)
        return {"emitted": count}

    async def _relay(self, request: Request) -> Any:
        """Send ``data`` as a request of ``type`` with the secure service's own client, and
        answer with the reply's data: the downstream request carries no caller's token."""
        self._executed(request)
        data = _params(request)
        type_ = _text(data, "type", "")
        payload = data.get("data")
        try:
            Envelope.new(kind=Kind.REQUEST, type=type_, source=WORKER_SOURCE, data=payload)
        except EnvelopeError as exc:
            raise ExchangeError(
                ErrorCode.INVALID_PARAMS, f"cannot relay that request: {exc.message}"
            ) from exc
        reply = await self.secure_client.request(type_, payload, timeout=_RELAY_TIMEOUT_S)
        return reply.data

    async def _counters(self, request: Request) -> Any:
        self._executed(request)
        budget = (
            min(DEFAULT_LIMITS.max_envelope_bytes, self.transport.capabilities.max_payload)
            - _REPLY_HEADROOM
        )
        newest = self.counters.limit
        while True:
            document = self.counters.document(newest)
            if newest == 0 or len(orjson.dumps(document)) <= budget:
                return document
            newest //= 2

    async def _job(self, request: Request) -> Any:
        self._executed(request)
        rid = request.envelope.id
        self.counters.delivered(rid)
        try:
            if request.type != TESTEE_TYPES["job"]:
                raise ExchangeError(
                    ErrorCode.UNKNOWN_TYPE,
                    f"{TESTEE_QUEUE} takes {TESTEE_TYPES['job']} jobs, not {request.type!r}",
                )
            data = _params(request)
            fail_first = _integer(data, "fail_first", high=_MAX_FAIL_FIRST, default=0)
            sleep_ms = _integer(data, "sleep_ms", high=_MAX_SLEEP_MS, default=0)
            if sleep_ms:
                await anyio.sleep(sleep_ms / 1000)
            delivery = request.delivery_count
            if delivery <= fail_first:
                raise ExchangeError(
                    ErrorCode.UNAVAILABLE,
                    f"delivery {delivery} fails on purpose (fail_first={fail_first})",
                    retryable=True,
                )
        except BaseException as exc:
            self.counters.ended(rid, self._stop_outcome(request, exc))
            raise
        self.counters.ended(rid, TesteeOutcome.COMPLETED)
        return {"deliveries": delivery}

    def _receiver(self, group: str) -> Any:
        async def receive(event: Event) -> None:
            self.counters.received(group, event.envelope.id)

        return receive
