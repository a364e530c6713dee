"""Signing: the Signer, the two Ed25519 backends, HMAC, and the key model (spec/security.md).

The vectors check what a receiver decides; these tests check what a sender produces
(SEC-004, SEC-006, SEC-010) and the pieces both sides rest on: Ed25519 as RFC 8032 defines it
on both backends [SEC-005], HMAC keys of at least 256 bits [SEC-011], one algorithm per key
[SEC-013, SEC-039], and keys read from JWK sets, also from a file that changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nacl.signing
import pytest
import rfc8785

from llmproto_ref import Envelope, LocalProtocolError, decode, encode
from llmproto_ref._ed25519 import BACKEND, available_backends
from llmproto_ref._keys import JwkSetFile, Key, KeySet, b64url_decode, b64url_encode
from llmproto_ref._policy import SecurityPolicy
from llmproto_ref._signing import Signer, sign_bytes, signature_valid

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
#: RFC 8032 section 7.1, TEST 1: the signature of the empty message.
EMPTY_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
T0 = 1_779_260_400_000
GATEWAY = Key.ed25519("urn:example:keys:gateway-7:2026-05", private=SEED)
PAIR = Key.hmac_sha256("urn:example:keys:pair", os.urandom(32))


def _request(**members: object) -> Envelope:
    return Envelope.new(
        kind="request", type="llm.chat", source="urn:example:gateway:7", reply_to="_INBOX.a",
        data={"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}, **members,
    )  # fmt: skip


# -- Ed25519 on both backends -----------------------------------------------------------------


@pytest.mark.parametrize("backend", available_backends(), ids=lambda b: b.name)
def test_each_backend_computes_rfc8032_ed25519(backend: object) -> None:
    """TEST 1 of RFC 8032: the public key and the signature of the empty message [SEC-005]."""
    assert PUBLIC == backend.public_key(SEED)  # type: ignore[attr-defined]
    assert EMPTY_SIGNATURE == backend.sign(SEED, b"")  # type: ignore[attr-defined]
    assert backend.verify(PUBLIC, EMPTY_SIGNATURE, b"")  # type: ignore[attr-defined]
    assert not backend.verify(PUBLIC, EMPTY_SIGNATURE, b"x")  # type: ignore[attr-defined]
    assert not backend.verify(b"\x00" * 32, EMPTY_SIGNATURE, b"")  # type: ignore[attr-defined]
    assert not backend.verify(PUBLIC[:31], EMPTY_SIGNATURE, b"")  # type: ignore[attr-defined]


def test_the_backends_agree() -> None:
    """libsodium and OpenSSL sign alike and accept each other's signatures."""
    backends = available_backends()
    message = os.urandom(500)
    signatures = {b.sign(SEED, message) for b in backends}
    assert 1 == len(signatures)
    [signature] = signatures
    assert all(b.verify(PUBLIC, signature, message) for b in backends)
    assert BACKEND.name in {b.name for b in backends}


def test_signature_valid_uses_the_keys_own_algorithm() -> None:
    """An HMAC over a message never passes for an Ed25519 key, nor a 64-byte value for HMAC."""
    message = b"signed bytes"
    assert signature_valid(GATEWAY, sign_bytes(GATEWAY, message), message)
    assert signature_valid(PAIR, sign_bytes(PAIR, message), message)
    hmac_with_public_key = sign_bytes(Key.hmac_sha256("k", GATEWAY.public), message)
    assert not signature_valid(GATEWAY, hmac_with_public_key, message)  # [SEC-013]
    assert not signature_valid(PAIR, sign_bytes(GATEWAY, message), message)
    encryption = Key.aes256gcm("c", bytes(32))
    assert not signature_valid(encryption, sign_bytes(PAIR, message), message)
    with pytest.raises(ValueError, match="cannot sign"):
        sign_bytes(GATEWAY.public_key(), message)
    with pytest.raises(ValueError, match="cannot sign"):
        sign_bytes(encryption, message)


# -- the Signer -------------------------------------------------------------------------------


