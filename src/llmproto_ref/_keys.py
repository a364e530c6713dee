"""Keys, and the resolvers that find a key by its ``kid`` (spec/security.md section Keys).

A :class:`Key` serves exactly one algorithm, fixed when the key is configured and never taken
from a message [SEC-013, SEC-039]: ``EdDSA`` (an Ed25519 key pair or public key, RFC 8037),
``HS256`` (a shared secret of at least 256 bits [SEC-011]), ``A256GCM`` (a 256-bit content
encryption key), or, for verifying bearer tokens only, ``RS256``, ``PS256`` or ``ES256``.
A signing key may be registered for the ``source`` values it signs for [SEC-025].

Keys are read from JWK sets (RFC 7517): ``{"kty": "OKP", "crv": "Ed25519", "x", "d"?}`` and
``{"kty": "oct", "k", "alg": "HS256" | "A256GCM"}``, with ``kid`` required, ``use`` checked when
present, and the llmproto member ``llmp_sources`` listing the sources a key may sign for.

A resolver is anything with ``resolve(kid) -> Key | None``: :class:`KeySet` holds keys in
memory, :class:`JwkSetFile` reads them from a JWK set file and reads it again, at most every
``refresh_s`` seconds, when asked for a ``kid`` it does not know (a rotated-in key).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmproto_ref._ed25519 import BACKEND

__all__ = (
    "SIGNATURE_ALGORITHMS",
    "JwkSetFile",
    "Key",
    "KeyResolver",
    "KeySet",
    "b64url_decode",
    "b64url_encode",
)

#: The ``sig.alg`` values version 1.0 defines [SEC-005, SEC-012].
SIGNATURE_ALGORITHMS = frozenset({"EdDSA", "HS256"})
_TOKEN_ONLY = frozenset({"RS256", "PS256", "ES256"})
_USE = {"EdDSA": "sig", "HS256": "sig", "A256GCM": "enc"}
_KID = re.compile(r"^[!-~]{1,256}$(?!\n)")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$(?!\n)")
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def b64url_encode(raw: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5), as ``sig.nonce``, ``sig.value`` and JWK use."""
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """The bytes of unpadded base64url text.

    :raises ValueError: if ``text`` holds anything but the base64url alphabet, or padding.
    """
    if _B64URL.search(text) is None or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:  # pragma: no cover - the pattern leaves nothing to fail
        raise ValueError("not unpadded base64url") from exc


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Key:
    """One key, serving one algorithm; build it with a class method, not the constructor.

    :param kid: the key identifier that ``sig.kid``, ``enc.kid`` or a token's ``kid`` names.
    :param alg: the one algorithm this key serves.
    :param public: the Ed25519 public key (32 bytes); empty for symmetric keys.
    :param secret: the Ed25519 private key (its 32-byte seed) or the symmetric key; empty for a
        public key.
    :param sources: the ``source`` values this key may sign for; ``None`` allows any.
    :param token_jwk: for an RSA or EC token-verification key, its public JWK as JSON.
    """

    kid: str
    alg: str
    public: bytes = b""
    secret: bytes = b""
    sources: frozenset[str] | None = None
    token_jwk: str = ""

    def __repr__(self) -> str:
        private = ", private" if self.secret else ""
        return f"Key(kid={self.kid!r}, alg={self.alg!r}{private})"  # never the secret [ERR-012]

    @classmethod
    def ed25519(
        cls,
        kid: str,
        *,
        private: bytes | None = None,
        public: bytes | None = None,
        sources: Iterable[str] | None = None,
    ) -> Key:
        """An ``EdDSA`` key from its 32-byte private key (seed), or a public-only one.

        :raises ValueError: for a malformed kid, wrong lengths, or a public key that does not
            belong to the private one.
        """
        _check_kid(kid)
        if private is None and public is None:
            raise ValueError("an Ed25519 key needs its private or its public key")
        if private is not None and len(private) != 32:
            raise ValueError("an Ed25519 private key (seed) is 32 bytes")
        derived = BACKEND.public_key(private) if private is not None else None
        if public is not None and (len(public) != 32 or (derived and derived != public)):
            raise ValueError(f"the public key of {kid!r} is not 32 bytes of its private key")
        return cls(
            kid=kid,
            alg="EdDSA",
            public=derived or public or b"",
            secret=private or b"",
            sources=_sources(sources),
        )

    @classmethod
    def hmac_sha256(cls, kid: str, secret: bytes, *, sources: Iterable[str] | None = None) -> Key:
        """An ``HS256`` key: a secret of at least 32 bytes shared by two participants [SEC-011].

        :raises ValueError: for a malformed kid or a secret shorter than 256 bits.
        """
        _check_kid(kid)
        if len(secret) < 32:
            raise ValueError(f"an HS256 key needs at least 256 bits, {kid!r} has {8 * len(secret)}")
        return cls(kid=kid, alg="HS256", secret=bytes(secret), sources=_sources(sources))

    @classmethod
    def aes256gcm(cls, kid: str, secret: bytes) -> Key:
        """An ``A256GCM`` content encryption key of exactly 32 bytes [SEC-033].

        :raises ValueError: for a malformed kid or a key that is not 256 bits.
        """
        _check_kid(kid)
        if len(secret) != 32:
            raise ValueError(f"an A256GCM key is 256 bits, {kid!r} has {8 * len(secret)}")
        return cls(kid=kid, alg="A256GCM", secret=bytes(secret))

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> Key:
        """A key from one JWK (RFC 7517, RFC 8037 for Ed25519) [SEC-039].

        :raises ValueError: naming the problem, for a JWK this implementation cannot use.
        """
        kid = jwk.get("kid")
        if not isinstance(kid, str):
            raise ValueError("a JWK needs a string 'kid'")
        _check_kid(kid)
        kty, alg = jwk.get("kty"), jwk.get("alg")
        sources = _jwk_sources(jwk)
        if kty == "OKP":
            if jwk.get("crv") != "Ed25519" or alg not in (None, "EdDSA"):
                raise ValueError(f"JWK {kid!r}: an OKP key must be crv Ed25519 with alg EdDSA")
            _check_use(jwk, "EdDSA")
            public = _jwk_bytes(jwk, "x", kid)
            private = _jwk_bytes(jwk, "d", kid) if "d" in jwk else None
            return cls.ed25519(kid, private=private, public=public, sources=sources)
        if kty == "oct":
            if alg not in ("HS256", "A256GCM"):
                raise ValueError(f"JWK {kid!r}: an oct key must state alg HS256 or A256GCM")
            _check_use(jwk, alg)
            secret = _jwk_bytes(jwk, "k", kid)
            if alg == "HS256":
                return cls.hmac_sha256(kid, secret, sources=sources)
            return cls.aes256gcm(kid, secret)
        if kty in ("RSA", "EC"):
            if alg not in _TOKEN_ONLY:
                raise ValueError(f"JWK {kid!r}: an {kty} key must state alg RS256, PS256 or ES256")
            public_members = {n: v for n, v in jwk.items() if n not in _PRIVATE_JWK_MEMBERS}
            return cls(kid=kid, alg=alg, token_jwk=json.dumps(public_members, sort_keys=True))
        raise ValueError(f"JWK {kid!r}: key type {kty!r} is not supported")

    @property
    def private(self) -> bool:
        """Whether the key can sign (or, for symmetric keys, is the shared secret)."""
        return bool(self.secret)

    def public_key(self) -> Key:
        """The same key without its private part (symmetric keys are returned as they are)."""
        if self.alg != "EdDSA" or not self.secret:
            return self
        return Key(kid=self.kid, alg=self.alg, public=self.public, sources=self.sources)

    def to_jwk(self, *, private: bool = False) -> dict[str, Any]:
        """The key as a JWK; ``private=True`` includes ``d`` or ``k``.

        :raises ValueError: when a symmetric key is asked for without ``private=True``.
        """
        jwk: dict[str, Any]
        if self.alg == "EdDSA":
            jwk = {"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "alg": "EdDSA", "use": "sig"}
            jwk["x"] = b64url_encode(self.public)
            if private and self.secret:
                jwk["d"] = b64url_encode(self.secret)
        elif self.token_jwk:
            jwk = dict(json.loads(self.token_jwk))
        else:
            if not private:
                raise ValueError(f"{self.kid!r} is a symmetric key: it has no public form")
            jwk = {"kty": "oct", "kid": self.kid, "alg": self.alg, "use": _USE[self.alg]}
            jwk["k"] = b64url_encode(self.secret)
        if self.sources is not None:
            jwk["llmp_sources"] = sorted(self.sources)
        return jwk


class KeyResolver(Protocol):
    """Finds the key a ``kid`` names; ``None`` when it names none this receiver accepts."""

    def resolve(self, kid: str) -> Key | None:
        """The key named ``kid``, or ``None``."""
        ...


class KeySet:
    """Keys held in memory, by ``kid``.

    :raises ValueError: if two keys share a ``kid``.
    """

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        self._keys: dict[str, Key] = {}
        for key in keys:
            self.add(key)

    @classmethod
    def from_jwk_set(cls, document: Mapping[str, Any] | str | bytes) -> KeySet:
        """The keys of a JWK set ``{"keys": [...]}`` (RFC 7517 section 5), as JSON or parsed.

        :raises ValueError: naming the first key that cannot be used.
        """
        if isinstance(document, str | bytes):
            document = json.loads(document)
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
            raise ValueError('a JWK set is an object with a "keys" array')
        keys = []
        for jwk in document["keys"]:
            if not isinstance(jwk, Mapping):
                raise ValueError("every member of a JWK set's keys is an object")
            keys.append(Key.from_jwk(jwk))
        return cls(keys)

    def add(self, key: Key) -> None:
        """Add ``key``; its ``kid`` must be new."""
        if key.kid in self._keys:
            raise ValueError(f"two keys share the kid {key.kid!r}")
        self._keys[key.kid] = key

    def remove(self, kid: str) -> None:
        """Forget the key ``kid`` (retired or revoked); unknown kids are ignored."""
        self._keys.pop(kid, None)

    def resolve(self, kid: str) -> Key | None:
        """The key named ``kid``, or ``None``."""
        return self._keys.get(kid)

    def public_keys(self) -> KeySet:
        """The same keys without Ed25519 private parts (symmetric keys stay as they are)."""
        return KeySet(key.public_key() for key in self._keys.values())

    def to_jwk_set(self, *, private: bool = False) -> dict[str, Any]:
        """The keys as a JWK set; without ``private`` symmetric keys are left out."""
        keys = [k for k in self._keys.values() if private or k.alg == "EdDSA" or k.token_jwk]
        return {"keys": [k.to_jwk(private=private) for k in keys]}

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._keys.values()))

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys


