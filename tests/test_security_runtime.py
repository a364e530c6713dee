"""Security wired into the runtime: Service(security=, signer=), Client(signer=, bearer_token=,
security=), SyncClient passing them on (spec/security.md).

Every test runs a verifying service and a client on a fresh memory broker, on asyncio and trio.
Tampered, replayed, expired and otherwise forged messages are written as raw bytes to the
service's request address and must come back as the rejection the verification order names
[SEC-017, ENV-036]; jobs, events and cancels are checked too; handlers see the policy's view
(no ``auth`` [SEC-032], the payload decrypted [SEC-038]); replies are signed and verified.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
import pytest
from anyio.from_thread import start_blocking_portal

from llmproto_ref import (
    BearerPolicy,
    Client,
    Encrypter,
    Envelope,
    ErrorCode,
    Event,
    ExchangeError,
    Final,
    Kind,
    LocalProtocolError,
    MemoryBroker,
    MemoryTransport,
    QueueOptions,
    Request,
    SecurityPolicy,
    Service,
    Signer,
    SyncClient,
    current_request,
    decode,
    encode,
    new_id,
)
from llmproto_ref._canonical import canonicalize
from llmproto_ref._clock import now_ms
from llmproto_ref._keys import Key, KeySet, b64url_encode
from llmproto_ref._signing import sign_bytes

pytestmark = pytest.mark.anyio

WAIT = 3.0
SOURCE = "urn:example:gateway:7"
GATEWAY = Key.ed25519("urn:example:keys:gateway-7:2026-05", private=os.urandom(32),
                      sources=[SOURCE])  # fmt: skip
SERVICE_KEY = Key.ed25519("urn:example:keys:worker-3:2026-05", private=os.urandom(32))
ISSUER_KEY = Key.ed25519("urn:example:keys:auth:2026-05", private=os.urandom(32))
CEK = Key.aes256gcm("urn:example:keys:tenant-blue:cek-3", os.urandom(32))
ISSUER = "https://auth.example.com"
AUDIENCE = "urn:example:worker"


def token(*, scope: str = "", audience: str = AUDIENCE, subject: str = "user:alice",
          expires_in_s: int = 600) -> str:  # fmt: skip
    """A JWT access token signed by the test issuer key (EdDSA, RFC 8037)."""
    now_s = now_ms() // 1000
    header = {"alg": "EdDSA", "kid": ISSUER_KEY.kid, "typ": "at+jwt"}
    claims = {"iss": ISSUER, "sub": subject, "aud": audience, "scope": scope, "iat": now_s,
              "exp": now_s + expires_in_s, "jti": secrets.token_hex(8)}  # fmt: skip
    text = f"{b64url_encode(orjson.dumps(header))}.{b64url_encode(orjson.dumps(claims))}"
    return f"{text}.{b64url_encode(sign_bytes(ISSUER_KEY, text.encode()))}"


def policy(**settings: Any) -> SecurityPolicy:
    """What the service accepts: signatures by the gateway key, required unless told."""
    settings.setdefault("require_signature", True)
    return SecurityPolicy(keys=KeySet([GATEWAY.public_key()]), **settings)


def bearer(**settings: Any) -> BearerPolicy:
    """Tokens of the test issuer for AUDIENCE; ``t.scoped`` needs the scope ``t.write``."""
    settings.setdefault("scopes", {"t.scoped": frozenset({"t.write"})})
    return BearerPolicy(audience=AUDIENCE, issuers=frozenset({ISSUER}),
                        keys=KeySet([ISSUER_KEY.public_key()]), **settings)  # fmt: skip


def reply_policy() -> SecurityPolicy:
    """What the client accepts: replies signed by the service's key."""
    return SecurityPolicy(keys=KeySet([SERVICE_KEY.public_key()]), require_signature=True)


