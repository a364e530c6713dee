"""Checks of profile ``core``: hostile input over the wire, rejections, error objects.

Theory of operation
-------------------
Every malformed message goes to the testee's echo address as raw bytes, on a fresh inbox
(the binding's native reply address, and the envelope's ``reply_to`` member wherever the
bytes are JSON), and must come back as exactly one error reply with the registry code of the
first decoding step that fails and an ``llmp.pointer`` detail naming the place [ENV-036,
ENV-039]; a well-formed echo afterwards shows that the testee kept running. The cases are one
table, each registered as its own check under the requirement it breaks.

This module also holds :class:`RawCall`, the raw request the rpc and stream checks share:
it fills the envelope's ``reply_to`` in with the inbox address (the framework's
a plain request-and-wait cannot, since it has to own the inbox), reads the replies one at a time
with timeouts, and turns a reply that does not decode into a failure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from llmproto_conformance._catalogue import check
from llmproto_conformance._context import (
    SUITE_SOURCE,
    TESTEE_TYPES,
    CheckContext,
    error_of,
    is_terminal,
)
from llmproto_conformance._model import CheckFailed, Level, Profile, Unsupported
from llmproto_ref import (
    DEFAULT_LIMITS,
    Deadline,
    Delivery,
    Envelope,
    EnvelopeError,
    ErrorCode,
    ExchangeError,
    Kind,
    TransportError,
    decode,
    now_timestamp,
    registry,
)

__all__ = (
    "GRACE_S",
    "WAIT_S",
    "Body",
    "RawCall",
    "deadline_in",
    "describe",
    "expect_still_answering",
    "now_us",
    "pointer_detail",
    "request_message",
)

#: How long a reply may take before a check gives up on it.
WAIT_S = 5.0
#: How long a check listens after a terminal reply for a message that must not come.
GRACE_S = 0.2

ECHO = TESTEE_TYPES["echo"]

#: What a raw call sends: an envelope's members (``reply_to`` is set to the inbox), bytes
#: as they are, or a function of the inbox address that makes the bytes.
Body = Mapping[str, Any] | bytes | Callable[[str], bytes]


def now_us() -> int:
    """Microseconds since the epoch, as the ``timing`` stamps count."""
    return time.time_ns() // 1000


def deadline_in(seconds: float) -> str:
    """The ``deadline`` member for ``seconds`` from now (negative: already passed)."""
    return Deadline(time.time_ns() // 1_000_000 + round(seconds * 1000)).to_timestamp()


def request_message(ctx: CheckContext, op: str, data: Any = None, **members: Any) -> dict[str, Any]:
    """The members of a well-formed request for testee operation ``op``, due in 10 s."""
    members.setdefault("deadline", deadline_in(10.0))
    return ctx.request_bytes(op, data, **members).to_dict()


def pointer_detail(error: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``llmp.pointer`` detail of an error object, or fail the check."""
    for detail in error.get("details") or ():
        if isinstance(detail, Mapping) and detail.get("type") == "llmp.pointer":
            return detail
    raise CheckFailed(f"the error {error.get('code')} has no llmp.pointer detail: {error!r}")


async def expect_still_answering(ctx: CheckContext, after: str) -> None:
    """Fail unless a well-formed echo still succeeds (the testee survived ``after``)."""
    probe = {"still": "answering", "after": after}
    try:
        reply = await ctx.call("echo", probe, timeout=WAIT_S)
    except ExchangeError as exc:
        raise CheckFailed(f"after {after}, an echo failed with {exc.code}: {exc.message}") from exc
    ctx.expect(probe == reply.data, f"after {after}, an echo came back as {reply.data!r}")


def describe(reply: Envelope) -> str:
    """A reply in a few words, for failure messages: ``an error CANCELLED``, ``a chunk seq=2``."""
    if reply.kind is Kind.ERROR:
        return f"an error {(reply.error or {}).get('code')}"
    if reply.kind is Kind.CHUNK:
        return f"a {'final ' if reply.final else ''}chunk seq={reply.seq}"
    return f"{'an' if reply.kind is Kind.EVENT else 'a'} {reply.kind}"


