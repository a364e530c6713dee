"""The asynchronous client: request, stream, publish, submit, cancel (spec/patterns.md).

Theory of operation
-------------------
A client opens one inbox and multiplexes every reply over it by ``correlation_id``; a single
reader task decodes what arrives and feeds it to the sans-IO :class:`Correlator`, which owns
the exchange state machines. Each waiting call holds a small slot: an event plus the outcome
for a call, a memory stream for a stream. A call waits until its deadline at most; when the
deadline passes, or the calling task is cancelled, the exchange ends locally (``EXPIRED`` or
``CANCELLED``) and whatever arrives later is dropped and counted [TERM-002]. There is no
lock on the request path: slots are keyed by request id.

One :class:`~llmproto_ref._pool.DeadlineTimer` task serves every deadline instead of a cancel
scope per call (a scope with a deadline costs more than decoding a reply). It ends an exchange
whose deadline passed only while somebody waits for it; whoever starts waiting after the
deadline finds it passed and ends the exchange at once, which is what a scope would have done.

Security is configuration. With a ``signer`` or a ``bearer_token`` the client holds an
:class:`~llmproto_ref._signing.Outgoing` that puts the token into ``auth`` of each request and
signs every request, job, event and cancel after its last member (``timing`` included) is set
[SEC-010]. With ``security`` each reply is checked by the policy after it decoded; a reply the
policy refuses is dropped and counted as a malformed reply. It does not end the exchange: an
unproven message must not be able to stop a call, so the genuine reply can still arrive, and
otherwise the deadline ends it (spec/request-response.md: a reply that does not decode is
dropped and counted). Without any of them the cost is one ``is None`` test per message.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from llmproto_ref._clock import now_ms, now_us
from llmproto_ref._codec import decode, encode
from llmproto_ref._correlation import Correlator, Pending
from llmproto_ref._deadline import Deadline
from llmproto_ref._envelope import LLMP_VERSION, Envelope, Kind, _plain
from llmproto_ref._errors import EnvelopeError, ExchangeError, LlmpError, RemoteProtocolError
from llmproto_ref._exchange import Action, ExchangeKind, Input
from llmproto_ref._handling import Event, Request, current_request
from llmproto_ref._ids import new_id, now_timestamp
from llmproto_ref._limits import DEFAULT_LIMITS, Limits
from llmproto_ref._metrics import Metrics, Pattern
from llmproto_ref._policy import SecurityPolicy
from llmproto_ref._pool import DeadlineTimer
from llmproto_ref._registry import ErrorCode
from llmproto_ref._signing import Outgoing, Signer
from llmproto_ref._transport import Inbox, Notice, Transport, TransportError
from llmproto_ref._validate import validate_member

__all__ = ("Client", "JobHandle", "Stream")

_log = logging.getLogger("llmproto_ref.client")


class _CallSlot:
    """A waiting call's outcome: set ``reply`` or ``error``, then ``done``."""

    __slots__ = ("done", "error", "reply", "waiting")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.reply: Envelope | None = None
        self.error: LlmpError | None = None
        self.waiting = False  #: a task awaits the outcome now (the deadline timer may end it)


@dataclass(slots=True)
class _StreamSlot:
    send: MemoryObjectSendStream[Envelope | LlmpError]
    receive: MemoryObjectReceiveStream[Envelope | LlmpError]
    waiting: bool = False  #: a task awaits the next item now (the deadline timer may end it)


def _error_from_reply(reply: Envelope) -> ExchangeError:
    err = reply.error or {}
    return ExchangeError(
        ErrorCode.parse(str(err.get("code", "INTERNAL"))),
        str(err.get("message", "")),
        retryable=bool(err.get("retryable", False)),
        retry_after_ms=err.get("retry_after_ms"),
        details=tuple(err.get("details", ())),
        envelope=reply,
    )


