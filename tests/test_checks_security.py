"""The ``security`` profile: its checks pass against the reference testee and fail against
each security fault; the secure testee is configured as spec/conformance.md says.

The runs happen once, concurrently, on asyncio (as in ``test_checks_bite.py``); the tests read
the results. Each fault of :mod:`llmproto_conformance._faults_security` breaks the reference
testee in one way, in testee mode: the suite's own connection stays sound.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
import pytest

from llmproto_conformance import Testee, faulty
from llmproto_conformance._catalogue import catalogue
from llmproto_conformance._context import SUITE_SOURCE, TESTEE_SECURE_SERVICE, TESTEE_SECURE_TYPES
from llmproto_conformance._faults_security import SECURITY_FAULTS
from llmproto_conformance._model import Outcome, Profile
from llmproto_conformance._runner import RunPlan, run_suite
from llmproto_conformance._security_kit import (
    AUDIENCE,
    CLOCK_SKEW_MS,
    GATEWAY_KID,
    GATEWAY_SOURCE,
    ISSUER,
    MAX_LIFETIME_MS,
    SCOPE,
    WORKER_KID,
    WORKER_SOURCE,
    mint_token,
    published_key,
    reply_policy,
    secure_bearer,
    signed,
)
from llmproto_ref import (
    Client,
    Envelope,
    ErrorCode,
    ExchangeError,
    Kind,
    MemoryBroker,
    MemoryTransport,
    Request,
    SecurityError,
    Service,
    decode,
)

pytestmark = pytest.mark.timeout(300)

SECURITY = frozenset({Profile.SECURITY})
FAILED = frozenset({Outcome.FAIL, Outcome.NON_STRICT})
#: A few of the pairs the runs must show: fault -> a check it must fail.
EXPECTED = {
    "accepts-unsigned": "sec-unsigned-refused",
    "signature-unchecked": "sec-tampered-refused",
    "skips-time-window": "sec-expired-refused",
    "skips-nonce-cache": "sec-replay-refused",
    "alg-unchecked": "sec-alg-none-refused",
    "alg-from-message": "sec-hmac-for-ed25519-kid-refused",
    "any-kid": "sec-unknown-kid-refused",
    "received-bytes-signed": "sec-canonical-form",
    "signing-input-with-value": "sec-signed-echo",
    "sources-unchecked": "sec-source-not-registered-refused",
    "token-optional": "sec-token-missing-refused",
    "ignores-scopes": "sec-token-scope-missing-refused",
    "token-unchecked": "sec-token-audience-refused",
    "forwards-tokens": "sec-token-not-forwarded",
    "unsigned-replies": "sec-replies-signed",
    "leaks-secrets": "sec-rejection-no-secret",
}


def _security_checks() -> list[str]:
    return [c.id for c in catalogue() if c.profile is Profile.SECURITY]


async def _run(fault: str | None) -> dict[str, Outcome]:
    name = f"sec-checks-{fault or 'baseline'}-{secrets.token_hex(3)}"
    plan = RunPlan(profiles=SECURITY, testee=fault is not None)
    try:
        if fault is None:
            report = await run_suite(lambda: MemoryTransport(name), plan,
                                     transport_label=name, implementation="reference")  # fmt: skip
        else:
            async with faulty(MemoryTransport(name), fault) as broken, Testee(broken):
                report = await run_suite(lambda: MemoryTransport(name), plan,
                                         transport_label=name, implementation=fault)  # fmt: skip
    finally:
        MemoryBroker.reset(name)
    return {r.check.id: r.outcome for r in report.checks}


async def _all() -> dict[str | None, dict[str, Outcome]]:
    results: dict[str | None, dict[str, Outcome]] = {}
    limiter = anyio.Semaphore(6)

    async def one(fault: str | None) -> None:
        async with limiter:
            results[fault] = await _run(fault)

    async with anyio.create_task_group() as tg:
        for fault in [None, *sorted(SECURITY_FAULTS)]:
            tg.start_soon(one, fault)
    return results


@functools.cache
def runs() -> dict[str | None, dict[str, Outcome]]:
    """The baseline and every security fault, once."""
    return anyio.run(_all, backend="asyncio")


def test_the_profile_has_its_checks() -> None:
    """At least 20 checks, each citing a SEC, CONF or ERR requirement."""
    checks = [c for c in catalogue() if c.profile is Profile.SECURITY]
    assert len(checks) >= 20
    assert all(c.requirement.split("-")[0] in ("SEC", "CONF", "ERR") for c in checks)


def test_reference_passes_every_security_check() -> None:
    """The sound reference testee passes the whole profile [CONF-022, CONF-023]."""
    baseline = runs()[None]
    assert set(_security_checks()) == set(baseline)
    assert {} == {c: o for c, o in baseline.items() if o is not Outcome.PASS}


@pytest.mark.parametrize("fault", sorted(SECURITY_FAULTS))
def test_fault_fails_its_check(fault: str) -> None:
    """Each security fault fails the check it is made for, and never the whole profile."""
    outcomes = runs()[fault]
    failed = {c for c, o in outcomes.items() if o in FAILED}
    assert EXPECTED[fault] in failed, f"{fault}: {outcomes}"
    assert failed != set(outcomes), f"{fault} broke everything: {failed}"


def test_every_security_check_is_caught() -> None:
    """Every check of the profile fails under at least one security fault."""
    results = runs()
    caught = {c for fault in SECURITY_FAULTS for c, o in results[fault].items() if o in FAILED}
    assert [] == sorted(set(_security_checks()) - caught)
    assert set(EXPECTED) == set(SECURITY_FAULTS)


# -- the secure testee --------------------------------------------------------------------------


@asynccontextmanager
async def _testee() -> AsyncIterator[tuple[Testee, MemoryTransport]]:
    name = f"sec-testee-{secrets.token_hex(4)}"
    async with MemoryTransport(name) as side, MemoryTransport(name) as suite, Testee(side) as t:
        yield t, suite
    MemoryBroker.reset(name)


@pytest.mark.anyio
async def test_secure_testee_configuration() -> None:
    """The secure service is configured exactly as spec/conformance.md's table says [CONF-022],
    and signs its replies with the worker test key [CONF-023]."""
    async with _testee() as (testee, _):
        secure = testee.secure
        policy, bearer = secure.security, secure_bearer()
        assert TESTEE_SECURE_SERVICE == secure.name
        assert WORKER_SOURCE == secure.source
        assert secure.signer is not None
        assert WORKER_KID == secure.signer.kid
        assert set(TESTEE_SECURE_TYPES.values()) == {
            t for t in TESTEE_SECURE_TYPES.values() if secure.registration(t) is not None
        }
        assert policy is not None
        assert policy.require_signature
        assert (CLOCK_SKEW_MS, MAX_LIFETIME_MS) == (60_000, 300_000)
        assert (CLOCK_SKEW_MS, MAX_LIFETIME_MS) == (policy.clock_skew_ms, policy.max_lifetime_ms)
        assert frozenset({"EdDSA", "HS256"}) == policy.algorithms
        assert policy.keys is not None
        gateway = policy.keys.resolve(GATEWAY_KID)
        assert gateway is not None
        assert not gateway.private
        assert frozenset({GATEWAY_SOURCE}) == gateway.sources
        assert policy.keys.resolve(WORKER_KID) is None
        assert policy.decryption_keys is None
        assert policy.bearer is not None
        assert (AUDIENCE, frozenset({ISSUER})) == (policy.bearer.audience, policy.bearer.issuers)
        assert frozenset({SCOPE}) == policy.bearer.required_scopes(TESTEE_SECURE_TYPES["scoped"])
        assert frozenset() == policy.bearer.required_scopes(TESTEE_SECURE_TYPES["echo"])
        assert policy.bearer.required
        assert bearer.audience == policy.bearer.audience


def _relay_request(reply_to: str, data: Any) -> bytes:
    request = Envelope.new(kind=Kind.REQUEST, type=TESTEE_SECURE_TYPES["relay"],
                           source=GATEWAY_SOURCE, reply_to=reply_to, data=data,
                           auth={"scheme": "bearer", "token": mint_token(scope=SCOPE)})  # fmt: skip
    return orjson.dumps(signed(request.to_dict()))


async def _call(suite: MemoryTransport, body: Any) -> Envelope:
    inbox = await suite.open_inbox()
    try:
        raw = _relay_request(inbox.address, body)
        await suite.send_request(TESTEE_SECURE_TYPES["relay"], raw, reply_to=inbox.address,
                                 message_id=secrets.token_hex(8))  # fmt: skip
        with anyio.fail_after(10):
            delivery = await inbox.subscription.__aiter__().__anext__()
    finally:
        await inbox.subscription.aclose()
    return decode(delivery.body)


@pytest.mark.anyio
async def test_relay() -> None:
    """llmp.testee.secure.relay sends the request with its own signed client and no token,
    answers with the reply's data, fails with the code of a failed exchange and refuses data
    that does not fit [CONF-024, SEC-032]."""
    seen: list[Envelope] = []
    async with _testee() as (_, suite):
        downstream = Service(suite, name="relay-target")

        @downstream.handler("t.relayed")
        async def relayed(request: Request) -> Any:
            seen.append(request.envelope)
            return {"got": request.data}

        async with downstream:
            answered = await _call(suite, {"type": "t.relayed", "data": [1, 2]})
            unserved = await _call(suite, {"type": "t.nobody.serves.this"})
            malformed = await _call(suite, {"type": "not a type"})
    assert Kind.RESPONSE is answered.kind
    assert {"got": [1, 2]} == answered.data
    assert answered.sig is not None
    reply_policy().check(answered, 0)
    (request,) = seen
    assert request.auth is None
    assert request.sig is not None
    assert WORKER_KID == request.sig["kid"]
    assert WORKER_SOURCE == request.source
    assert ErrorCode.NO_RESPONDERS == (unserved.error or {}).get("code")
    assert ErrorCode.INVALID_PARAMS == (malformed.error or {}).get("code")


# -- the kit --------------------------------------------------------------------------------------


def test_published_keys_are_the_spec_test_keys() -> None:
    """The kit's keys are the RFC 8032 test keys of spec/security.md, private parts included."""
    gateway = published_key(GATEWAY_KID)
    assert (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60" == gateway.secret.hex()
    )
    assert frozenset({GATEWAY_SOURCE}) == gateway.sources
    with pytest.raises(KeyError):
        published_key("urn:example:keys:nobody")


def test_minted_tokens_verify_and_alg_none_does_not() -> None:
    """A minted token passes the secure testee's bearer policy; an alg none one fails
    [SEC-028]."""
    import time

    now = time.time_ns() // 1_000_000
    claims = secure_bearer().verify(mint_token(scope=SCOPE), now_ms=now, leeway_ms=CLOCK_SKEW_MS)
    assert frozenset({SCOPE}) == claims.scopes
    with pytest.raises(SecurityError) as refused:
        secure_bearer().verify(mint_token(alg="none"), now_ms=now, leeway_ms=CLOCK_SKEW_MS)
    assert "SEC-028" == refused.value.requirement


@pytest.mark.anyio
async def test_suite_client_cannot_reach_the_secure_service_unsigned() -> None:
    """The suite's ordinary client (unsigned, no token) is refused by the secure service."""
    async with _testee() as (_, suite), Client(suite, source=SUITE_SOURCE, timeout=5) as client:
        with pytest.raises(ExchangeError) as refused:
            await client.request(TESTEE_SECURE_TYPES["echo"], 1)
    assert ErrorCode.UNAUTHENTICATED == refused.value.code
