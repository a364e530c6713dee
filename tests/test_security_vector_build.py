"""Builds the security vectors (conformance/llmproto_conformance/vectors/security/).

The vectors are made here, from the published test keys of spec/security.md, with libraries
other than the code under test: ``rfc8785`` for the signing input, PyNaCl for Ed25519, the
standard library for HMAC-SHA256 and ``cryptography`` for AES-256-GCM. Every signature, token
and ciphertext is deterministic (nonces and IVs are derived from the vector's id), so building
again gives the same bytes, and the test below keeps the files on disk equal to this builder.
Regenerate after a change with::

    python tests/test_security_vector_build.py

Each case names the outcome a receiver must produce; tests/test_security_vectors.py checks the
reference and an independent implementation against them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nacl.signing
import rfc8785
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "conformance/llmproto_conformance/vectors/security"
SCHEMA_ID = "https://llmproto.dev/schemas/1.0/security-vector.schema.json"

GATEWAY = "urn:example:keys:gateway-7:2026-05"
WORKER = "urn:example:keys:worker-3:2026-05"
ISSUER = "urn:example:keys:auth:2026-05"
PAIR = "urn:example:keys:gateway-7:worker-3:hmac"
CEK = "urn:example:keys:tenant-blue:cek-3"
SEEDS = {
    GATEWAY: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",  # RFC 8032 TEST 1
    WORKER: "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",  # RFC 8032 TEST 2
    ISSUER: "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",  # RFC 8032 TEST 3
}
SECRETS = {
    PAIR: hashlib.sha256(b"llmproto test key: hmac gateway-7 worker-3").digest(),
    CEK: hashlib.sha256(b"llmproto test key: a256gcm tenant-blue cek-3").digest(),
}
SOURCES = {
    GATEWAY: ["urn:example:gateway:7"],
    WORKER: ["urn:example:worker:3"],
    PAIR: ["urn:example:gateway:7", "urn:example:worker:3"],
}

T0 = 1_779_260_400_000  # 2026-05-20T07:00:00.000Z
NOW = T0 + 10_000
AUDIENCE = "urn:example:worker"
ISSUER_URL = "https://auth.example.com"
BEARER = {
    "audience": AUDIENCE,
    "issuers": [ISSUER_URL],
    "keys": [ISSUER],
    "scopes": {"llm.chat": ["llm.chat"]},
}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def ts(ms: int) -> str:
    """The envelope timestamp form of ``ms``."""
    import datetime

    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def public_key(kid: str) -> bytes:
    return bytes(nacl.signing.SigningKey(bytes.fromhex(SEEDS[kid])).verify_key)


def published_keys() -> dict[str, Any]:
    """The published test keys as a JWK set, private members included (test use only)."""
    keys: list[dict[str, Any]] = []
    for kid, seed in SEEDS.items():
        jwk: dict[str, Any] = {"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA"}
        jwk["use"] = "sig"
        jwk |= {"x": b64url(public_key(kid)), "d": b64url(bytes.fromhex(seed))}
        if kid in SOURCES:
            jwk["llmp_sources"] = SOURCES[kid]
        keys.append(jwk)
    keys.append(
        {"kty": "oct", "kid": PAIR, "alg": "HS256", "use": "sig", "k": b64url(SECRETS[PAIR])}
        | {"llmp_sources": SOURCES[PAIR]}
    )
    keys.append(
        {"kty": "oct", "kid": CEK, "alg": "A256GCM", "use": "enc", "k": b64url(SECRETS[CEK])}
    )
    return {"keys": keys}


def derived(purpose: str, name: str, size: int) -> bytes:
    """Deterministic "random" bytes for a vector: nonces and IVs differ per vector."""
    return hashlib.sha256(f"{purpose}:{name}".encode()).digest()[:size]


def canonical(members: dict[str, Any]) -> bytes:
    """The signing input: RFC 8785 of the envelope without sig.value (SEC-004)."""
    unsigned = copy.deepcopy(members)
    unsigned.get("sig", {}).pop("value", None)
    return rfc8785.dumps(unsigned)


def raw_signature(alg: str, kid: str, message: bytes) -> bytes:
    if alg == "EdDSA":
        return nacl.signing.SigningKey(bytes.fromhex(SEEDS[kid])).sign(message).signature
    return hmac.digest(SECRETS[kid], message, "sha256")


def sign(
    members: dict[str, Any],
    name: str,
    *,
    kid: str = GATEWAY,
    alg: str = "EdDSA",
    created: int = T0,
    lifetime: int = 300_000,
    nonce: str | None = None,
    with_kid: str | None = None,
) -> dict[str, Any]:
    """``members`` with a sig block; ``with_kid`` signs with another key than ``kid`` names."""
    signed = copy.deepcopy(members)
    signed.pop("sig", None)
    signed["sig"] = {
        "alg": alg,
        "kid": kid,
        "created": ts(created),
        "expires": ts(created + lifetime),
        "nonce": nonce or b64url(derived("nonce", name, 16)),
    }
    value = raw_signature(alg, with_kid or kid, canonical(signed))
    signed["sig"]["value"] = b64url(value)
    return signed


def request(**changes: Any) -> dict[str, Any]:
    """The base request: a chat request from gateway 7, every optional member of a request."""
    members: dict[str, Any] = {
        "llmp": "1.0",
        "id": "019e4520-6f80-7c11-9a2b-3c4d5e6f7081",
        "kind": "request",
        "type": "llm.chat",
        "source": "urn:example:gateway:7",
        "time": ts(T0),
        "reply_to": "_INBOX.Tn5Vb7Xc9Zr1Pq3.7",
        "deadline": ts(T0 + 30_000),
        "idempotency_key": "chat-20260520-0001",
        "content_type": "application/json",
        "trace": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        "timing": {"call": T0 * 1000 - 2000, "sent": T0 * 1000},
        "ext": {"acme.tenant": "blue"},
        "data": {
            "model": "small-chat-1",
            "messages": [{"role": "user", "content": "Will it rain in Lisbon tomorrow?"}],
            "max_tokens": 256,
            "temperature": 0.2,
        },
    }
    members.update(changes)
    return {k: v for k, v in members.items() if v is not None}


def event(**changes: Any) -> dict[str, Any]:
    members: dict[str, Any] = {
        "llmp": "1.0",
        "id": "019e4521-0a10-7d22-8b3c-4d5e6f708192",
        "kind": "event",
        "type": "model.loaded",
        "source": "urn:example:worker:3",
        "time": ts(T0),
        "data": {"model": "small-chat-1", "device": "gpu0", "load_ms": 8421},
    }
    members.update(changes)
    return members


def response(**changes: Any) -> dict[str, Any]:
    members: dict[str, Any] = {
        "llmp": "1.0",
        "id": "019e4520-7111-7a33-9c4d-5e6f70819203",
        "kind": "response",
        "type": "llm.chat",
        "source": "urn:example:worker:3",
        "time": ts(T0 + 900),
        "correlation_id": "019e4520-6f80-7c11-9a2b-3c4d5e6f7081",
        "finish_reason": "stop",
        "usage": {"input_tokens": 9, "output_tokens": 7},
        "data": {"message": {"role": "assistant", "content": "Light rain after 15:00."}},
    }
    members.update(changes)
    return members


def vector(
    id: str,
    description: str,
    requirement: str | list[str],
    envelope: dict[str, Any] | str,
    expect: dict[str, Any],
    *,
    receiver: dict[str, Any] | None = None,
    earlier: Sequence[dict[str, Any] | str] | None = None,
    signing_input: bool = True,
) -> dict[str, Any]:
    item: dict[str, Any] = {"id": id, "description": description, "requirement": requirement}
    item["input"] = _input(envelope)
    if earlier:
        item["earlier"] = [_input(e) for e in earlier]
    item["receiver"] = {"now": ts(NOW)} | (receiver or {})
    if signing_input:
        members = json.loads(envelope) if isinstance(envelope, str) else envelope
        if "sig" in members:
            item["signing_input"] = {"text": canonical(members).decode("utf-8")}
    item["expect"] = expect
    return item


def _input(envelope: dict[str, Any] | str) -> dict[str, Any]:
    return {"text": envelope} if isinstance(envelope, str) else {"json": envelope}


def valid(**extra: Any) -> dict[str, Any]:
    return {"valid": True, **extra}


def rejected(code: str, pointer: str) -> dict[str, Any]:
    return {"valid": False, "code": code, "pointer": pointer}


BAD_SIGNATURE = rejected("SIGNATURE_INVALID", "/sig/value")


def changed(members: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``members`` with the value at the JSON Pointer ``path`` replaced."""
    result = copy.deepcopy(members)
    *parents, last = path.strip("/").split("/")
    node: Any = result
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _REMOVE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return result