class Client:
    """Talks to services over a transport.

    :param transport: an entered :class:`~llmproto_ref.Transport` (the client does not own it).
    :param source: this client's identity, the ``source`` of what it sends.
    :param timeout: default seconds a request may take when no deadline is given.
    :param limits: size and depth limits for replies.
    :param signer: signs every request, job, event and cancel the client sends [SEC-010].
    :param bearer_token: this client's own token, put into ``auth`` of every request and job
        (a function is called for each one, so the token can be refreshed). A client used
        inside a handler adds only this token, never the caller's [SEC-032].
    :param security: the policy every reply must pass (its signature, above all); a reply it
        refuses is dropped and counted in :attr:`malformed_replies` and :attr:`rejections`.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        source: str,
        timeout: float = 30.0,
        limits: Limits = DEFAULT_LIMITS,
        signer: Signer | None = None,
        bearer_token: str | Callable[[], str] | None = None,
        security: SecurityPolicy | None = None,
    ) -> None:
        self.transport = transport
        self.source = source
        self.timeout = timeout
        self.limits = limits
        self.security = security
        self._outgoing = Outgoing.of(signer, bearer_token)
        self._understood = security.understood if security is not None else frozenset()
        self.metrics = Metrics()
        self.correlator = Correlator()
        self.malformed_replies = 0  #: replies that failed to decode (dropped, counted)
        #: (code, pointer, requirement) of the latest replies that failed to decode [ENV-038]
        self.rejections: deque[tuple[str, str, str]] = deque(maxlen=256)
        self._slots: dict[str, _CallSlot | _StreamSlot] = {}
        self._inbox: Inbox | None = None
        self._tg: TaskGroup | None = None
        self._timer = DeadlineTimer(self._expire, self.correlator.__contains__)

    async def __aenter__(self) -> Client:
        self._inbox = await self.transport.open_inbox()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read_replies, self._inbox)
        self._tg.start_soon(self._timer.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tg is None or self._inbox is None:
            return
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)  # the caller's exception stays its own
        with anyio.CancelScope(shield=True):
            await self._inbox.subscription.aclose()
        for request_id in list(self._slots):
            self._finish(request_id, ExchangeError(ErrorCode.UNAVAILABLE, "client closed"))
        self._tg = None

    @property
    def pending(self) -> int:
        """Exchanges still open (a test of "no leak after timeout" reads this)."""
        return len(self.correlator)

    # -- building requests -------------------------------------------------------------

    def _request_envelope(
        self,
        type_: str,
        data: Any,
        *,
        deadline: Deadline,
        reply_to: str | None,
        call_us: int,
        members: Mapping[str, Any],
        parent: Request | Event | None,
    ) -> Envelope:
        if members:  # the application's own members: the validating constructor
            extra = dict(members)
            if parent is not None and "causation_id" not in extra:
                extra["causation_id"] = parent.envelope.id
            return Envelope.new(
                kind=Kind.REQUEST,
                type=type_,
                source=self.source,
                reply_to=reply_to,
                deadline=deadline.to_timestamp(),
                data=data,
                timing={"call": call_us, "sent": now_us()},
                **extra,
            )
        built = self._header("request", type_)
        if parent is not None:
            built["causation_id"] = parent.envelope.id  # [DL-003]
        if reply_to is not None:
            validate_member("reply_to", reply_to)
            built["reply_to"] = reply_to
        due = deadline.to_timestamp()
        validate_member("deadline", due)  # a far-off or negative instant is no timestamp
        built["deadline"] = due
        if data is not None:
            built["data"] = _plain(data)
        built["timing"] = {"call": call_us, "sent": now_us()}
        return Envelope._assembled(built)  # noqa: SLF001 - assembled from checked parts

    def _header(self, kind: str, type_: str) -> dict[str, Any]:
        """The first members of what this client sends, for ``Envelope._assembled``.

        Members go in the constructor's order; what came from the application (``type``,
        this client's ``source``) is checked as the constructor checks it, the rest is valid
        by construction. A message with further members of the application's own takes the
        validating constructor instead.
        """
        validate_member("type", type_)
        validate_member("source", self.source)
        return {
            "llmp": LLMP_VERSION,
            "id": new_id(),
            "kind": kind,
            "type": type_,
            "source": self.source,
            "time": now_timestamp(),
        }

    def _deadline(
        self, timeout: float | None, deadline: Deadline | None, parent: Request | Event | None
    ) -> Deadline:
        """The explicit deadline, else now + timeout, never later than the current handler's.

        :param parent: the request or event whose handler runs this call, if any [DL-003].
        """
        own = deadline or Deadline.after(now_ms(), self.timeout if timeout is None else timeout)
        return own.earliest(parent.deadline if parent is not None else None)

    # -- request-response ----------------------------------------------------------------

    async def request(
        self,
        type: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        deadline: Deadline | None = None,
        _pattern: Pattern = Pattern.REQUEST,
        **members: Any,
    ) -> Envelope:
        """Send a request and wait for its one terminal reply.

        :param members: further envelope members, e.g. ``idempotency_key`` or ``ext``.
        :returns: the ``response`` envelope.
        :raises ExchangeError: for an error reply, ``DEADLINE_EXCEEDED``, ``NO_RESPONDERS``,
            ``CANCELLED`` (this task was cancelled) or ``UNAVAILABLE``.
        """
        call_us = now_us()
        inbox = self._require_inbox()
        parent = current_request()
        due = self._deadline(timeout, deadline, parent)
        envelope = self._request_envelope(
            type,
            data,
            deadline=due,
            reply_to=inbox.address,
            call_us=call_us,
            members=members,
            parent=parent,
        )
        if self._outgoing is not None:  # token, then signature; ``sent`` is already stamped
            envelope = self._outgoing.request(envelope)
        slot = _CallSlot()
        rid = envelope.id
        self._slots[rid] = slot
        self._open(envelope, ExchangeKind.CALL, due)
        self.metrics.sent(_pattern, envelope.type)
        try:
            body = encode(envelope, limits=self.limits)
            await self.transport.send_request(
                envelope.type, body, reply_to=envelope.reply_to or "", message_id=rid
            )
        except (TransportError, EnvelopeError) as exc:
            self._local(rid, Input.NO_RESPONDERS, exc)  # ends the exchange as failed
            self.metrics.failed(_pattern, envelope.type, str(exc.code))
            raise ExchangeError(exc.code, exc.message) from exc
        return await self._await_call(rid, slot, due, _pattern, envelope.type, call_us=call_us)

    async def _await_call(
        self,
        rid: str,
        slot: _CallSlot,
        due: Deadline,
        pattern: Pattern,
        type_: str,
        *,
        call_us: int,
    ) -> Envelope:
        if not slot.done.is_set() and due.expired(now_ms()):
            self._local(rid, Input.DEADLINE, _call_expired(type_))
        slot.waiting = True
        try:
            await slot.done.wait()  # the timer ends the exchange at its deadline
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._cancel_exchange(rid, type_, "the calling task was cancelled")
            raise
        finally:
            slot.waiting = False
        if slot.error is not None:
            self.metrics.failed(pattern, type_, str(slot.error.code))
            raise slot.error
        reply = slot.reply
        if reply is None:  # pragma: no cover - done is only set with a reply or an error
            raise ExchangeError(ErrorCode.INTERNAL, "a call finished without an outcome")
        self.metrics.succeeded(
            pattern, type_, latency_ms=(now_us() - call_us) / 1000, timing=reply.timing
        )
        return reply

    # -- streams -------------------------------------------------------------------------

    def stream(
        self,
        type: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        deadline: Deadline | None = None,
        **members: Any,
    ) -> Stream:
        """Open a streamed request; use the result as ``async with`` and iterate it.

        Leaving the ``async with`` block before the stream ended cancels it [CAN-001].
        """
        return Stream(self, type, data, timeout=timeout, deadline=deadline, members=members)

    async def _open_stream(self, stream: Stream) -> None:
        call_us = now_us()
        inbox = self._require_inbox()
        parent = current_request()
        due = self._deadline(stream.timeout, stream.deadline_arg, parent)
        envelope = self._request_envelope(
            stream.type,
            stream.data,
            deadline=due,
            reply_to=inbox.address,
            call_us=call_us,
            members=stream.members,
            parent=parent,
        )
        if self._outgoing is not None:
            envelope = self._outgoing.request(envelope)
        send, receive = anyio.create_memory_object_stream[Envelope | LlmpError](math.inf)
        slot = self._slots[envelope.id] = _StreamSlot(send=send, receive=receive)
        self._open(envelope, ExchangeKind.STREAM, due)
        self.metrics.sent(Pattern.STREAM, envelope.type)
        stream.request, stream.due, stream.receive, stream.call_us = envelope, due, receive, call_us
        stream.slot = slot
        try:
            await self.transport.send_request(
                envelope.type,
                encode(envelope, limits=self.limits),
                reply_to=inbox.address,
                message_id=envelope.id,
            )
        except (TransportError, EnvelopeError) as exc:
            self._local(envelope.id, Input.NO_RESPONDERS, exc)
            self.metrics.failed(Pattern.STREAM, envelope.type, str(exc.code))
            raise ExchangeError(exc.code, exc.message) from exc

    # -- cancel --------------------------------------------------------------------------

    async def cancel(self, request_id: str, *, reason: str = "cancelled by the requester") -> bool:
        """Cancel an open exchange; ``False`` if it had already ended."""
        pending = self.correlator.get(request_id)
        if pending is None:
            return False
        await self._cancel_exchange(request_id, pending.type, reason)
        return True

    async def _cancel_exchange(self, rid: str, type_: str, reason: str) -> None:
        step = self._local(rid, Input.CANCEL, ExchangeError(ErrorCode.CANCELLED, reason))
        if step is None or step[1] is not Action.SEND_CANCEL:
            return
        cancel = Envelope.new(kind=Kind.CANCEL, type=type_, source=self.source, correlation_id=rid)
        if self._outgoing is not None:
            cancel = self._outgoing.sign(cancel)
        with contextlib.suppress(TransportError):  # best effort: the deadline still ends the work
            await self.transport.publish_cancel(type_, encode(cancel, limits=self.limits))

    # -- events --------------------------------------------------------------------------

    async def publish(self, type: str, data: Any = None, **members: Any) -> Envelope:
        """Publish an event; returns the envelope sent."""
        parent = current_request()
        if members:
            if parent is not None and "causation_id" not in members:
                members["causation_id"] = parent.envelope.id  # [EVT-004]
            envelope = Envelope.new(
                kind=Kind.EVENT, type=type, source=self.source, data=data, **members
            )
        else:
            built = self._header("event", type)
            if parent is not None:
                built["causation_id"] = parent.envelope.id  # [EVT-004]
            if data is not None:
                built["data"] = _plain(data)
            envelope = Envelope._assembled(built)  # noqa: SLF001
        if self._outgoing is not None:
            envelope = self._outgoing.sign(envelope)  # no token: every subscriber would see it
        await self.transport.publish_event(type, encode(envelope, limits=self.limits))
        return envelope

    # -- work queue ----------------------------------------------------------------------

    async def submit(
        self,
        queue: str,
        type: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        deadline: Deadline | None = None,
        result: bool = True,
        **members: Any,
    ) -> JobHandle:
        """Put a request on a durable work queue; returns once the broker confirmed it.

        :param result: whether the worker should send the outcome back (``reply_to``).
        :returns: a handle whose :meth:`JobHandle.result` awaits the outcome.
        """
        call_us = now_us()
        inbox = self._require_inbox()
        parent = current_request()
        due = self._deadline(timeout, deadline, parent)
        envelope = self._request_envelope(
            type,
            data,
            deadline=due,
            reply_to=inbox.address if result else None,
            call_us=call_us,
            members=members,
            parent=parent,
        )
        if self._outgoing is not None:
            envelope = self._outgoing.request(envelope)
        self.metrics.sent(Pattern.QUEUE, type)
        rid = envelope.id
        slot = _CallSlot()
        if result:
            self._slots[rid] = slot
            self._open(envelope, ExchangeKind.CALL, due)
        try:
            await self.transport.enqueue(
                queue, encode(envelope, limits=self.limits), message_id=rid
            )
        except (TransportError, EnvelopeError) as exc:
            if result:
                self._local(rid, Input.NO_RESPONDERS, exc)
            self.metrics.failed(Pattern.QUEUE, type, str(exc.code))
            raise ExchangeError(exc.code, exc.message) from exc
        return JobHandle(self, envelope, slot if result else None, due, call_us)

    # -- deadlines -----------------------------------------------------------------------

    def _open(self, request: Envelope, kind: ExchangeKind, due: Deadline) -> None:
        self.correlator.open(request, kind, due)
        self._timer.schedule(due.at_ms, request.id)

    def _expire(self, rid: str) -> None:
        """End ``rid`` for its deadline if a task waits for it (else the waiter will)."""
        slot = self._slots.get(rid)
        pending = self.correlator.get(rid)
        if slot is None or not slot.waiting or pending is None:
            return
        error: LlmpError
        if isinstance(slot, _StreamSlot):
            error = _stream_expired(pending)
        else:
            error = _call_expired(pending.type)
        self._local(rid, Input.DEADLINE, error)

    # -- the reply path ------------------------------------------------------------------

    def _require_inbox(self) -> Inbox:
        if self._inbox is None:
            raise ExchangeError(ErrorCode.UNAVAILABLE, "use the client inside 'async with'")
        return self._inbox

    async def _read_replies(self, inbox: Inbox) -> None:
        async for delivery in inbox.subscription:
            if delivery.notice is Notice.NO_RESPONDERS:
                if delivery.message_id is not None:
                    self._local(
                        delivery.message_id,
                        Input.NO_RESPONDERS,
                        ExchangeError(ErrorCode.NO_RESPONDERS, "nobody serves this type"),
                    )
                continue
            try:
                reply = decode(delivery.body, limits=self.limits, understood=self._understood)
                if self.security is not None:  # refused: dropped, the exchange goes on
                    reply = self.security.check(reply, len(delivery.body)).envelope
            except EnvelopeError as exc:
                self.malformed_replies += 1
                self.rejections.append((str(exc.code), exc.pointer, exc.requirement))
                _log.info("dropped a reply that does not decode or was refused: %s", exc)
                continue
            self._route(reply)

    def _route(self, reply: Envelope) -> None:
        routed = self.correlator.route(reply)
        if routed is None:
            ended = self.correlator.ended(reply.correlation_id or "")
            if ended is not None:
                kind, type_ = ended
                pattern = Pattern.STREAM if kind is ExchangeKind.STREAM else Pattern.REQUEST
                self.metrics.late(pattern, type_)
            return
        rid = routed.pending.exchange.request_id
        slot = self._slots.get(rid)
        if routed.error is not None:
            self._fail_slot(rid, slot, routed.error)
            return
        for action, envelope in routed.steps:
            if action is Action.DELIVER:  # the common case first
                if isinstance(slot, _CallSlot):
                    slot.reply = envelope
                    slot.done.set()
                elif isinstance(slot, _StreamSlot):
                    slot.send.send_nowait(envelope)
            elif action is Action.DROP:
                self.metrics.late(_pattern_of(routed.pending), routed.pending.type)
            elif action is Action.PROTOCOL_ERROR:
                self._fail_slot(
                    rid,
                    slot,
                    RemoteProtocolError(
                        ErrorCode.PROTOCOL_ERROR,
                        f"unexpected {envelope.kind} in a {routed.pending.exchange.kind} exchange",
                    ),
                )
            elif action is Action.FAIL:
                self._fail_slot(rid, slot, _error_from_reply(envelope))
        if routed.pending.exchange.terminal:
            closing = self._slots.pop(rid, None)
            if isinstance(closing, _StreamSlot):
                closing.send.close()  # the stream's reader sees the end after the last item

    def _local(self, rid: str, event: Input, error: LlmpError) -> tuple[Pending, Action] | None:
        step = self.correlator.local(rid, event)
        if step is not None and step[1] is not Action.DROP:
            self._finish(rid, error)
        return step

    def _finish(self, rid: str, error: LlmpError) -> None:
        slot = self._slots.pop(rid, None)
        self._fail_slot(rid, slot, error)

    def _fail_slot(self, rid: str, slot: _CallSlot | _StreamSlot | None, error: LlmpError) -> None:
        if isinstance(slot, _CallSlot):
            if not slot.done.is_set():
                slot.error = error
                slot.done.set()
        elif isinstance(slot, _StreamSlot):
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                slot.send.send_nowait(error)
            slot.send.close()
        self._slots.pop(rid, None)


def _call_expired(type_: str) -> ExchangeError:
    return ExchangeError(ErrorCode.DEADLINE_EXCEEDED, f"no reply to {type_} before its deadline")


def _stream_expired(pending: Pending) -> LlmpError:
    """A stream's deadline error: a gap that never closed, else DEADLINE_EXCEEDED [STR-005]."""
    gap = pending.reassembler
    if gap is not None and gap.has_gap:
        return gap.interrupted()
    return ExchangeError(
        ErrorCode.DEADLINE_EXCEEDED,
        f"stream {pending.type} did not finish before its deadline",
    )


