"""Ed25519 (RFC 8032, pure Ed25519) from libsodium when PyNaCl is installed, else from OpenSSL.

Both backends compute the same deterministic signatures and accept the same valid ones; they
differ in speed (libsodium verifies about twice as fast as OpenSSL through ``cryptography``,
tests/benchmarks/test_bench_security.py) and in nothing a conforming signer produces.
:data:`BACKEND` is the one in use; ``tests/test_security_signing.py`` runs both.

Theory of operation
-------------------
Building a key object costs a few microseconds, so each backend keeps the objects of the keys it
has used, by their bytes, in a bounded cache (cleared when it holds 1024 keys): a receiver checks
the same few keys over and over.
"""

from __future__ import annotations

import contextlib
from typing import Protocol, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = ("BACKEND", "Ed25519Backend", "OpenSslEd25519", "SodiumEd25519", "available_backends")

_CACHE_LIMIT = 1024


class Ed25519Backend(Protocol):
    """What signing and verifying need from an Ed25519 implementation."""

    name: str  #: ``"libsodium"`` or ``"openssl"``

    def public_key(self, seed: bytes) -> bytes:
        """The 32-byte public key of a 32-byte private key (the RFC 8032 seed)."""
        ...

    def sign(self, seed: bytes, message: bytes) -> bytes:
        """The 64-byte signature of ``message``."""
        ...

    def verify(self, public: bytes, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is valid for ``message`` under ``public``; never raises."""
        ...


class OpenSslEd25519:
    """Ed25519 through ``cryptography`` (OpenSSL)."""

    name = "openssl"

    def __init__(self) -> None:
        self._signers: dict[bytes, ed25519.Ed25519PrivateKey] = {}
        self._verifiers: dict[bytes, ed25519.Ed25519PublicKey] = {}

    def public_key(self, seed: bytes) -> bytes:
        """The public key of ``seed``."""
        raw = serialization.Encoding.Raw
        return self._signer(seed).public_key().public_bytes(raw, serialization.PublicFormat.Raw)

    def sign(self, seed: bytes, message: bytes) -> bytes:
        """Sign ``message`` with ``seed``."""
        return self._signer(seed).sign(message)

    def verify(self, public: bytes, signature: bytes, message: bytes) -> bool:
        """Check ``signature``."""
        key = self._verifiers.get(public)
        if key is None:
            try:
                key = ed25519.Ed25519PublicKey.from_public_bytes(public)
            except ValueError:
                return False
            _remember(self._verifiers, public, key)
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def _signer(self, seed: bytes) -> ed25519.Ed25519PrivateKey:
        key = self._signers.get(seed)
        if key is None:
            key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
            _remember(self._signers, seed, key)
        return key


class SodiumEd25519:
    """Ed25519 through PyNaCl (libsodium)."""

    name = "libsodium"

    def __init__(self) -> None:
        import nacl.bindings

        self._sodium = nacl.bindings
        self._secrets: dict[bytes, bytes] = {}  #: seed -> libsodium's 64-byte secret key

    def public_key(self, seed: bytes) -> bytes:
        """The public key of ``seed``."""
        return self._secret(seed)[32:]

    def sign(self, seed: bytes, message: bytes) -> bytes:
        """Sign ``message`` with ``seed``."""
        return self._sodium.crypto_sign(message, self._secret(seed))[:64]

    def verify(self, public: bytes, signature: bytes, message: bytes) -> bool:
        """Check ``signature``."""
        from nacl.exceptions import BadSignatureError

        if len(signature) != 64 or len(public) != 32:
            return False
        try:
            self._sodium.crypto_sign_open(signature + message, public)
        except BadSignatureError:
            return False
        return True

    def _secret(self, seed: bytes) -> bytes:
        secret = self._secrets.get(seed)
        if secret is None:
            _, secret = self._sodium.crypto_sign_seed_keypair(seed)
            _remember(self._secrets, seed, secret)
        return secret


_V = TypeVar("_V")


def _remember(cache: dict[bytes, _V], key: bytes, value: _V) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def available_backends() -> tuple[Ed25519Backend, ...]:
    """Every backend that can be loaded here, the faster first."""
    found: list[Ed25519Backend] = []
    with contextlib.suppress(ImportError):
        found.append(SodiumEd25519())
    found.append(OpenSslEd25519())
    return tuple(found)


def _preferred() -> Ed25519Backend:
    try:
        return SodiumEd25519()
    except ImportError:
        return OpenSslEd25519()


#: The backend signing and verifying use: libsodium if PyNaCl is installed, else OpenSSL.
BACKEND: Ed25519Backend = _preferred()
