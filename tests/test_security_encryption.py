"""Payload encryption: what the Encrypter writes and what a receiver gets back.

Checks the sender's side of spec/security.md section Payload encryption: 256-bit keys and fresh
96-bit IVs [SEC-033], the 2^32 bound [SEC-034], the plaintext and data_base64 layout [SEC-035],
every member bound as associated data [SEC-036], encrypt before signing [SEC-037], and the
receiver's errors [SEC-038]; the vectors cover the receiver's outcomes too.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from llmproto_ref import Envelope, LocalProtocolError, decode, encode
from llmproto_ref import _encryption as encryption
from llmproto_ref._encryption import Encrypter, decrypt, seal
from llmproto_ref._keys import Key, KeySet, b64url_decode
from llmproto_ref._policy import SecurityPolicy
from llmproto_ref._security_error import SecurityError
from llmproto_ref._signing import Signer

CEK = Key.aes256gcm("urn:example:keys:cek-1", os.urandom(32))
SIGNING = Key.ed25519("urn:example:keys:gw", private=os.urandom(32))


def _request(**members: Any) -> Envelope:
    fields: dict[str, Any] = {"data": {"messages": [{"role": "user", "content": "secret prompt"}]}}
    return Envelope.new(kind="request", type="llm.chat", source="urn:gw", **(fields | members))


def test_the_layout_of_an_encrypted_envelope() -> None:
    """enc with alg, kid, iv; critical lists enc; data_base64 is ciphertext and tag [SEC-035]."""
    plain = _request(critical=["acme.tenant"], ext={"acme.tenant": "blue"})
    sealed = Encrypter(CEK).encrypt(plain)
    assert sealed.enc is not None
    assert ("A256GCM", CEK.kid) == (sealed.enc["alg"], sealed.enc["kid"])
    assert ("acme.tenant", "enc") == sealed.critical
    assert not sealed.has("data")
    body = base64.b64decode(sealed.data_base64 or "")
    aad = rfc8785.dumps({k: v for k, v in sealed.to_dict().items() if k != "data_base64"})
    iv = b64url_decode(sealed.enc["iv"])
    plaintext = AESGCM(CEK.secret).decrypt(iv, body, aad)  # an independent decryption
    assert len(body) == len(plaintext) + 16
    assert plain.data == json.loads(plaintext)  # the JSON text of data


def test_each_payload_gets_a_fresh_iv_and_the_key_is_used_up_at_two_to_the_32() -> None:
    """Random 96-bit IVs, never repeated here [SEC-033]; 2^32 payloads per key at most [SEC-034]."""
    encrypter = Encrypter(CEK)
    ivs = {encrypter.encrypt(_request()).enc["iv"] for _ in range(500)}  # type: ignore[index]
    assert 500 == len(ivs) == encrypter.count
    assert all(len(b64url_decode(iv)) == 12 for iv in ivs)
    encrypter.count = encryption.MAX_PAYLOADS_PER_KEY
    with pytest.raises(LocalProtocolError, match="2\\^32"):
        encrypter.encrypt(_request())
    with pytest.raises(ValueError, match="not an A256GCM key"):
        Encrypter(Key.hmac_sha256("h", bytes(32)))
    with pytest.raises(ValueError, match="96 bits"):
        seal(_request(), CEK, bytes(16))


@pytest.mark.parametrize(
    "payload",
    [
        {"data": {"a": [1, 2.5, "é"]}},
        {"data": None},
        {"data": "just a string"},
        {"content_type": "audio/wav", "data_base64": base64.b64encode(b"\x00\xff").decode()},
        {"content_type": "application/vnd.acme+json", "data": {"x": 1}},
    ],
)
def test_a_payload_decrypts_to_what_was_sent(payload: dict[str, Any]) -> None:
    """JSON payloads come back in data, others in data_base64; enc and critical go [SEC-035]."""
    headers = {k: v for k, v in _request().to_dict().items() if k != "data"}
    plain = Envelope.from_members(headers | payload)  # keeps a data of null
    assert plain == decrypt(Encrypter(CEK).encrypt(plain), CEK)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("type", "llm.other"),
        ("source", "urn:elsewhere"),
        ("time", "2026-05-20T07:00:00.001Z"),
        ("reply_to", "_INBOX.x"),
        ("content_type", "text/plain"),
        ("enc", {"alg": "A256GCM", "kid": CEK.kid, "iv": "AAAAAAAAAAAAAAAA"}),
        ("critical", ["enc", "acme.x"]),
        ("ext", {"acme.x": 1}),
    ],
)
def test_every_member_is_bound_to_the_ciphertext(name: str, value: Any) -> None:
    """Changing any other member makes decryption fail [SEC-036]."""
    sealed = Encrypter(CEK).encrypt(_request(reply_to="_INBOX.a"))
    members = sealed.to_dict() | {name: value}
    if name == "critical":
        members["ext"] = {"acme.x": 1}
    with pytest.raises(SecurityError) as caught:
        decrypt(Envelope.from_members(members), CEK)
    assert ("SIGNATURE_INVALID", "/data_base64", "SEC-038") == (
        caught.value.code,
        caught.value.pointer,
        caught.value.requirement,
    )


def test_encrypt_first_then_sign() -> None:
    """The Encrypter refuses a signed envelope; sign(encrypt(x)) verifies and decrypts [SEC-037]."""
    with pytest.raises(LocalProtocolError, match="encrypt before signing"):
        Encrypter(CEK).encrypt(Signer(SIGNING).sign(_request()))
    with pytest.raises(LocalProtocolError, match="already encrypted"):
        Encrypter(CEK).encrypt(Encrypter(CEK).encrypt(_request()))
    with pytest.raises(LocalProtocolError, match="no payload"):
        Encrypter(CEK).encrypt(Envelope.new(kind="request", type="a.b", source="s"))
    message = Signer(SIGNING).sign(Encrypter(CEK).encrypt(_request()))
    policy = SecurityPolicy(keys=KeySet([SIGNING.public_key()]), decryption_keys=KeySet([CEK]))
    raw = encode(message)
    verified = policy.check(decode(raw, understood=policy.understood), len(raw))
    assert {"messages": [{"role": "user", "content": "secret prompt"}]} == verified.envelope.data
    assert not verified.envelope.has("enc")
    assert not verified.envelope.has("sig")
    assert verified.signer == SIGNING.public_key()


def test_the_receivers_errors() -> None:
    """Unknown alg, a key of another kind, a broken tag, a plaintext that is not JSON [SEC-038]."""
    sealed = Encrypter(CEK).encrypt(_request())

    def outcome(envelope: Envelope, key: Key = CEK) -> tuple[str, str]:
        try:
            decrypt(envelope, key)
        except SecurityError as exc:
            return str(exc.code), exc.pointer
        return "valid", ""

    other_alg = Envelope.from_members(sealed.to_dict() | {"enc": {**sealed.enc, "alg": "A128GCM"}})  # type: ignore[dict-item]
    assert ("UNSUPPORTED_EXTENSION", "/enc/alg") == outcome(other_alg)
    assert ("UNAUTHENTICATED", "/enc/kid") == outcome(sealed, Key.hmac_sha256(CEK.kid, bytes(32)))
    assert ("UNAUTHENTICATED", "/enc/kid") == outcome(sealed, Key.aes256gcm("another", bytes(32)))
    short = Envelope.from_members(sealed.to_dict() | {"data_base64": "AAAA"})
    assert ("SIGNATURE_INVALID", "/data_base64") == outcome(short)
    not_json = seal(
        _request(data=None, data_base64=base64.b64encode(b"{").decode()), CEK, bytes(12)
    )
    assert ("INVALID_ENVELOPE", "/data_base64") == outcome(not_json)
    plain = _request()
    assert plain is decrypt(plain, CEK)  # nothing to decrypt


def test_a_receiver_without_keys_or_with_an_unknown_kid() -> None:
    """Without decryption keys enc is not understood (ENV-031); an unknown kid is refused."""
    sealed = Encrypter(CEK).encrypt(_request())
    no_keys = SecurityPolicy()
    with pytest.raises(SecurityError) as caught:
        no_keys.check(sealed, 100)
    assert ("UNSUPPORTED_EXTENSION", "/critical/0") == (caught.value.code, caught.value.pointer)
    wrong = SecurityPolicy(decryption_keys=KeySet([Key.aes256gcm("other", bytes(32))]))
    with pytest.raises(SecurityError) as caught:
        wrong.check(sealed, 100)
    assert ("UNAUTHENTICATED", "/enc/kid", "SEC-038") == (
        caught.value.code,
        caught.value.pointer,
        caught.value.requirement,
    )