@dataclass
class Rig:
    """A verifying service, a signing client and a raw transport on one memory broker."""

    broker: str
    service: Service
    client: Client
    raw: MemoryTransport
    seen: list[Request | Event]

    def transport(self) -> MemoryTransport:
        """Another (unopened) transport on the rig's broker."""
        return MemoryTransport(self.broker)

    async def send_raw(self, type_: str, body: bytes | Callable[[str], bytes]) -> Envelope:
        """Put bytes on ``type_``'s request address; the one reply, decoded."""
        inbox = await self.raw.open_inbox()
        try:
            raw = body(inbox.address) if callable(body) else body
            await self.raw.send_request(type_, raw, reply_to=inbox.address, message_id=new_id())
            with anyio.fail_after(WAIT):
                delivery = await inbox.subscription.__aiter__().__anext__()
        finally:
            await inbox.subscription.aclose()
        return decode(delivery.body)


@asynccontextmanager
async def rig(
    *,
    security: SecurityPolicy | None = None,
    signer: Signer | None = None,
    client_options: dict[str, Any] | None = None,
    setup: Callable[[Service, list[Request | Event]], None] | None = None,
) -> AsyncIterator[Rig]:
    """A rig whose service echoes ``t.echo`` and ``t.scoped`` (and what ``setup`` adds)."""
    name = f"sec-{uuid.uuid4().hex}"
    MemoryBroker.reset(name)
    seen: list[Request | Event] = []
    async with AsyncExitStack() as stack:
        service_side = await stack.enter_async_context(MemoryTransport(name))
        client_side = await stack.enter_async_context(MemoryTransport(name))
        raw = await stack.enter_async_context(MemoryTransport(name))
        service = Service(service_side, name="svc", grace=0.5,
                          security=policy() if security is None else security,
                          signer=signer)  # fmt: skip

        async def echo(request: Request) -> Any:
            seen.append(request)
            return request.data

        service.handler("t.echo")(echo)
        service.handler("t.scoped")(echo)
        if setup is not None:
            setup(service, seen)
        options = {"signer": Signer(GATEWAY), **(client_options or {})}
        client = Client(client_side, source=SOURCE, timeout=WAIT, **options)
        await stack.enter_async_context(service)
        await stack.enter_async_context(client)
        yield Rig(broker=name, service=service, client=client, raw=raw, seen=seen)
    MemoryBroker.reset(name)


def signed_bytes(reply_to: str, *, key: Key = GATEWAY, at_ms: int | None = None,
                 type_: str = "t.echo", **members: Any) -> bytes:  # fmt: skip
    """A request to ``type_`` answered at ``reply_to``, signed with ``key`` at ``at_ms``."""
    members.setdefault("data", {"q": 1})
    request = Envelope.new(kind=Kind.REQUEST, type=type_, source=SOURCE, reply_to=reply_to,
                           **members)  # fmt: skip
    signer = Signer(key) if at_ms is None else Signer(key, clock=lambda: at_ms)
    return encode(signer.sign(request))


def rejection(reply: Envelope) -> tuple[str, str, str]:
    """The code, pointer and requirement of a rejection."""
    assert reply.kind is Kind.ERROR, reply
    assert reply.error is not None
    detail = next(d for d in reply.error["details"] if d.get("type") == "llmp.pointer")
    return str(reply.error["code"]), detail["pointer"], detail["requirement"]


async def failure(call: Any) -> ExchangeError:
    """The ExchangeError an awaitable raises."""
    with pytest.raises(ExchangeError) as caught:
        await call
    return caught.value


# -- the round trip -----------------------------------------------------------------------------


async def test_signed_round_trip_with_signed_replies() -> None:
    """A signed request is answered; the reply is signed by the service and verified by the
    client; the handler sees who signed [SEC-005, SEC-010, SEC-016]."""
    async with rig(signer=Signer(SERVICE_KEY),
                   client_options={"security": reply_policy()}) as r:  # fmt: skip
        with anyio.fail_after(WAIT):
            reply = await r.client.request("t.echo", {"hello": "world"})
    assert {"hello": "world"} == reply.data
    assert reply.sig is not None
    assert SERVICE_KEY.kid == reply.sig["kid"]
    (seen,) = r.seen
    assert seen.verified is not None
    assert seen.verified.signer is not None
    assert GATEWAY.kid == seen.verified.signer.kid
    assert 0 == r.client.malformed_replies
    assert 0 == r.service.stats.rejected


