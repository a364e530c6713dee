"""Checks of profile ``security``: signatures, replay, tokens, no forwarding (spec/security.md).

Theory of operation
-------------------
Every check talks to the testee's secure service, ``llmp-testee-secure``, configured from the
published test keys as spec/conformance.md says (:mod:`llmproto_conformance._security_kit`). The
suite builds each request fresh, signs it now as gateway 7 with the published key (or breaks it
on purpose: tampered after signing, signed an hour ago, signed with an unknown key, ``alg``
``none``, an HMAC keyed with the Ed25519 public key, a token for another audience ...) and sends
the raw bytes on a fresh inbox, so nothing in the suite's own client can mend them. A refused
request must come back as exactly one error reply with the code and ``llmp.pointer`` of the
step of the verification order it fails [SEC-017, ENV-036], and must not reach a handler: each
carries an idempotency key, and the testee's counters must show no execution for it
[ENV-037]. Replies are judged by code and pointer, as the core checks judge rejections.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from llmproto_conformance._catalogue import check
from llmproto_conformance._checks_core import (
    RawCall,
    deadline_in,
    describe,
    pointer_detail,
)
from llmproto_conformance._context import (
    TESTEE_SECURE_TYPES,
    CheckContext,
    error_of,
)
from llmproto_conformance._model import Level, Profile
from llmproto_conformance._security_kit import (
    GATEWAY_KID,
    GATEWAY_SOURCE,
    SCOPE,
    WORKER_SOURCE,
    mint_token,
    published_key,
    signed,
)
from llmproto_ref import Envelope, ErrorCode, Key, Kind
from llmproto_ref._canonical import signing_input
from llmproto_ref._keys import b64url_encode
from llmproto_ref._signing import sign_bytes

__all__ = (
    "exchange",
    "expect_echo",
    "expect_refused",
    "refusal",
    "request_members",
    "signed_request",
    "tampered",
)

_MINUTE_MS = 60_000
_DEFAULT = object()  #: a fresh valid token (the default of ``request_members``)

#: What a check builds: (ctx, reply address, idempotency key) -> the request's bytes.
Make = Callable[[CheckContext, str, str], bytes]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def request_members(
    ctx: CheckContext,
    op: str,
    reply_to: str,
    *,
    data: Any = _DEFAULT,
    token: Any = _DEFAULT,
    **members: Any,
) -> dict[str, Any]:
    """A well-formed request to the secure operation ``op``, unsigned, with a valid token."""
    members.setdefault("source", GATEWAY_SOURCE)
    built = Envelope.new(kind=Kind.REQUEST, type=TESTEE_SECURE_TYPES[op],
                         data={"secure": op} if data is _DEFAULT else data, reply_to=reply_to,
                         deadline=deadline_in(10.0), **members).to_dict()  # fmt: skip
    if token is _DEFAULT:
        token = mint_token(scope=SCOPE)
    if token is not None:
        built["auth"] = {"scheme": "bearer", "token": token}
    return built


def signed_request(ctx: CheckContext, op: str, reply_to: str, **members: Any) -> dict[str, Any]:
    """``request_members`` signed now with the gateway's published key."""
    return signed(request_members(ctx, op, reply_to, **members))


def _sig_changed(members: Mapping[str, Any], **changes: str) -> bytes:
    """Signed members whose ``sig`` block is then changed (the value no longer fits)."""
    return orjson.dumps({**members, "sig": {**members["sig"], **changes}})


def _hmac_with_public_key(members: Mapping[str, Any]) -> bytes:
    """The classic confusion: HS256 keyed with the Ed25519 public key of ``sig.kid`` [SEC-013]."""
    forged = {**members, "sig": {**members["sig"], "alg": "HS256"}}
    confused = Key.hmac_sha256(GATEWAY_KID, published_key(GATEWAY_KID).public)
    forged["sig"]["value"] = b64url_encode(sign_bytes(confused, signing_input(forged)))
    return orjson.dumps(forged)


async def exchange(ctx: CheckContext, op: str, make: Callable[[str], bytes]) -> Envelope:
    """Send the bytes ``make(address)`` to ``op``; the terminal reply."""
    async with RawCall(ctx, TESTEE_SECURE_TYPES[op], make) as call:
        return await call.terminal()


async def refusal(ctx: CheckContext, op: str, make: Callable[[str], bytes]) -> Envelope:
    """Send the bytes; the one reply that comes back, and nothing after it."""
    async with RawCall(ctx, TESTEE_SECURE_TYPES[op], make) as call:
        reply = await call.terminal()
        await call.silence(after="the rejection")
    return reply