def test_the_signer_covers_every_member_but_the_value() -> None:
    """The signature is over RFC 8785 of the envelope without sig.value [SEC-004]."""
    signed = Signer(GATEWAY, clock=lambda: T0).sign(_request())
    members = signed.to_dict()
    block = dict(members["sig"])
    value = b64url_decode(block.pop("value"))
    message = rfc8785.dumps({**members, "sig": block})
    nacl.signing.VerifyKey(PUBLIC).verify(message, value)  # an independent check
    assert 86 == len(signed.to_dict()["sig"]["value"])  # 64 bytes, base64url [SEC-009]


def test_the_signer_writes_created_expires_and_a_fresh_nonce() -> None:
    """created is now, expires now + lifetime, the nonce 128 random bits each time [SEC-010]."""
    signer = Signer(GATEWAY, lifetime_ms=120_000, clock=lambda: T0)
    envelope = _request()
    blocks = [signer.sign(envelope).sig for _ in range(200)]
    assert all(b is not None for b in blocks)
    assert {"2026-05-20T07:00:00.000Z"} == {b["created"] for b in blocks if b}
    assert {"2026-05-20T07:02:00.000Z"} == {b["expires"] for b in blocks if b}
    nonces = [b["nonce"] for b in blocks if b]
    assert len(set(nonces)) == len(nonces)
    assert all(len(b64url_decode(n)) == 16 for n in nonces)
    assert signer.kid == GATEWAY.kid


def test_signing_again_replaces_the_signature() -> None:
    """A second sign() replaces sig; the result verifies and decodes."""
    signer = Signer(GATEWAY, clock=lambda: T0)
    once = signer.sign(_request())
    twice = signer.sign(once)
    assert once.sig != twice.sig
    policy = SecurityPolicy(keys=KeySet([GATEWAY.public_key()]), clock=lambda: T0)
    raw = encode(twice)
    assert policy.check(decode(raw), len(raw)).signer == GATEWAY.public_key()


def test_hs256_never_signs_an_event() -> None:
    """An event reaches every subscriber; a shared secret would let each forge it [SEC-006]."""
    event = Envelope.new(kind="event", type="model.loaded", source="urn:example:worker:3")
    with pytest.raises(LocalProtocolError, match="HS256"):
        Signer(PAIR).sign(event)
    assert Signer(GATEWAY).sign(event).sig is not None
    assert Signer(PAIR).sign(_request()).sig["alg"] == "HS256"  # type: ignore[index]


def test_a_signer_needs_a_private_signing_key_and_a_sane_lifetime() -> None:
    """Public keys, encryption keys and lifetimes outside 1 s..1 h are refused at construction."""
    for key in (GATEWAY.public_key(), Key.aes256gcm("c", bytes(32))):
        with pytest.raises(ValueError, match="cannot sign"):
            Signer(key)
    for lifetime in (999, 3_600_001):
        with pytest.raises(ValueError, match="lifetime_ms"):
            Signer(GATEWAY, lifetime_ms=lifetime)


# -- keys -------------------------------------------------------------------------------------


def test_an_hs256_key_has_at_least_256_bits() -> None:
    """Shorter HMAC secrets are refused [SEC-011]; so are A256GCM keys not of 256 bits."""
    with pytest.raises(ValueError, match="at least 256 bits"):
        Key.hmac_sha256("k", bytes(31))
    Key.hmac_sha256("k", bytes(32))
    Key.hmac_sha256("k", bytes(64))
    for size in (16, 31, 33):
        with pytest.raises(ValueError, match="256 bits"):
            Key.aes256gcm("c", bytes(size))