class RawCall:
    """One request sent as raw bytes on a fresh inbox, its replies read one at a time.

    ``async with RawCall(ctx, type_, body) as call:`` sends; :meth:`next`, :meth:`terminal`
    and :meth:`silence` read what comes back. :attr:`replies` keeps every decoded reply and
    :meth:`elapsed` the seconds since the request was sent.
    """

    def __init__(self, ctx: CheckContext, type_: str, body: Body) -> None:
        self.ctx = ctx
        self.type = type_
        self.body = body
        self.replies: list[Envelope] = []
        self.sent_at = 0.0  #: ``time.monotonic()`` when the request was sent
        self.sent_wall = 0.0  #: ``time.time()`` then
        self._stack = AsyncExitStack()
        self._receive: MemoryObjectReceiveStream[Delivery] | None = None

    async def __aenter__(self) -> RawCall:
        stack = self._stack
        await stack.__aenter__()
        try:
            await self._open(stack)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        return self

    async def _open(self, stack: AsyncExitStack) -> None:
        inbox = await self.ctx.transport.open_inbox()

        async def close_inbox() -> None:
            with anyio.CancelScope(shield=True):
                await inbox.subscription.aclose()

        stack.push_async_callback(close_inbox)
        send, receive = anyio.create_memory_object_stream[Delivery](math.inf)
        stack.callback(receive.close)
        stack.callback(send.close)
        self._receive = receive
        group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(group.cancel_scope.cancel)  # runs before the group is left
        group.start_soon(_pump, inbox.subscription, send)
        if isinstance(self.body, Mapping):
            body = orjson.dumps({**self.body, "reply_to": inbox.address})
        elif isinstance(self.body, bytes):
            body = self.body
        else:
            body = self.body(inbox.address)
        self.sent_at, self.sent_wall = time.monotonic(), time.time()
        try:
            await self.ctx.transport.send_request(
                self.type, body, reply_to=inbox.address, message_id=self.ctx.unique("raw")
            )
        except TransportError as exc:
            raise CheckFailed(
                f"sending to {self.type} failed with {exc.code}: {exc.message}"
            ) from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The check's own exception is not passed on: the task group would wrap it.
        await self._stack.__aexit__(None, None, None)

    def elapsed(self) -> float:
        """Seconds since the request was sent."""
        return time.monotonic() - self.sent_at

    async def next(self, timeout_s: float) -> Envelope | None:
        """The next reply, or ``None`` when none arrives within ``timeout_s``.

        :raises CheckFailed: for a reply that does not decode, or a no-responders notice.
        """
        if self._receive is None:
            raise RuntimeError("use RawCall with 'async with'")
        delivery: Delivery | None = None
        with anyio.move_on_after(max(0.0, timeout_s)):
            delivery = await self._receive.receive()
        if delivery is None:
            return None
        if delivery.notice is not None:
            raise CheckFailed(f"the transport reported {delivery.notice} for {self.type}")
        try:
            reply = decode(delivery.body)
        except EnvelopeError as exc:
            raise CheckFailed(f"a reply does not decode ({exc}): {delivery.body[:300]!r}") from exc
        self.replies.append(reply)
        return reply

    async def terminal(self, timeout_s: float = WAIT_S) -> Envelope:
        """Read until the terminal reply (response, error or final chunk) and return it."""
        until = time.monotonic() + timeout_s
        while True:
            reply = await self.next(until - time.monotonic())
            if reply is None:
                seen = ", ".join(describe(r) for r in self.replies) or "nothing"
                raise CheckFailed(
                    f"no terminal reply to {self.type} within {timeout_s:g} s (got {seen})"
                )
            if is_terminal(reply):
                return reply

    async def silence(self, grace_s: float = GRACE_S, *, after: str = "the terminal reply") -> None:
        """Fail if anything arrives within ``grace_s``."""
        reply = await self.next(grace_s)
        if reply is not None:
            raise CheckFailed(f"{describe(reply)} arrived after {after}")

    @property
    def chunks(self) -> list[Envelope]:
        """The non-final chunks received so far, in arrival order."""
        return [r for r in self.replies if r.kind is Kind.CHUNK and r.final is not True]


async def _pump(subscription: Any, send: MemoryObjectSendStream[Delivery]) -> None:
    async with send:
        async for delivery in subscription:
            await send.send(delivery)


# -- the hostile inputs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Hostile:
    """One malformed message and the rejection it must get."""

    id: str
    requirement: str
    description: str
    make: Callable[[CheckContext, str], bytes]  #: (ctx, inbox address) -> the bytes
    code: ErrorCode = ErrorCode.INVALID_ENVELOPE
    pointer: str = ""


