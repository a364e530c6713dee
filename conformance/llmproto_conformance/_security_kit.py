"""The secure testee's configuration, from the published test keys (spec/conformance.md).

A testee that claims the ``security`` profile runs a second service, ``llmp-testee-secure``,
configured exactly as this module says, with the test keys of spec/security.md section Test
keys (the vectors in ``vectors/security/`` carry them as a JWK set, private members included),
so a testee in any language is configured the same way [CONF-022]:

- signatures: required [SEC-018]; the allow-list ``EdDSA`` and ``HS256``; the one key accepted
  is the Ed25519 key ``urn:example:keys:gateway-7:2026-05``, registered for the source
  ``urn:example:gateway:7`` [SEC-025]; 60 s clock-skew allowance, at most 300 s lifetime;
- bearer tokens: required on every request [SEC-027], JWTs of the issuer
  ``https://auth.example.com`` signed with the Ed25519 key ``urn:example:keys:auth:2026-05``,
  for the audience ``llmp-testee``; ``llmp.testee.secure.scoped`` requires the scope
  ``llmp.testee.scoped`` [SEC-031];
- replies: sent as ``urn:example:worker:3`` and signed with the Ed25519 key
  ``urn:example:keys:worker-3:2026-05`` [CONF-023].

The suite signs as gateway 7 with the same published key and mints its tokens with the
issuer's; the helpers here do both, for the checks, the testee and the faults alike.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from typing import Any

import orjson

from llmproto_conformance._context import TESTEE_SECURE_TYPES
from llmproto_conformance._vectors import vector_dir
from llmproto_ref import BearerPolicy, Envelope, Key, KeySet, SecurityPolicy, Signer
from llmproto_ref._keys import b64url_encode
from llmproto_ref._signing import sign_bytes

__all__ = (
    "AUDIENCE",
    "CLOCK_SKEW_MS",
    "GATEWAY_KID",
    "GATEWAY_SOURCE",
    "ISSUER",
    "ISSUER_KID",
    "MAX_LIFETIME_MS",
    "SCOPE",
    "SCOPES",
    "WORKER_KID",
    "WORKER_SOURCE",
    "mint_token",
    "published_key",
    "reply_policy",
    "secure_bearer",
    "secure_policy",
    "signed",
)

#: The key the suite signs with, and the one source it is registered for.
GATEWAY_KID = "urn:example:keys:gateway-7:2026-05"
GATEWAY_SOURCE = "urn:example:gateway:7"
#: The key the secure testee signs its replies with, and its source.
WORKER_KID = "urn:example:keys:worker-3:2026-05"
WORKER_SOURCE = "urn:example:worker:3"
#: The token issuer and its signing key.
ISSUER = "https://auth.example.com"
ISSUER_KID = "urn:example:keys:auth:2026-05"
#: The audience the secure testee's tokens must name [SEC-029].
AUDIENCE = "llmp-testee"
#: The scope ``llmp.testee.secure.scoped`` requires [SEC-031].
SCOPE = "llmp.testee.scoped"
#: Operation -> the scopes it requires.
SCOPES: Mapping[str, frozenset[str]] = {TESTEE_SECURE_TYPES["scoped"]: frozenset({SCOPE})}
#: The secure testee's clock-skew allowance and longest accepted lifetime [SEC-020].
CLOCK_SKEW_MS = 60_000
MAX_LIFETIME_MS = 300_000


@functools.cache
def _test_keys() -> KeySet:
    path = vector_dir() / "security" / "signatures" / "ed25519.json"
    return KeySet.from_jwk_set(orjson.loads(path.read_bytes())["test_keys"])


def published_key(kid: str) -> Key:
    """The published test key ``kid``, private part included (tests and examples only).

    :raises KeyError: for a kid that is not a published test key.
    """
    key = _test_keys().resolve(kid)
    if key is None:
        raise KeyError(kid)
    return key


def secure_bearer() -> BearerPolicy:
    """The tokens the secure testee accepts."""
    return BearerPolicy(
        audience=AUDIENCE,
        issuers=frozenset({ISSUER}),
        keys=KeySet([published_key(ISSUER_KID).public_key()]),
        scopes=SCOPES,
    )


def secure_policy() -> SecurityPolicy:
    """What the secure testee accepts (a fresh nonce cache for each call)."""
    return SecurityPolicy(
        keys=KeySet([published_key(GATEWAY_KID).public_key()]),
        require_signature=True,
        clock_skew_ms=CLOCK_SKEW_MS,
        max_lifetime_ms=MAX_LIFETIME_MS,
        bearer=secure_bearer(),
    )


def reply_policy() -> SecurityPolicy:
    """What the suite accepts from the secure testee: replies signed with the worker key."""
    return SecurityPolicy(
        keys=KeySet([published_key(WORKER_KID).public_key()]), require_signature=True
    )


def mint_token(
    *,
    scope: str = "",
    audience: str = AUDIENCE,
    subject: str = "user:conformance",
    expires_in_s: int = 300,
    alg: str = "EdDSA",
    issuer: str = ISSUER,
) -> str:
    """A JWT access token (RFC 9068) from the test issuer, signed now with its key.

    :param alg: ``EdDSA``, or ``none`` for an unsigned token (its signature part empty).
    """
    now_s = time.time_ns() // 1_000_000_000
    header = {"alg": alg, "kid": ISSUER_KID, "typ": "at+jwt"}
    claims = {"iss": issuer, "sub": subject, "aud": audience, "scope": scope, "iat": now_s,
              "exp": now_s + expires_in_s, "jti": b64url_encode(os.urandom(9))}  # fmt: skip
    text = f"{b64url_encode(orjson.dumps(header))}.{b64url_encode(orjson.dumps(claims))}"
    if alg == "none":
        return f"{text}."
    return f"{text}.{b64url_encode(sign_bytes(published_key(ISSUER_KID), text.encode()))}"


def signed(
    members: Mapping[str, Any],
    *,
    key: Key | None = None,
    at_ms: int | None = None,
    lifetime_ms: int = MAX_LIFETIME_MS,
) -> dict[str, Any]:
    """``members`` signed with ``key`` (the gateway's by default), ``at_ms`` (now by default).

    Any ``sig`` already there is replaced.
    """
    unsigned = {name: value for name, value in members.items() if name != "sig"}
    when = time.time_ns() // 1_000_000 if at_ms is None else at_ms
    signer = Signer(key or published_key(GATEWAY_KID), lifetime_ms=lifetime_ms, clock=lambda: when)
    return signer.sign(Envelope.from_members(unsigned)).to_dict()