async def test_the_signature_covers_timing_sent() -> None:
    """``sent`` is stamped before the signature is made, so it is covered [SEC-004, SEC-010]."""
    async with rig() as r:
        with anyio.fail_after(WAIT):
            await r.client.request("t.echo", 1)
    (seen,) = r.seen
    assert {"call", "sent"} <= set(seen.envelope.timing or {})
    assert seen.envelope.sig is not None


async def test_streams_are_signed_both_ways() -> None:
    """A streamed request is signed, and every chunk is signed and verified."""

    def setup(service: Service, seen: list[Request | Event]) -> None:
        @service.handler("t.stream")
        async def stream(request: Request) -> AsyncIterator[Any]:
            for index in range(3):
                yield {"index": index}
            yield Final(finish_reason="stop")

    async with rig(signer=Signer(SERVICE_KEY), setup=setup,
                   client_options={"security": reply_policy()}) as r:  # fmt: skip
        with anyio.fail_after(WAIT):
            async with r.client.stream("t.stream", {}) as stream:
                chunks = [chunk async for chunk in stream]
    assert [0, 1, 2] == [c.data["index"] for c in chunks]
    assert all(c.sig is not None for c in chunks)
    assert stream.result is not None
    assert stream.result.sig is not None
    assert 0 == r.client.malformed_replies


async def test_a_reply_that_fails_verification_is_dropped_and_counted() -> None:
    """An unsigned reply to a client that requires signed ones is dropped like a malformed
    reply; the exchange ends at its deadline, not with the forgery's word [SEC-018, ENV-038]."""
    async with rig(client_options={"security": reply_policy()}) as r:  # the service signs nothing
        error = await failure(r.client.request("t.echo", 1, timeout=0.3))
    assert ErrorCode.DEADLINE_EXCEEDED == error.code
    assert 1 == r.client.malformed_replies
    assert ("UNAUTHENTICATED", "/sig", "SEC-018") == r.client.rejections[-1]


# -- refusals over the wire ----------------------------------------------------------------------


async def test_unsigned_request_refused() -> None:
    """A service that requires signatures answers an unsigned request UNAUTHENTICATED at /sig
    and runs no handler [SEC-018, ENV-037]."""
    async with rig() as r:
        plain = Client(r.client.transport, source=SOURCE, timeout=WAIT)
        async with plain:
            error = await failure(plain.request("t.echo", 1))
    assert ErrorCode.UNAUTHENTICATED == error.code
    assert error.envelope is not None
    assert ("UNAUTHENTICATED", "/sig", "SEC-018") == rejection(error.envelope)
    assert [] == r.seen
    assert 1 == r.service.stats.rejected
    assert ("UNAUTHENTICATED", "/sig", "SEC-018") == r.service.rejections[-1]


def _tampered(reply_to: str) -> bytes:
    members = orjson.loads(signed_bytes(reply_to))
    members["data"] = {"q": 2}
    return orjson.dumps(members)


def _alg_none(reply_to: str) -> bytes:
    members = orjson.loads(signed_bytes(reply_to))
    members["sig"]["alg"] = "none"
    return orjson.dumps(members)


def _hmac_with_public_key(reply_to: str) -> bytes:
    """The classic confusion: an HS256 MAC keyed with the Ed25519 public key [SEC-013]."""
    members = orjson.loads(signed_bytes(reply_to))
    members["sig"]["alg"] = "HS256"
    del members["sig"]["value"]
    confused = Key.hmac_sha256(GATEWAY.kid, GATEWAY.public)
    members["sig"]["value"] = b64url_encode(sign_bytes(confused, canonicalize(members)))
    return orjson.dumps(members)