def expect_refused(ctx: CheckContext, reply: Envelope, code: ErrorCode, pointer: str) -> None:
    error = error_of(reply)
    ctx.expect(
        code == error.get("code"),
        f"expected {code} at {pointer!r}, got {describe(reply)}: {error.get('message')}",
    )
    found = pointer_detail(error).get("pointer")
    ctx.expect(pointer == found, f"the llmp.pointer detail names {found!r}, expected {pointer!r}")


async def _expect_not_run(ctx: CheckContext, key: str) -> None:
    runs = (await ctx.counters()).get("executions", {}).get(key, 0)
    ctx.expect(0 == runs, f"the handler ran {runs} time(s) for a refused request")


def expect_echo(ctx: CheckContext, reply: Envelope, data: Any, what: str) -> None:
    ctx.expect(
        Kind.RESPONSE is reply.kind and data == reply.data,
        f"{what} got {describe(reply)}"
        + (f": {(reply.error or {}).get('message')}" if reply.kind is Kind.ERROR else ""),
    )


# -- refusals ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Refused:
    """One request the secure service must refuse, and how."""

    id: str
    requirement: str
    description: str
    make: Make
    code: ErrorCode
    pointer: str
    op: str = "echo"


def _plain(**changes: Any) -> Make:
    """An unsigned request (``request_members`` with ``changes``)."""
    return lambda ctx, to, key: orjson.dumps(
        request_members(ctx, "echo", to, idempotency_key=key, **changes)
    )


def _then(change: Callable[[dict[str, Any]], bytes], op: str = "echo", **changes: Any) -> Make:
    """A request signed now, then changed by ``change`` (which returns the bytes)."""
    return lambda ctx, to, key: change(signed_request(ctx, op, to, idempotency_key=key, **changes))


def _signed_at(offset_ms: int, lifetime_ms: int = 300_000, **changes: Any) -> Make:
    """A request signed ``offset_ms`` from now, valid for ``lifetime_ms``."""
    return lambda ctx, to, key: orjson.dumps(signed(
        request_members(ctx, "echo", to, idempotency_key=key, **changes),
        at_ms=_now_ms() + offset_ms, lifetime_ms=lifetime_ms,
    ))  # fmt: skip


def _signed_by(key_of: Callable[[], Key], op: str = "echo", **changes: Any) -> Make:
    return lambda ctx, to, key: orjson.dumps(
        signed(request_members(ctx, op, to, idempotency_key=key, **changes), key=key_of())
    )


def _token(op: str = "echo", **minted: Any) -> Make:
    """A signed request carrying a token minted with ``minted``."""
    return lambda ctx, to, key: orjson.dumps(
        signed_request(ctx, op, to, idempotency_key=key, token=mint_token(**minted))
    )


def _unknown_key() -> Key:
    return Key.ed25519("urn:llmp:conformance:keys:unknown", private=os.urandom(32))


def tampered(members: dict[str, Any]) -> bytes:
    return orjson.dumps({**members, "data": {"secure": "changed after signing"}})


_UNAUTHENTICATED = ErrorCode.UNAUTHENTICATED
_INVALID = ErrorCode.SIGNATURE_INVALID
_REPLAY = ErrorCode.REPLAY_REJECTED
_DENIED = ErrorCode.PERMISSION_DENIED

