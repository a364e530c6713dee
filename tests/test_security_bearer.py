"""Bearer tokens, issued here with PyJWT as an authorization server would issue them.

The vectors use EdDSA tokens made by hand; these tests add tokens made by a JWT library,
with RSA and EC issuer keys as real authorization servers use, and check the policy's
configuration: required tokens [SEC-027], algorithm and key [SEC-028], issuer and audience
[SEC-029], times with the allowance [SEC-030], scopes per operation [SEC-031].
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from llmproto_ref import Envelope, decode, encode
from llmproto_ref._bearer import BearerPolicy
from llmproto_ref._keys import Key, KeySet
from llmproto_ref._policy import SecurityPolicy
from llmproto_ref._security_error import SecurityError

NOW = 1_779_260_400_000
ISSUER = "https://auth.example.com"
AUDIENCE = "urn:example:worker"

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())


def _public_jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.get_algorithm_by_name(alg)
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(private.public_key()))
    return jwk | {"kid": kid, "alg": alg}


ISSUER_KEYS = KeySet(
    [
        Key.from_jwk(_public_jwk(_RSA, "rsa-1", "RS256")),
        Key.from_jwk(_public_jwk(_EC, "ec-1", "ES256")),
        Key.hmac_sha256("hs-1", b"s" * 32),
    ]
)


def _token(key: Any = _RSA, kid: str = "rsa-1", alg: str = "RS256", **claims: Any) -> str:
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user:alice",
        "scope": "llm.chat tools.run",
        "iat": NOW // 1000,
        "exp": NOW // 1000 + 300,
    } | claims
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid}
    )


def _hand_made_hs256(secret: bytes, kid: str) -> str:
    """An HS256 token PyJWT refuses to make (its key looks like a JWK): the confusion attack."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": NOW // 1000 + 60, "scope": "llm.chat"}
    signing = f"{part({'alg': 'HS256', 'kid': kid})}.{part(claims)}"
    mac = hmac.digest(secret, signing.encode(), "sha256")
    return f"{signing}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _bearer(**settings: Any) -> BearerPolicy:
    defaults: dict[str, Any] = {
        "audience": AUDIENCE,
        "issuers": frozenset({ISSUER}),
        "keys": ISSUER_KEYS,
        "scopes": {"llm.chat": frozenset({"llm.chat"}), "tools.admin": frozenset({"tools.admin"})},
    }
    return BearerPolicy(**(defaults | settings))


def _check(token: str | None, type: str = "llm.chat", **settings: Any) -> tuple[str, str, str]:
    policy = SecurityPolicy(bearer=_bearer(**settings), clock=lambda: NOW)
    auth = None if token is None else {"scheme": "bearer", "token": token}
    request = Envelope.new(kind="request", type=type, source="urn:example:gateway:7", auth=auth)
    raw = encode(request)
    try:
        verified = policy.check(decode(raw), len(raw))
    except SecurityError as exc:
        problem = exc
    else:
        assert not verified.envelope.has("auth")
        return "valid", "", ""
    assert token is None or token not in problem.message  # never quoted (ERR-012)
    return str(problem.code), problem.pointer, problem.requirement


VALID = ("valid", "", "")


def test_rsa_and_ec_tokens_of_the_issuer_are_accepted() -> None:
    """RS256 and ES256 tokens verify with the issuer's JWKs [SEC-028]."""
    assert VALID == _check(_token())
    assert VALID == _check(_token(_EC, "ec-1", "ES256"))


def test_the_claims_are_handed_over_without_the_token() -> None:
    """check() returns issuer, subject, audience, scopes and expiry; not the token."""
    policy = SecurityPolicy(bearer=_bearer(), clock=lambda: NOW)
    token = _token(aud=[AUDIENCE, "urn:example:other"])
    request = Envelope.new(
        kind="request", type="llm.chat", source="s", auth={"scheme": "bearer", "token": token}
    )
    claims = policy.check(request, 100).token
    assert claims is not None
    assert (ISSUER, "user:alice", (AUDIENCE, "urn:example:other")) == (
        claims.issuer,
        claims.subject,
        claims.audience,
    )
    assert frozenset({"llm.chat", "tools.run"}) == claims.scopes
    assert NOW + 300_000 == claims.expires_ms
    assert token not in repr(claims)


def test_a_missing_token() -> None:
    """Required tokens, or a scope required for the type, need auth [SEC-027]."""
    assert ("UNAUTHENTICATED", "/auth", "SEC-027") == _check(None)
    assert ("UNAUTHENTICATED", "/auth", "SEC-027") == _check(None, required=False)
    assert VALID == _check(None, "llm.embed", required=False)


def test_algorithm_and_key() -> None:
    """Never none, never an algorithm the key does not serve, only listed algorithms [SEC-028]."""
    unsigned = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "exp": NOW // 1000 + 60}, "", algorithm="none"
    )
    assert ("UNAUTHENTICATED", "/auth/token", "SEC-028") == _check(unsigned)
    hs = _token(b"s" * 32, "hs-1", "HS256")
    assert ("UNAUTHENTICATED", "/auth/token", "SEC-028") == _check(hs)  # HS256 not listed
    assert VALID == _check(hs, algorithms=frozenset({"HS256"}))
    # An HMAC keyed with the RSA key's public JWK text, claiming the RSA kid:
    confused = _hand_made_hs256(json.dumps(_public_jwk(_RSA, "rsa-1", "RS256")).encode(), "rsa-1")
    assert ("UNAUTHENTICATED", "/auth/token", "SEC-028") == _check(
        confused, algorithms=frozenset({"HS256", "RS256"})
    )
    assert ("UNAUTHENTICATED", "/auth/token", "SEC-028") == _check(_token(kid="rsa-2"))
    assert ("UNAUTHENTICATED", "/auth/token", "SEC-028") == _check(
        _token(_EC, "ec-1", "ES256")[:-4] + "AAAA"
    )
    with pytest.raises(ValueError, match="unsupported token algorithms"):
        _bearer(algorithms=frozenset({"none"}))