class JwkSetFile:
    """Keys read from a JWK set file, read again when an unknown ``kid`` is asked for.

    Theory of operation: the file is read when the resolver is made (an unreadable or invalid
    file raises then). Asked for a ``kid`` it does not hold, the resolver reads the file again,
    at most once every ``refresh_s`` seconds, so a key added by rotation is found without a
    restart. A read that fails keeps the keys of the last good read: a broken file never
    empties the key set, and never makes an unknown key acceptable.

    :param path: the JWK set file (UTF-8 JSON).
    :param refresh_s: the least time between two reads caused by unknown kids.
    :param monotonic: the clock for ``refresh_s`` (injectable for tests).
    :raises OSError: if the file cannot be read at construction.
    :raises ValueError: if it is not a usable JWK set.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        refresh_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.refresh_s = refresh_s
        self._monotonic = monotonic
        self._keys = self._read()
        self._read_at = monotonic()
        self.last_error: str | None = None  #: why the last re-read failed, if it did

    def _read(self) -> KeySet:
        return KeySet.from_jwk_set(self.path.read_bytes())

    def reload(self) -> bool:
        """Read the file again now; ``False`` (and the old keys kept) if that fails."""
        self._read_at = self._monotonic()
        try:
            self._keys = self._read()
        except (OSError, ValueError) as exc:
            self.last_error = f"{self.path}: {exc}"
            return False
        self.last_error = None
        return True

    def resolve(self, kid: str) -> Key | None:
        """The key named ``kid``, reading the file again if it is unknown and the time has come."""
        key = self._keys.resolve(kid)
        if key is None and self._monotonic() - self._read_at >= self.refresh_s and self.reload():
            key = self._keys.resolve(kid)
        return key

    @property
    def keys(self) -> KeySet:
        """The keys of the last good read."""
        return self._keys


def _check_kid(kid: str) -> None:
    if not isinstance(kid, str) or _KID.search(kid) is None:
        raise ValueError("a kid is 1 to 256 printable ASCII characters without space")


def _check_use(jwk: Mapping[str, Any], alg: str) -> None:
    use = jwk.get("use")
    if use is not None and use != _USE[alg]:
        raise ValueError(f"JWK {jwk['kid']!r}: an {alg} key has use {_USE[alg]!r}, not {use!r}")


def _jwk_bytes(jwk: Mapping[str, Any], name: str, kid: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"JWK {kid!r}: member {name!r} must be a base64url string")
    try:
        return b64url_decode(value)
    except ValueError:
        raise ValueError(f"JWK {kid!r}: member {name!r} is not unpadded base64url") from None


def _jwk_sources(jwk: Mapping[str, Any]) -> frozenset[str] | None:
    sources = jwk.get("llmp_sources")
    if sources is None:
        return None
    if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
        raise ValueError(f"JWK {jwk['kid']!r}: llmp_sources must be an array of sources")
    return frozenset(sources)


def _sources(sources: Iterable[str] | None) -> frozenset[str] | None:
    if sources is None:
        return None
    if isinstance(sources, str):
        raise ValueError("sources is a collection of source values, not one string")
    return frozenset(sources)
