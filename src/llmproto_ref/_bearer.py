"""Bearer tokens in ``auth``: JWT access tokens checked for the service (spec/security.md).

:class:`BearerPolicy` says which tokens a service accepts: issued by a trusted issuer
(``iss``), for this service (``aud``), signed by the issuer's key with the algorithm that key is
registered for [SEC-028], not expired [SEC-030], and holding the scopes the operation requires
[SEC-031]. :meth:`BearerPolicy.verify` checks one token and returns its :class:`TokenClaims`,
or raises :class:`~llmproto_ref.SecurityError`. The messages name the failed check and never
quote the token [ERR-012].

The signature and ``iss``/``aud`` checks are PyJWT's; the algorithm and key choice (never
``none``, never an algorithm the key is not registered for) and the time checks (against the
policy's clock, with the clock-skew allowance) are made here. PyJWT is imported on first use:
it loads ``urllib`` and sockets for its JWKS client, which the sans-IO core never imports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmproto_ref._keys import Key, KeyResolver, b64url_decode
from llmproto_ref._registry import ErrorCode
from llmproto_ref._security_error import SecurityError

__all__ = ("TOKEN_ALGORITHMS", "BearerPolicy", "TokenClaims")

#: The token algorithms a policy accepts unless configured otherwise (asymmetric only).
TOKEN_ALGORITHMS = frozenset({"EdDSA", "ES256", "PS256", "RS256"})
_KNOWN = TOKEN_ALGORITHMS | {"HS256"}
_POINTER = "/auth/token"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenClaims:
    """What a verified token says; the token itself is not kept, so it cannot be passed on.

    :param issuer: ``iss``.
    :param subject: ``sub``, if present: on whose behalf the request is made.
    :param audience: ``aud``, as a tuple.
    :param scopes: the space-separated ``scope`` claim as a set.
    :param expires_ms: ``exp`` in milliseconds since the Unix epoch.
    :param claims: every claim of the token.
    """

    issuer: str
    subject: str | None
    audience: tuple[str, ...]
    scopes: frozenset[str]
    expires_ms: int
    claims: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class BearerPolicy:
    """Which bearer tokens a service accepts, and the scopes each operation requires.

    :param audience: this service's identifier; a token's ``aud`` must name it [SEC-029].
    :param issuers: the ``iss`` values trusted.
    :param keys: the issuers' token-signing keys, by ``kid``.
    :param algorithms: the token algorithms accepted; never ``none``; ``HS256`` only if listed.
    :param required: whether every request must carry a token [SEC-027].
    :param scopes: operation ``type`` -> the scopes a token must hold for it [SEC-031].
    :param token_types: the header ``typ`` values accepted, e.g. ``{"at+jwt"}`` (RFC 9068);
        ``None`` accepts any.
    :raises ValueError: for an empty audience or issuer set, or an unknown algorithm.
    """

    audience: str
    issuers: frozenset[str]
    keys: KeyResolver
    algorithms: frozenset[str] = TOKEN_ALGORITHMS
    required: bool = True
    scopes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    token_types: frozenset[str] | None = None
    #: tokens whose signature verified, with the key that verified them (bounded; a key that
    #: is no longer resolved to the same object is checked again)
    _verified: dict[str, tuple[Key, dict[str, Any]]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if not self.audience or not self.issuers:
            raise ValueError("a bearer policy needs its audience and at least one issuer")
        if not self.algorithms <= _KNOWN:
            unknown = ", ".join(sorted(self.algorithms - _KNOWN))
            raise ValueError(f"unsupported token algorithms: {unknown}")

    def required_scopes(self, type: str) -> frozenset[str]:
        """The scopes a token must hold for the operation ``type``."""
        return frozenset(self.scopes.get(type, ()))

    def verify(self, token: str, *, now_ms: int, leeway_ms: int) -> TokenClaims:
        """Check one token, or raise :class:`SecurityError` ``UNAUTHENTICATED``.

        :param now_ms: the current time.
        :param leeway_ms: the clock-skew allowance for ``exp`` and ``nbf`` [SEC-030].
        """
        header = _header(token)
        if "crit" in header:
            raise _fail("the bearer token lists critical header parameters (crit)", "SEC-028")
        if self.token_types is not None and header.get("typ") not in self.token_types:
            raise _fail("the bearer token's type (typ) is not an accepted one", "SEC-028")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise _fail("the bearer token is unsigned (alg none)", "SEC-028")
        if alg not in self.algorithms:
            raise _fail(f"the bearer token's algorithm {alg} is not accepted", "SEC-028")
        kid = header.get("kid")
        key = self.keys.resolve(kid) if isinstance(kid, str) else None
        if key is None:
            raise _fail("the bearer token names no key of a trusted issuer", "SEC-028")
        if key.alg != alg:  # never let the token choose how its key is used [SEC-013]
            raise _fail(f"the bearer token uses {alg}, its key serves {key.alg}", "SEC-028")
        cached = self._verified.get(token)
        if cached is not None and cached[0] is key:
            payload = cached[1]  # a client sends one token many times: verify it once
        else:
            payload = self._decode(token, key, alg)
            if len(self._verified) >= _VERIFIED_TOKENS:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = (key, payload)
        expires = _seconds(payload.get("exp"))
        if expires is None:
            raise _fail("the bearer token has no expiry (exp)", "SEC-030")
        if now_ms > expires * 1000 + leeway_ms:
            raise _fail("the bearer token has expired", "SEC-030")
        not_before = _seconds(payload.get("nbf", 0))
        if not_before is None or now_ms < not_before * 1000 - leeway_ms:
            raise _fail("the bearer token is not valid yet (nbf)", "SEC-030")
        scope = payload.get("scope", "")
        if not isinstance(scope, str):
            raise _fail("the bearer token's scope claim is not a string", "SEC-031")
        audience = payload["aud"]
        subject = payload.get("sub")
        return TokenClaims(
            issuer=payload["iss"],
            subject=subject if isinstance(subject, str) else None,
            audience=(audience,) if isinstance(audience, str) else tuple(audience),
            scopes=frozenset(scope.split()),
            expires_ms=int(expires * 1000),
            claims=dict(payload),
        )

    def _decode(self, token: str, key: Key, alg: str) -> dict[str, Any]:
        import jwt

        options: Any = {
            "verify_exp": False,  # checked above against the policy's clock, not time.time()
            "verify_nbf": False,
            "verify_iat": False,
            "require": ["exp", "iss", "aud"],
        }
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key=_jwt_key(key, alg),
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuers,
                options=options,
            )
        except jwt.InvalidAudienceError:
            raise _fail(
                "the bearer token was not issued for this service (aud)", "SEC-029"
            ) from None
        except jwt.InvalidIssuerError:
            raise _fail("the bearer token's issuer (iss) is not trusted", "SEC-029") from None
        except jwt.MissingRequiredClaimError as exc:
            rid = "SEC-030" if exc.claim == "exp" else "SEC-029"
            raise _fail(f"the bearer token lacks the claim {exc.claim!r}", rid) from None
        except jwt.InvalidSignatureError:
            raise _fail("the bearer token's signature does not verify", "SEC-028") from None
        except jwt.PyJWTError as exc:
            raise _fail(
                f"the bearer token is malformed ({type(exc).__name__})", "SEC-028"
            ) from None
        return payload


_VERIFIED_TOKENS = 1024  #: tokens remembered as verified by one policy


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise _fail("the bearer token is not a JWT (three base64url parts)", "SEC-028")
    try:
        header = json.loads(b64url_decode(parts[0]))
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise _fail("the bearer token's header is not a JSON object", "SEC-028")
    return header


_JWT_KEYS: dict[Key, Any] = {}


def _jwt_key(key: Key, alg: str) -> Any:
    """PyJWT's key object for ``key``, kept for the next token (bounded)."""
    import jwt

    found = _JWT_KEYS.get(key)
    if found is None:
        if len(_JWT_KEYS) >= 256:
            _JWT_KEYS.clear()
        found = _JWT_KEYS[key] = jwt.PyJWK(key.to_jwk(private=alg == "HS256"), algorithm=alg)
    return found


def _seconds(value: Any) -> float | None:
    """A NumericDate claim (RFC 7519 section 2) as a number, or ``None`` if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _fail(message: str, requirement: str) -> SecurityError:
    return SecurityError(
        ErrorCode.UNAUTHENTICATED, message, pointer=_POINTER, requirement=requirement
    )
