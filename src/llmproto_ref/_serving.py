"""What a service does with each message it takes (spec/patterns.md, spec/exchanges.md).

Every request runs through a responder :class:`Exchange` (the ``serve`` table): the table
decides whether a response, a chunk, the final chunk or an error goes out, and the code
below performs the action. A handler runs inside one cancel scope that the service's
:class:`~llmproto_ref._pool.DeadlineTimer` cancels when the request's deadline passes [DL-004]
(one timer for every handler: a scope with a deadline of its own costs twice a plain one); a
cancel, the deadline and shutdown all cancel that scope, and the recorded reason picks the
input the table gets. On a pool task that scope is the task's :class:`~llmproto_ref._pool.JobScope`
(entering a scope per request costs more than decoding it): the handler's stop is caught here,
and the rest of the job runs shielded. Work-queue jobs take the same path with two
differences: a retryable failure is not answered but redelivered, until the last delivery,
which is answered with ``DEAD_LETTERED`` [WQ-004]; and the job is acked only after its
outcome was sent [WQ-003].

With a security policy, what decoded is checked at once (:meth:`Serving._admit`), and a
refusal takes the path of a message that did not decode: the :class:`SecurityError` is an
:class:`EnvelopeError` with the failed step's code, pointer and requirement [SEC-017, ENV-036].
With a signer, :meth:`Serving._send` signs each reply just before encoding it, so the
signature covers every member, ``timing`` included [SEC-010].
"""

from __future__ import annotations

import contextlib
import inspect
from collections import OrderedDict
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import anyio

from llmproto_ref._clock import now_ms, now_us
from llmproto_ref._codec import decode, encode
from llmproto_ref._deadline import Deadline
from llmproto_ref._envelope import Envelope, Kind
from llmproto_ref._errors import EnvelopeError, ExchangeError, LlmpError
from llmproto_ref._exchange import Action, Exchange, ExchangeKind, Input
from llmproto_ref._handling import Event, Final, Request, enter_request, leave_request
from llmproto_ref._idempotency import Claim, request_digest
from llmproto_ref._limits import Limits
from llmproto_ref._metrics import Pattern
from llmproto_ref._policy import SecurityPolicy, Verified
from llmproto_ref._pool import DeadlineTimer, LeaseKeeper, current_job_scope
from llmproto_ref._registry import ErrorCode
from llmproto_ref._replies import (
    chunk,
    error_reply,
    member_reply_to,
    peek,
    rejection_reply,
    reply_timing,
    response,
)
from llmproto_ref._signing import Signer
from llmproto_ref._transport import Delivery, Job, TransportError

if TYPE_CHECKING:
    from llmproto_ref._service import Registration, Service

__all__ = ("Running", "Serving")

_STOP_ERRORS = {
    Action.STOP_CANCELLED: (ErrorCode.CANCELLED, "cancelled by the requester"),
    Action.STOP_EXPIRED: (ErrorCode.DEADLINE_EXCEEDED, "the request's deadline passed"),
}
#: Members of a stored reply that a replay makes anew (a signature too: it is signed again).
_ENVELOPE_HEADER = frozenset(
    {"llmp", "id", "kind", "type", "source", "time", "correlation_id", "sig"}
)
_DONE = object()


@dataclass(slots=True)
class Running:
    """A handler that is running, so a cancel or the shutdown can reach it."""

    exchange: Exchange
    scope: anyio.CancelScope
    cancelled: bool = False  #: a cancel for this request arrived
    shutdown: bool = False  #: the service stopped it at shutdown
    chunks: int = 0  #: chunks sent so far, the next ``seq``
    sent: list[Any] | None = None  #: the chunks' data, kept for idempotent replay
    ended: bool = False  #: the handler returned (its deadline no longer matters)


@dataclass(slots=True, kw_only=True)
class _Outcome:
    reply: Envelope | None = None  #: the terminal reply (sent when there was a reply_to)
    retry: bool = False  #: a job to deliver again
    forget_key: bool = False  #: let a later request with the same idempotency key run
    shutdown: bool = False  #: stopped by the shutdown: never ack
    in_progress: bool = False  #: the same job is running elsewhere
    chunks: list[Any] | None = None  #: data of the chunks sent before the terminal reply