def test_the_token_type_when_configured() -> None:
    """token_types={'at+jwt'} accepts RFC 9068 access tokens only [SEC-028]."""
    at = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "exp": NOW // 1000 + 60, "scope": "llm.chat"},
        _RSA,
        algorithm="RS256",
        headers={"kid": "rsa-1", "typ": "at+jwt"},
    )
    assert VALID == _check(at, token_types=frozenset({"at+jwt"}))
    assert ("UNAUTHENTICATED", "/auth/token", "SEC-028") == _check(
        _token(), token_types=frozenset({"at+jwt"})
    )


def test_issuer_and_audience() -> None:
    """Only trusted issuers, only tokens for this service [SEC-029]."""
    assert ("UNAUTHENTICATED", "/auth/token", "SEC-029") == _check(_token(iss="https://other"))
    assert ("UNAUTHENTICATED", "/auth/token", "SEC-029") == _check(
        _token(aud="urn:example:gateway")
    )
    assert ("UNAUTHENTICATED", "/auth/token", "SEC-029") == _check(_token(aud=None))
    assert ("UNAUTHENTICATED", "/auth/token", "SEC-029") == _check(_token(iss=None))


@pytest.mark.parametrize(
    ("claims", "outcome"),
    [
        ({"exp": NOW // 1000 - 60}, VALID),
        ({"exp": NOW // 1000 - 61}, ("UNAUTHENTICATED", "/auth/token", "SEC-030")),
        ({"exp": None}, ("UNAUTHENTICATED", "/auth/token", "SEC-030")),
        ({"exp": "tomorrow"}, ("UNAUTHENTICATED", "/auth/token", "SEC-030")),
        ({"nbf": NOW // 1000 + 60}, VALID),
        ({"nbf": NOW // 1000 + 61}, ("UNAUTHENTICATED", "/auth/token", "SEC-030")),
    ],
)
def test_expiry_and_not_before_with_the_allowance(
    claims: dict[str, Any], outcome: tuple[str, str, str]
) -> None:
    """exp and nbf are judged against the policy's clock with its 60 s allowance [SEC-030]."""
    assert outcome == _check(_token(**claims))


def test_scopes_per_operation() -> None:
    """Each type's required scopes must all be held; the error names the missing one [SEC-031]."""
    assert VALID == _check(_token(), "llm.chat")
    assert VALID == _check(_token(), "llm.embed")  # no scope required for this type
    assert ("PERMISSION_DENIED", "/auth/token", "SEC-031") == _check(_token(), "tools.admin")
    policy = SecurityPolicy(bearer=_bearer(), clock=lambda: NOW)
    request = Envelope.new(
        kind="request", type="tools.admin", source="s", auth={"scheme": "bearer", "token": _token()}
    )
    with pytest.raises(SecurityError, match=r"requires the scope tools\.admin"):
        policy.check(request, 100)
    assert ("UNAUTHENTICATED", "/auth/token", "SEC-031") == _check(_token(scope=["llm.chat"]))


def test_tokens_are_checked_on_requests_only() -> None:
    """A response or an event carrying auth is not judged by the bearer policy."""
    policy = SecurityPolicy(bearer=_bearer(), clock=lambda: NOW)
    event = Envelope.new(
        kind="event", type="llm.chat", source="s", auth={"scheme": "bearer", "token": "x"}
    )
    assert policy.check(event, 100).token is None


def test_a_bearer_policy_needs_an_audience_and_an_issuer() -> None:
    """Empty audience or issuer sets are configuration errors."""
    with pytest.raises(ValueError, match="audience"):
        _bearer(audience="")
    with pytest.raises(ValueError, match="issuer"):
        _bearer(issuers=frozenset())


def test_a_token_verified_once_is_still_checked_for_time_and_key() -> None:
    """The verified-token memory skips only the signature: expiry and a rotated key still count
    [SEC-030, SEC-028]."""
    bearer = _bearer()
    token = _token()
    leeway = 60_000
    first = bearer.verify(token, now_ms=NOW, leeway_ms=leeway)
    again = bearer.verify(token, now_ms=NOW, leeway_ms=leeway)
    assert first.claims == again.claims
    assert first.claims is not again.claims  # each caller gets its own copy
    with pytest.raises(SecurityError) as caught:
        bearer.verify(token, now_ms=NOW + 301_000 + leeway, leeway_ms=leeway)
    assert "expired" in caught.value.message
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rotated = _bearer(keys=KeySet([Key.from_jwk(_public_jwk(other, "rsa-1", "RS256"))]))
    rotated._verified.update(bearer._verified)  # noqa: SLF001 - a stale memory, not the key
    with pytest.raises(SecurityError):
        rotated.verify(token, now_ms=NOW, leeway_ms=leeway)
