"""Deliberately broken transports: the proof that the conformance checks bite.

Theory of operation
-------------------
:func:`faulty` wraps a :class:`~llmproto_ref.Transport` so that exactly one thing goes wrong,
at the byte level. Under the reference testee (``Testee(faulty(transport, name))``) it turns
the testee into a broken implementation: it rewrites what the testee receives (a request
without its ``deadline``), what it sends (a reply with the wrong ``correlation_id``), or hides
what it should see (cancels). Handed to the suite as the transport under test, it is a broken
binding for the transport-contract checks (groups ignored, dedup lost, leases that never run
out). A rewrite decodes the body with the reference codec, changes its members and encodes
them again with orjson; a body that does not decode passes untouched (unless the fault is
about such bodies), so hostile input stays hostile.

The wrapper keeps the transport contract's interface and typing; the faults that act later
(a delayed send, a buffered job) run in a task group the wrapper holds while it is entered.
``tests/test_checks_bite.py`` runs the catalogue against each fault and shows that every check
is caught failing by at least one of them.

The faults of the secure testee (a receiver that skips one security check, a sender that
leaks) are :mod:`llmproto_conformance._faults_security`'s; the wrapper hands it the requests
the testee receives, the replies it sends and the requests it sends downstream.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import replace
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import orjson
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from llmproto_conformance._faults_security import SECURITY_FAULTS, SecurityFaults
from llmproto_ref import (
    Capabilities,
    Consumer,
    Delivery,
    Envelope,
    EnvelopeError,
    ErrorCode,
    Inbox,
    Job,
    Kind,
    Limits,
    QueueOptions,
    Subscription,
    Transport,
    TransportError,
    decode,
    new_id,
    now_timestamp,
    validate_queue_name,
)

__all__ = ("FAULTS", "FaultyTransport", "fault_choices", "faulty")

#: Every fault :func:`faulty` injects, by name, with what it breaks.
FAULTS: dict[str, str] = {
    # replies the testee sends
    "wrong-correlation": "every reply carries a fresh correlation_id, not the request's id",
    "wrong-reply-type": "replies carry the type llmp.reply instead of the request's type",
    "duplicate-reply": "every reply (response, error, chunk) is sent twice",
    "drop-final-chunk": "the final chunk of a stream is never sent",
    "seq-off-by-one": "chunks are numbered from 1",
    "no-finish-reason": "responses and final chunks lose finish_reason and usage",
    "no-timing": "replies carry no timing member",
    "ascii-data": "non-ASCII characters in the data of replies become '?'",
    "wrong-error-code": "every error reply's code becomes INTERNAL",
    "wrong-retryable": "every error reply's retryable flag is inverted",
    "no-pointer-detail": "error replies lose their details (llmp.pointer, llmp.versions)",
    "error-extra-member": "error objects carry a member the schema does not allow",
    # requests, jobs and events the testee receives
    "ignore-deadlines": "the testee never sees the deadline of a request, job or event",
    "no-idempotency": "the testee never sees the idempotency_key of a request or job",
    "crash-on-malformed": "the first undecodable request silently ends every request intake",
    "oversize-accepted": "an envelope over the 1 MiB limit reaches the testee shrunk, so it "
    "answers it",
    "lenient-members": "unknown and forbidden top-level members are dropped instead of rejected",
    "strict-minor-version": "a request of minor version other than 0 is refused as a new major",
    "answers-errors": "an error sent to a request address is answered with PROTOCOL_ERROR",
    "non-events-handled": "a request or response on an event topic is handled as an event",
    "retryable-remembered": "an error reply is replayed for its idempotency key, even a "
    "retryable one",
    "one-at-a-time": "the testee takes a request only after answering the previous one",
    # cancels the testee receives
    "ignore-cancels": "no cancel is ever delivered",
    "leak-late-chunks": "a cancelled stream is answered CANCELLED, and then chunks keep coming",
    # events the testee publishes
    "wrong-topic": "events are published to the topic <type>.v1 instead of their type",
    "no-causation": "published events lose their causation_id",
    # work-queue jobs the testee takes
    "ack-before-handling": "jobs are acked on receipt; the later settle does nothing",
    "redeliver-without-limit": "delivery_count is always 1 and terminate() becomes nack()",
    "duplicate-jobs": "every job is handed to the worker twice",
    "greedy-prefetch": "the worker buffers jobs whether or not a handler slot is free",
    # the binding itself
    "groups-broadcast": "event groups are ignored: every member gets every event",
    "serve-groups-broadcast": "serve groups are ignored: every member gets every request",
    "wildcards-literal": "patterns match literally, so a wildcard matches nothing",
    "no-responders-silent": "a request nobody serves is sent without NO_RESPONDERS",
    "blocking-send": "send_request blocks for 2 s before it returns",
    "lossy-bytes": "bodies are decoded as UTF-8 with replacement, changing invalid bytes",
    "raw-exceptions": "the broker client's own exceptions reach the caller",
    "names-unchecked": "malformed names and patterns are taken (and go nowhere)",
    "single-waiter": "of the tasks awaiting one subscription, only the latest is ever woken",
    "no-reply-address": "deliveries of requests lose the native reply address",
    "inbox-reused": "every inbox of one connection has the same address",
    "reorder": "every other event and reply is sent 30 ms late, overtaken by the next",
    "enqueue-unconfirmed": "enqueue returns before the job is stored; closing loses it",
    "dedup-broken": "enqueue ignores message_id deduplication",
    "close-acks": "closing a consumer acks its unsettled jobs",
    "prefetch-ignored": "a consumer holds any number of unsettled jobs",
    "lease-never-expires": "an unsettled job is never delivered again when its lease ends",
    "extend-lease-noop": "extend_lease does nothing, so long jobs are delivered twice",
    "delayed-nack-immediate": "nack(delay_ms) redelivers at once",
    "stale-settle-raises": "settling a delivery that is no longer leased raises",
    "oversize-dropped": "a body over max_payload is dropped silently instead of refused",
    "capabilities-lie": "declares a max_payload four times what it carries",
    # the secure service (spec/security.md)
    **SECURITY_FAULTS,
}

#: Source of the replies a fault sends itself (answers-errors, retryable-remembered).
_SOURCE = "llmp://llmp-testee"
#: The envelope size limit the testee applies (oversize-accepted shrinks what is above it).
_ENVELOPE_LIMIT = Limits().max_envelope_bytes
#: Decode limit for over-limit requests: anything a transport carries.
_HUGE = Limits(max_envelope_bytes=1 << 40)
_FOREVER_MS = 1_000_000_000  #: the lease lease-never-expires asks for (about eleven days)
_TURN_S = 5.0  #: longest one-at-a-time waits for the previous request's answer
_LATE_S = 0.03  #: how late reorder sends every other message
_BLOCK_S = 2.0  #: how long blocking-send blocks
_UNCONFIRMED_S = 0.05  #: how late enqueue-unconfirmed stores a job
_LEAKED = 3  #: chunks leak-late-chunks sends after CANCELLED
#: serve-groups-broadcast: a group name of its own for every member, in the whole process
_MEMBERS = itertools.count()
#: Faults that need the wrapper's task group.
_BACKGROUND = frozenset({"reorder", "enqueue-unconfirmed", "greedy-prefetch", "single-waiter"})

T = TypeVar("T")
Members = dict[str, Any]


def fault_choices() -> list[str]:
    """The fault names, sorted (for ``--fault`` of ``llmproto conformance testee``)."""
    return sorted(FAULTS)


def faulty(inner: Transport, fault: str) -> Transport:
    """``inner`` with ``fault`` injected (see :data:`FAULTS`); enter it instead of ``inner``.

    :raises ValueError: for an unknown fault name.
    """
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; choose one of {', '.join(fault_choices())}")
    return FaultyTransport(inner, fault)


# -- rewriting envelopes ---------------------------------------------------------------------


def _members(body: bytes, limits: Limits | None = None) -> Members | None:
    """The members of ``body``, or ``None`` when it does not decode."""
    try:
        envelope = decode(body, limits=limits) if limits is not None else decode(body)
    except EnvelopeError:
        return None
    return envelope.to_dict()


def _without(body: bytes, *names: str, limits: Limits | None = None) -> bytes:
    members = _members(body, limits)
    if members is None or not any(name in members for name in names):
        return body
    return orjson.dumps({k: v for k, v in members.items() if k not in names})


def _ascii(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("ascii", errors="replace").decode("ascii")
    if isinstance(value, list):
        return [_ascii(v) for v in value]
    if isinstance(value, dict):
        return {_ascii(k): _ascii(v) for k, v in value.items()}
    return value


def _error(members: Members, **changes: Any) -> list[Members]:
    """An error reply with its error object changed (``None`` removes a member)."""
    if members["kind"] != Kind.ERROR:
        return [members]
    error = {**members["error"], **changes}
    return [{**members, "error": {k: v for k, v in error.items() if v is not None}}]


def _final(members: Members) -> bool:
    return members["kind"] == Kind.CHUNK and members.get("final") is True


def _terminal(members: Members) -> bool:
    return members["kind"] in (Kind.RESPONSE, Kind.ERROR) or _final(members)


_FINISH = ("finish_reason", "usage")
_ReplyFault = Callable[[Members], list[Members]]

#: What a testee with the fault sends instead of a reply (given by its members).
_REPLY_FAULTS: dict[str, _ReplyFault] = {
    "wrong-correlation": lambda m: [{**m, "correlation_id": new_id()}],
    "wrong-reply-type": lambda m: [{**m, "type": "llmp.reply"}],
    "duplicate-reply": lambda m: [m, m],
    "drop-final-chunk": lambda m: [] if _final(m) else [m],
    "seq-off-by-one": lambda m: [{**m, "seq": m["seq"] + 1} if m["kind"] == Kind.CHUNK else m],
    "no-finish-reason": lambda m: [{k: v for k, v in m.items() if k not in _FINISH}],
    "no-timing": lambda m: [{k: v for k, v in m.items() if k != "timing"}],
    "ascii-data": lambda m: [{**m, "data": _ascii(m["data"])} if "data" in m else m],
    "wrong-error-code": lambda m: _error(m, code=str(ErrorCode.INTERNAL)),
    "wrong-retryable": lambda m: _error(m, retryable=not m.get("error", {}).get("retryable")),
    "no-pointer-detail": lambda m: _error(m, details=None),
    "error-extra-member": lambda m: _error(m, severity="high"),
}


def _repaired(body: bytes) -> bytes:
    """lenient-members: ``body`` without the unknown or forbidden members it is rejected for."""
    for _ in range(8):
        try:
            decode(body)
        except EnvelopeError as exc:
            name = exc.pointer[1:]
            if exc.requirement not in ("ENV-008", "ENV-034") or not name or "/" in name:
                return body
            members = orjson.loads(body)
            members.pop(name.replace("~1", "/").replace("~0", "~"), None)
            body = orjson.dumps(members)
        else:
            return body
    return body


def _newer_minor(body: bytes) -> bytes:
    """strict-minor-version: a request of version 1.N (N > 0) presented as 2.N."""
    try:
        members = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    version = members.get("llmp") if isinstance(members, dict) else None
    if not isinstance(version, str) or not version.startswith("1.") or version == "1.0":
        return body
    return orjson.dumps({**members, "llmp": "2" + version[1:]})


def _received_body(fault: str, body: bytes) -> bytes:
    """What a testee with ``fault`` sees instead of the request, job or event ``body``."""
    if fault == "ignore-deadlines":
        return _without(body, "deadline")
    if fault == "no-idempotency":
        return _without(body, "idempotency_key")
    if fault == "lenient-members":
        return _repaired(body)
    if fault == "strict-minor-version":
        return _newer_minor(body)
    if fault == "lossy-bytes":
        return body.decode("utf-8", errors="replace").encode()
    if fault == "oversize-accepted" and len(body) > _ENVELOPE_LIMIT:
        members = _members(body, _HUGE)
        if members is not None:
            return orjson.dumps({**members, "data": {"oversize": len(body)}})
    return body


def _as_event(body: bytes) -> bytes:
    """non-events-handled: a request or response made into an event of the same id."""
    members = _members(body)
    if members is None or members["kind"] == Kind.EVENT:
        return body
    keep = ("llmp", "id", "type", "source", "time", "data", "causation_id")
    return orjson.dumps({"kind": "event", **{k: members[k] for k in keep if k in members}})


def _wildcard(pattern: str) -> bool:
    return any(token in ("*", ">") for token in pattern.split("."))


def _with_body(delivery: Delivery, body: bytes) -> Delivery:
    return delivery if body is delivery.body else replace(delivery, body=body)


# -- the transport -----------------------------------------------------------------------------

_Route = Callable[[Delivery], Awaitable[list[Delivery]]]


class FaultyTransport:
    """A transport that delegates to ``inner`` except for the one thing ``fault`` breaks.

    :param inner: the transport to wrap (unentered; entering this enters it).
    :param fault: a key of :data:`FAULTS`.
    """

    def __init__(self, inner: Transport, fault: str) -> None:
        self.inner = inner
        self.fault = fault
        self._tg: TaskGroup | None = None
        self._counter = itertools.count()  #: dedup-broken: message ids of their own
        self._turns: dict[str, itertools.count[int]] = {}  #: reorder: messages per address
        self._serving: list[Subscription] = []  #: crash-on-malformed closes these
        self._crashed = False
        self._streaming: dict[str, int] = {}  #: leak-late-chunks: chunks sent per request
        self._keys: dict[str, tuple[str, str]] = {}  #: retryable-remembered: id -> key
        self._stored: dict[tuple[str, str], Members] = {}  #: retryable-remembered: key -> error
        self._busy: str | None = None  #: one-at-a-time: the request being handled
        self._inbox: Inbox | None = None  #: inbox-reused
        #: the faults of the secure service
        self._security = SecurityFaults(fault) if fault in SECURITY_FAULTS else None

    @property
    def capabilities(self) -> Capabilities:
        """The inner transport's (capabilities-lie: an inflated max_payload)."""
        declared = self.inner.capabilities
        if self.fault == "capabilities-lie":
            return replace(declared, max_payload=declared.max_payload * 4)
        return declared

    @property
    def name(self) -> str:
        """The inner transport's name, marked with the fault."""
        return f"{self.inner.name} (fault {self.fault})"

    async def __aenter__(self) -> FaultyTransport:
        await self.inner.__aenter__()
        if self.fault in _BACKGROUND:
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._tg is not None:
                self._tg.cancel_scope.cancel()  # enqueue-unconfirmed: what is pending is lost
                await self._tg.__aexit__(None, None, None)
                self._tg = None
        finally:
            await self.inner.__aexit__(exc_type, exc, tb)

    async def _op(self, operation: Awaitable[T], fallback: Callable[[], T]) -> T:
        """Run an inner operation; raw-exceptions, names-unchecked and oversize-dropped
        change what its failure looks like."""
        try:
            return await operation
        except TransportError as exc:
            if self.fault == "raw-exceptions":
                raise ConnectionError(f"broker client failure: {exc.message}") from None
            if (self.fault, exc.code) in (
                ("names-unchecked", ErrorCode.INVALID_PARAMS),
                ("oversize-dropped", ErrorCode.PAYLOAD_TOO_LARGE),
            ):
                return fallback()
            raise

    def _later(
        self, delay_s: float, send: Callable[[], Awaitable[None]], name: str, body: bytes
    ) -> bool:
        """Run ``send`` after ``delay_s`` in the background; ``False`` when not entered.

        What the inner transport would refuse at once (a malformed name, a body too large)
        is refused here first, so only a message that would have gone out goes out late.
        """
        if self._tg is None:
            return False
        validate_queue_name(name)
        limit = self.inner.capabilities.max_payload
        if len(body) > limit:
            raise TransportError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"body of {len(body)} bytes is over {limit}"
            )

        async def run() -> None:
            await anyio.sleep(delay_s)
            with contextlib.suppress(TransportError):  # closed meanwhile: the message is lost
                await send()

        self._tg.start_soon(run)
        return True

    async def _send(self, send: Callable[[], Awaitable[None]], name: str, body: bytes) -> None:
        """Send now, or (reorder: every other message to ``name``) a little later."""
        if self.fault == "reorder":
            turn = next(self._turns.setdefault(name, itertools.count()))
            if turn % 2 == 0 and self._later(_LATE_S, send, name, body):
                return
        await self._op(send(), lambda: None)

    def _subscription(self, inner: Subscription, route: _Route) -> Subscription:
        if self.fault == "single-waiter" and self._tg is not None:
            return _SingleWaiter(inner, self._tg)
        return _FilteredSubscription(inner, route)

    # -- request-response ------------------------------------------------------------------

    async def serve(self, type_pattern: str, *, group: str) -> Subscription:
        """Requests, as the faulty testee receives them."""
        if self.fault == "serve-groups-broadcast":
            validate_queue_name(group)
            group = f"{group}.m{next(_MEMBERS)}"
        sub = await self._op(self.inner.serve(type_pattern, group=group), _no_subscription)
        self._serving.append(sub)
        if self.fault == "wildcards-literal" and _wildcard(type_pattern):
            return self._subscription(sub, _drop)
        return self._subscription(sub, self._on_request)

    async def _on_request(self, delivery: Delivery) -> list[Delivery]:
        fault = self.fault
        if self._security is not None:
            return [_with_body(delivery, self._security.received(delivery.body))]
        if fault == "no-reply-address":
            return [replace(delivery, reply_to=None)]
        if fault == "crash-on-malformed":
            if not self._crashed and _members(delivery.body) is not None:
                return [delivery]
            self._crashed = True  # and no error reply for the message that "crashed" it
            for sub in self._serving:
                await sub.aclose()
            return []
        if fault == "answers-errors":
            return await self._answer_error(delivery)
        if fault == "retryable-remembered":
            return await self._remembered(delivery)
        if fault == "one-at-a-time":
            await self._take_turn(delivery)
            return [delivery]
        return [_with_body(delivery, _received_body(fault, delivery.body))]

    async def _answer_error(self, delivery: Delivery) -> list[Delivery]:
        try:
            members = orjson.loads(delivery.body)
        except orjson.JSONDecodeError:
            return [delivery]
        if not isinstance(members, dict) or members.get("kind") != Kind.ERROR:
            return [delivery]
        if delivery.reply_to is not None:
            error = {"code": str(ErrorCode.PROTOCOL_ERROR), "retryable": False,
                     "message": "an error was sent to a request address"}  # fmt: skip
            try:
                reply = Envelope.new(kind=Kind.ERROR, type=str(members.get("type")),
                                     source=_SOURCE, error=error)  # fmt: skip
            except EnvelopeError:
                reply = Envelope.new(kind=Kind.ERROR, type="llmp.error", source=_SOURCE,
                                     error=error)  # fmt: skip
            await self.inner.send_reply(delivery.reply_to, orjson.dumps(reply.to_dict()))
        return []

    async def _remembered(self, delivery: Delivery) -> list[Delivery]:
        members = _members(delivery.body)
        if members is None or "idempotency_key" not in members:
            return [delivery]
        key = (members["source"], members["idempotency_key"])
        stored = self._stored.get(key)
        if stored is None or "reply_to" not in members:
            self._keys[members["id"]] = key
            return [delivery]
        replay = {**stored, "id": new_id(), "time": now_timestamp(),
                  "correlation_id": members["id"]}  # fmt: skip
        await self.inner.send_reply(members["reply_to"], orjson.dumps(replay))
        return []

    async def _take_turn(self, delivery: Delivery) -> None:
        members = _members(delivery.body)
        if members is None or members["kind"] != Kind.REQUEST or "reply_to" not in members:
            return
        with anyio.move_on_after(_TURN_S):
            while self._busy is not None:
                await anyio.sleep(0.005)
        self._busy = members["id"]

    async def send_request(self, type: str, body: bytes, *, reply_to: str, message_id: str) -> None:
        """Delegated (no-responders-silent swallows NO_RESPONDERS; blocking-send blocks)."""
        if self.fault == "blocking-send":
            await anyio.sleep(_BLOCK_S)
        if self._security is not None:
            body = self._security.downstream(body)
        try:
            await self._op(
                self.inner.send_request(type, body, reply_to=reply_to, message_id=message_id),
                lambda: None,
            )
        except TransportError as exc:
            if self.fault != "no-responders-silent" or exc.code != ErrorCode.NO_RESPONDERS:
                raise

    async def open_inbox(self) -> Inbox:
        """Delegated (inbox-reused: the connection's first inbox, every time)."""
        if self.fault == "inbox-reused" and self._inbox is not None:
            return self._inbox
        inbox = await self._op(self.inner.open_inbox(), _no_inbox)
        if self.fault == "lossy-bytes":
            lossy = self._subscription(inbox.subscription, self._lossy)
            inbox = Inbox(address=inbox.address, subscription=lossy)
        self._inbox = inbox
        return inbox

    async def send_reply(self, address: str, body: bytes) -> None:
        """Replies, as the faulty testee sends them."""
        bodies = [body]
        members = _members(body)
        if members is not None:
            self._observe(members)
            rewrite = _REPLY_FAULTS.get(self.fault)
            if rewrite is not None:
                bodies = [orjson.dumps(m) for m in rewrite(members)]
            elif self._security is not None:
                bodies = [orjson.dumps(self._security.reply(members))]
        for reply in bodies:
            await self._send(functools.partial(self.inner.send_reply, address, reply), address,
                             reply)  # fmt: skip
        if members is not None and self.fault == "leak-late-chunks":
            await self._leak(address, members)

    def _observe(self, reply: Members) -> None:
        """Note what a reply says for the faults that depend on earlier replies."""
        rid = reply.get("correlation_id")
        if self.fault == "leak-late-chunks" and reply["kind"] == Kind.CHUNK and not _final(reply):
            self._streaming[rid or ""] = int(reply["seq"]) + 1
        elif self.fault == "retryable-remembered" and reply["kind"] == Kind.ERROR:
            key = self._keys.pop(rid or "", None)
            if key is not None:
                self._stored[key] = reply
        elif self.fault == "one-at-a-time" and rid == self._busy and _terminal(reply):
            self._busy = None

    async def _leak(self, address: str, reply: Members) -> None:
        """leak-late-chunks: after the CANCELLED that ends a stream, more of its chunks."""
        if not _terminal(reply):
            return
        sent = self._streaming.pop(reply.get("correlation_id") or "", None)
        if sent is None or reply["kind"] != Kind.ERROR:
            return
        if reply["error"].get("code") != ErrorCode.CANCELLED:
            return
        for seq in range(sent, sent + _LEAKED):
            chunk = Envelope.new(kind=Kind.CHUNK, type=reply["type"], source=reply["source"],
                                 correlation_id=reply["correlation_id"], seq=seq,
                                 data={"index": seq})  # fmt: skip
            await self.inner.send_reply(address, orjson.dumps(chunk.to_dict()))

    # -- cancels and events ------------------------------------------------------------------

    async def publish_cancel(self, type: str, body: bytes) -> None:
        """Delegated."""
        await self._op(self.inner.publish_cancel(type, body), lambda: None)

    async def serve_cancels(self, type_pattern: str) -> Subscription:
        """Cancels, as the faulty testee receives them (ignore-cancels: none)."""
        sub = await self._op(self.inner.serve_cancels(type_pattern), _no_subscription)
        if self.fault == "ignore-cancels" or (
            self.fault == "wildcards-literal" and _wildcard(type_pattern)
        ):
            return self._subscription(sub, _drop)
        return self._subscription(sub, self._on_cancel)

    async def _on_cancel(self, delivery: Delivery) -> list[Delivery]:
        if self.fault == "lossy-bytes":
            return await self._lossy(delivery)
        return [delivery]

    async def publish_event(self, type: str, body: bytes) -> None:
        """Events, as the faulty testee publishes them."""
        topic = type
        if self.fault == "wrong-topic":
            with contextlib.suppress(TransportError):  # unless the type is as long as can be
                validate_queue_name(f"{type}.v1")
                topic = f"{type}.v1"
        elif self.fault == "no-causation":
            body = _without(body, "causation_id")
        await self._send(lambda: self.inner.publish_event(topic, body), topic, body)

    async def subscribe_events(self, pattern: str, *, group: str | None = None) -> Subscription:
        """Events, as the faulty testee receives them."""
        if self.fault == "groups-broadcast" and group is not None:
            validate_queue_name(group)
            group = None
        sub = await self._op(self.inner.subscribe_events(pattern, group=group), _no_subscription)
        if self.fault == "wildcards-literal" and _wildcard(pattern):
            return self._subscription(sub, _drop)
        return self._subscription(sub, self._on_event)

    async def _on_event(self, delivery: Delivery) -> list[Delivery]:
        if self.fault == "non-events-handled":
            return [_with_body(delivery, _as_event(delivery.body))]
        return [_with_body(delivery, _received_body(self.fault, delivery.body))]

    async def _lossy(self, delivery: Delivery) -> list[Delivery]:
        return [_with_body(delivery, _received_body("lossy-bytes", delivery.body))]

    # -- work queues ---------------------------------------------------------------------------

    async def enqueue(self, queue: str, body: bytes, *, message_id: str) -> None:
        """Delegated (dedup-broken: a message id of its own; enqueue-unconfirmed: later)."""
        if self.fault == "dedup-broken":
            message_id = f"{message_id}.{next(self._counter)}"

        async def store() -> None:
            await self.inner.enqueue(queue, body, message_id=message_id)

        if self.fault == "enqueue-unconfirmed" and self._later(_UNCONFIRMED_S, store, queue, body):
            return
        await self._op(store(), lambda: None)

    async def consume(self, queue: str, options: QueueOptions) -> Consumer:
        """Jobs, as the faulty worker takes and settles them."""
        if self.fault == "lease-never-expires":
            options = replace(options, lease_ms=_FOREVER_MS)
        elif self.fault == "prefetch-ignored":
            options = replace(options, prefetch=10_000)
        inner = await self._op(self.inner.consume(queue, options), _no_consumer)
        return _FaultyConsumer(inner, self, options)

    async def dead_letters(self, queue: str) -> Consumer:
        """Delegated (lossy-bytes changes the bodies)."""
        inner = await self._op(self.inner.dead_letters(queue), _no_consumer)
        if self.fault == "lossy-bytes":
            return _FaultyConsumer(inner, self, QueueOptions())
        return inner