REFUSALS = {
    "tampered": (_tampered, ("SIGNATURE_INVALID", "/sig/value", "SEC-016")),
    "expired": (lambda to: signed_bytes(to, at_ms=now_ms() - 400_000),
                ("REPLAY_REJECTED", "/sig/expires", "SEC-020")),
    "from-the-future": (lambda to: signed_bytes(to, at_ms=now_ms() + 120_000),
                        ("REPLAY_REJECTED", "/sig/created", "SEC-020")),
    "wrong-kid": (lambda to: signed_bytes(to, key=Key.ed25519("urn:example:keys:nobody",
                                                              private=os.urandom(32))),
                  ("UNAUTHENTICATED", "/sig/kid", "SEC-014")),
    "alg-none": (_alg_none, ("SIGNATURE_INVALID", "/sig/alg", "SEC-007")),
    "hmac-for-ed25519-kid": (_hmac_with_public_key, ("SIGNATURE_INVALID", "/sig/alg", "SEC-013")),
    "source-not-the-keys": (lambda to: encode(Signer(GATEWAY).sign(Envelope.new(
        kind=Kind.REQUEST, type="t.echo", source="urn:example:worker:3", reply_to=to))),
        ("PERMISSION_DENIED", "/source", "SEC-025")),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_forged_request_refused(case: str) -> None:
    """Each forgery is answered with the code, pointer and requirement of the step of the
    verification order it fails, and no handler runs [SEC-007, SEC-013, SEC-014, SEC-016,
    SEC-017, SEC-020, SEC-025]."""
    make, expected = REFUSALS[case]
    async with rig() as r:
        reply = await r.send_raw("t.echo", make)
        assert expected == rejection(reply)
        assert [] == r.seen
        assert expected == r.service.rejections[-1]
        with anyio.fail_after(WAIT):  # and the service still answers signed requests
            assert 5 == (await r.client.request("t.echo", 5)).data


async def test_replayed_request_refused() -> None:
    """The same signed bytes a second time: REPLAY_REJECTED at /sig/nonce, the handler ran
    once [SEC-021]."""
    async with rig() as r:
        inbox = await r.raw.open_inbox()
        body = signed_bytes(inbox.address)
        replies = inbox.subscription.__aiter__()
        decoded = []
        for _ in range(2):
            await r.raw.send_request("t.echo", body, reply_to=inbox.address, message_id=new_id())
            with anyio.fail_after(WAIT):
                decoded.append(decode((await replies.__anext__()).body))
        await inbox.subscription.aclose()
    first, second = decoded
    assert Kind.RESPONSE is first.kind
    assert ("REPLAY_REJECTED", "/sig/nonce", "SEC-021") == rejection(second)
    assert 1 == len(r.seen)


async def test_reordered_and_spaced_signed_request_accepted() -> None:
    """The signature covers the canonical form, not the bytes: members in another order with
    whitespace still verify [SEC-004]."""
    async with rig() as r:

        def reformatted(reply_to: str) -> bytes:
            members = orjson.loads(signed_bytes(reply_to))
            return orjson.dumps(dict(reversed(members.items())), option=orjson.OPT_INDENT_2)

        reply = await r.send_raw("t.echo", reformatted)
    assert Kind.RESPONSE is reply.kind
    assert {"q": 1} == reply.data


# -- bearer tokens --------------------------------------------------------------------------------


async def test_bearer_scopes_per_operation() -> None:
    """t.echo needs a token, t.scoped the scope t.write too: PERMISSION_DENIED naming the scope
    without it, UNAUTHENTICATED without a token [SEC-027, SEC-031]."""
    security = policy(bearer=bearer())
    async with rig(security=security,
                   client_options={"bearer_token": token(scope="t.read")}) as r:  # fmt: skip
        with anyio.fail_after(WAIT):
            assert 1 == (await r.client.request("t.echo", 1)).data
        denied = await failure(r.client.request("t.scoped", 1))
        tokenless = Client(r.client.transport, source=SOURCE, signer=Signer(GATEWAY))
        async with tokenless:
            missing = await failure(tokenless.request("t.echo", 1))
    assert ErrorCode.PERMISSION_DENIED == denied.code
    assert "t.write" in denied.message
    assert denied.envelope is not None
    assert ("PERMISSION_DENIED", "/auth/token", "SEC-031") == rejection(denied.envelope)
    assert missing.envelope is not None
    assert ("UNAUTHENTICATED", "/auth", "SEC-027") == rejection(missing.envelope)
    (seen,) = r.seen
    assert seen.verified is not None
    assert seen.verified.token is not None
    assert "user:alice" == seen.verified.token.subject


async def test_bearer_scope_granted() -> None:
    """With the scope the operation requires, the request is answered [SEC-031]."""
    granted = {"bearer_token": token(scope="t.read t.write")}
    async with rig(security=policy(bearer=bearer()), client_options=granted) as r:
        with anyio.fail_after(WAIT):
            assert 2 == (await r.client.request("t.scoped", 2)).data


@pytest.mark.parametrize(
    ("made", "requirement"),
    [({"audience": "urn:example:other"}, "SEC-029"), ({"expires_in_s": -3600}, "SEC-030")],
)
async def test_bearer_token_refused(made: dict[str, Any], requirement: str) -> None:
    """A token for another audience, or long expired: UNAUTHENTICATED at /auth/token
    [SEC-029, SEC-030]."""
    async with rig(security=policy(bearer=bearer()),
                   client_options={"bearer_token": token(**made)}) as r:  # fmt: skip
        error = await failure(r.client.request("t.echo", 1))
    assert error.envelope is not None
    assert ("UNAUTHENTICATED", "/auth/token", requirement) == rejection(error.envelope)
    assert "eyJ" not in error.message  # the token is never quoted [ERR-012]


async def test_token_function_is_called_per_request() -> None:
    """A callable bearer_token is asked for every request, so a refreshed token is used."""
    calls: list[int] = []

    def current() -> str:
        calls.append(1)
        return token()

    async with rig(security=policy(bearer=bearer()),
                   client_options={"bearer_token": current}) as r:  # fmt: skip
        with anyio.fail_after(WAIT):
            await r.client.request("t.echo", 1)
            await r.client.request("t.echo", 2)
    assert 2 == len(calls)


async def test_handler_has_no_token_and_downstream_calls_carry_only_their_own() -> None:
    """The handler's request has no auth; a Client used inside it sends its own token, never
    the caller's, and neither does the reply [SEC-032]."""
    caller, own = token(subject="user:alice"), token(subject="svc:front")
    received: list[Envelope] = []
    views: list[bool] = []

    def setup(service: Service, seen: list[Request | Event]) -> None:
        @service.handler("t.front")
        async def front(request: Request) -> Any:
            current = current_request()
            views.append(request.envelope.has("auth") or current is None
                         or current.envelope.has("auth"))  # fmt: skip
            reply = await downstream.request("t.back", request.data)
            return reply.data

        @service.handler("t.back")
        async def back(request: Request) -> Any:
            return request.data

    async with rig(security=policy(bearer=bearer()), setup=setup,
                   client_options={"bearer_token": caller}) as r:  # fmt: skip
        recorder = await r.raw.serve("t.back", group="recorder")  # sees each downstream request
        async with r.transport() as side:
            downstream = Client(side, source=SOURCE, signer=Signer(GATEWAY), bearer_token=own)
            async with downstream, anyio.create_task_group() as tg:

                async def record() -> None:
                    async for delivery in recorder:
                        received.append(decode(delivery.body))

                tg.start_soon(record)
                with anyio.fail_after(WAIT):
                    reply = await r.client.request("t.front", {"n": 1})
                    while not received:
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        await recorder.aclose()
    assert {"n": 1} == reply.data
    assert [False] == views
    assert not reply.has("auth")
    (sent,) = received
    assert sent.auth is not None
    assert own == sent.auth["token"]


# -- encryption -----------------------------------------------------------------------------------


def _encrypted(reply_to: str, *, kid_key: Key = CEK) -> bytes:
    request = Envelope.new(kind=Kind.REQUEST, type="t.echo", source=SOURCE, reply_to=reply_to,
                           data={"secret": "prompt"})  # fmt: skip
    return encode(Signer(GATEWAY).sign(Encrypter(kid_key).encrypt(request)))


async def test_encrypted_payload_decrypted_for_the_handler() -> None:
    """Encrypt, then sign; the service verifies, decrypts and hands the plaintext on, without
    enc and sig [SEC-035, SEC-037, SEC-038]."""
    async with rig(security=policy(decryption_keys=KeySet([CEK]))) as r:
        reply = await r.send_raw("t.echo", _encrypted)
    assert {"secret": "prompt"} == reply.data
    (seen,) = r.seen
    assert not seen.envelope.has("enc")
    assert not seen.envelope.has("sig")
    assert () == seen.envelope.critical


async def test_encrypted_payload_refused_without_the_key() -> None:
    """A service holding no content key rejects an encrypted request at the critical
    extension; one holding another key, at /enc/kid [ENV-031, SEC-038]."""
    async with rig() as r:
        unreadable = await r.send_raw("t.echo", _encrypted)
    other = Key.aes256gcm("urn:example:keys:other-cek", os.urandom(32))
    async with rig(security=policy(decryption_keys=KeySet([other]))) as r2:
        unknown = await r2.send_raw("t.echo", _encrypted)
    assert ("UNSUPPORTED_EXTENSION", "/critical/0", "ENV-031") == rejection(unreadable)
    assert ("UNAUTHENTICATED", "/enc/kid", "SEC-038") == rejection(unknown)
    assert [] == r.seen == r2.seen


async def test_altered_ciphertext_refused() -> None:
    """Ciphertext changed and signed again: the tag fails, SIGNATURE_INVALID at /data_base64."""

    def altered(reply_to: str) -> bytes:
        members = orjson.loads(_encrypted(reply_to))
        sealed = bytearray(base64.b64decode(members["data_base64"]))
        sealed[0] ^= 1
        members["data_base64"] = base64.b64encode(bytes(sealed)).decode()
        del members["sig"]
        return encode(Signer(GATEWAY).sign(Envelope.from_members(members)))

    async with rig(security=policy(decryption_keys=KeySet([CEK]))) as r:
        reply = await r.send_raw("t.echo", altered)
    assert ("SIGNATURE_INVALID", "/data_base64", "SEC-038") == rejection(reply)


# -- jobs, events, cancels ------------------------------------------------------------------------


def _worker(service: Service, seen: list[Request | Event]) -> None:
    @service.worker("t.jobs", concurrency=1,
                    options=QueueOptions(max_deliveries=3, lease_ms=2000, prefetch=1))  # fmt: skip
    async def job(request: Request) -> Any:
        seen.append(request)
        if request.delivery_count == 1 and request.data == "fail-once":
            raise ExchangeError(ErrorCode.UNAVAILABLE, "once", retryable=True)
        return {"deliveries": request.delivery_count}


async def test_jobs_are_checked_and_redeliveries_accepted() -> None:
    """A signed job runs, and its redelivery repeats the nonce and is accepted [SEC-023]; an
    unsigned job is terminated as an invalid envelope, never run."""
    async with rig(setup=_worker) as r:
        with anyio.fail_after(2 * WAIT):
            done = await (await r.client.submit("t.jobs", "t.job", "fail-once")).result()
        plain = Client(r.client.transport, source=SOURCE, timeout=0.5)
        async with plain:
            handle = await plain.submit("t.jobs", "t.job", "unsigned")
            error = await failure(handle.result())
        async with r.transport() as side:
            dead = await side.dead_letters("t.jobs")
            with anyio.fail_after(WAIT):
                letter = await dead.__aiter__().__anext__()
            await letter.ack()
            await dead.aclose()
    assert {"deliveries": 2} == done.data
    assert [1, 2] == [s.delivery_count for s in r.seen if isinstance(s, Request)]
    assert ErrorCode.DEADLINE_EXCEEDED == error.code  # a terminated job is not answered
    assert letter.reason is not None
    assert "UNAUTHENTICATED" in letter.reason
    assert 1 == r.service.stats.dead_lettered
    assert ("UNAUTHENTICATED", "/sig", "SEC-018") == r.service.rejections[-1]


def _subscriber(service: Service, seen: list[Request | Event]) -> None:
    @service.on_event("t.news.*")
    async def news(event: Event) -> None:
        seen.append(event)


async def test_events_are_checked() -> None:
    """A signed event is handled with its verification; an unsigned one is dropped, counted
    and recorded [SEC-018, EVT-005]."""
    async with rig(setup=_subscriber) as r:
        plain = Client(r.client.transport, source=SOURCE)
        async with plain:
            await plain.publish("t.news.unsigned", 1)
        await r.client.publish("t.news.signed", 2)
        with anyio.fail_after(WAIT):
            while not r.seen or r.service.stats.dropped < 1:
                await anyio.sleep(0.01)
    (event,) = r.seen
    assert isinstance(event, Event)
    assert 2 == event.data
    assert event.verified is not None
    assert event.verified.signer is not None
    assert ("UNAUTHENTICATED", "/sig", "SEC-018") == r.service.rejections[-1]


async def test_hs256_signer_never_signs_an_event() -> None:
    """An event goes to every subscriber: a client with an HS256 key refuses to sign it
    [SEC-006]."""
    pair_key = Key.hmac_sha256("urn:example:keys:pair", os.urandom(32))
    async with rig(client_options={"signer": Signer(pair_key)}) as r:
        with pytest.raises(LocalProtocolError):
            await r.client.publish("t.news.x", 1)


async def test_only_a_verified_cancel_stops_a_handler() -> None:
    """An unsigned cancel is dropped, the signed one the client sends stops the handler."""
    started = anyio.Event()

    def setup(service: Service, seen: list[Request | Event]) -> None:
        @service.handler("t.slow")
        async def slow(request: Request) -> Any:
            started.set()
            await anyio.sleep(10)

    async with rig(setup=setup) as r, anyio.create_task_group() as tg:

        async def call() -> None:
            with pytest.raises(ExchangeError):
                await r.client.request("t.slow", None, timeout=5)

        tg.start_soon(call)
        with anyio.fail_after(WAIT):
            await started.wait()
        (rid,) = r.service.running
        forged = Envelope.new(kind=Kind.CANCEL, type="t.slow", source=SOURCE,
                              correlation_id=rid)  # fmt: skip
        await r.raw.publish_cancel("t.slow", encode(forged))
        with anyio.fail_after(WAIT):
            while r.service.stats.dropped < 1:
                await anyio.sleep(0.01)
        assert rid in r.service.running
        assert await r.client.cancel(rid)
        with anyio.fail_after(WAIT):
            while r.service.running:
                await anyio.sleep(0.01)


# -- the synchronous client and the costs ---------------------------------------------------------


def test_sync_client_passes_the_options_on() -> None:
    """SyncClient signs, carries its token and verifies replies like Client (its own portal
    runs the service's transport, as memory:// needs one loop)."""
    name = f"sec-sync-{uuid.uuid4().hex}"
    with start_blocking_portal("asyncio") as portal:
        transport = portal.wrap_async_context_manager(MemoryTransport(name))
        with transport as service_side:
            service = Service(service_side, name="svc", security=policy(bearer=bearer()),
                              signer=Signer(SERVICE_KEY))  # fmt: skip
            service.handler("t.echo")(lambda request: request.data)
            with (
                portal.wrap_async_context_manager(service),
                portal.wrap_async_context_manager(MemoryTransport(name)) as client_side,
                SyncClient(client_side, source=SOURCE, timeout=WAIT, portal=portal,
                           signer=Signer(GATEWAY), bearer_token=token(),
                           security=reply_policy()) as sync,
            ):  # fmt: skip
                reply = sync.request("t.echo", {"sync": True})
    MemoryBroker.reset(name)
    assert {"sync": True} == reply.data
    assert reply.sig is not None


async def test_a_reply_that_cannot_be_signed_becomes_an_error() -> None:
    """A handler value that is not I-JSON cannot be signed: the caller gets INTERNAL [SEC-008]."""

    def setup(service: Service, seen: list[Request | Event]) -> None:
        @service.handler("t.big")
        async def big(request: Request) -> Any:
            return {"big": 2**60}

    async with rig(signer=Signer(SERVICE_KEY), setup=setup) as r:
        error = await failure(r.client.request("t.big", None))
    assert ErrorCode.INTERNAL == error.code


async def test_security_off_by_default() -> None:
    """Without the options nothing is signed, and unsigned traffic flows as before."""
    name = f"sec-off-{uuid.uuid4().hex}"
    async with MemoryTransport(name) as a, MemoryTransport(name) as b:
        service = Service(a, name="svc")
        service.handler("t.echo")(lambda request: request.data)
        async with service, Client(b, source=SOURCE, timeout=WAIT) as client:
            reply = await client.request("t.echo", 1)
    MemoryBroker.reset(name)
    assert 1 == reply.data
    assert not reply.has("sig")
    assert service.security is None
    assert service.signer is None
