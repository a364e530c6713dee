"""The receiver's security policy: which messages it accepts (spec/security.md).

A runtime decodes a message (size, strict JSON, schema, critical extensions: ``decode`` with
``understood=policy.understood``) and then calls :meth:`SecurityPolicy.check`, which runs the
remaining steps of the verification order [SEC-017] and stops at the first that fails:

1. size of the received body: ``PAYLOAD_TOO_LARGE`` (ENV-006);
4. a signature, if required: ``UNAUTHENTICATED`` at ``/sig`` (SEC-018);
5. ``sig.alg`` on the allow-list: ``SIGNATURE_INVALID`` at ``/sig/alg`` (SEC-007, SEC-012);
6. ``sig.kid`` names an accepted key (``UNAUTHENTICATED`` at ``/sig/kid``, SEC-014) serving that
   algorithm, and no event is signed with ``HS256`` (``SIGNATURE_INVALID``, SEC-013, SEC-015);
7. the signature verifies: ``SIGNATURE_INVALID`` at ``/sig/value`` (SEC-008, SEC-009, SEC-016);
8. the ``created``/``expires`` window: ``REPLAY_REJECTED`` (SEC-020);
9. the nonce is new: ``REPLAY_REJECTED`` at ``/sig/nonce`` (SEC-021, SEC-022);
10. ``source`` is one the key and the binding's principal may use: ``PERMISSION_DENIED`` at
    ``/source`` (SEC-025, SEC-026);
11. the bearer token of a request: ``UNAUTHENTICATED`` at ``/auth`` or ``/auth/token``
    (SEC-027 to SEC-030);
12. the token's scopes cover the operation: ``PERMISSION_DENIED`` at ``/auth/token`` (SEC-031);
13. the payload decrypts (SEC-038).

Steps 2 and 3 (strict JSON, schema) are ``decode``'s. The time window and the nonce come after
the signature, since unsigned times prove nothing and a forged message must not use up a nonce.

:meth:`~SecurityPolicy.check` returns :class:`Verified`: who signed, the token's claims, and the
envelope as the application may see it: without ``auth``, so a handler has no token to pass on
[SEC-032], and with its payload decrypted.

The policy's only state is its nonce cache (:mod:`llmproto_ref._replay`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmproto_ref._bearer import BearerPolicy, TokenClaims
from llmproto_ref._canonical import signing_input
from llmproto_ref._clock import now_ms
from llmproto_ref._encryption import check_algorithm, decrypt
from llmproto_ref._envelope import Envelope
from llmproto_ref._errors import EnvelopeError
from llmproto_ref._ids import parse_timestamp_ms
from llmproto_ref._keys import SIGNATURE_ALGORITHMS, Key, KeyResolver, b64url_decode, b64url_encode
from llmproto_ref._limits import DEFAULT_LIMITS, Limits
from llmproto_ref._registry import ErrorCode
from llmproto_ref._replay import NonceCache, Refusal, ReplayCache
from llmproto_ref._security_error import SecurityError
from llmproto_ref._signing import signature_valid

__all__ = ("DEFAULT_CLOCK_SKEW_MS", "DEFAULT_MAX_LIFETIME_MS", "SecurityPolicy", "Verified")

#: The clock-skew allowance unless configured otherwise: 60 s [SEC-020].
DEFAULT_CLOCK_SKEW_MS = 60_000
#: The longest signature lifetime (``expires`` - ``created``) accepted by default: 300 s.
DEFAULT_MAX_LIFETIME_MS = 300_000

_UNAUTHENTICATED = ErrorCode.UNAUTHENTICATED
_SIGNATURE_INVALID = ErrorCode.SIGNATURE_INVALID
_REPLAY = ErrorCode.REPLAY_REJECTED
_DENIED = ErrorCode.PERMISSION_DENIED


@dataclass(frozen=True, slots=True, kw_only=True)
class Verified:
    """What :meth:`SecurityPolicy.check` established about a received message.

    :param envelope: the message as the application may see it: ``auth`` removed [SEC-032],
        the payload decrypted (then without ``enc`` and ``sig``).
    :param signer: the key whose signature verified, or ``None`` for an unsigned message.
    :param token: the bearer token's claims, or ``None`` when no token was checked.
    :param principal: the principal the binding authenticated, as passed to ``check``.
    """

    envelope: Envelope
    signer: Key | None
    token: TokenClaims | None
    principal: str | None


@dataclass(frozen=True, kw_only=True)
class SecurityPolicy:
    """Which messages a receiver accepts; pass it to the runtime (``Service(..., security=)``).

    :param keys: signature verification keys; ``None`` checks no signature.
    :param require_signature: reject unsigned messages [SEC-018].
    :param accepted_kids: the kids accepted among those ``keys`` knows; ``None`` accepts all.
    :param algorithms: the ``sig.alg`` allow-list, a subset of ``EdDSA`` and ``HS256`` [SEC-012].
    :param clock_skew_ms: the allowance for clocks that differ, on every time check [SEC-020].
    :param max_lifetime_ms: the longest ``expires`` - ``created`` accepted [SEC-020].
    :param nonce_cache: the replay cache; share one between a service's instances [SEC-024].
    :param nonce_cache_size: its bound, when the policy makes its own [SEC-022].
    :param bearer: how bearer tokens are checked, and the scopes per operation; ``None``
        checks none.
    :param principals: binding principal -> the ``source`` values it may use; a principal not
        listed may use only its own name; ``None``: each principal only its own name [SEC-026].
    :param decryption_keys: content encryption keys; with them the receiver understands ``enc``.
    :param limits: the size limit of step 1 (the decoder's ``limits``).
    :param clock: milliseconds since the Unix epoch (injectable for tests and vectors).
    :raises ValueError: for an algorithm outside the allow-list of version 1.0, or a negative
        or out-of-range time setting.
    """

    keys: KeyResolver | None = None
    require_signature: bool = False
    accepted_kids: frozenset[str] | None = None
    algorithms: frozenset[str] = SIGNATURE_ALGORITHMS
    clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS
    max_lifetime_ms: int = DEFAULT_MAX_LIFETIME_MS
    nonce_cache: ReplayCache | None = None
    nonce_cache_size: int = 100_000
    bearer: BearerPolicy | None = None
    principals: Mapping[str, frozenset[str]] | None = None
    decryption_keys: KeyResolver | None = None
    limits: Limits = DEFAULT_LIMITS
    clock: Callable[[], int] = field(default=now_ms, repr=False)

    def __post_init__(self) -> None:
        if not self.algorithms <= SIGNATURE_ALGORITHMS:  # never none [SEC-007]
            unknown = ", ".join(sorted(self.algorithms - SIGNATURE_ALGORITHMS))
            raise ValueError(f"signature algorithms outside EdDSA and HS256: {unknown}")
        if not 0 <= self.clock_skew_ms <= 600_000:
            raise ValueError("clock_skew_ms must lie in 0..600000")
        if not 1_000 <= self.max_lifetime_ms <= 86_400_000:
            raise ValueError("max_lifetime_ms must lie in 1000..86400000")
        if self.require_signature and self.keys is None:
            raise ValueError("require_signature needs keys to verify signatures with")
        if self.nonce_cache is None:
            object.__setattr__(self, "nonce_cache", NonceCache(self.nonce_cache_size))

    @property
    def understood(self) -> frozenset[str]:
        """The critical extensions this policy handles: ``enc`` when it has decryption keys."""
        return frozenset({"enc"}) if self.decryption_keys is not None else frozenset()

    def check(
        self,
        envelope: Envelope,
        raw_size: int,
        *,
        principal: str | None = None,
        redelivery: bool = False,
    ) -> Verified:
        """Run the security steps on one decoded message; raise at the first that fails.

        :param envelope: the message, as ``decode`` returned it.
        :param raw_size: the size in bytes of the body it was decoded from.
        :param principal: the sender the binding authenticated (a NATS user, a RabbitMQ
            validated user-id), when it knows one [SEC-026].
        :param redelivery: the binding marks this delivery as a redelivery of a queued job
            [SEC-023].
        :raises SecurityError: with the code, pointer and requirement of the failed step.
        """
        if raw_size > self.limits.max_envelope_bytes:
            raise SecurityError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"envelope is {raw_size} bytes, the limit is {self.limits.max_envelope_bytes}",
                requirement="ENV-006",
            )
        members = envelope.members
        now = self.clock()
        signer: Key | None = None
        sig = members.get("sig")
        if sig is None:
            if self.require_signature:
                raise _fail(_UNAUTHENTICATED, "/sig", "SEC-018", "the message is not signed")
        elif self.keys is not None:
            signer = self._verify(members, sig, now, redelivery)
        source = members["source"]
        if signer is not None and signer.sources is not None and source not in signer.sources:
            raise _fail(
                _DENIED, "/source", "SEC-025", f"key {signer.kid!r} does not sign for {source!r}"
            )
        if principal is not None and source not in self._sources_of(principal):
            raise _fail(
                _DENIED,
                "/source",
                "SEC-026",
                f"the connection's principal may not send as {source!r}",
            )
        token = self._authorize(members, now)
        return Verified(
            envelope=self._view(envelope),
            signer=signer,
            token=token,
            principal=principal,
        )

    # -- steps 5 to 9 ------------------------------------------------------------------

    def _verify(self, members: Mapping[str, Any], sig: Any, now: int, redelivery: bool) -> Key:
        alg, kid = sig["alg"], sig["kid"]
        if alg.lower() == "none":
            raise _fail(_SIGNATURE_INVALID, "/sig/alg", "SEC-007", "sig.alg none is never accepted")
        if alg not in self.algorithms:
            accepted = ", ".join(sorted(self.algorithms))
            raise _fail(
                _SIGNATURE_INVALID,
                "/sig/alg",
                "SEC-012",
                f"sig.alg {alg!r} is not one of {accepted}",
            )
        key = None
        if self.accepted_kids is None or kid in self.accepted_kids:
            assert self.keys is not None  # noqa: S101 - the caller checked
            key = self.keys.resolve(kid)
        if key is None:
            raise _fail(
                _UNAUTHENTICATED,
                "/sig/kid",
                "SEC-014",
                f"sig.kid {kid!r} is not a key of this receiver",
            )
        if key.alg != alg:
            raise _fail(
                _SIGNATURE_INVALID,
                "/sig/alg",
                "SEC-013",
                f"key {kid!r} serves {key.alg}, not {alg}",
            )
        if alg == "HS256" and members["kind"] == "event":
            raise _fail(
                _SIGNATURE_INVALID, "/sig/alg", "SEC-015", "an event is never signed with HS256"
            )
        try:
            message = signing_input(members)
        except EnvelopeError as exc:
            raise _fail(_SIGNATURE_INVALID, exc.pointer, "SEC-008", exc.message) from None
        if not signature_valid(key, _signature_bytes(sig["value"]), message):
            raise _fail(
                _SIGNATURE_INVALID,
                "/sig/value",
                "SEC-016",
                f"the signature does not verify with key {kid!r}",
            )
        created, expires = parse_timestamp_ms(sig["created"]), parse_timestamp_ms(sig["expires"])
        skew = self.clock_skew_ms
        if created - skew > now:
            raise _fail(_REPLAY, "/sig/created", "SEC-020", "sig.created lies in the future")
        if expires <= created:
            raise _fail(_REPLAY, "/sig/expires", "SEC-020", "sig.expires is not after sig.created")
        if expires - created > self.max_lifetime_ms:
            raise _fail(
                _REPLAY,
                "/sig/expires",
                "SEC-020",
                f"the signature is valid for longer than {self.max_lifetime_ms} ms",
            )
        if expires + skew < now:
            raise _fail(_REPLAY, "/sig/expires", "SEC-020", "the signature has expired")
        assert self.nonce_cache is not None  # noqa: S101 - set by __post_init__
        refusal = self.nonce_cache.admit(
            kid, sig["nonce"], expires + skew, now, redelivery=redelivery
        )
        if refusal is Refusal.REPLAYED:
            raise _fail(_REPLAY, "/sig/nonce", "SEC-021", "the nonce was used before: a replay")
        if refusal is not None:
            raise _fail(
                _REPLAY,
                "/sig/nonce",
                "SEC-022",
                "the nonce cache is full and no longer covers signatures expiring this early",
            )
        return key

    # -- steps 10 to 13 ----------------------------------------------------------------

    def _sources_of(self, principal: str) -> frozenset[str]:
        if self.principals is not None and principal in self.principals:
            return frozenset(self.principals[principal])
        return frozenset({principal})

    def _authorize(self, members: Mapping[str, Any], now: int) -> TokenClaims | None:
        bearer = self.bearer
        if bearer is None or members["kind"] != "request":
            return None
        required = bearer.required_scopes(members["type"])
        auth = members.get("auth")
        if auth is None:
            if bearer.required or required:
                raise _fail(
                    _UNAUTHENTICATED, "/auth", "SEC-027", "the request carries no bearer token"
                )
            return None
        claims = bearer.verify(auth["token"], now_ms=now, leeway_ms=self.clock_skew_ms)
        missing = required - claims.scopes
        if missing:
            raise _fail(
                _DENIED,
                "/auth/token",
                "SEC-031",
                f"{members['type']} requires the scope {', '.join(sorted(missing))}",
            )
        return claims

    def _view(self, envelope: Envelope) -> Envelope:
        enc = envelope.enc
        if enc is not None:
            if self.decryption_keys is None:
                index = envelope.critical.index("enc")
                raise SecurityError(
                    ErrorCode.UNSUPPORTED_EXTENSION,
                    "this receiver cannot decrypt payloads",
                    pointer=f"/critical/{index}",
                    requirement="ENV-031",
                )
            check_algorithm(enc)
            key = self.decryption_keys.resolve(enc["kid"])
            if key is None:
                raise _fail(
                    _UNAUTHENTICATED,
                    "/enc/kid",
                    "SEC-038",
                    f"enc.kid {enc['kid']!r} names no content encryption key of this receiver",
                )
            envelope = decrypt(envelope, key, limits=self.limits)
        if envelope.has("auth"):
            envelope = envelope.replace(auth=None)  # nothing to pass on downstream [SEC-032]
        return envelope


def _signature_bytes(value: str) -> bytes:
    """``sig.value`` decoded; empty (so it fails) unless in the one canonical encoding [SEC-009]."""
    try:
        raw = b64url_decode(value)
    except ValueError:
        return b""
    return raw if b64url_encode(raw) == value else b""


def _fail(code: ErrorCode, pointer: str, requirement: str, message: str) -> SecurityError:
    return SecurityError(code, message, pointer=pointer, requirement=requirement)