_REMOVE = object()


# -- signatures/ed25519.json ------------------------------------------------------------------

#: One change per covered member: (pointer, new value). Each keeps the envelope schema-valid.
TAMPERINGS: list[tuple[str, Any]] = [
    ("/llmp", "1.1"),
    ("/id", "019e4520-6f80-7c11-9a2b-3c4d5e6f7082"),
    ("/type", "llm.complete"),
    ("/source", "urn:example:gateway:8"),
    ("/time", ts(T0 + 1)),
    ("/reply_to", "_INBOX.Tn5Vb7Xc9Zr1Pq3.8"),
    ("/deadline", ts(T0 + 300_000)),
    ("/idempotency_key", "chat-20260520-0002"),
    ("/content_type", "application/json; charset=utf-8"),
    ("/trace/traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
    ("/timing/sent", T0 * 1000 + 1),
    ("/ext/acme.tenant", "red"),
    ("/data/messages/0/content", "Will it rain in Lisbon tomorrow!"),
    ("/data/temperature", 0.3),
    ("/data/max_tokens", 4096),
    ("/causation_id", "019e4500-0000-7000-8000-000000000001"),
    ("/deadline", _REMOVE),
    ("/data", _REMOVE),
    ("/sig/kid", WORKER),
    ("/sig/created", ts(T0 - 1000)),
    ("/sig/expires", ts(T0 + 299_000)),
    ("/sig/nonce", b64url(b"\x00" * 16)),
]


def _slug(pointer: str, value: Any) -> str:
    words = pointer.strip("/").replace("_", "-").replace(".", "-").replace("/", "-").lower()
    if value is _REMOVE:
        return f"removed-{words}"
    return f"changed-{words}" if pointer != "/causation-id" else "added"


def ed25519_file() -> dict[str, Any]:
    base = sign(request(), "ed25519-valid-request")
    cases = [
        vector(
            "ed25519-valid-request",
            "Signed with Ed25519 over the RFC 8785 form of all members but sig.value.",
            ["SEC-004", "SEC-005"],
            base,
            valid(),
        ),
        vector(
            "ed25519-valid-event",
            "An event signed by worker 3; events are signed with EdDSA.",
            ["SEC-005", "SEC-006"],
            sign(event(), "ed25519-valid-event", kid=WORKER),
            valid(),
        ),
        vector(
            "ed25519-valid-response",
            "A response signed by the worker that answers.",
            "SEC-005",
            sign(response(), "ed25519-valid-response", kid=WORKER),
            valid(),
        ),
        vector(
            "ed25519-reordered-and-indented",
            "The same signed request with its members in reverse order and indented: "
            "the signature covers the canonical form, not the bytes.",
            "SEC-004",
            json.dumps(dict(reversed(list(base.items()))), indent=3),
            valid(),
        ),
        vector(
            "ed25519-escaped-strings",
            "The request with characters written as escapes (\\u0069, \\/): same canonical form.",
            "SEC-004",
            json.dumps(base, separators=(",", ":"))
            .replace('"Will it rain', '"W\\u0069ll it rain')
            .replace('"llm.chat"', '"llm\\u002echat"')
            .replace("application/json", "application\\/json"),
            valid(),
        ),
        vector(
            "ed25519-number-spellings",
            "Numbers spelled differently (256.0, 2e-1, 1779260400000000.0) canonicalize as signed.",
            "SEC-004",
            json.dumps(base, separators=(",", ":"))
            .replace('"max_tokens":256', '"max_tokens":256.0')
            .replace('"temperature":0.2', '"temperature":2e-1')
            .replace(f'"sent":{T0 * 1000}', f'"sent":{T0 * 1000}.0'),
            valid(),
        ),
    ]
    for pointer, value in TAMPERINGS:
        slug = "ed25519-tampered-" + _slug(pointer, value).removeprefix("changed-")
        if pointer == "/causation_id":
            slug = "ed25519-tampered-added-causation-id"
        what = (
            "removed"
            if value is _REMOVE
            else ("added" if pointer == "/causation_id" else "changed")
        )
        cases.append(
            vector(
                slug,
                f"{pointer} {what} after signing: every member is covered.",
                ["SEC-004", "SEC-016"],
                changed(base, pointer, value),
                BAD_SIGNATURE,
            )
        )
    flipped = base64.urlsafe_b64decode(base["sig"]["value"] + "==")
    flipped = bytes([flipped[0] ^ 1]) + flipped[1:]
    cases += [
        vector(
            "ed25519-tampered-kind",
            "An event whose kind was changed to request after signing.",
            ["SEC-004", "SEC-016"],
            changed(sign(event(), "ed25519-tampered-kind", kid=WORKER), "/kind", "request"),
            BAD_SIGNATURE,
        ),
        vector(
            "ed25519-value-bit-flipped",
            "One bit of the signature flipped.",
            "SEC-016",
            changed(base, "/sig/value", b64url(flipped)),
            BAD_SIGNATURE,
        ),
        vector(
            "ed25519-value-truncated",
            "A signature one character short (63 bytes and a fraction).",
            "SEC-009",
            changed(base, "/sig/value", base["sig"]["value"][:-1]),
            BAD_SIGNATURE,
        ),
        vector(
            "ed25519-value-not-canonical-base64url",
            "The signature's last character carries non-zero unused bits: the same bytes, "
            "but not the one canonical encoding.",
            "SEC-009",
            changed(base, "/sig/value", _unused_bits_set(base["sig"]["value"])),
            BAD_SIGNATURE,
        ),
        vector(
            "ed25519-malleated-s",
            "The signature with L added to its S half: RFC 8032 requires S < L, so it is rejected.",
            "SEC-016",
            changed(base, "/sig/value", _malleated(base["sig"]["value"])),
            BAD_SIGNATURE,
        ),
        vector(
            "ed25519-signed-by-another-key",
            "Signed with worker 3's private key while kid names gateway 7's key.",
            "SEC-016",
            sign(request(), "ed25519-signed-by-another-key", with_kid=WORKER),
            BAD_SIGNATURE,
        ),
        vector(
            "ed25519-tampered-auth-token",
            "The bearer token replaced after signing: auth is covered like any member.",
            ["SEC-004", "SEC-016"],
            changed(
                sign(request(auth={"scheme": "bearer", "token": token("a")}), "tok-a"),
                "/auth/token",
                token("b"),
            ),
            BAD_SIGNATURE,
        ),
    ]
    cases += canonical_cases()
    return _file(
        "Ed25519 signatures over the canonical envelope: valid, re-serialized, and every covered "
        "member tampered with.",
        cases,
    )


def _unused_bits_set(value: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(value[-1])
    return value[:-1] + alphabet[last | 1]  # 86 characters: the last holds 2 unused bits


def _malleated(value: str) -> str:
    raw = base64.urlsafe_b64decode(value + "==")
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(raw[32:], "little") + order
    return b64url(raw[:32] + s.to_bytes(32, "little"))


def canonical_cases() -> list[dict[str, Any]]:
    """Payloads that exercise RFC 8785's number and ordering rules."""
    numbers = (
        '{"zero":0,"negzero":-0.0,"one":1.0,"hundred":1e2,"big":1e21,"below":1e20,'
        '"tiny":1e-7,"small":0.000001,"third":0.3333333333333333,"min":5e-324,'
        '"max":1.7976931348623157e308,"safe":9007199254740991,"negsafe":-9007199254740991,'
        '"long":1.2345678901234568e+20,"frac":1234567890123456.8}'
    )
    members = request(data=json.loads(numbers), id="019e4522-0000-7000-8000-000000000001")
    signed = sign(members, "ed25519-canonical-numbers")
    text = json.dumps(signed, separators=(",", ":"))
    text = text.replace(json.dumps(signed["data"], separators=(",", ":")), numbers)
    unicode_data = {
        "\ue000": "private use",
        "\U0001f600": "grinning face",
        "\u00e9": "e acute",
        "a": '\u0000\u0008\u0009\u000a\u000c\u000d\u001f\u007f\u2028\u2029"\\/',
        "Z": "\U0001f600\ufe0f",
        "\u20ac": [],
        "": {},
    }
    too_big = request(data={"count": 9007199254740992}, id="019e4522-0000-7000-8000-000000000003")
    too_big["sig"] = {
        "alg": "EdDSA",
        "kid": GATEWAY,
        "created": ts(T0),
        "expires": ts(T0 + 300_000),
        "nonce": b64url(derived("nonce", "ed25519-canonical-integer-too-large", 16)),
    }
    # What a receiver without the I-JSON check would sign: the integer's decimal digits.
    too_big["sig"]["value"] = b64url(
        raw_signature(
            "EdDSA", GATEWAY, json.dumps(too_big, sort_keys=True, separators=(",", ":")).encode()
        )
    )
    return [
        vector(
            "ed25519-canonical-numbers",
            "Numbers written as ECMAScript writes them: -0.0 as 0, 1.0 as 1, 1e21 as 1e+21, "
            "1e-7 as 1e-7, 0.000001 as 0.000001.",
            ["SEC-004", "SEC-008"],
            text,
            valid(),
        ),
        vector(
            "ed25519-canonical-member-order",
            "Member names sorted by UTF-16 code units: U+1F600 (a surrogate pair) before U+E000; "
            "escapes as RFC 8785 writes them.",
            ["SEC-004", "SEC-008"],
            sign(
                request(data=unicode_data, id="019e4522-0000-7000-8000-000000000002"),
                "ed25519-canonical-member-order",
            ),
            valid(),
        ),
        vector(
            "ed25519-canonical-integer-too-large",
            "A payload integer beyond 2^53-1 has no RFC 8785 form: the signature cannot be checked",
            "SEC-008",
            too_big,
            rejected("SIGNATURE_INVALID", "/data/count"),
            signing_input=False,
        ),
    ]


def token(variant: str = "valid", **claims: Any) -> str:
    """An EdDSA access token of the test issuer; ``claims`` override the defaults."""
    body: dict[str, Any] = {
        "iss": ISSUER_URL,
        "sub": "user:alice",
        "aud": AUDIENCE,
        "scope": "llm.chat",
        "iat": T0 // 1000 - 100,
        "exp": T0 // 1000 + 600,
        "jti": f"tok-{variant}",
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt_text({"alg": "EdDSA", "kid": ISSUER, "typ": "at+jwt"}, body)


def jwt_text(
    header: dict[str, Any], body: dict[str, Any], *, key: Callable[[bytes], bytes] | None = None
) -> str:
    def part(obj: dict[str, Any]) -> str:
        return b64url(json.dumps(obj, separators=(",", ":")).encode())

    signing = f"{part(header)}.{part(body)}".encode()
    if key is None:
        signature = nacl.signing.SigningKey(bytes.fromhex(SEEDS[ISSUER])).sign(signing).signature
    else:
        signature = key(signing)
    return f"{signing.decode()}.{b64url(signature)}"


def _file(description: str, cases: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "$schema": SCHEMA_ID,
        "description": description,
        "test_keys": published_keys(),
        "vectors": cases,
    }


# -- signatures/algorithms.json ---------------------------------------------------------------


def _with_sig(members: dict[str, Any], name: str, **sig: Any) -> dict[str, Any]:
    """A sig block written by hand (for algorithms nobody may sign with)."""
    result = copy.deepcopy(members)
    result["sig"] = {
        "alg": "EdDSA",
        "kid": GATEWAY,
        "created": ts(T0),
        "expires": ts(T0 + 300_000),
        "nonce": b64url(derived("nonce", name, 16)),
        "value": b64url(derived("value", name, 32) * 2),
    } | sig
    return result


def _hmac_with(secret: bytes, members: dict[str, Any], name: str, kid: str) -> dict[str, Any]:
    """An HS256 signature computed with ``secret``, whatever key ``kid`` names."""
    signed = _with_sig(members, name, alg="HS256", kid=kid)
    signed["sig"]["value"] = b64url(hmac.digest(secret, canonical(signed), "sha256"))
    return signed


def algorithms_file() -> dict[str, Any]:
    pair_request = sign(request(), "hs256-valid-request", kid=PAIR, alg="HS256")
    cases = [
        vector(
            "hs256-valid-request",
            "A request signed with the HMAC key gateway 7 shares with worker 3 (point to point).",
            ["SEC-004", "SEC-011"],
            pair_request,
            valid(),
        ),
        vector(
            "hs256-valid-response",
            "Worker 3's response, signed with the same pairwise key.",
            "SEC-011",
            sign(response(), "hs256-valid-response", kid=PAIR, alg="HS256"),
            valid(),
        ),
        vector(
            "hs256-tampered-data",
            "An HS256-signed request whose payload changed after signing.",
            "SEC-016",
            changed(pair_request, "/data/max_tokens", 1),
            BAD_SIGNATURE,
        ),
        vector(
            "hs256-wrong-secret",
            "An HS256 signature made with another secret than the one kid names.",
            "SEC-016",
            _hmac_with(b"\x07" * 32, request(), "hs256-wrong-secret", PAIR),
            BAD_SIGNATURE,
        ),
        vector(
            "hs256-event",
            "An event signed with HS256: every subscriber could forge it, so it is refused.",
            ["SEC-006", "SEC-015"],
            sign(event(), "hs256-event", kid=PAIR, alg="HS256"),
            rejected("SIGNATURE_INVALID", "/sig/alg"),
        ),
        vector(
            "hmac-offered-for-ed25519-kid",
            "HS256 keyed with the Ed25519 public key of the kid (algorithm confusion).",
            "SEC-013",
            _hmac_with(public_key(GATEWAY), request(), "hmac-offered-for-ed25519-kid", GATEWAY),
            rejected("SIGNATURE_INVALID", "/sig/alg"),
        ),
        vector(
            "hmac-offered-for-ed25519-kid-jwk-text",
            "HS256 keyed with the text of the Ed25519 key's JWK x member.",
            "SEC-013",
            _hmac_with(b64url(public_key(GATEWAY)).encode(), request(), "hmac-jwk-text", GATEWAY),
            rejected("SIGNATURE_INVALID", "/sig/alg"),
        ),
        vector(
            "eddsa-offered-for-hmac-kid",
            "alg EdDSA with a kid that names an HS256 key.",
            "SEC-013",
            _with_sig(request(), "eddsa-offered-for-hmac-kid", kid=PAIR),
            rejected("SIGNATURE_INVALID", "/sig/alg"),
        ),
        vector(
            "eddsa-offered-for-encryption-kid",
            "alg EdDSA with a kid that names a content encryption key.",
            "SEC-013",
            _with_sig(request(), "eddsa-offered-for-encryption-kid", kid=CEK),
            rejected("SIGNATURE_INVALID", "/sig/alg"),
            receiver={"keys": [GATEWAY, CEK]},
        ),
        vector(
            "unknown-kid",
            "A kid the receiver has no key for.",
            "SEC-014",
            sign(
                request(), "unknown-kid", kid="urn:example:keys:gateway-7:2025-01", with_kid=GATEWAY
            ),
            rejected("UNAUTHENTICATED", "/sig/kid"),
        ),
        vector(
            "kid-not-accepted",
            "A valid signature by a key this receiver does not accept (worker 3's).",
            "SEC-014",
            sign(request(source="urn:example:worker:3"), "kid-not-accepted", kid=WORKER),
            rejected("UNAUTHENTICATED", "/sig/kid"),
            receiver={"keys": [GATEWAY, PAIR]},
        ),
        vector(
            "hs256-not-on-allow-list",
            "A valid HS256 signature at a receiver that accepts EdDSA only.",
            "SEC-012",
            pair_request,
            rejected("SIGNATURE_INVALID", "/sig/alg"),
            receiver={"algorithms": ["EdDSA"]},
        ),
    ]
    for alg, case in (("none", "lower"), ("NONE", "upper"), ("None", "title")):
        cases.append(
            vector(
                f"alg-none-{case}",
                f"sig.alg {alg}: an unsigned message claiming to be signed.",
                "SEC-007",
                _with_sig(request(), f"alg-{alg}", alg=alg),
                rejected("SIGNATURE_INVALID", "/sig/alg"),
            )
        )
    for alg in ("RS256", "HS512", "ES256", "Ed25519"):
        cases.append(
            vector(
                f"alg-{alg.lower()}-not-allowed",
                f"sig.alg {alg} is not an algorithm of version 1.0.",
                "SEC-012",
                _with_sig(request(), f"alg-{alg}", alg=alg),
                rejected("SIGNATURE_INVALID", "/sig/alg"),
            )
        )
    return _file(
        "Signature algorithms and keys: the allow-list, never none, a key serves one algorithm, "
        "HS256 only point to point, unknown kids.",
        cases,
    )


# -- signatures/replay.json -------------------------------------------------------------------


def replay_file() -> dict[str, Any]:
    skew = 60_000
    base = sign(request(), "replay-base")
    other = sign(
        request(id="019e4520-6f80-7c11-9a2b-3c4d5e6f7099"),
        "replay-other",
        nonce=base["sig"]["nonce"],
    )
    by_worker = sign(
        request(source="urn:example:worker:3"),
        "replay-worker",
        kid=WORKER,
        nonce=base["sig"]["nonce"],
    )
    cache: list[dict[str, Any]] = [
        sign(
            request(id=f"019e4523-0000-7000-8000-00000000000{i}"),
            f"cache-{i}",
            lifetime=200_000 + i * 1000,
        )
        for i in range(4)
    ]
    return _file(
        "Replay protection: the created/expires window with the clock-skew allowance, and the "
        "nonce cache.",
        [
            vector(
                "expired",
                "now is one millisecond past expires plus the 60 s allowance.",
                "SEC-020",
                base,
                rejected("REPLAY_REJECTED", "/sig/expires"),
                receiver={"now": ts(T0 + 300_000 + skew + 1)},
            ),
            vector(
                "expired-within-allowance",
                "now is exactly expires plus the allowance: still accepted.",
                "SEC-020",
                base,
                valid(),
                receiver={"now": ts(T0 + 300_000 + skew)},
            ),
            vector(
                "from-the-future",
                "created lies one millisecond more than the allowance in the future.",
                "SEC-020",
                base,
                rejected("REPLAY_REJECTED", "/sig/created"),
                receiver={"now": ts(T0 - skew - 1)},
            ),
            vector(
                "from-the-future-within-allowance",
                "created lies exactly the allowance in the future: accepted (clocks differ).",
                "SEC-020",
                base,
                valid(),
                receiver={"now": ts(T0 - skew)},
            ),
            vector(
                "expires-equals-created",
                "A window of no length.",
                "SEC-020",
                sign(request(), "expires-equals-created", lifetime=0),
                rejected("REPLAY_REJECTED", "/sig/expires"),
            ),
            vector(
                "expires-before-created",
                "expires one second before created.",
                "SEC-020",
                sign(request(), "expires-before-created", lifetime=-1000),
                rejected("REPLAY_REJECTED", "/sig/expires"),
            ),
            vector(
                "lifetime-too-long",
                "A lifetime one millisecond longer than the receiver's 300 s.",
                "SEC-020",
                sign(request(), "lifetime-too-long", lifetime=300_001),
                rejected("REPLAY_REJECTED", "/sig/expires"),
            ),
            vector(
                "long-lifetime-accepted-when-configured",
                "A job signed for an hour, at a worker configured to accept that.",
                "SEC-020",
                sign(request(), "long-lifetime", lifetime=3_600_000),
                valid(),
                receiver={"max_lifetime_ms": 3_600_000, "now": ts(T0 + 3_000_000)},
            ),
            vector(
                "replayed",
                "The same signed message a second time.",
                "SEC-021",
                base,
                rejected("REPLAY_REJECTED", "/sig/nonce"),
                earlier=[base],
            ),
            vector(
                "replayed-re-serialized",
                "The same signed message again, re-encoded with other member order and whitespace.",
                "SEC-021",
                json.dumps(dict(sorted(base.items())), indent=1),
                rejected("REPLAY_REJECTED", "/sig/nonce"),
                earlier=[base],
            ),
            vector(
                "nonce-reused-by-signer",
                "Another validly signed message that reuses the nonce with the same key.",
                ["SEC-010", "SEC-021"],
                other,
                rejected("REPLAY_REJECTED", "/sig/nonce"),
                earlier=[base],
            ),
            vector(
                "same-nonce-other-kid",
                "The nonce is remembered per key: the same nonce under another kid is new.",
                "SEC-021",
                by_worker,
                valid(),
                earlier=[base],
            ),
            vector(
                "redelivered-job",
                "A delivery the binding marks as a redelivery of a job may repeat its nonce.",
                "SEC-023",
                base,
                valid(),
                earlier=[base],
                receiver={"redelivery": True},
            ),
            vector(
                "cache-full-forgotten-replay",
                "A cache of two: after three messages the earliest-expiring pair was forgotten, "
                "and its replay is refused by the raised floor.",
                "SEC-022",
                cache[0],
                rejected("REPLAY_REJECTED", "/sig/nonce"),
                earlier=cache[:3],
                receiver={"nonce_cache_size": 2},
            ),
            vector(
                "cache-full-unseen-below-floor",
                "A cache of two after three messages: a new signature expiring before the "
                "forgotten one is refused, since the cache can no longer tell.",
                "SEC-022",
                sign(
                    request(id="019e4523-0000-7000-8000-000000000009"),
                    "cache-below",
                    lifetime=100_000,
                ),
                rejected("REPLAY_REJECTED", "/sig/nonce"),
                earlier=cache[:3],
                receiver={"nonce_cache_size": 2},
            ),
            vector(
                "cache-full-later-accepted",
                "A cache of two after three messages: a new signature expiring later is accepted.",
                "SEC-022",
                cache[3],
                valid(),
                earlier=cache[:3],
                receiver={"nonce_cache_size": 2},
            ),
            vector(
                "cache-full-remembered-replay",
                "A cache of two after three messages: the replay of a pair still held is refused.",
                "SEC-021",
                cache[2],
                rejected("REPLAY_REJECTED", "/sig/nonce"),
                earlier=cache[:3],
                receiver={"nonce_cache_size": 2},
            ),
        ],
    )


# -- signatures/principals.json ---------------------------------------------------------------


def principals_file() -> dict[str, Any]:
    unsigned = request()
    return _file(
        "Who may send as a source: keys registered for sources, the binding's principal, and "
        "receivers that require signatures.",
        [
            vector(
                "source-not-registered-for-key",
                "Gateway 7's key signs a message claiming source urn:example:gateway:8.",
                "SEC-025",
                sign(request(source="urn:example:gateway:8"), "source-not-registered"),
                rejected("PERMISSION_DENIED", "/source"),
            ),
            vector(
                "source-registered-for-pairwise-key",
                "The pairwise HMAC key is registered for both of its participants.",
                "SEC-025",
                sign(request(source="urn:example:worker:3"), "pair-source", kid=PAIR, alg="HS256"),
                valid(),
            ),
            vector(
                "principal-may-use-source",
                "The binding authenticated gateway-7, which may send as urn:example:gateway:7.",
                "SEC-026",
                sign(request(), "principal-ok"),
                valid(),
                receiver={
                    "principal": "gateway-7",
                    "principals": {"gateway-7": ["urn:example:gateway:7"]},
                },
            ),
            vector(
                "principal-may-not-use-source",
                "The binding authenticated gateway-8, which may not send as urn:example:gateway:7.",
                "SEC-026",
                sign(request(), "principal-bad"),
                rejected("PERMISSION_DENIED", "/source"),
                receiver={
                    "principal": "gateway-8",
                    "principals": {"gateway-7": ["urn:example:gateway:7"]},
                },
            ),
            vector(
                "principal-is-its-own-source",
                "Without a mapping a principal may use its own name as source.",
                "SEC-026",
                unsigned,
                valid(),
                receiver={"principal": "urn:example:gateway:7"},
            ),
            vector(
                "principal-unsigned-mismatch",
                "The principal check needs no signature: an unsigned message from another one.",
                "SEC-026",
                unsigned,
                rejected("PERMISSION_DENIED", "/source"),
                receiver={"principal": "urn:example:worker:3"},
            ),
            vector(
                "signature-required-absent",
                "An unsigned message at a receiver that requires signatures.",
                "SEC-018",
                unsigned,
                rejected("UNAUTHENTICATED", "/sig"),
                receiver={"require_signature": True},
            ),
            vector(
                "signature-not-required-absent",
                "An unsigned message where signatures are verified but not required.",
                "SEC-018",
                unsigned,
                valid(),
            ),
            vector(
                "signature-not-required-but-invalid",
                "A bad signature is rejected even where signatures are optional.",
                "SEC-019",
                changed(sign(request(), "optional-bad"), "/data/max_tokens", 1),
                BAD_SIGNATURE,
            ),
        ],
    )


# -- tokens/jwt.json --------------------------------------------------------------------------


def _carrying(jwt: str, **changes: Any) -> dict[str, Any]:
    return request(auth={"scheme": "bearer", "token": jwt}, **changes)


def tokens_file() -> dict[str, Any]:
    bearer = {"bearer": BEARER}
    optional = {"bearer": BEARER | {"required": False}}
    hs256_header = {"alg": "HS256", "kid": ISSUER, "typ": "at+jwt"}
    claims = json.loads(base64.urlsafe_b64decode(token().split(".")[1] + "=="))
    confused = jwt_text(
        hs256_header, claims, key=lambda m: hmac.digest(public_key(ISSUER), m, "sha256")
    )
    good = token()
    header, _, signature = good.split(".")
    widened = b64url(
        json.dumps(claims | {"scope": "llm.chat admin"}, separators=(",", ":")).encode()
    )
    unsigned = jwt_text({"alg": "none", "kid": ISSUER, "typ": "at+jwt"}, claims, key=lambda m: b"")
    by_gateway = jwt_text(
        {"alg": "EdDSA", "kid": GATEWAY, "typ": "at+jwt"},
        claims,
        key=lambda m: nacl.signing.SigningKey(bytes.fromhex(SEEDS[GATEWAY])).sign(m).signature,
    )
    with_crit = jwt_text({"alg": "EdDSA", "kid": ISSUER, "crit": ["exp"], "exp": 1}, claims)
    cases = [
        vector(
            "token-valid",
            "A token of the trusted issuer, for this audience, with the scope.",
            ["SEC-028", "SEC-029", "SEC-030", "SEC-031"],
            _carrying(good),
            valid(),
            receiver=bearer,
        ),
        vector(
            "token-valid-signed-envelope",
            "A signed request carrying a valid token.",
            ["SEC-004", "SEC-028"],
            sign(_carrying(good), "token-signed"),
            valid(),
            receiver=bearer,
        ),
        vector(
            "token-missing",
            "A request without auth at a service that requires tokens.",
            "SEC-027",
            request(),
            rejected("UNAUTHENTICATED", "/auth"),
            receiver=bearer,
        ),
        vector(
            "token-missing-scope-required",
            "Tokens optional, but llm.chat requires a scope.",
            "SEC-027",
            request(),
            rejected("UNAUTHENTICATED", "/auth"),
            receiver=optional,
        ),
        vector(
            "token-missing-optional",
            "Tokens optional and the type requires no scope.",
            "SEC-027",
            request(type="llm.embed"),
            valid(),
            receiver=optional,
        ),
        vector(
            "token-wrong-audience",
            "A token issued for another service.",
            "SEC-029",
            _carrying(token("aud", aud="urn:example:other")),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-audience-list",
            "aud as an array that names this service.",
            "SEC-029",
            _carrying(token("auds", aud=["urn:example:other", AUDIENCE])),
            valid(),
            receiver=bearer,
        ),
        vector(
            "token-wrong-issuer",
            "A token from an issuer the service does not trust.",
            "SEC-029",
            _carrying(token("iss", iss="https://evil.example.com")),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-expired",
            "exp lies 61 s in the past, beyond the 60 s allowance.",
            "SEC-030",
            _carrying(token("exp", exp=NOW // 1000 - 61)),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-expired-within-allowance",
            "exp lies 60 s in the past: within the allowance.",
            "SEC-030",
            _carrying(token("exp60", exp=NOW // 1000 - 60)),
            valid(),
            receiver=bearer,
        ),
        vector(
            "token-without-exp",
            "A token that never expires is refused.",
            "SEC-030",
            _carrying(token("noexp", exp=None)),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-not-yet-valid",
            "nbf lies 61 s in the future.",
            "SEC-030",
            _carrying(token("nbf", nbf=NOW // 1000 + 61)),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-missing-scope",
            "The token lacks the scope llm.chat requires.",
            "SEC-031",
            _carrying(token("scope", scope="llm.embed")),
            rejected("PERMISSION_DENIED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-several-scopes",
            "scope is space-separated; one of them is the one required.",
            "SEC-031",
            _carrying(token("scopes", scope="llm.embed llm.chat tools.run")),
            valid(),
            receiver=bearer,
        ),
        vector(
            "token-alg-none",
            "An unsigned token (alg none).",
            "SEC-028",
            _carrying(unsigned),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-hs256-with-public-key",
            "HS256 keyed with the issuer's Ed25519 public key.",
            "SEC-028",
            _carrying(confused),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-hs256-with-public-key-allowed-alg",
            "The same confused token at a service that lists HS256: the key still serves EdDSA.",
            "SEC-028",
            _carrying(confused),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver={"bearer": BEARER | {"algorithms": ["EdDSA", "HS256"]}},
        ),
        vector(
            "token-unknown-kid",
            "A token signed by a key the service does not know.",
            "SEC-028",
            _carrying(by_gateway),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-scope-widened",
            "The claims were changed after the issuer signed them.",
            "SEC-028",
            _carrying(f"{header}.{widened}.{signature}"),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-not-a-jwt",
            "A token that is not three base64url parts.",
            "SEC-028",
            _carrying("opaque-token-value"),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-critical-header",
            "A token header with crit, which the service does not implement.",
            "SEC-028",
            _carrying(with_crit),
            rejected("UNAUTHENTICATED", "/auth/token"),
            receiver=bearer,
        ),
        vector(
            "token-on-event-not-checked",
            "Tokens are checked on requests; an event's auth is not.",
            "SEC-027",
            event(auth={"scheme": "bearer", "token": "opaque-token-value"}),
            valid(),
            receiver=bearer,
        ),
    ]
    return _file(
        "Bearer tokens in auth: JWT access tokens checked for issuer, audience, expiry, "
        "algorithm and key, and the scopes each operation requires.",
        cases,
    )


# -- encryption/a256gcm.json ------------------------------------------------------------------


def associated(members: dict[str, Any]) -> bytes:
    return rfc8785.dumps({k: v for k, v in members.items() if k not in ("data_base64", "sig")})


def encrypted(
    members: dict[str, Any],
    name: str,
    *,
    plaintext: bytes | None = None,
    alg: str = "A256GCM",
    kid: str = CEK,
) -> dict[str, Any]:
    result = copy.deepcopy(members)
    if plaintext is None:
        if "data" in result:
            plaintext = json.dumps(
                result["data"], separators=(",", ":"), ensure_ascii=False
            ).encode()
        else:
            plaintext = base64.b64decode(result["data_base64"])
    result.pop("data", None)
    result.pop("data_base64", None)
    iv = derived("iv", name, 12)
    result["enc"] = {"alg": alg, "kid": kid, "iv": b64url(iv)}
    result["critical"] = [*result.get("critical", []), "enc"]
    sealed = AESGCM(SECRETS[CEK]).encrypt(iv, plaintext, associated(result))
    result["data_base64"] = base64.b64encode(sealed).decode("ascii")
    return result


def encryption_file() -> dict[str, Any]:
    decrypting = {"decryption_keys": [CEK]}
    chat = request()
    sealed = encrypted(chat, "enc-json")
    binary = request(
        content_type="text/plain; charset=utf-8",
        data=None,
        data_base64=base64.b64encode("Bonjour à tous".encode()).decode(),
    )
    sealed_text = encrypted(binary, "enc-text")
    sealed_bytes = base64.b64decode(sealed["data_base64"])
    flipped = base64.b64encode(bytes([sealed_bytes[0] ^ 0x80]) + sealed_bytes[1:]).decode()
    signed_sealed = sign(sealed, "enc-signed")
    signed_then_sealed = encrypted(sign(chat, "enc-wrong-order"), "enc-wrong-order")
    return _file(
        "Payload encryption with AES-256-GCM: the rest of the envelope as associated data, enc "
        "listed in critical.",
        [
            vector(
                "enc-valid-json",
                "A JSON payload encrypted; the receiver sees the payload again.",
                ["SEC-033", "SEC-035", "SEC-036"],
                sealed,
                valid(data=chat["data"]),
                receiver=decrypting,
            ),
            vector(
                "enc-valid-text",
                "A text payload encrypted; content_type describes the plaintext.",
                "SEC-035",
                sealed_text,
                valid(data_base64=binary["data_base64"]),
                receiver=decrypting,
            ),
            vector(
                "enc-then-signed",
                "Encrypted first, then signed: verified, then decrypted.",
                ["SEC-037", "SEC-004"],
                signed_sealed,
                valid(data=chat["data"]),
                receiver=decrypting,
            ),
            vector(
                "enc-not-understood",
                "A receiver without decryption keys does not understand enc.",
                "SEC-003",
                sealed,
                rejected("UNSUPPORTED_EXTENSION", "/critical/0"),
            ),
            vector(
                "enc-unknown-alg",
                "enc.alg A128GCM is not an algorithm of version 1.0.",
                "SEC-038",
                encrypted(chat, "enc-a128", alg="A128GCM"),
                rejected("UNSUPPORTED_EXTENSION", "/enc/alg"),
                receiver=decrypting,
            ),
            vector(
                "enc-unknown-kid",
                "enc.kid names no key of the receiver.",
                "SEC-038",
                encrypted(chat, "enc-kid", kid="urn:example:keys:tenant-red:cek-1"),
                rejected("UNAUTHENTICATED", "/enc/kid"),
                receiver=decrypting,
            ),
            vector(
                "enc-kid-of-signing-key",
                "enc.kid names the HMAC signing key, not an A256GCM key.",
                "SEC-038",
                encrypted(chat, "enc-hmac-kid", kid=PAIR),
                rejected("UNAUTHENTICATED", "/enc/kid"),
                receiver={"decryption_keys": [CEK, PAIR]},
            ),
            vector(
                "enc-header-tampered",
                "type changed after encryption: the associated data differs.",
                "SEC-036",
                changed(sealed, "/type", "llm.complete"),
                rejected("SIGNATURE_INVALID", "/data_base64"),
                receiver=decrypting,
            ),
            vector(
                "enc-source-tampered",
                "source changed after encryption.",
                "SEC-036",
                changed(sealed, "/source", "urn:example:gateway:8"),
                rejected("SIGNATURE_INVALID", "/data_base64"),
                receiver=decrypting,
            ),
            vector(
                "enc-ciphertext-tampered",
                "One bit of the ciphertext flipped.",
                "SEC-038",
                changed(sealed, "/data_base64", flipped),
                rejected("SIGNATURE_INVALID", "/data_base64"),
                receiver=decrypting,
            ),
            vector(
                "enc-iv-tampered",
                "enc.iv changed.",
                "SEC-038",
                changed(sealed, "/enc/iv", b64url(b"\x00" * 12)),
                rejected("SIGNATURE_INVALID", "/data_base64"),
                receiver=decrypting,
            ),
            vector(
                "enc-payload-not-strict-json",
                "The plaintext of a JSON payload repeats a member name.",
                "SEC-038",
                encrypted(chat, "enc-dup", plaintext=b'{"a":1,"a":2}'),
                rejected("INVALID_ENVELOPE", "/data_base64"),
                receiver=decrypting,
            ),
            vector(
                "enc-signed-then-tampered",
                "A signed encrypted request whose ciphertext changed: the signature fails first.",
                ["SEC-017", "SEC-037"],
                changed(signed_sealed, "/data_base64", flipped),
                BAD_SIGNATURE,
                receiver=decrypting,
            ),
            vector(
                "enc-signed-before-encrypting",
                "Signed, then encrypted: the signature covered the "
                "plaintext envelope and no longer verifies.",
                "SEC-037",
                signed_then_sealed,
                BAD_SIGNATURE,
                receiver=decrypting,
            ),
        ],
    )


# -- the files --------------------------------------------------------------------------------

FILES: dict[str, Callable[[], dict[str, Any]]] = {
    "signatures/ed25519.json": ed25519_file,
    "signatures/algorithms.json": algorithms_file,
    "signatures/replay.json": replay_file,
    "signatures/principals.json": principals_file,
    "tokens/jwt.json": tokens_file,
    "encryption/a256gcm.json": encryption_file,
}


def render(document: dict[str, Any]) -> str:
    """The file text: one line per member of each vector, as the envelope vectors are written."""

    def compact(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))

    lines = ["{", f'  "$schema": {compact(document["$schema"])},']
    lines.append(f'  "description": {compact(document["description"])},')
    lines.append('  "test_keys": {"keys": [')
    keys = document["test_keys"]["keys"]
    lines += [f"    {compact(k)}{',' if i < len(keys) - 1 else ''}" for i, k in enumerate(keys)]
    lines.append("  ]},")
    lines.append('  "vectors": [')
    for i, item in enumerate(document["vectors"]):
        lines.append("    {")
        names = list(item)
        for j, name in enumerate(names):
            comma = "," if j < len(names) - 1 else ""
            lines.append(f"      {compact(name)}: {compact(item[name])}{comma}")
        lines.append("    }" + ("," if i < len(document["vectors"]) - 1 else ""))
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def build() -> dict[str, str]:
    """Every vector file's path (relative to vectors/security/) and text."""
    return {name: render(make()) for name, make in FILES.items()}


def test_the_vector_files_are_up_to_date() -> None:
    """The files on disk are exactly what this builder makes (run it to regenerate)."""
    stale = [
        name
        for name, text in build().items()
        if not (VECTORS / name).is_file() or (VECTORS / name).read_text(encoding="utf-8") != text
    ]
    assert [] == stale, "run: python tests/test_security_vector_build.py"


def test_vector_ids_are_unique_and_well_formed() -> None:
    """Every id is lower-case words joined by hyphens and used once in all files."""
    ids = [v["id"] for make in FILES.values() for v in make()["vectors"]]
    assert len(ids) == len(set(ids))
    assert all(i.replace("-", "").isalnum() and i == i.lower() for i in ids)


if __name__ == "__main__":
    for name, text in build().items():
        path = VECTORS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