@dataclass(slots=True, kw_only=True)
class _Attempt:
    """How one execution answers failures (requests: always; queue jobs: see WQ-004)."""

    pattern: Pattern
    reply_to: str | None
    received_us: int
    delivery_count: int = 1
    hold_retryable: bool = False  #: keep a retryable failure for redelivery, unanswered
    last_delivery: bool = True
    verified: Verified | None = None  #: what the security policy established, if any


class Serving:
    """The per-message behaviour of one :class:`~llmproto_ref.Service`."""

    def __init__(
        self,
        service: Service,
        *,
        limits: Limits,
        understood: frozenset[str],
        security: SecurityPolicy | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.service = service
        self.limits = limits
        self.understood = understood
        self.security = security
        self.signer = signer
        self.running: dict[str, Running] = {}
        #: cancels a handler's scope when its request's deadline passes; the service runs it
        self.timer: DeadlineTimer[Running] = DeadlineTimer(_deadline_passed, _still_running)
        self._keepers: dict[int, LeaseKeeper] = {}  #: by id() of the worker's Registration
        self._finished: OrderedDict[str, None] = OrderedDict()  #: recently ended request ids
        self._early_cancels: OrderedDict[str, None] = OrderedDict()  #: cancelled before start

    # -- sending ---------------------------------------------------------------------

    async def _send(self, address: str | None, envelope: Envelope) -> bool:
        """Send a reply if there is an address; ``False`` when it could not be encoded."""
        if address is None:
            return True
        try:
            if self.signer is not None:
                envelope = self.signer.sign(envelope)  # last: it covers every member [SEC-010]
            body = encode(envelope, limits=self.limits)
        except (TypeError, EnvelopeError):
            return False
        try:
            await self.service.transport.send_reply(address, body)
        except TransportError:
            self.service.stats.reply_failures += 1
        return True

    async def _answer_error(
        self, request: Envelope, attempt: _Attempt, error: LlmpError, *, seq: int | None = None
    ) -> Envelope:
        reply = error_reply(request, error, source=self.service.source, seq=seq)
        await self._send(attempt.reply_to, reply)
        self.service.metrics.failed(attempt.pattern, request.type, str(error.code))
        return reply

    async def _reject(self, delivery: Delivery, error: EnvelopeError) -> None:
        """Answer bytes that did not decode, when a reply address can be read [ENV-036]:
        the binding's native one, else a ``reply_to`` member that is itself valid."""
        self.service.record_rejection(error)
        parsed = peek(delivery.body, error)  # parsed once; never when it was too large
        address = delivery.reply_to or member_reply_to(parsed)
        if address is None or (parsed is not None and parsed.get("kind") == "error"):
            self.service.stats.dropped += 1
            return
        self.service.stats.rejected += 1
        reply = rejection_reply(delivery.body, error, source=self.service.source, parsed=parsed)
        await self._send(address, reply)

    def _admit(self, envelope: Envelope, size: int, *, redelivery: bool = False) -> Verified:
        """The security policy's verdict on a decoded message (steps 4 to 13 of SEC-017).

        No binding authenticates senders yet, so there is no principal to pass (SEC-026).

        :raises SecurityError: an :class:`EnvelopeError` naming the failed step.
        """
        assert self.security is not None  # noqa: S101 - the callers test it
        return self.security.check(envelope, size, redelivery=redelivery)

    def stop_all(self) -> None:
        """Cancel every running handler (the shutdown, after its grace period)."""
        for running in self.running.values():
            running.shutdown = True
            running.scope.cancel()

    # -- requests --------------------------------------------------------------------

    async def on_request(self, delivery: Delivery, received_us: int) -> None:
        """Handle one delivery from a ``serve`` subscription."""
        verified: Verified | None = None
        try:
            request = decode(delivery.body, limits=self.limits, understood=self.understood)
            if self.security is not None:
                verified = self._admit(request, len(delivery.body))
                request = verified.envelope
        except EnvelopeError as exc:
            await self._reject(delivery, exc)
            return
        if request.kind is Kind.ERROR:
            self.service.stats.dropped += 1  # never answer an error: two peers could loop [RR-005]
            return
        if request.kind is not Kind.REQUEST:
            if delivery.reply_to is None:  # nowhere to say so: drop and count [RR-005]
                self.service.stats.dropped += 1
                return
            self.service.stats.rejected += 1
            misdirected = _Attempt(
                pattern=Pattern.REQUEST, reply_to=delivery.reply_to, received_us=received_us
            )
            await self._answer_error(
                request,
                misdirected,
                ExchangeError(
                    ErrorCode.PROTOCOL_ERROR,
                    f"{_article(request.kind)} {request.kind} was sent to a request address",
                ),
            )
            return
        reg = self.service.registration(request.type)
        pattern = Pattern.STREAM if reg is not None and reg.streaming else Pattern.REQUEST
        attempt = _Attempt(
            pattern=pattern, reply_to=request.reply_to, received_us=received_us, verified=verified
        )
        self.service.metrics.sent(pattern, request.type)
        await self._execute(request, attempt, reg)

    async def _execute(
        self, request: Envelope, attempt: _Attempt, reg: Registration | None
    ) -> _Outcome:
        """Deadline, idempotency, then the handler; the idempotency record is kept last.

        :param reg: the handler for the request's type, or the worker a job came through;
            ``None`` when nothing serves the type.
        """
        svc = self.service
        if reg is None:
            reply = await self._answer_error(
                request,
                attempt,
                ExchangeError(
                    ErrorCode.UNKNOWN_TYPE, f"this service does not serve {request.type!r}"
                ),
            )
            return _Outcome(reply=reply)
        deadline = Deadline.from_timestamp(request.deadline) if request.deadline else None
        if deadline is not None and deadline.expired(now_ms()):
            reply = await self._answer_error(
                request,
                attempt,
                ExchangeError(
                    ErrorCode.DEADLINE_EXCEEDED, "the deadline passed before the work started"
                ),
            )
            return _Outcome(reply=reply)
        key = request.idempotency_key
        if key is None:
            return await self._run(reg, request, deadline, attempt)
        claim, stored = svc.idempotency.claim(
            request.source, key, request_digest(request), now_ms()
        )
        if claim is Claim.DONE and stored is not None:
            return await self._replay(request, stored, attempt)
        if claim is Claim.RUNNING:
            if attempt.pattern is Pattern.QUEUE:
                return _Outcome(in_progress=True)
            reply = await self._answer_error(
                request,
                attempt,
                ExchangeError(
                    ErrorCode.IN_PROGRESS,
                    f"a request with idempotency key {key!r} is running",
                    retry_after_ms=1000,
                ),
            )
            return _Outcome(reply=reply)
        if claim is Claim.CONFLICT:
            reply = await self._answer_error(
                request,
                attempt,
                ExchangeError(
                    ErrorCode.IDEMPOTENCY_KEY_REUSED,
                    f"idempotency key {key!r} was used for a request with different content",
                ),
            )
            return _Outcome(reply=reply)
        outcome = await self._run(reg, request, deadline, attempt, record=True)
        if outcome.forget_key or outcome.reply is None or outcome.chunks is None:
            svc.idempotency.forget(request.source, key)
        else:
            record = {"terminal": outcome.reply.to_dict(), "chunks": outcome.chunks}
            svc.idempotency.finish(request.source, key, record, now_ms())
        return outcome

    async def _replay(
        self, request: Envelope, stored: Mapping[str, Any], attempt: _Attempt
    ) -> _Outcome:
        """Answer a duplicate with the stored outcome, without running [IDEM-001].

        A stream is replayed whole: every chunk, then the terminal message [IDEM-006]; the
        replies carry this request's correlation and timing, not the first exchange's.
        """
        source = self.service.source
        for seq, data in enumerate(stored["chunks"]):
            await self._send(attempt.reply_to, Envelope.new(
                kind=Kind.CHUNK, type=request.type, source=source, correlation_id=request.id,
                seq=seq, data=data,
            ))  # fmt: skip
        terminal = stored["terminal"]
        members = {k: v for k, v in terminal.items() if k not in _ENVELOPE_HEADER}
        members["timing"] = reply_timing(request, attempt.received_us, now_us())
        reply = Envelope.new(
            kind=terminal["kind"],
            type=request.type,
            source=source,
            correlation_id=request.id,
            **members,
        )
        await self._send(attempt.reply_to, reply)
        if reply.kind is Kind.ERROR:
            self.service.metrics.failed(
                attempt.pattern, request.type, str((reply.error or {}).get("code"))
            )
        else:
            self.service.metrics.succeeded(attempt.pattern, request.type)
        return _Outcome(reply=reply)

    async def _run(
        self,
        reg: Registration,
        request: Envelope,
        deadline: Deadline | None,
        attempt: _Attempt,
        *,
        record: bool = False,
    ) -> _Outcome:
        """Run the handler and answer; ``record`` keeps streamed chunks for a later replay."""
        exchange = Exchange(ExchangeKind.SERVE, request.id)
        if self._early_cancels.pop(request.id, False) is None:  # cancelled while it waited
            exchange.handle(Input.CANCEL)
            _remember(self._finished, request.id)
            reply = await self._answer_error(
                request, attempt, ExchangeError(ErrorCode.CANCELLED, "cancelled before it started")
            )
            return _Outcome(reply=reply, forget_key=True)
        shared = current_job_scope()
        claimed = shared.claim() if shared is not None else None
        scope = anyio.CancelScope() if claimed is None else claimed  # a pool task: entered
        running = Running(exchange=exchange, scope=scope, sent=[] if record else None)
        if deadline is not None:
            if deadline.expired(now_ms()):
                scope.cancel()  # what a scope whose deadline has passed does on entry
            else:
                self.timer.schedule(deadline.at_ms, running)
        self.running[request.id] = running
        context = Request(
            envelope=request,
            deadline=deadline,
            delivery_count=attempt.delivery_count,
            verified=attempt.verified,
        )
        exchange.handle(Input.START)
        token = enter_request(context)
        value: Any = None
        failure: LlmpError | None = None
        try:
            value = await self._in_scope(
                reg, context, running, attempt.reply_to, own=claimed is None
            )
        except LlmpError as exc:
            failure = exc
        except Exception as exc:  # noqa: BLE001 - a handler bug must not crash the service
            self.service.stats.handler_errors += 1
            failure = ExchangeError(
                ErrorCode.INTERNAL,
                f"the handler failed with {type(exc).__name__}",
                retryable=attempt.pattern is Pattern.QUEUE,  # a job may succeed on redelivery
            )
        finally:
            leave_request(token)
            running.ended = True
            self.running.pop(request.id, None)
            _remember(self._finished, request.id)
        seq = running.chunks if reg.streaming else None
        if scope.cancel_called:
            if shared is not None and claimed is not None:
                shared.shield()  # the pool task's scope stays cancelled until this job ends
            return await self._stopped(request, running, attempt, seq)
        if failure is not None:
            failed = await self._failed(request, exchange, attempt, failure, seq)
            failed.chunks = running.sent  # a non-retryable failure is replayed too [IDEM-001]
            return failed
        outcome = await self._completed(
            reg, request, exchange, attempt, running=running, value=value
        )
        outcome.chunks = running.sent
        return outcome

    async def _in_scope(
        self,
        reg: Registration,
        context: Request,
        running: Running,
        reply_to: str | None,
        *,
        own: bool,
    ) -> Any:
        """The handler's value, run in ``running.scope``; ``None`` when the scope stopped it.

        :param own: enter the scope here; else it is the pool task's, entered already.
        """
        scope = running.scope
        if own:
            with scope:
                return await self._call_handler(reg, context, running, reply_to)
            return None  # the scope caught its own stop
        try:
            return await self._call_handler(reg, context, running, reply_to)
        except anyio.get_cancelled_exc_class():
            if not scope.cancel_called:
                raise  # not this handler's stop: the task itself is being cancelled
            return None

    async def _call_handler(
        self, reg: Registration, context: Request, running: Running, reply_to: str | None
    ) -> Any:
        if reg.streaming:
            return await self._stream(reg, context, running, reply_to)
        if reg.thread:
            return await anyio.to_thread.run_sync(reg.function, context, abandon_on_cancel=True)
        value = reg.function(context)
        if type(value) is CoroutineType or inspect.isawaitable(value):
            value = await value
        return value

    async def _stopped(
        self, request: Envelope, running: Running, attempt: _Attempt, seq: int | None
    ) -> _Outcome:
        if running.shutdown:
            running.exchange.handle(Input.CANCEL)
            if attempt.pattern is not Pattern.QUEUE:  # a job goes back to the queue instead
                await self._answer_error(
                    request,
                    attempt,
                    ExchangeError(ErrorCode.UNAVAILABLE, "the service shut down before finishing"),
                    seq=seq,
                )
            return _Outcome(shutdown=True, forget_key=True)
        action = running.exchange.handle(Input.CANCEL if running.cancelled else Input.DEADLINE)
        code, message = _STOP_ERRORS.get(action, (ErrorCode.CANCELLED, "cancelled"))
        reply = await self._answer_error(request, attempt, ExchangeError(code, message), seq=seq)
        return _Outcome(reply=reply, forget_key=True)

    async def _failed(
        self,
        request: Envelope,
        exchange: Exchange,
        attempt: _Attempt,
        failure: LlmpError,
        seq: int | None,
    ) -> _Outcome:
        exchange.handle(Input.RAISE)
        retryable = isinstance(failure, ExchangeError) and failure.retryable
        if retryable and attempt.hold_retryable and not attempt.last_delivery:
            self.service.metrics.failed(attempt.pattern, request.type, "REDELIVERED")
            return _Outcome(retry=True, forget_key=True)
        if retryable and attempt.hold_retryable:
            failure = ExchangeError(
                ErrorCode.DEAD_LETTERED,
                f"failed on delivery {attempt.delivery_count}, the last: {failure.message}",
            )
        reply = await self._answer_error(request, attempt, failure, seq=seq)
        return _Outcome(reply=reply, forget_key=retryable, retry=retryable)

    async def _completed(
        self,
        reg: Registration,
        request: Envelope,
        exchange: Exchange,
        attempt: _Attempt,
        *,
        running: Running,
        value: Any,
    ) -> _Outcome:
        action = exchange.handle(Input.RETURN)
        final = value if isinstance(value, Final) else None
        timing = reply_timing(request, attempt.received_us, now_us())
        try:
            if action is Action.SEND_FINAL or reg.streaming:
                done = final or Final()
                reply = chunk(
                    request,
                    source=self.service.source,
                    seq=running.chunks,
                    final=True,
                    data=done.data,
                    finish_reason=done.finish_reason,
                    usage=done.usage,
                    timing=timing,
                )
            else:
                reply = response(
                    request,
                    source=self.service.source,
                    timing=timing,
                    data=final.data if final is not None else value,
                    finish_reason=final.finish_reason if final is not None else None,
                    usage=final.usage if final is not None else None,
                )
        except EnvelopeError as exc:
            return await self._failed(
                request,
                exchange,
                attempt,
                ExchangeError(
                    ErrorCode.INTERNAL, f"the handler's result is not a valid reply: {exc.message}"
                ),
                running.chunks if reg.streaming else None,
            )
        if not await self._send(attempt.reply_to, reply):
            reply = await self._answer_error(
                request,
                attempt,
                ExchangeError(
                    ErrorCode.INTERNAL, "the handler returned a value that is not JSON or too large"
                ),
            )
            return _Outcome(reply=reply)
        self.service.metrics.succeeded(
            attempt.pattern, request.type, latency_ms=(now_us() - attempt.received_us) / 1000
        )
        return _Outcome(reply=reply)

    async def _stream(
        self, reg: Registration, context: Request, running: Running, reply_to: str | None
    ) -> Any:
        """Run a generator handler, sending each item as a chunk; return its Final, if any."""
        request = context.envelope
        items: AsyncGenerator[Any, None] = (
            reg.function(context)
            if inspect.isasyncgenfunction(reg.function)
            else _threaded(reg.function(context))
        )
        async with contextlib.aclosing(items):  # the handler's finally runs while it is current
            return await self._send_chunks(items, request, running, reply_to)

    async def _send_chunks(
        self,
        items: AsyncGenerator[Any, None],
        request: Envelope,
        running: Running,
        reply_to: str | None,
    ) -> Any:
        async for item in items:
            if isinstance(item, Final):
                return item
            running.exchange.handle(Input.YIELD)
            piece = chunk(request, source=self.service.source, seq=running.chunks, data=item)
            if not await self._send(reply_to, piece):
                raise ExchangeError(ErrorCode.INTERNAL, "a chunk is not JSON or too large")
            running.chunks += 1  # only a chunk that went out takes a seq [STR-002]
            if running.sent is not None:
                running.sent.append(item)
        return None

    def on_cancel(self, delivery: Delivery) -> None:
        """Handle one cancel broadcast: stop the matching running handler [CAN-003]."""
        try:
            cancel = decode(delivery.body, limits=self.limits, understood=self.understood)
            if self.security is not None:  # an unproven cancel must not stop anybody's work
                cancel = self._admit(cancel, len(delivery.body)).envelope
        except EnvelopeError as exc:
            self.service.record_rejection(exc)
            self.service.stats.dropped += 1
            return
        if cancel.kind is not Kind.CANCEL or cancel.correlation_id is None:
            self.service.stats.dropped += 1
            return
        rid = cancel.correlation_id
        running = self.running.get(rid)
        if running is not None:
            running.cancelled = True
            running.scope.cancel()
        elif rid in self._finished:
            self.service.stats.late_cancels += 1  # the exchange already ended here
        else:  # not started yet (waiting for a slot), or another instance's request
            _remember(self._early_cancels, rid)

    # -- events ----------------------------------------------------------------------

    async def on_event(self, reg: Registration, delivery: Delivery, _received_us: int = 0) -> None:
        """Handle one event; failures are counted, never fatal [EVT-005]. (Readers pass the
        time the delivery was taken, which events do not use.)"""
        svc = self.service
        verified: Verified | None = None
        try:
            event = decode(delivery.body, limits=self.limits, understood=self.understood)
            if self.security is not None:
                verified = self._admit(event, len(delivery.body))
                event = verified.envelope
        except EnvelopeError as exc:
            svc.record_rejection(exc)
            svc.stats.dropped += 1
            return
        if event.kind is not Kind.EVENT:
            svc.stats.dropped += 1
            return
        figures = svc.metrics.figures(Pattern.EVENT, event.type)
        figures.sent += 1
        due = event.deadline
        deadline = Deadline.from_timestamp(due) if due is not None else None
        if deadline is not None and deadline.expired(now_ms()):
            svc.metrics.failed(Pattern.EVENT, event.type, str(ErrorCode.DEADLINE_EXCEEDED))
            return
        context = Event(envelope=event, deadline=deadline, verified=verified)
        token = enter_request(context)  # downstream calls inherit deadline and cause [DL-003]
        try:
            if reg.thread:
                await anyio.to_thread.run_sync(reg.function, context)
            else:
                result = reg.function(context)
                if inspect.isawaitable(result):
                    await result
        except Exception as exc:  # noqa: BLE001 - a handler bug must not crash the service
            if not isinstance(exc, LlmpError):
                svc.stats.handler_errors += 1
            code = exc.code if isinstance(exc, LlmpError) else ErrorCode.INTERNAL
            svc.metrics.failed(Pattern.EVENT, event.type, str(code))
            return
        finally:
            leave_request(token)
        figures.succeeded += 1

    # -- work-queue jobs -------------------------------------------------------------

    def lease_keeper(self, reg: Registration) -> LeaseKeeper:
        """The keeper of ``reg``'s job leases; the service runs its task [WQ-005]."""
        keeper = self._keepers.get(id(reg))
        if keeper is None:
            keeper = self._keepers[id(reg)] = LeaseKeeper(reg.options.lease_ms)
        return keeper

    async def on_job(self, reg: Registration, job: Job, received_us: int) -> None:
        """Handle one job; settle it only after its outcome is decided and sent [WQ-003]."""
        svc = self.service
        verified: Verified | None = None
        try:
            request = decode(job.body, limits=self.limits, understood=self.understood)
            if self.security is not None:  # a redelivery repeats its nonce [SEC-023]
                verified = self._admit(request, len(job.body), redelivery=job.delivery_count > 1)
                request = verified.envelope
        except EnvelopeError as exc:
            svc.record_rejection(exc)
            svc.stats.dead_lettered += 1
            await job.terminate(reason=f"invalid envelope: {exc}")
            return
        if request.kind is not Kind.REQUEST:
            svc.stats.dead_lettered += 1
            await job.terminate(reason=f"{_article(request.kind)} {request.kind} is not a job")
            return
        attempt = _Attempt(
            pattern=Pattern.QUEUE,
            reply_to=request.reply_to,
            received_us=received_us,
            delivery_count=job.delivery_count,
            hold_retryable=True,
            last_delivery=job.delivery_count >= reg.options.max_deliveries,
            verified=verified,
        )
        svc.metrics.sent(Pattern.QUEUE, request.type)
        if request.deadline and Deadline.from_timestamp(request.deadline).expired(now_ms()):
            await self._answer_error(
                request,
                attempt,
                ExchangeError(
                    ErrorCode.DEADLINE_EXCEEDED, "the job's deadline passed while it was queued"
                ),
            )
            svc.stats.dead_lettered += 1
            await job.terminate(reason="expired")
            return
        keeper = self.lease_keeper(reg)
        lease = keeper.hold(job)
        try:
            outcome = await self._execute(request, attempt, reg)
        finally:
            await keeper.release(lease)
        if outcome.shutdown:
            return  # never ack work the shutdown stopped: the broker delivers it again [WQ-008]
        if outcome.in_progress:
            await job.nack(delay_ms=max(50, reg.options.lease_ms // 2))
        elif outcome.retry and not attempt.last_delivery:
            await job.nack(delay_ms=_backoff_ms(job.delivery_count))
        elif outcome.retry:
            svc.stats.dead_lettered += 1
            await job.terminate(reason="max_deliveries")  # recorded as terminated: ... [TRN-018]
        else:
            await job.ack()


_REMEMBERED = 4096


def _deadline_passed(running: Running) -> None:
    running.scope.cancel()  # running.cancelled stays False: the table gets DEADLINE


def _still_running(running: Running) -> bool:
    return not running.ended


def _remember(ids: OrderedDict[str, None], rid: str) -> None:
    """Keep ``rid`` in a bounded, oldest-out record."""
    ids[rid] = None
    if len(ids) > _REMEMBERED:
        ids.popitem(last=False)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _backoff_ms(delivery_count: int) -> int:
    """Redelivery delay after a failure: 100 ms, 200 ms, 400 ms ... at most 10 s."""
    return int(min(10_000, 100 * 2 ** max(0, delivery_count - 1)))


async def _threaded(generator: Generator[Any, None, None]) -> AsyncGenerator[Any, None]:
    """Drive a plain generator in a worker thread, one item at a time; close it at the end."""
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, generator, _DONE, abandon_on_cancel=True)
            if item is _DONE:
                return
            yield item
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(generator.close, abandon_on_cancel=True)