def test_jwk_forms_and_the_one_algorithm_of_each_key() -> None:
    """OKP Ed25519 serves EdDSA; oct states HS256 or A256GCM; use must agree [SEC-039]."""
    okp = {"kty": "OKP", "crv": "Ed25519", "kid": "g", "x": b64url_encode(PUBLIC)}
    assert "EdDSA" == Key.from_jwk(okp).alg
    private = Key.from_jwk(okp | {"d": b64url_encode(SEED)})
    assert private.private
    assert private.public == PUBLIC
    with pytest.raises(ValueError, match=r"does not belong|32 bytes"):
        Key.from_jwk(okp | {"d": b64url_encode(bytes(32))})
    oct_key = {"kty": "oct", "kid": "s", "k": b64url_encode(bytes(32))}
    with pytest.raises(ValueError, match="must state alg"):
        Key.from_jwk(oct_key)
    assert "HS256" == Key.from_jwk(oct_key | {"alg": "HS256"}).alg
    assert "A256GCM" == Key.from_jwk(oct_key | {"alg": "A256GCM", "use": "enc"}).alg
    bad = [
        oct_key | {"alg": "A256GCM", "use": "sig"},
        oct_key | {"alg": "HS512"},
        okp | {"alg": "HS256"},
        okp | {"crv": "X25519"},
        okp | {"x": "not base64url!"},
        {"kty": "oct", "k": "AAAA", "alg": "HS256"},
        {"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"},
        {"kty": "foo", "kid": "f"},
        okp | {"llmp_sources": "urn:example:gateway:7"},
    ]
    for jwk in bad:
        with pytest.raises(ValueError):  # noqa: PT011 - each names its own problem
            Key.from_jwk(jwk)
    rsa = Key.from_jwk(
        {"kty": "RSA", "kid": "r", "alg": "RS256", "n": "AQAB", "e": "AQAB", "d": "X"}
    )
    assert "RS256" == rsa.alg
    assert '"d"' not in rsa.token_jwk
    assert (
        frozenset({"urn:example:gateway:7"})
        == Key.from_jwk(okp | {"llmp_sources": ["urn:example:gateway:7"]}).sources
    )


def test_a_key_never_shows_its_secret() -> None:
    """repr names kid and algorithm only; a symmetric key has no public JWK (ERR-012)."""
    assert SEED.hex() not in repr(GATEWAY)
    assert "private" in repr(GATEWAY)
    assert PAIR.secret.hex() not in repr(PAIR)
    with pytest.raises(ValueError, match="symmetric"):
        PAIR.to_jwk()
    assert "d" not in GATEWAY.to_jwk()
    assert "d" in GATEWAY.to_jwk(private=True)


def test_a_key_set_round_trips_through_a_jwk_set() -> None:
    """KeySet reads and writes RFC 7517 JWK sets; a kid appears once."""
    keys = KeySet([GATEWAY, PAIR, Key.aes256gcm("c", bytes(32))])
    again = KeySet.from_jwk_set(json.dumps(keys.to_jwk_set(private=True)))
    assert [k.kid for k in keys] == [k.kid for k in again]
    assert again.resolve(PAIR.kid) == PAIR
    assert [GATEWAY.kid] == [k["kid"] for k in keys.to_jwk_set()["keys"]]
    assert not any(k.private for k in keys.public_keys() if k.alg == "EdDSA")
    with pytest.raises(ValueError, match="share the kid"):
        KeySet([GATEWAY, GATEWAY.public_key()])
    for document in ('{"keys": {}}', "[]", '{"keys": [1]}'):
        with pytest.raises(ValueError):  # noqa: PT011
            KeySet.from_jwk_set(document)
    keys.remove(PAIR.kid)
    assert PAIR.kid not in keys
    assert len(keys) == 2
    assert keys.resolve(PAIR.kid) is None


def test_a_jwk_set_file_is_read_again_for_an_unknown_kid(tmp_path: Path) -> None:
    """A rotated-in key is found without a restart; a broken file keeps the last good keys."""
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(KeySet([GATEWAY]).to_jwk_set()), encoding="utf-8")
    clock = [0.0]
    resolver = JwkSetFile(path, refresh_s=30, monotonic=lambda: clock[0])
    assert resolver.resolve(GATEWAY.kid) == GATEWAY.public_key()
    path.write_text(json.dumps(KeySet([GATEWAY, PAIR]).to_jwk_set(private=True)), encoding="utf-8")
    assert resolver.resolve(PAIR.kid) is None  # too soon to read again
    clock[0] = 31.0
    assert resolver.resolve(PAIR.kid) == PAIR
    path.write_text("{not json", encoding="utf-8")
    clock[0] = 62.0
    assert resolver.resolve("urn:example:keys:unknown") is None
    assert resolver.last_error is not None
    assert "keys.json" in resolver.last_error
    assert resolver.resolve(PAIR.kid) == PAIR  # the last good keys stay
    assert not resolver.reload()
    assert len(resolver.keys) == 2
    with pytest.raises(OSError, match="No such file"):
        JwkSetFile(tmp_path / "missing.json")