def _echo_members(ctx: CheckContext, reply_to: str, data: Any = None) -> dict[str, Any]:
    members = request_message(ctx, "echo", {"hostile": True} if data is None else data)
    members["reply_to"] = reply_to
    return members


def _with(**changes: Any) -> Callable[[CheckContext, str], bytes]:
    """A request whose members are changed (``None`` removes one)."""

    def make(ctx: CheckContext, reply_to: str) -> bytes:
        members = _echo_members(ctx, reply_to)
        for name, value in changes.items():
            if value is None:
                members.pop(name, None)
            else:
                members[name] = value
        return orjson.dumps(members)

    return make


def _text(render: Callable[[bytes], bytes]) -> Callable[[CheckContext, str], bytes]:
    """A request whose encoded bytes are rewritten by ``render``."""

    def make(ctx: CheckContext, reply_to: str) -> bytes:
        return render(orjson.dumps(_echo_members(ctx, reply_to, "PLACEHOLDER")))

    return make


def _placeholder(replacement: bytes) -> Callable[[bytes], bytes]:
    return lambda body: body.replace(b'"PLACEHOLDER"', replacement)


def _oversize(ctx: CheckContext, reply_to: str) -> bytes:
    limit = DEFAULT_LIMITS.max_envelope_bytes
    skeleton = orjson.dumps(_echo_members(ctx, reply_to, ""))
    body = skeleton.replace(b'"data":""', b'"data":"' + b"x" * (limit + 1 - len(skeleton)) + b'"')
    if len(body) > ctx.capabilities.max_payload:
        raise Unsupported(
            f"the transport carries at most {ctx.capabilities.max_payload} bytes, "
            f"so a message over the {limit}-byte envelope limit cannot reach the testee"
        )
    return body


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _critical(ctx: CheckContext, reply_to: str) -> bytes:
    members = _echo_members(ctx, reply_to)
    members["ext"] = {"acme.frobnicate": True}
    members["critical"] = ["acme.frobnicate"]
    return orjson.dumps(members)


