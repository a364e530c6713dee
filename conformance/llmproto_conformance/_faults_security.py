"""Faults of the secure testee: receivers that skip one security check, senders that leak.

Theory of operation
-------------------
Like every fault of :mod:`llmproto_conformance._faults`, these act on bytes, in the testee's
transport: the reference testee behind them is sound, so each fault makes it look as if one
check of the verification order (spec/security.md) were missing. The test keys are published,
so a fault can do what such a broken receiver would let through: where the receiver would
accept a message it should refuse, the fault signs the message again, correctly and now (with
the key its ``kid`` names, or the gateway's), or mends its token, and the sound testee then
accepts it. ``signature-unchecked`` re-signs a signature that does not verify;
``skips-nonce-cache`` re-signs a (kid, nonce) pair it saw before, with a new nonce; and so on.
Where the broken receiver would refuse what it should accept, the fault spoils the signature
value. The faults of what the testee sends strip the signatures of its replies, put the
caller's token into the request it relays downstream, or quote a token in an error message.

Only requests to the secure service's types are rewritten; the state a fault keeps (nonces
seen, tokens by request id) is bounded.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import OrderedDict
from typing import Any

import orjson

from llmproto_conformance._context import TESTEE_SECURE_TYPES
from llmproto_conformance._security_kit import (
    CLOCK_SKEW_MS,
    GATEWAY_KID,
    MAX_LIFETIME_MS,
    SCOPE,
    mint_token,
    published_key,
    secure_bearer,
    signed,
)
from llmproto_ref import EnvelopeError, Key, Kind, SecurityError, decode
from llmproto_ref._canonical import signing_input
from llmproto_ref._ids import parse_timestamp_ms
from llmproto_ref._signing import signature_valid

__all__ = ("SECURITY_FAULTS", "SecurityFaults")

#: The faults of the secure testee, by name, with what each breaks.
SECURITY_FAULTS: dict[str, str] = {
    "accepts-unsigned": "the secure service accepts requests without a signature",
    "signature-unchecked": "the secure service accepts signatures that do not verify",
    "skips-time-window": "the secure service accepts signatures outside their created/expires "
    "window",
    "skips-nonce-cache": "the secure service accepts the same signature twice",
    "alg-unchecked": "the secure service takes sig.alg none or ES256 as if it were allowed",
    "alg-from-message": "the secure service verifies an HS256 signature keyed with the named "
    "Ed25519 key",
    "any-kid": "the secure service accepts a signature by a key it does not hold",
    "received-bytes-signed": "the secure service verifies the received bytes, not the "
    "canonical form",
    "signing-input-with-value": "the secure service verifies over the envelope with sig.value, "
    "so no signature verifies",
    "sources-unchecked": "the secure service lets a key sign for sources it is not registered for",
    "token-optional": "the secure service accepts requests without a bearer token",
    "ignores-scopes": "the secure service grants every operation to any valid token",
    "token-unchecked": "the secure service accepts tokens with a wrong audience, issuer, expiry "
    "or algorithm",
    "forwards-tokens": "the secure service's downstream requests carry the caller's token",
    "unsigned-replies": "the secure service's replies are not signed",
    "leaks-secrets": "the secure service's error messages quote the caller's token",
}

_SECURE = frozenset(TESTEE_SECURE_TYPES.values())
_ALLOWED = frozenset({"EdDSA", "HS256"})
_REMEMBERED = 10_000

Members = dict[str, Any]


def _decoded(body: bytes) -> Members | None:
    try:
        return decode(body).to_dict()
    except EnvelopeError:
        return None


def _known(kid: Any) -> Key | None:
    try:
        return published_key(str(kid))
    except KeyError:
        return None


def _signer_of(members: Members) -> Key:
    """The published key the message's ``kid`` names, if it can sign; else the gateway's."""
    key = _known(members.get("sig", {}).get("kid"))
    if key is None or key.alg not in _ALLOWED:
        key = published_key(GATEWAY_KID)
    return key


def _verifies(members: Members) -> bool:
    """Whether the message's signature verifies with the published key its ``kid`` names."""
    sig = members.get("sig")
    key = _known(sig.get("kid")) if sig else None
    if sig is None or key is None or key.alg != sig["alg"]:
        return False
    value = sig["value"]
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return False
    try:
        return signature_valid(key, raw, signing_input(members))
    except EnvelopeError:
        return False


def _in_window(sig: Any, now_ms: int) -> bool:
    created, expires = parse_timestamp_ms(sig["created"]), parse_timestamp_ms(sig["expires"])
    return (
        created - CLOCK_SKEW_MS <= now_ms <= expires + CLOCK_SKEW_MS
        and created < expires <= created + MAX_LIFETIME_MS
    )


def _spoiled(members: Members) -> Members:
    """The message with one character of its signature value changed."""
    value = members["sig"]["value"]
    first = "B" if value[0] == "A" else "A"
    return {**members, "sig": {**members["sig"], "value": first + value[1:]}}


