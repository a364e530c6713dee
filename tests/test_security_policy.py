"""The receiver's policy: the order of the checks, replays, principals, what the application sees.

The vectors fix one outcome per message; these tests check what needs several messages or a
configuration: the verification order when a message breaks more than one rule [SEC-017],
that a forged message burns no nonce [SEC-019, SEC-021], the bounded cache [SEC-022], the
redelivery allowance [SEC-023], a cache shared by two instances [SEC-024], principals
[SEC-025, SEC-026], and the view without ``auth`` [SEC-032].
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from llmproto_ref import Envelope, EnvelopeError, decode, encode
from llmproto_ref._keys import Key, KeySet
from llmproto_ref._policy import SecurityPolicy
from llmproto_ref._replay import NonceCache, Refusal
from llmproto_ref._security_error import SecurityError
from llmproto_ref._signing import Signer

T0 = 1_779_260_400_000
GATEWAY = Key.ed25519("urn:example:keys:gateway-7", private=os.urandom(32), sources=["urn:gw:7"])
OTHER = Key.ed25519("urn:example:keys:other", private=os.urandom(32))
PAIR = Key.hmac_sha256("urn:example:keys:pair", os.urandom(32))
KEYS = KeySet([GATEWAY.public_key(), OTHER.public_key(), PAIR])


def _policy(now: int = T0 + 1_000, **settings: Any) -> SecurityPolicy:
    return SecurityPolicy(keys=KEYS, clock=lambda: now, **settings)


def _request(source: str = "urn:gw:7", **members: Any) -> Envelope:
    return Envelope.new(kind="request", type="llm.chat", source=source, data={"q": 1}, **members)


def _signed(envelope: Envelope | None = None, key: Key = GATEWAY, at: int = T0) -> Envelope:
    return Signer(key, clock=lambda: at).sign(envelope or _request())


def _check(policy: SecurityPolicy, envelope: Envelope, **options: Any) -> tuple[str, str, str]:
    raw = encode(envelope)
    try:
        policy.check(decode(raw, understood=policy.understood), len(raw), **options)
    except SecurityError as exc:
        return str(exc.code), exc.pointer, exc.requirement
    return "valid", "", ""


# -- the order [SEC-017] ----------------------------------------------------------------------


def test_a_bad_algorithm_is_reported_before_a_bad_signature() -> None:
    """alg none with a garbage value: the algorithm step fails first."""
    signed = _signed()
    forged = signed.replace(sig={**signed.sig, "alg": "none"})  # type: ignore[dict-item]
    assert ("SIGNATURE_INVALID", "/sig/alg", "SEC-007") == _check(_policy(), forged)


def test_a_bad_signature_is_reported_before_the_time_window() -> None:
    """An expired message whose signature also fails reports the signature: times are unproven."""
    signed = _signed(at=T0 - 3_600_000)
    tampered = signed.replace(type="llm.other")
    assert ("SIGNATURE_INVALID", "/sig/value", "SEC-016") == _check(_policy(), tampered)
    assert ("REPLAY_REJECTED", "/sig/expires", "SEC-020") == _check(_policy(), signed)


def test_the_principal_is_checked_after_the_nonce() -> None:
    """A replay from the wrong principal is reported as a replay (step 9 before step 10)."""
    policy = _policy()
    signed = _signed()
    assert ("valid", "", "") == _check(policy, signed, principal="urn:gw:7")
    assert ("REPLAY_REJECTED", "/sig/nonce", "SEC-021") == _check(policy, signed, principal="x")


def test_the_size_is_checked_first() -> None:
    """raw_size beyond the limit: PAYLOAD_TOO_LARGE before anything else (ENV-006)."""
    policy = _policy()
    with pytest.raises(SecurityError) as caught:
        policy.check(_request(), policy.limits.max_envelope_bytes + 1)
    assert ("PAYLOAD_TOO_LARGE", "", "ENV-006") == (
        caught.value.code,
        caught.value.pointer,
        caught.value.requirement,
    )


def test_a_security_error_is_an_envelope_error_naming_no_secret() -> None:
    """The runtime answers it like a decode failure (ENV-036); the message quotes no secret."""
    signed = _signed()
    value = signed.sig["value"]  # type: ignore[index]
    tampered = signed.replace(data={"q": 2})
    raw = encode(tampered)
    with pytest.raises(EnvelopeError) as caught:
        _policy().check(decode(raw), len(raw))
    assert isinstance(caught.value, SecurityError)
    assert value not in str(caught.value)
    assert GATEWAY.kid in str(caught.value)
    assert {"type": "llmp.pointer", "pointer": "/sig/value", "requirement": "SEC-016"} == (
        caught.value.detail()
    )


# -- signatures present, required or not -------------------------------------------------------


def test_required_signatures() -> None:
    """Unsigned messages pass only where signatures are optional [SEC-018]."""
    assert ("valid", "", "") == _check(_policy(), _request())
    required = _policy(require_signature=True)
    assert ("UNAUTHENTICATED", "/sig", "SEC-018") == _check(required, _request())
    assert ("valid", "", "") == _check(required, _signed())
    with pytest.raises(ValueError, match="needs keys"):
        SecurityPolicy(require_signature=True)


def test_every_signature_present_is_verified() -> None:
    """Optional does not mean ignored: a broken signature is rejected anyway [SEC-019]."""
    broken = _signed().replace(data={"q": 2})
    assert ("SIGNATURE_INVALID", "/sig/value", "SEC-016") == _check(_policy(), broken)
    unconfigured = SecurityPolicy(clock=lambda: T0)  # no keys: this receiver checks none
    assert ("valid", "", "") == _check(unconfigured, broken)


def test_a_forged_message_does_not_use_up_the_nonce() -> None:
    """The nonce is recorded only after the signature verified [SEC-019, SEC-021]."""
    policy = _policy()
    genuine = _signed()
    forged = genuine.replace(data={"q": "forged"})
    assert "SIGNATURE_INVALID" == _check(policy, forged)[0]
    assert ("valid", "", "") == _check(policy, genuine)
    assert "REPLAY_REJECTED" == _check(policy, genuine)[0]


def test_the_allow_list_never_holds_none() -> None:
    """A policy cannot be configured with none or another algorithm [SEC-007, SEC-012]."""
    for algorithms in ({"none"}, {"EdDSA", "RS256"}):
        with pytest.raises(ValueError, match="outside EdDSA and HS256"):
            SecurityPolicy(algorithms=frozenset(algorithms))
    only_eddsa = _policy(algorithms=frozenset({"EdDSA"}))
    assert ("SIGNATURE_INVALID", "/sig/alg", "SEC-012") == _check(only_eddsa, _signed(key=PAIR))


def test_accepted_kids_narrow_the_resolver() -> None:
    """A kid the resolver knows but the policy does not accept is unknown [SEC-014]."""
    policy = _policy(accepted_kids=frozenset({GATEWAY.kid}))
    assert ("UNAUTHENTICATED", "/sig/kid", "SEC-014") == _check(
        policy, _signed(_request(source="urn:other"), key=OTHER)
    )
    assert ("valid", "", "") == _check(policy, _signed())


def test_hs256_events_are_refused_even_if_someone_signed_them() -> None:
    """A receiver refuses an HS256 event whoever made it [SEC-015]."""
    event = Envelope.new(kind="event", type="model.loaded", source="urn:gw:7")
    signed = _signed(_request()).to_dict()
    hand_made = Envelope.from_members(
        event.to_dict() | {"sig": signed["sig"] | {"alg": "HS256", "kid": PAIR.kid}}
    )
    assert ("SIGNATURE_INVALID", "/sig/alg", "SEC-015") == _check(_policy(), hand_made)


# -- replays ------------------------------------------------------------------------------------


def test_the_nonce_cache_is_bounded_and_never_lets_a_replay_through() -> None:
    """A flood beyond the bound raises the floor; every earlier message stays refused [SEC-022]."""
    cache = NonceCache(max_entries=50)
    accepted = []
    for i in range(500):
        until = T0 + 100_000 + i * 10
        assert cache.admit("k", f"n{i}", until, T0) is None
        accepted.append((f"n{i}", until))
        assert len(cache) <= 50
    for nonce, until in accepted:
        assert cache.admit("k", nonce, until, T0) is not None
    assert cache.dropped == 450
    assert Refusal.FORGOTTEN == cache.admit("k", "fresh", T0 + 100_000, T0)
    assert cache.admit("k", "fresh", T0 + 200_000, T0) is None


def test_pairs_past_their_moment_are_dropped_first() -> None:
    """Expired pairs make room without raising the floor [SEC-021, SEC-022]."""
    cache = NonceCache(max_entries=2)
    assert cache.admit("k", "a", T0, T0 - 1) is None
    assert cache.admit("k", "b", T0 + 10, T0 - 1) is None
    assert cache.admit("k", "c", T0 + 20, T0 + 1) is None  # "a" is past: dropped
    assert (-1, 0) == (cache.floor_ms, cache.dropped)
    assert ("k", "a") not in cache
    assert ("k", "b") in cache
    with pytest.raises(ValueError, match="at least 1"):
        NonceCache(0)


def test_a_redelivered_job_may_repeat_its_nonce() -> None:
    """redelivery=True accepts a remembered pair; a replay without the mark is refused [SEC-023]."""
    policy = _policy()
    job = _signed()
    assert ("valid", "", "") == _check(policy, job)
    assert ("valid", "", "") == _check(policy, job, redelivery=True)
    assert ("REPLAY_REJECTED", "/sig/nonce", "SEC-021") == _check(policy, job)
    fresh = _signed()
    assert ("valid", "", "") == _check(policy, fresh, redelivery=True)  # recorded on the way
    assert "REPLAY_REJECTED" == _check(policy, fresh)[0]


def test_instances_sharing_a_cache_catch_a_replay_sent_to_the_other() -> None:
    """Two instances of one service share the nonce cache [SEC-024]."""
    shared = NonceCache()
    first, second = _policy(nonce_cache=shared), _policy(nonce_cache=shared)
    message = _signed()
    assert ("valid", "", "") == _check(first, message)
    assert ("REPLAY_REJECTED", "/sig/nonce", "SEC-021") == _check(second, message)
    alone = _policy()
    assert ("valid", "", "") == _check(alone, message)  # without sharing it would pass


# -- principals --------------------------------------------------------------------------------


def test_a_key_signs_only_for_its_sources() -> None:
    """GATEWAY is registered for urn:gw:7; OTHER for any source [SEC-025]."""
    policy = _policy()
    assert ("PERMISSION_DENIED", "/source", "SEC-025") == _check(
        policy, _signed(_request(source="urn:gw:8"))
    )
    assert ("valid", "", "") == _check(policy, _signed(_request(source="urn:gw:8"), key=OTHER))


def test_the_binding_principal_limits_the_source() -> None:
    """A principal may use its own name, or the sources its mapping lists [SEC-026]."""
    mapped = _policy(principals={"nats-user-gw": frozenset({"urn:gw:7"})})
    assert ("valid", "", "") == _check(mapped, _request(), principal="nats-user-gw")
    assert ("PERMISSION_DENIED", "/source", "SEC-026") == _check(
        mapped, _request(), principal="intruder"
    )
    assert ("valid", "", "") == _check(_policy(), _request(), principal="urn:gw:7")
    assert ("valid", "", "") == _check(_policy(), _request())  # the binding knows no principal


# -- what the application sees -----------------------------------------------------------------


def test_the_view_has_no_token_to_pass_on() -> None:
    """auth is removed from the envelope the application gets [SEC-032]."""
    request = _request(auth={"scheme": "bearer", "token": "opaque"})
    raw = encode(_signed(request))
    verified = _policy().check(decode(raw), len(raw))
    assert not verified.envelope.has("auth")
    assert verified.envelope.data == {"q": 1}
    assert verified.signer == GATEWAY.public_key()
    assert verified.token is None
    assert verified.principal is None
    plain = _request()
    assert _policy().check(plain, 10).envelope is plain  # nothing to remove: no copy


def test_policy_settings_are_checked() -> None:
    """Out-of-range time settings are refused; enc is understood only with decryption keys."""
    bad: list[dict[str, Any]] = [
        {"clock_skew_ms": -1},
        {"clock_skew_ms": 600_001},
        {"max_lifetime_ms": 999},
    ]
    for settings in bad:
        with pytest.raises(ValueError):  # noqa: PT011
            SecurityPolicy(**settings)
    assert frozenset() == _policy().understood
    assert frozenset({"enc"}) == _policy(decryption_keys=KeySet()).understood