HOSTILE = (
    _Hostile(id="core-reject-not-json", requirement="ENV-002",
             description="a truncated JSON text is rejected with INVALID_ENVELOPE at ''",
             make=_text(lambda body: body[: len(body) // 2])),
    _Hostile(id="core-reject-trailing-content", requirement="ENV-002",
             description="content after the JSON value is rejected with INVALID_ENVELOPE at ''",
             make=_text(lambda body: body + b" {}")),
    _Hostile(id="core-reject-non-finite-number", requirement="ENV-004",
             description="a NaN or a number overflowing to infinity is rejected at ''",
             make=_text(_placeholder(b"[1e400, NaN]"))),
    _Hostile(id="core-reject-invalid-utf8", requirement="ENV-005",
             description="invalid UTF-8 is rejected with INVALID_ENVELOPE at ''",
             make=_text(_placeholder(b'"caf\xc3"'))),
    _Hostile(id="core-reject-lone-surrogate", requirement="ENV-005",
             description="a lone surrogate escape is rejected with INVALID_ENVELOPE at ''",
             make=_text(_placeholder(b'"\\ud800"'))),
    _Hostile(id="core-reject-byte-order-mark", requirement="ENV-005",
             description="a leading UTF-8 byte order mark is rejected at ''",
             make=_text(lambda body: b"\xef\xbb\xbf" + body)),
    _Hostile(id="core-reject-oversize", requirement="ENV-006",
             description="an envelope one byte over 1 MiB is rejected with PAYLOAD_TOO_LARGE",
             make=_oversize, code=ErrorCode.PAYLOAD_TOO_LARGE),
    _Hostile(id="core-reject-too-deep", requirement="ENV-007",
             description="nesting deeper than 32 is rejected with INVALID_ENVELOPE at ''",
             make=_text(_placeholder(_nested(40)))),
    _Hostile(id="core-reject-duplicate-member", requirement="ENV-003",
             description="a member repeated inside data is rejected at its pointer",
             make=_text(_placeholder(b'{"a": 1, "a": 2}')), pointer="/data/a"),
    _Hostile(id="core-reject-duplicate-top-level", requirement="ENV-003",
             description="a top-level member repeated is rejected at its pointer",
             make=_text(lambda body: body.replace(b'"kind":', b'"kind":"request","kind":', 1)),
             pointer="/kind"),
    _Hostile(id="core-reject-not-object", requirement="ENV-001",
             description="a JSON array instead of an object is rejected at ''",
             make=lambda ctx, reply_to: b'["llmp", "1.0"]'),
    _Hostile(id="core-reject-unknown-member", requirement="ENV-008",
             description="an unknown top-level member is rejected at its pointer",
             make=_with(colour="red"), pointer="/colour"),
    _Hostile(id="core-reject-missing-member", requirement="ENV-009",
             description="a request without source is rejected at /source",
             make=_with(source=None), pointer="/source"),
    _Hostile(id="core-reject-unsupported-version", requirement="ENV-010",
             description="major version 2 is rejected with UNSUPPORTED_VERSION at /llmp",
             make=_with(llmp="2.0"), code=ErrorCode.UNSUPPORTED_VERSION, pointer="/llmp"),
    _Hostile(id="core-reject-malformed-version", requirement="ENV-010",
             description="a malformed llmp version is rejected with INVALID_ENVELOPE at /llmp",
             make=_with(llmp="1.01"), pointer="/llmp"),
    _Hostile(id="core-reject-bad-id", requirement="ENV-011",
             description="an id that breaks the id format is rejected at /id",
             make=_with(id="-not an id"), pointer="/id"),
    _Hostile(id="core-reject-unknown-kind", requirement="ENV-013",
             description="a kind outside the closed set is rejected at /kind",
             make=_with(kind="query"), pointer="/kind"),
    _Hostile(id="core-reject-bad-timestamp", requirement="ENV-016",
             description="a time that is no calendar date is rejected at /time",
             make=_with(time="2026-02-30T12:00:00.000Z"), pointer="/time"),
    _Hostile(id="core-reject-integer-range", requirement="ENV-033",
             description="an integer beyond 2^53-1 is rejected at its pointer",
             make=_with(timing={"call": 2**53}), pointer="/timing/call"),
    _Hostile(id="core-reject-forbidden-member", requirement="ENV-034",
             description="a member forbidden on a request (seq) is rejected at its pointer",
             make=_with(seq=1), pointer="/seq"),
    _Hostile(id="core-reject-unknown-critical", requirement="ENV-031",
             description="an unknown critical extension is rejected with UNSUPPORTED_EXTENSION",
             make=_critical, code=ErrorCode.UNSUPPORTED_EXTENSION, pointer="/critical/0"),
)  # fmt: skip


async def _rejection(ctx: CheckContext, make: Callable[[CheckContext, str], bytes]) -> Envelope:
    """Send the hostile bytes; the one reply that comes back (nothing may follow it)."""
    async with RawCall(ctx, ECHO, lambda address: make(ctx, address)) as call:
        reply = await call.terminal()
        await call.silence(after="the rejection")
    return reply


def _register(case: _Hostile) -> None:
    async def run(ctx: CheckContext) -> None:
        reply = await _rejection(ctx, case.make)
        error = error_of(reply)
        ctx.expect(
            case.code == error.get("code"),
            f"expected {case.code}, got {error.get('code')}: {error.get('message')}",
        )
        pointer = pointer_detail(error).get("pointer")
        ctx.expect(
            case.pointer == pointer,
            f"the llmp.pointer detail names {pointer!r}, expected {case.pointer!r}",
        )
        await expect_still_answering(ctx, case.description.split(" is ")[0])

    run.__name__ = run.__qualname__ = "check_" + case.id.replace("-", "_")
    check(id=case.id, requirement=case.requirement, level=Level.MUST, profile=Profile.CORE,
          description=case.description)(run)  # fmt: skip


for _case in HOSTILE:
    _register(_case)


# -- the rejection reply itself ---------------------------------------------------------------


@check(
    id="core-rejection-names-request",
    requirement="ENV-036",
    level=Level.MUST,
    profile=Profile.CORE,
    description="a rejection carries the rejected id as correlation_id and its type",
)
async def check_rejection_names_request(ctx: CheckContext) -> None:
    """An invalid request whose id and type are readable: the reply names both."""
    members: dict[str, Any] = {}

    def make(context: CheckContext, reply_to: str) -> bytes:
        members.update(_echo_members(context, reply_to), colour="red")
        return orjson.dumps(members)

    reply = await _rejection(ctx, make)
    error_of(reply)
    ctx.expect(
        members["id"] == reply.correlation_id,
        f"the rejection's correlation_id is {reply.correlation_id!r}, not the id {members['id']!r}",
    )
    ctx.expect(ECHO == reply.type, f"the rejection's type is {reply.type!r}, not {ECHO!r}")


@check(
    id="core-rejection-unreadable",
    requirement="ENV-036",
    level=Level.MUST,
    profile=Profile.CORE,
    description="a rejection of unparsable bytes has type llmp.error and no correlation_id",
)
async def check_rejection_unreadable(ctx: CheckContext) -> None:
    """Bytes that are no JSON: the reply cannot name the request."""
    reply = await _rejection(ctx, lambda context, reply_to: b"\x00 this is not JSON")
    error_of(reply)
    ctx.expect(
        "llmp.error" == reply.type, f"the rejection's type is {reply.type!r}, not 'llmp.error'"
    )
    ctx.expect(
        reply.correlation_id is None,
        f"the rejection of unreadable bytes carries correlation_id {reply.correlation_id!r}",
    )


@check(
    id="core-rejection-detail",
    requirement="ENV-036",
    level=Level.MUST,
    profile=Profile.CORE,
    description="a rejection is not retryable and its llmp.pointer detail names the requirement",
)
async def check_rejection_detail(ctx: CheckContext) -> None:
    """The pointer detail has both members, and retryable is false."""
    reply = await _rejection(ctx, _with(source=None))
    error = error_of(reply)
    ctx.expect(
        error.get("retryable") is False, f"a rejection with retryable={error.get('retryable')!r}"
    )
    detail = pointer_detail(error)
    ctx.expect(
        "ENV-009" == detail.get("requirement"),
        f"the llmp.pointer detail names {detail.get('requirement')!r}, expected ENV-009",
    )


@check(
    id="core-rejected-not-run",
    requirement="ENV-037",
    level=Level.MUST,
    profile=Profile.CORE,
    description="no handler runs for a rejected message",
)
async def check_rejected_not_run(ctx: CheckContext) -> None:
    """A request valid but for its last member must not reach the echo handler."""
    key = ctx.unique("rejected")
    members: dict[str, Any] = {}

    def make(context: CheckContext, reply_to: str) -> bytes:
        members.update(_echo_members(context, reply_to), idempotency_key=key, seq=0)
        return orjson.dumps(members)

    error_of(await _rejection(ctx, make))
    runs = (await ctx.counters()).get("executions", {}).get(key, 0)
    ctx.expect(0 == runs, f"the handler ran {runs} time(s) for a rejected request")


@check(
    id="core-invalid-error-not-answered",
    requirement="ENV-036",
    level=Level.MUST,
    profile=Profile.CORE,
    description="an invalid message of kind error is dropped, never answered",
)
async def check_invalid_error_not_answered(ctx: CheckContext) -> None:
    """An error envelope whose error object lacks retryable, sent to a request address."""

    def make(context: CheckContext, reply_to: str) -> bytes:
        return orjson.dumps({
            "llmp": "1.0", "id": context.unique("bad-error"), "kind": "error", "type": ECHO,
            "source": SUITE_SOURCE, "time": now_timestamp(),
            "error": {"code": "INTERNAL", "message": "no retryable member"},
        })  # fmt: skip

    async with RawCall(ctx, ECHO, lambda address: make(ctx, address)) as call:
        await call.silence(2 * GRACE_S, after="an invalid error message")
    await expect_still_answering(ctx, "an invalid error message")


@check(
    id="core-accept-minor-version",
    requirement="ENV-010",
    level=Level.MUST,
    profile=Profile.CORE,
    description="a request of a later minor version (1.7) is accepted",
)
async def check_accept_minor_version(ctx: CheckContext) -> None:
    """Minor versions differ without breaking anything."""
    members = request_message(ctx, "echo", {"minor": 7})
    async with RawCall(ctx, ECHO, {**members, "llmp": "1.7"}) as call:
        reply = await call.terminal()
    ctx.expect(
        Kind.RESPONSE is reply.kind and {"minor": 7} == reply.data,
        f"a request with llmp 1.7 got {describe(reply)}",
    )


@check(
    id="core-unsupported-version-lists",
    requirement="VER-003",
    level=Level.SHOULD,
    profile=Profile.CORE,
    description="an UNSUPPORTED_VERSION rejection lists the supported versions",
)
async def check_unsupported_version_lists(ctx: CheckContext) -> None:
    """The llmp.versions detail names at least one 1.x version."""
    error = error_of(await _rejection(ctx, _with(llmp="2.0")))
    for detail in error.get("details") or ():
        if isinstance(detail, Mapping) and detail.get("type") == "llmp.versions":
            supported = detail.get("supported")
            ctx.expect(
                isinstance(supported, list) and any(str(v).startswith("1.") for v in supported),
                f"the llmp.versions detail lists {supported!r}",
            )
            return
    raise CheckFailed(f"the UNSUPPORTED_VERSION rejection has no llmp.versions detail: {error!r}")


# -- error replies of the testee --------------------------------------------------------------


@check(
    id="core-error-object-shape",
    requirement="ERR-001",
    level=Level.MUST,
    profile=Profile.CORE,
    description="every error reply carries a valid error object: code, message, retryable",
)
async def check_error_object_shape(ctx: CheckContext) -> None:
    """Error replies of several origins all decode and have exactly the allowed members."""
    allowed = {"code", "message", "retryable", "retry_after_ms", "details", "origin"}
    bodies: list[Body] = [
        request_message(ctx, "fail", {"code": "OVERLOADED", "message": "full"}),
        request_message(ctx, "fail", {"code": "INVALID_PARAMS"}),
        lambda address: _with(colour="red")(ctx, address),
        b"{",
    ]
    for body in bodies:
        async with RawCall(ctx, TESTEE_TYPES["fail"] if isinstance(body, Mapping) else ECHO,
                           body) as call:  # fmt: skip
            error = error_of(await call.terminal())  # RawCall fails replies that do not decode
        ctx.expect(
            isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)
            and isinstance(error.get("retryable"), bool),
            f"an error object without a string code and message and a boolean retryable: {error!r}",
        )
        extra = set(error) - allowed
        ctx.expect(not extra, f"an error object with members {sorted(extra)}: {error!r}")


@check(
    id="core-fail-round-trip",
    requirement="RR-004",
    level=Level.MUST,
    profile=Profile.CORE,
    description="llmp.testee.fail answers with exactly the code, message, retryable, "
    "retry_after_ms and details asked for",
)
async def check_fail_round_trip(ctx: CheckContext) -> None:
    """A non-default retryable, a delay and a detail all survive."""
    asked = {"code": "RATE_LIMITED", "message": "slow down, conformance", "retryable": False,
             "retry_after_ms": 1234, "details": [{"type": "acme.quota", "limit": 60}]}  # fmt: skip
    async with RawCall(ctx, TESTEE_TYPES["fail"], request_message(ctx, "fail", asked)) as call:
        error = error_of(await call.terminal())
    for name, value in asked.items():
        ctx.expect(
            value == error.get(name), f"error.{name} is {error.get(name)!r}, asked {value!r}"
        )


@check(
    id="core-fail-every-code",
    requirement="RR-004",
    level=Level.MUST,
    profile=Profile.CORE,
    description="every registry code sent through llmp.testee.fail comes back unchanged",
)
async def check_fail_every_code(ctx: CheckContext) -> None:
    """No code is mapped to another one on the way out."""
    wrong: list[str] = []
    for code in registry():
        try:
            await ctx.call("fail", {"code": code, "message": f"asked for {code}"}, timeout=WAIT_S)
        except ExchangeError as exc:
            if str(exc.code) != code or exc.envelope is None:
                wrong.append(f"{code} -> {exc.code}{'' if exc.envelope else ' (local)'}")
            continue
        wrong.append(f"{code} -> a response")
    ctx.expect(not wrong, "codes changed on the way: " + ", ".join(wrong))


@check(
    id="core-fail-default-retryable",
    requirement="ERR-007",
    level=Level.SHOULD,
    profile=Profile.CORE,
    description="an error whose retryable is not given takes the registry's default",
)
async def check_fail_default_retryable(ctx: CheckContext) -> None:
    """OVERLOADED defaults to retryable, INVALID_PARAMS to not retryable."""
    entries = registry()
    for code in (ErrorCode.OVERLOADED, ErrorCode.INVALID_PARAMS, ErrorCode.UPSTREAM_ERROR):
        body = request_message(ctx, "fail", {"code": str(code), "message": "default"})
        async with RawCall(ctx, TESTEE_TYPES["fail"], body) as call:
            error = error_of(await call.terminal())
        expected = entries[code].retryable
        ctx.expect(
            expected is error.get("retryable"),
            f"{code} came back with retryable={error.get('retryable')!r}, "
            f"the registry default is {expected}",
        )