# -- subscriptions, consumers and jobs ---------------------------------------------------------


async def _drop(delivery: Delivery) -> list[Delivery]:
    return []


def _no_inbox() -> Inbox:  # pragma: no cover - open_inbox takes no name that could be malformed
    raise TransportError(ErrorCode.INTERNAL, "no inbox")


class _FilteredSubscription:
    """A subscription whose deliveries pass through ``route`` (none, one or more out)."""

    def __init__(self, inner: Subscription, route: _Route) -> None:
        self._inner = inner
        self._route = route

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._deliveries()

    async def _deliveries(self) -> AsyncIterator[Delivery]:
        async for delivery in self._inner:
            for out in await self._route(delivery):
                yield out

    async def aclose(self) -> None:
        await self._inner.aclose()


class _SingleWaiter:
    """single-waiter: deliveries are buffered by a task, and each one wakes the task that
    began waiting last (the others wait on, unwoken): a binding keeping one waiter slot."""

    def __init__(self, inner: Subscription, tg: TaskGroup) -> None:
        self._inner = inner
        self._items: deque[Delivery] = deque()
        self._waiter: anyio.Event | None = None
        self._ended = False
        tg.start_soon(self._pump)

    async def _pump(self) -> None:
        try:
            async for delivery in self._inner:
                self._items.append(delivery)
                self._wake()
        finally:
            self._ended = True
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()

    def __aiter__(self) -> _SingleWaiter:
        return self

    async def __anext__(self) -> Delivery:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            waiter = self._waiter = anyio.Event()
            try:
                await waiter.wait()
            finally:
                self._waiter = None
        return self._items.popleft()

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Nothing(Generic[T]):
    """names-unchecked: what a subscription or consumer of a malformed name gets (nothing)."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[T](0)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def _items(self) -> AsyncIterator[T]:
        async for item in self._receive:  # ends when aclose closes the sending side
            yield item

    async def aclose(self) -> None:
        self._send.close()


def _no_subscription() -> Subscription:
    return _Nothing[Delivery]()


def _no_consumer() -> Consumer:
    return _Nothing[Job]()


class _FaultyConsumer:
    """A consumer whose jobs carry the fault."""

    def __init__(self, inner: Consumer, owner: FaultyTransport, options: QueueOptions) -> None:
        self._inner = inner
        self._owner = owner
        self.fault = owner.fault
        self.lease_s = options.lease_ms / 1000
        self.closed = False
        self.unsettled: set[_FaultyJob] = set()  #: close-acks acks these on close

    def __aiter__(self) -> AsyncIterator[Job]:
        return self._jobs()

    async def _taken(self) -> AsyncGenerator[Job]:
        """The inner jobs; greedy-prefetch takes them in the background, free slot or not."""
        tg = self._owner._tg  # noqa: SLF001 - the consumer belongs to its transport
        if self.fault != "greedy-prefetch" or tg is None:
            async for job in self._inner:
                yield job
            return
        send, receive = anyio.create_memory_object_stream[Job](math.inf)
        tg.start_soon(_pump, self._inner, send)
        async with receive:
            async for job in receive:
                yield job

    async def _jobs(self) -> AsyncIterator[Job]:
        async with contextlib.aclosing(self._taken()) as taken:
            async for job in taken:
                wrapped = _FaultyJob(job, self)
                if self.fault == "ack-before-handling":
                    await job.ack()
                    wrapped.settled = True
                elif self.fault == "close-acks":
                    self.unsettled.add(wrapped)
                yield wrapped
                if self.fault == "duplicate-jobs":
                    yield _FaultyJob(job, self)

    async def aclose(self) -> None:
        self.closed = True
        if self.fault == "close-acks":
            for job in [*self.unsettled]:
                await job.ack()
        await self._inner.aclose()


async def _pump(source: Consumer, send: MemoryObjectSendStream[Job]) -> None:
    """Take every job at once; stops when the reader went away (its jobs stay unsettled and
    go back to the queue when the consumer closes)."""
    async with send:
        async for job in source:
            try:
                await send.send(job)
            except anyio.BrokenResourceError:
                return


class _FaultyJob:
    """One delivery of a job, with the fault applied to its body, count and settles."""

    def __init__(self, inner: Job, consumer: _FaultyConsumer) -> None:
        self._inner = inner
        self._consumer = consumer
        self._fault = consumer.fault
        self._body = _received_body(self._fault, inner.body)
        self._lease_end = time.monotonic() + consumer.lease_s
        self.settled = False

    @property
    def body(self) -> bytes:
        """The body, as the faulty worker sees it."""
        return self._body

    @property
    def delivery_count(self) -> int:
        """The inner count (redeliver-without-limit: always 1)."""
        return 1 if self._fault == "redeliver-without-limit" else self._inner.delivery_count

    @property
    def reason(self) -> str | None:
        """Delegated."""
        return self._inner.reason

    def _stale(self) -> bool:
        return self.settled or self._consumer.closed or time.monotonic() > self._lease_end

    def _settle(self) -> bool:
        """Whether to pass a settle on (stale-settle-raises raises for a stale one)."""
        if self._fault == "stale-settle-raises" and self._stale():
            raise TransportError(ErrorCode.UNAVAILABLE, "the delivery is no longer leased")
        if self._fault == "ack-before-handling":
            return False
        self.settled = True
        self._consumer.unsettled.discard(self)
        return True

    async def ack(self) -> None:
        """Delegated, unless the fault says otherwise."""
        if self._settle():
            await self._inner.ack()

    async def nack(self, *, delay_ms: int = 0) -> None:
        """Delegated (delayed-nack-immediate: without the delay)."""
        if self._settle():
            delay = 0 if self._fault == "delayed-nack-immediate" else delay_ms
            await self._inner.nack(delay_ms=delay)

    async def terminate(self, *, reason: str) -> None:
        """Delegated (redeliver-without-limit: a nack instead)."""
        if not self._settle():
            return
        if self._fault == "redeliver-without-limit":
            await self._inner.nack()
        else:
            await self._inner.terminate(reason=reason)

    async def extend_lease(self) -> None:
        """Delegated (extend-lease-noop: nothing)."""
        if self._fault == "stale-settle-raises" and self._stale():
            raise TransportError(ErrorCode.UNAVAILABLE, "the delivery is no longer leased")
        if self._fault in ("extend-lease-noop", "ack-before-handling"):
            return
        self._lease_end = time.monotonic() + self._consumer.lease_s
        await self._inner.extend_lease()
