"""Cost of message signatures per envelope (spec/security.md; issue 'Security').

For a typical chat request of about 500 bytes (before signing), each benchmark times one of:

- ``sign``: ``Signer.sign``: the RFC 8785 signing input, the signature, the new ``sig`` block;
- ``verify``: ``SecurityPolicy.check`` of a signed, decoded envelope: the signing input again,
  the signature check, the time window and the nonce cache;
- ``sign-verify``: both, as one message from sender to receiver costs.

Ed25519 is timed on each backend the machine has (libsodium through PyNaCl, OpenSSL through
``cryptography``), HMAC-SHA256 once. The budget: Ed25519 sign+verify at most 150 µs median,
HS256 sign+verify at most 40 µs.

The group ``round trip`` times the runtime end to end on memory://, unsigned and signed in
the same run: 256 ``Client.request`` round trips, one at a time, to a ``Service`` echo, in a
fresh event loop per round. Signed means the whole exchange: the client signs the request,
the service verifies it (``security=``) and signs the response (``signer=``), the client
verifies that (``security=``): two signatures and two verifications per round trip. The
difference of the medians divided by 256 is what security adds to one round trip.

The default run has benchmarks disabled, so each function runs once as a smoke test; measure
with::

    pytest tests/benchmarks/test_bench_security.py --benchmark-enable --benchmark-only
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

import llmproto_ref._keys as keys_module
import llmproto_ref._signing as signing_module
from llmproto_ref import Client, Envelope, MemoryTransport, Request, Service, decode, encode
from llmproto_ref._ed25519 import available_backends
from llmproto_ref._keys import Key, KeySet
from llmproto_ref._policy import SecurityPolicy, Verified
from llmproto_ref._signing import Signer

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ED25519 = Key.ed25519("urn:example:keys:gateway-7:2026-05", private=SEED)
HS256 = Key.hmac_sha256("urn:example:keys:gateway-7:worker-3:hmac", os.urandom(32))
PRESIGNED = 2000

TYPICAL = Envelope(
    id="019e4520-6f80-7c11-9a2b-3c4d5e6f7081",
    kind="request",
    type="llm.chat",
    source="urn:example:gateway:7",
    time="2026-05-20T07:00:00.000Z",
    reply_to="_INBOX.Tn5Vb7Xc9Zr1Pq3.7",
    deadline="2026-05-20T07:00:30.000Z",
    idempotency_key="chat-20260520-0001",
    trace={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    data={
        "model": "small-chat-1",
        "messages": [
            {"role": "user", "content": "Will it rain in Lisbon tomorrow afternoon?"},
        ],
        "max_tokens": 256,
        "temperature": 0.2,
    },
)


def test_the_envelope_is_typical() -> None:
    """About 500 bytes before signing, about 770 with the sig block."""
    assert 450 <= len(encode(TYPICAL)) <= 550
    assert 700 <= len(encode(Signer(ED25519).sign(TYPICAL))) <= 850


def _policy() -> SecurityPolicy:
    return SecurityPolicy(keys=KeySet([ED25519.public_key(), HS256]), require_signature=True)


class _Receiver:
    """Checks pre-signed envelopes in turn; a fresh policy each round keeps every nonce new."""

    def __init__(self, signer: Signer) -> None:
        raws = [encode(signer.sign(TYPICAL)) for _ in range(PRESIGNED)]
        self.signed = [(decode(raw), len(raw)) for raw in raws]
        self._next: Iterator[int] = itertools.cycle(range(PRESIGNED))
        self.policy = _policy()

    def verify(self) -> Verified:
        index = next(self._next)
        if index == 0:
            self.policy = _policy()
        envelope, size = self.signed[index]
        return self.policy.check(envelope, size)


CASES = [(f"ed25519-{b.name}", ED25519, b) for b in available_backends()] + [("hs256", HS256, None)]


@pytest.fixture(params=CASES, ids=[name for name, _, _ in CASES])
def signer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Signer:
    """A signer with the case's key, the case's Ed25519 backend in use."""
    _, key, backend = request.param
    if backend is not None:
        monkeypatch.setattr(signing_module, "BACKEND", backend)
        monkeypatch.setattr(keys_module, "BACKEND", backend)
    return Signer(key)


def test_sign(benchmark: Any, signer: Signer) -> None:
    """Signer.sign of the typical envelope."""
    benchmark.group = "sign"
    signed = benchmark(signer.sign, TYPICAL)
    assert signed.sig is not None
    assert signed.sig["kid"] == signer.kid


def test_verify(benchmark: Any, signer: Signer) -> None:
    """SecurityPolicy.check of a signed envelope, each one new to the policy."""
    benchmark.group = "verify"
    receiver = _Receiver(signer)
    verified = benchmark(receiver.verify)
    assert verified.signer is not None
    assert verified.signer.kid == signer.kid


def test_sign_verify(benchmark: Any, signer: Signer) -> None:
    """Sign, then check: one message's cost end to end (encoding and decoding excluded)."""
    benchmark.group = "sign-verify"
    policy = _policy()
    size = len(encode(Signer(signer.key).sign(TYPICAL)))
    both: Callable[[], Verified] = lambda: policy.check(signer.sign(TYPICAL), size)  # noqa: E731
    verified = benchmark(both)
    assert verified.signer is not None
    assert verified.signer.kid == signer.kid


# -- the runtime round trip -------------------------------------------------------------------

ROUND_TRIPS = 256
SERVICE_KEY = Key.ed25519("urn:example:keys:worker-3:2026-05", private=os.urandom(32))
PAYLOAD = TYPICAL.data
_names = itertools.count()


def _security(client_key: Key | None, service_key: Key | None) -> dict[str, dict[str, Any]]:
    """The Service and Client options for one case (``None``: no security at all)."""
    if client_key is None or service_key is None:
        return {"service": {}, "client": {}}

    def verifier(key: Key) -> SecurityPolicy:
        return SecurityPolicy(keys=KeySet([key.public_key()]), require_signature=True)

    return {
        "service": {"security": verifier(client_key), "signer": Signer(service_key)},
        "client": {"security": verifier(service_key), "signer": Signer(client_key)},
    }


async def _round_trips(options: dict[str, dict[str, Any]]) -> None:
    name = f"bench-sec-{next(_names)}"
    async with MemoryTransport(name) as server_side, MemoryTransport(name) as client_side:
        service = Service(server_side, name="bench", **options["service"])

        @service.handler("llm.chat")
        async def chat(request: Request) -> Any:
            return request.data

        client = Client(client_side, source="urn:example:gateway:7", **options["client"])
        async with service, client:
            for _ in range(ROUND_TRIPS):
                await client.request("llm.chat", PAYLOAD)
            assert 0 == client.malformed_replies
            assert 0 == service.stats.rejected


ROUND_TRIP_CASES = {
    "unsigned": (None, None),
    "ed25519": (ED25519, SERVICE_KEY),
    "hs256": (HS256, HS256),  # one secret, shared by the two participants
}


@pytest.mark.parametrize("case", list(ROUND_TRIP_CASES))
def test_round_trip(benchmark: Any, case: str) -> None:
    """256 request-response round trips on memory://, unsigned or signed both ways."""
    benchmark.group = f"round trip ({ROUND_TRIPS} requests, 1 in flight)"
    options = _security(*ROUND_TRIP_CASES[case])
    benchmark.pedantic(
        lambda: anyio.run(_round_trips, options), rounds=5, iterations=1, warmup_rounds=1
    )
