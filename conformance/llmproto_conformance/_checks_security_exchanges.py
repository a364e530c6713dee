"""Checks of profile ``security``: what the secure service accepts and what it sends.

The counterpart of the refusals in :mod:`llmproto_conformance._checks_security` (whose helpers
build and send the requests): a request signed now is answered [SEC-005], also re-serialized
[SEC-004] and with the scope its operation requires [SEC-031]; the same request a second time
is a replay [SEC-021]; and what the service sends carries no caller's token downstream
[SEC-032], is signed with the worker test key [CONF-023] and quotes no secret [ERR-012].
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson

from llmproto_conformance._catalogue import check
from llmproto_conformance._checks_core import WAIT_S, RawCall, describe
from llmproto_conformance._checks_security import (
    exchange,
    expect_echo,
    expect_refused,
    refusal,
    request_members,
    signed_request,
    tampered,
)
from llmproto_conformance._context import (
    SUITE_SOURCE,
    TESTEE_SECURE_TYPES,
    CheckContext,
    error_of,
)
from llmproto_conformance._model import CheckFailed, Level, Profile
from llmproto_conformance._security_kit import AUDIENCE, SCOPE, WORKER_KID, mint_token, reply_policy
from llmproto_ref import Delivery, Envelope, EnvelopeError, ErrorCode, Kind, decode

__all__: tuple[str, ...] = ()  # checks, reached through catalogue()


# -- what is accepted ----------------------------------------------------------------------------


@check(
    id="sec-signed-echo",
    requirement="SEC-005",
    level=Level.MUST,
    profile=Profile.SECURITY,
    description="a request signed now with the Ed25519 test key and carrying a valid token "
    "is answered",
)
async def check_signed_echo(ctx: CheckContext) -> None:
    """The baseline every refusal is measured against."""
    data = {"signed": "now", "n": 1}
    reply = await exchange(ctx, "echo", lambda to: orjson.dumps(
        signed_request(ctx, "echo", to, data=data)))  # fmt: skip
    expect_echo(ctx, reply, data, "a validly signed request")


@check(
    id="sec-canonical-form",
    requirement="SEC-004",
    level=Level.MUST,
    profile=Profile.SECURITY,
    description="a signed request re-serialized with other member order and whitespace is "
    "still answered",
)
async def check_canonical_form(ctx: CheckContext) -> None:
    """The signature covers the RFC 8785 form of the members, not the received bytes."""
    data = {"b": [1, 2.5, "caf\u00e9"], "a": {"z": True, "y": None}}

    def reformatted(reply_to: str) -> bytes:
        members = signed_request(ctx, "echo", reply_to, data=data)
        return orjson.dumps(dict(reversed(members.items())), option=orjson.OPT_INDENT_2)

    reply = await exchange(ctx, "echo", reformatted)
    expect_echo(ctx, reply, data, "a re-serialized signed request")


@check(
    id="sec-scope-granted",
    requirement="SEC-031",
    level=Level.MUST,
    profile=Profile.SECURITY,
    description="a token that holds the scope the operation requires is accepted for it",
)
async def check_scope_granted(ctx: CheckContext) -> None:
    """llmp.testee.secure.scoped with the scope llmp.testee.scoped is answered."""
    data = {"scoped": True}
    token = mint_token(scope=f"llmp.testee.read {SCOPE}")
    reply = await exchange(ctx, "scoped", lambda to: orjson.dumps(
        signed_request(ctx, "scoped", to, data=data, token=token)))  # fmt: skip
    expect_echo(ctx, reply, data, "a token with the scope")


@check(
    id="sec-replay-refused",
    requirement="SEC-021",
    level=Level.MUST,
    profile=Profile.SECURITY,
    description="the same signed request sent twice is answered once, then refused with "
    "REPLAY_REJECTED at /sig/nonce",
)
async def check_replay_refused(ctx: CheckContext) -> None:
    """The second delivery carries a remembered (kid, nonce): a replay, never run."""
    key = ctx.unique("sec-replay")
    data = {"replayed": key}
    body: list[bytes] = []

    def once(reply_to: str) -> bytes:
        body.append(orjson.dumps(signed_request(ctx, "echo", reply_to, data=data,
                                                 idempotency_key=key)))  # fmt: skip
        return body[0]

    expect_echo(ctx, await exchange(ctx, "echo", once), data, "the first delivery")
    replay = await refusal(ctx, "echo", lambda reply_to: body[0])
    expect_refused(ctx, replay, ErrorCode.REPLAY_REJECTED, "/sig/nonce")
    runs = (await ctx.counters()).get("executions", {}).get(key, 0)
    ctx.expect(1 == runs, f"the handler ran {runs} times for one request and its replay")


# -- what the service sends ----------------------------------------------------------------------


@check(
    id="sec-token-not-forwarded",
    requirement="SEC-032",
    level=Level.MUST,
    profile=Profile.SECURITY,
    description="a request the secure service sends downstream while handling one does not "
    "carry the caller's token",
)
async def check_token_not_forwarded(ctx: CheckContext) -> None:
    """llmp.testee.secure.relay makes a request of a type the suite serves itself."""
    downstream = f"llmp.suite.relay.{ctx.unique('relay')}"
    token = mint_token(scope=SCOPE, subject="user:caller")
    subscription = await ctx.transport.serve(downstream, group=ctx.unique("relay"))
    try:
        async with RawCall(ctx, TESTEE_SECURE_TYPES["relay"], lambda to: orjson.dumps(
            signed_request(ctx, "relay", to, token=token,
                            data={"type": downstream, "data": {"relayed": True}}),
        )) as call:  # fmt: skip
            relayed = await _serve_once(ctx, subscription, downstream)
            reply = await call.terminal()
    finally:
        with anyio.CancelScope(shield=True):
            await subscription.aclose()
    auth = relayed.auth
    ctx.expect(
        auth is None or auth.get("token") != token,
        "the request the secure service sent downstream carries the caller's bearer token",
    )
    ctx.expect(not reply.has("auth"), "the reply to the caller carries an auth member")
    expect_echo(ctx, reply, {"relayed": True}, "the relay")


async def _serve_once(ctx: CheckContext, subscription: Any, type_: str) -> Envelope:
    """Take one request from ``subscription``, answer it with its own data; return it."""
    delivery: Delivery | None = None
    with anyio.move_on_after(WAIT_S):
        delivery = await subscription.__aiter__().__anext__()
    if delivery is None:
        raise CheckFailed(f"the secure service sent no request of type {type_}")
    try:
        request = decode(delivery.body)
    except EnvelopeError as exc:
        raise CheckFailed(f"the relayed request does not decode: {exc}") from exc
    address = delivery.reply_to or request.reply_to
    ctx.expect(address is not None, "the relayed request has no reply address")
    answer = Envelope.new(kind=Kind.RESPONSE, type=type_, source=SUITE_SOURCE,
                          correlation_id=request.id, data=request.data)  # fmt: skip
    await ctx.transport.send_reply(str(address), orjson.dumps(answer.to_dict()))
    return request


@check(
    id="sec-replies-signed",
    requirement="CONF-023",
    level=Level.SHOULD,
    profile=Profile.SECURITY,
    description="the secure service signs its responses and rejections with the worker test key",
)
async def check_replies_signed(ctx: CheckContext) -> None:
    """A response and a rejection each verify with the published worker key."""
    policy = reply_policy()
    answered = await exchange(ctx, "echo", lambda to: orjson.dumps(
        signed_request(ctx, "echo", to, data={"signed": "reply"})))  # fmt: skip
    refused = await exchange(ctx, "echo", lambda to: orjson.dumps(
        request_members(ctx, "echo", to)))  # fmt: skip
    for reply in (answered, refused):
        sig = reply.sig
        ctx.expect(sig is not None, f"{describe(reply)} from the secure service is not signed")
        ctx.expect(
            sig is not None and WORKER_KID == sig.get("kid"),
            f"{describe(reply)} is signed with {(sig or {}).get('kid')!r}, not {WORKER_KID!r}",
        )
        try:
            policy.check(reply, 0)
        except EnvelopeError as exc:
            raise CheckFailed(f"{describe(reply)}'s signature is refused: {exc}") from exc


@check(
    id="sec-rejection-no-secret",
    requirement="ERR-012",
    level=Level.MUST,
    profile=Profile.SECURITY,
    description="a rejection quotes neither the bearer token nor the signature value",
)
async def check_rejection_no_secret(ctx: CheckContext) -> None:
    """A token for another audience, and a tampered signature: neither shows in the error."""
    token = mint_token(audience=f"{AUDIENCE}-elsewhere")
    secrets_sent: list[str] = [token, token.rsplit(".", 1)[1]]

    def wrong_audience(reply_to: str) -> bytes:
        members = signed_request(ctx, "echo", reply_to, token=token)
        secrets_sent.append(members["sig"]["value"])
        return orjson.dumps(members)

    def changed(reply_to: str) -> bytes:
        members = signed_request(ctx, "echo", reply_to)
        secrets_sent.extend([members["sig"]["value"], members["auth"]["token"]])
        return tampered(members)

    for make in (wrong_audience, changed):
        error = error_of(await refusal(ctx, "echo", make))
        text = orjson.dumps(error).decode()
        leaked = [secret for secret in secrets_sent if secret and secret in text]
        ctx.expect(not leaked, f"the error {error.get('code')} quotes a secret: {text[:300]}")