REFUSED = (
    _Refused(id="sec-unsigned-refused", requirement="SEC-018",
             description="an unsigned request is refused with UNAUTHENTICATED at /sig",
             make=_plain(), code=_UNAUTHENTICATED, pointer="/sig"),
    _Refused(id="sec-tampered-refused", requirement="SEC-016",
             description="a request whose data changed after signing is refused with "
             "SIGNATURE_INVALID at /sig/value",
             make=_then(tampered), code=_INVALID, pointer="/sig/value"),
    _Refused(id="sec-expired-refused", requirement="SEC-020",
             description="a signature that expired more than the allowance ago is refused with "
             "REPLAY_REJECTED at /sig/expires",
             make=_signed_at(-400_000), code=_REPLAY, pointer="/sig/expires"),
    _Refused(id="sec-future-refused", requirement="SEC-020",
             description="a signature created two minutes from now is refused with "
             "REPLAY_REJECTED at /sig/created",
             make=_signed_at(2 * _MINUTE_MS), code=_REPLAY, pointer="/sig/created"),
    _Refused(id="sec-lifetime-refused", requirement="SEC-020",
             description="a signature valid for 600 s (longer than 300 s) is refused with "
             "REPLAY_REJECTED at /sig/expires",
             make=_signed_at(0, lifetime_ms=600_000), code=_REPLAY, pointer="/sig/expires"),
    _Refused(id="sec-unknown-kid-refused", requirement="SEC-014",
             description="a signature by a key the receiver does not hold is refused with "
             "UNAUTHENTICATED at /sig/kid",
             make=_signed_by(_unknown_key), code=_UNAUTHENTICATED, pointer="/sig/kid"),
    _Refused(id="sec-alg-none-refused", requirement="SEC-007",
             description="sig.alg none is refused with SIGNATURE_INVALID at /sig/alg",
             make=_then(lambda m: _sig_changed(m, alg="none")), code=_INVALID,
             pointer="/sig/alg"),
    _Refused(id="sec-alg-none-any-case-refused", requirement="SEC-007",
             description="sig.alg NoNe is refused with SIGNATURE_INVALID at /sig/alg",
             make=_then(lambda m: _sig_changed(m, alg="NoNe")), code=_INVALID,
             pointer="/sig/alg"),
    _Refused(id="sec-alg-not-allowed-refused", requirement="SEC-012",
             description="an algorithm outside EdDSA and HS256 (ES256) is refused with "
             "SIGNATURE_INVALID at /sig/alg",
             make=_then(lambda m: _sig_changed(m, alg="ES256")), code=_INVALID,
             pointer="/sig/alg"),
    _Refused(id="sec-hmac-for-ed25519-kid-refused", requirement="SEC-013",
             description="an HS256 signature keyed with the public key of an Ed25519 kid is "
             "refused with SIGNATURE_INVALID at /sig/alg",
             make=_then(_hmac_with_public_key), code=_INVALID, pointer="/sig/alg"),
    _Refused(id="sec-source-not-registered-refused", requirement="SEC-025",
             description="a source the signing key is not registered for is refused with "
             "PERMISSION_DENIED at /source",
             make=_then(orjson.dumps, source=WORKER_SOURCE), code=_DENIED, pointer="/source"),
    _Refused(id="sec-token-missing-refused", requirement="SEC-027",
             description="a signed request without a bearer token is refused with "
             "UNAUTHENTICATED at /auth",
             make=_then(orjson.dumps, token=None), code=_UNAUTHENTICATED, pointer="/auth"),
    _Refused(id="sec-token-scope-missing-refused", requirement="SEC-031",
             description="a token without the scope the operation requires is refused with "
             "PERMISSION_DENIED at /auth/token",
             make=_token("scoped", scope="llmp.testee.other"), code=_DENIED,
             pointer="/auth/token", op="scoped"),
    _Refused(id="sec-token-audience-refused", requirement="SEC-029",
             description="a token for another audience is refused with UNAUTHENTICATED at "
             "/auth/token",
             make=_token(audience="llmp-elsewhere"), code=_UNAUTHENTICATED,
             pointer="/auth/token"),
    _Refused(id="sec-token-issuer-refused", requirement="SEC-029",
             description="a token naming an issuer the service does not trust is refused with "
             "UNAUTHENTICATED at /auth/token",
             make=_token(issuer="https://issuer.invalid"), code=_UNAUTHENTICATED,
             pointer="/auth/token"),
    _Refused(id="sec-token-expired-refused", requirement="SEC-030",
             description="a token that expired an hour ago is refused with UNAUTHENTICATED at "
             "/auth/token",
             make=_token(expires_in_s=-3600), code=_UNAUTHENTICATED, pointer="/auth/token"),
    _Refused(id="sec-token-alg-none-refused", requirement="SEC-028",
             description="an unsigned token (alg none) is refused with UNAUTHENTICATED at "
             "/auth/token",
             make=_token(alg="none"), code=_UNAUTHENTICATED, pointer="/auth/token"),
)  # fmt: skip


def _register(case: _Refused) -> None:
    async def run(ctx: CheckContext) -> None:
        key = ctx.unique("sec")
        reply = await refusal(ctx, case.op, lambda address: case.make(ctx, address, key))
        expect_refused(ctx, reply, case.code, case.pointer)
        await _expect_not_run(ctx, key)

    run.__name__ = run.__qualname__ = "check_" + case.id.replace("-", "_")
    check(id=case.id, requirement=case.requirement, level=Level.MUST, profile=Profile.SECURITY,
          description=case.description)(run)  # fmt: skip


for _case in REFUSED:
    _register(_case)
