"""Payload encryption with AES-256-GCM (spec/security.md section Payload encryption).

An :class:`Encrypter` turns the payload of an envelope into ciphertext in ``data_base64``, adds
the ``enc`` block and lists ``enc`` in ``critical`` (SEC-003), so a receiver that cannot decrypt
rejects the message instead of handing ciphertext to its application. :func:`decrypt` undoes it
for a receiver that holds the key.

- Plaintext: the payload as it would travel unencrypted, the UTF-8 JSON text of ``data`` or the
  bytes of ``data_base64``; ``content_type`` keeps describing it [SEC-035].
- ``data_base64``: the ciphertext followed by the 128-bit tag [SEC-035].
- Associated data: the RFC 8785 form of the envelope without ``data_base64`` and ``sig``
  [SEC-036], so no member can be changed without failing decryption.
- IV: 96 random bits per payload, never reused with a key; one :class:`Encrypter` refuses to
  encrypt more than 2^32 payloads, the NIST SP 800-38D bound for random IVs [SEC-033, SEC-034].

Encrypt first, then sign; a receiver verifies first and decrypts last [SEC-037].
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from llmproto_ref._canonical import associated_data
from llmproto_ref._envelope import Envelope
from llmproto_ref._errors import EnvelopeError, LocalProtocolError
from llmproto_ref._keys import Key, b64url_decode, b64url_encode
from llmproto_ref._limits import DEFAULT_LIMITS, Limits
from llmproto_ref._registry import ErrorCode
from llmproto_ref._security_error import SecurityError
from llmproto_ref._strictjson import read_json

__all__ = (
    "ENCRYPTION_ALGORITHM",
    "MAX_PAYLOADS_PER_KEY",
    "Encrypter",
    "check_algorithm",
    "decrypt",
    "is_json_type",
)

#: The only ``enc.alg`` of version 1.0.
ENCRYPTION_ALGORITHM = "A256GCM"
#: The most payloads one :class:`Encrypter` encrypts with random IVs [SEC-034].
MAX_PAYLOADS_PER_KEY = 2**32
_TAG_BYTES = 16


def is_json_type(content_type: str | None) -> bool:
    """Whether a payload of this media type is JSON (absent means ``application/json``)."""
    if content_type is None:
        return True
    subtype = content_type.split(";", 1)[0].strip().lower().partition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


class Encrypter:
    """Encrypts payloads with one ``A256GCM`` key.

    :raises ValueError: for a key of another algorithm.
    """

    def __init__(self, key: Key) -> None:
        if key.alg != ENCRYPTION_ALGORITHM or len(key.secret) != 32:
            raise ValueError(f"{key!r} is not an A256GCM key")
        self.key = key
        self._aead = AESGCM(key.secret)
        self.count = 0  #: payloads encrypted so far

    def encrypt(self, envelope: Envelope) -> Envelope:
        """A copy of ``envelope`` whose payload is ciphertext, with ``enc`` and ``critical``.

        :raises LocalProtocolError: ``PROTOCOL_ERROR`` for an envelope without a payload, one
            already encrypted or already signed (encrypt first [SEC-037]), or a key used up.
        """
        if self.count >= MAX_PAYLOADS_PER_KEY:
            raise _refuse(f"key {self.key.kid!r} has encrypted 2^32 payloads; rotate it [SEC-034]")
        self.count += 1
        return seal(envelope, self.key, os.urandom(12), aead=self._aead)


def seal(envelope: Envelope, key: Key, iv: bytes, *, aead: AESGCM | None = None) -> Envelope:
    """Encrypt with a given IV: :class:`Encrypter` chooses it at random; tests fix it.

    The caller guarantees that ``iv`` is never used twice with ``key`` [SEC-033].
    """
    if envelope.has("enc"):
        raise _refuse("the envelope is already encrypted")
    if envelope.has("sig"):
        raise _refuse("encrypt before signing: the signature must cover the ciphertext [SEC-037]")
    if envelope.has("data"):
        plaintext = orjson.dumps(envelope.data)
    elif envelope.data_base64 is not None:
        plaintext = base64.b64decode(envelope.data_base64)
    else:
        raise _refuse("the envelope has no payload to encrypt")
    if len(iv) != 12:
        raise ValueError("an A256GCM IV is 96 bits")
    members = envelope.to_dict()
    members.pop("data", None)
    members.pop("data_base64", None)
    members["enc"] = {"alg": ENCRYPTION_ALGORITHM, "kid": key.kid, "iv": b64url_encode(iv)}
    members["critical"] = [*members.get("critical", ()), "enc"]
    sealed = (aead or AESGCM(key.secret)).encrypt(iv, plaintext, associated_data(members))
    members["data_base64"] = base64.b64encode(sealed).decode("ascii")
    return Envelope.from_members(members)


def decrypt(envelope: Envelope, key: Key, *, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """The envelope as its application sees it: payload decrypted, ``enc`` and ``sig`` gone.

    ``key`` is the one ``enc.kid`` names; the caller looked it up.

    :raises SecurityError: ``UNSUPPORTED_EXTENSION`` for an ``enc.alg`` other than ``A256GCM``,
        ``UNAUTHENTICATED`` for a key of another algorithm, ``SIGNATURE_INVALID`` when the tag
        does not verify, ``INVALID_ENVELOPE`` when a JSON payload does not parse [SEC-038].
    """
    enc = envelope.enc
    if enc is None:
        return envelope
    check_algorithm(enc)
    if key.alg != ENCRYPTION_ALGORITHM or enc["kid"] != key.kid:
        raise SecurityError(
            ErrorCode.UNAUTHENTICATED,
            f"enc.kid {enc['kid']!r} names no content encryption key of this receiver",
            pointer="/enc/kid",
            requirement="SEC-038",
        )
    members = envelope.to_dict()
    sealed = _standard_b64(members["data_base64"])
    try:
        if len(sealed) < _TAG_BYTES:
            raise InvalidTag
        plaintext = AESGCM(key.secret).decrypt(
            b64url_decode(enc["iv"]), sealed, associated_data(members)
        )
    except InvalidTag:
        raise SecurityError(
            ErrorCode.SIGNATURE_INVALID,
            "the encrypted payload or a member it is bound to was altered (AES-GCM tag mismatch)",
            pointer="/data_base64",
            requirement="SEC-038",
        ) from None
    for name in ("enc", "sig", "data_base64"):
        members.pop(name, None)
    critical = [name for name in members.pop("critical", ()) if name != "enc"]
    if critical:
        members["critical"] = critical
    if is_json_type(envelope.content_type):
        members["data"] = _parse(plaintext, limits)
    else:
        members["data_base64"] = base64.b64encode(plaintext).decode("ascii")
    return Envelope.from_members(members)


def check_algorithm(enc: Mapping[str, str]) -> None:
    """Raise ``UNSUPPORTED_EXTENSION`` at ``/enc/alg`` unless it is ``A256GCM`` [SEC-038]."""
    if enc["alg"] != ENCRYPTION_ALGORITHM:
        raise SecurityError(
            ErrorCode.UNSUPPORTED_EXTENSION,
            f"payload encryption {enc['alg']!r} is not supported; A256GCM is",
            pointer="/enc/alg",
            requirement="SEC-038",
        )


def _parse(plaintext: bytes, limits: Limits) -> Any:
    inner = Limits(
        max_envelope_bytes=max(1024, limits.max_envelope_bytes),
        max_depth=max(4, limits.max_depth - 1),  # the payload sits one level inside the envelope
    )
    try:
        return read_json(plaintext, inner)
    except EnvelopeError as exc:
        raise SecurityError(
            ErrorCode.INVALID_ENVELOPE,
            f"the decrypted payload is not strict JSON: {exc.message}",
            pointer="/data_base64",
            requirement="SEC-038",
        ) from None


def _standard_b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:  # pragma: no cover - the envelope schema checked it (ENV-027)
        return b""


def _refuse(message: str) -> LocalProtocolError:
    return LocalProtocolError(ErrorCode.PROTOCOL_ERROR, message)