def _pattern_of(pending: Pending) -> Pattern:
    return Pattern.STREAM if pending.exchange.kind is ExchangeKind.STREAM else Pattern.REQUEST


class Stream:
    """A streamed reply: ``async with client.stream(...) as s: async for chunk in s``.

    Iteration yields each non-final chunk in ``seq`` order; :attr:`result` then holds the
    terminal envelope (the final chunk, with ``finish_reason`` and ``usage``).
    """

    def __init__(
        self,
        client: Client,
        type_: str,
        data: Any,
        *,
        timeout: float | None,
        deadline: Deadline | None,
        members: Mapping[str, Any],
    ) -> None:
        self.client = client
        self.type = type_
        self.data = data
        self.timeout = timeout
        self.deadline_arg = deadline
        self.members = members
        self.request: Envelope | None = None
        self.due: Deadline | None = None
        self.receive: MemoryObjectReceiveStream[Envelope | LlmpError] | None = None
        self.slot: _StreamSlot | None = None
        self.call_us = 0
        self.result: Envelope | None = None  #: the terminal message once the stream completed
        self.chunks = 0  #: chunks delivered so far

    async def __aenter__(self) -> Stream:
        await self.client._open_stream(self)  # noqa: SLF001 - the stream is the client's part
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.request is not None and self.request.id in self.client.correlator:
            with anyio.CancelScope(shield=True):
                await self.cancel()
        if self.receive is not None:
            self.receive.close()

    @property
    def id(self) -> str:
        """The request's id."""
        if self.request is None:
            raise RuntimeError("the stream is not open: use it with 'async with'")
        return self.request.id

    async def cancel(self, reason: str = "cancelled by the requester") -> bool:
        """Stop the stream now; chunks still in flight are dropped and counted [CAN-002]."""
        return await self.client.cancel(self.id, reason=reason)

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Envelope:
        """The next chunk in ``seq`` order; ends after the terminal message.

        :raises ExchangeError: for an error reply or the deadline.
        :raises RemoteProtocolError: ``STREAM_INTERRUPTED`` for a gap that never closed.
        """
        slot = self.slot
        if self.receive is None or self.due is None or slot is None:
            raise RuntimeError("the stream is not open: use it with 'async with'")
        if self.result is not None:
            raise StopAsyncIteration
        metrics, type_ = self.client.metrics, self.type
        item: Envelope | LlmpError | None = None
        if not self.due.expired(now_ms()):  # past it, nothing more is taken, as a scope would
            slot.waiting = True  # the client's timer ends the stream at its deadline
            try:
                item = await self.receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                raise StopAsyncIteration from None
            finally:
                slot.waiting = False
        if item is None:
            pending = self.client.correlator.get(self.id)
            error: LlmpError = (
                _stream_expired(pending)
                if pending is not None
                else ExchangeError(
                    ErrorCode.DEADLINE_EXCEEDED,
                    f"stream {type_} did not finish before its deadline",
                )
            )
            self.client._local(self.id, Input.DEADLINE, error)  # noqa: SLF001
            metrics.failed(Pattern.STREAM, type_, str(error.code))
            raise error
        if isinstance(item, LlmpError):
            metrics.failed(Pattern.STREAM, type_, str(item.code))
            raise item
        if item.kind is Kind.CHUNK and not item.final:
            self.chunks += 1
            return item
        self.result = item
        metrics.succeeded(
            Pattern.STREAM,
            type_,
            latency_ms=(now_us() - self.call_us) / 1000,
            timing=item.timing,
        )
        raise StopAsyncIteration


class JobHandle:
    """A submitted work-queue job; await :meth:`result` for its outcome."""

    def __init__(
        self,
        client: Client,
        request: Envelope,
        slot: _CallSlot | None,
        due: Deadline,
        call_us: int,
    ) -> None:
        self.client = client
        self.request = request
        self._slot = slot
        self._due = due
        self._call_us = call_us

    @property
    def id(self) -> str:
        """The job's request id (its message id on the queue)."""
        return self.request.id

    async def result(self) -> Envelope:
        """Wait for the worker's reply, at most until the job's deadline.

        :raises ExchangeError: for an error reply or ``DEADLINE_EXCEEDED``.
        :raises ValueError: if the job was submitted with ``result=False``.
        """
        if self._slot is None:
            raise ValueError("this job was submitted with result=False")
        return await self.client._await_call(  # noqa: SLF001
            self.id, self._slot, self._due, Pattern.QUEUE, self.request.type, call_us=self._call_us
        )