def _claims(token: str) -> Members:
    """A JWT's claims, unverified; empty when they cannot be read."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _remember(store: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    store[key] = value
    while len(store) > _REMEMBERED:
        store.popitem(last=False)


class SecurityFaults:
    """One security fault of the secure testee, with what it must remember.

    :param fault: a key of :data:`SECURITY_FAULTS`.
    """

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self._nonces: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._tokens: OrderedDict[str, str] = OrderedDict()  #: request id -> its token
        self._last_auth: Members | None = None  #: forwards-tokens: the latest caller's auth

    # -- what the testee receives ------------------------------------------------------------

    def received(self, body: bytes) -> bytes:
        """What the faulty secure service takes ``body`` for."""
        members = _decoded(body)
        if members is None or members["kind"] != Kind.REQUEST or members["type"] not in _SECURE:
            return body
        auth = members.get("auth")
        if auth is not None:
            self._last_auth = auth
            _remember(self._tokens, members["id"], auth["token"])
        if self.fault == "received-bytes-signed":
            return self._bytes_signed(body, members)
        changed = self._rewrite(members)
        return body if changed is None else orjson.dumps(changed)

    def _bytes_signed(self, body: bytes, members: Members) -> bytes:
        compact = orjson.dumps(orjson.loads(body))
        if "sig" not in members or compact == body:
            return body
        return orjson.dumps(_spoiled(members))  # other bytes than were signed: "no match"

    def _rewrite(self, members: Members) -> Members | None:
        """The message the sound testee should see instead, or ``None`` for no change."""
        fault, sig = self.fault, members.get("sig")
        if fault == "accepts-unsigned":
            return signed(members) if sig is None else None
        if fault in ("token-optional", "ignores-scopes", "token-unchecked"):
            return self._mend_token(members)
        if sig is None:
            return None
        if fault == "signing-input-with-value":
            return _spoiled(members)
        if fault == "signature-unchecked":
            return None if _verifies(members) else signed(members, key=_signer_of(members))
        if fault == "alg-unchecked":
            return None if sig["alg"] in _ALLOWED else signed(members, key=_signer_of(members))
        if fault == "alg-from-message":
            key = _known(sig["kid"])
            mistaken = sig["alg"] == "HS256" and key is not None and key.alg == "EdDSA"
            return signed(members, key=key) if mistaken else None
        if fault == "any-kid":
            return None if _known(sig["kid"]) is not None else signed(members)
        if not _verifies(members):
            return None
        return self._after_signature(members, sig)

    def _after_signature(self, members: Members, sig: Any) -> Members | None:
        """The faults of the steps after a signature that verified."""
        fault = self.fault
        if fault == "skips-time-window":
            now = time.time_ns() // 1_000_000
            return None if _in_window(sig, now) else signed(members, key=_signer_of(members))
        if fault == "skips-nonce-cache":
            pair = (sig["kid"], sig["nonce"])
            if pair in self._nonces:
                return signed(members, key=_signer_of(members))  # a new nonce: "never seen"
            _remember(self._nonces, pair, None)
            return None
        if fault == "sources-unchecked":
            key = _signer_of(members)
            if key.sources is None or members["source"] in key.sources:
                return None
            return signed({**members, "source": sorted(key.sources)[0]}, key=key)
        return None

    def _mend_token(self, members: Members) -> Members | None:
        """token-optional, ignores-scopes, token-unchecked: the token they would let pass."""
        auth = members.get("auth")
        if auth is None:
            if self.fault != "token-optional":
                return None
            return self._with_token(members, mint_token(scope=SCOPE))
        granted = _claims(auth["token"]).get("scope")
        scope = granted if isinstance(granted, str) else ""
        if self.fault == "ignores-scopes":
            if SCOPE in scope.split():
                return None
            return self._with_token(members, mint_token(scope=f"{scope} {SCOPE}".strip()))
        if self.fault != "token-unchecked":
            return None
        try:
            secure_bearer().verify(auth["token"], now_ms=time.time_ns() // 1_000_000,
                                   leeway_ms=CLOCK_SKEW_MS)  # fmt: skip
        except SecurityError:
            return self._with_token(members, mint_token(scope=scope))
        return None

    def _with_token(self, members: Members, token: str) -> Members:
        mended = {**members, "auth": {"scheme": "bearer", "token": token}}
        return signed(mended, key=_signer_of(members)) if "sig" in members else mended

    # -- what the testee sends ---------------------------------------------------------------

    def downstream(self, body: bytes) -> bytes:
        """forwards-tokens: a request the testee sends, with the latest caller's token."""
        if self.fault != "forwards-tokens" or self._last_auth is None:
            return body
        members = _decoded(body)
        if members is None or members["kind"] != Kind.REQUEST:
            return body
        forwarded = {**members, "auth": self._last_auth}
        if "sig" in members:
            forwarded = signed(forwarded, key=_signer_of(members))
        return orjson.dumps(forwarded)

    def reply(self, members: Members) -> Members:
        """A reply as the faulty secure service sends it."""
        if self.fault == "unsigned-replies":
            return {name: value for name, value in members.items() if name != "sig"}
        if self.fault != "leaks-secrets" or members["kind"] != Kind.ERROR:
            return members
        token = self._tokens.get(members.get("correlation_id") or "")
        if token is None:
            return members
        error = {**members["error"], "message": f"{members['error']['message']} (token {token})"}
        leaked = {**members, "error": error}
        return signed(leaked, key=_signer_of(members)) if "sig" in members else leaked
