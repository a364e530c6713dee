"""Signing envelopes, and checking one signature (spec/security.md section Signatures).

A :class:`Signer` is what a sender configures (``Client(..., signer=...)``): it adds the ``sig``
block to an envelope, covering every member but ``sig.value`` [SEC-004], with a fresh 128-bit
nonce and a ``created``/``expires`` window [SEC-010]. :func:`signature_valid` is the one
cryptographic check a receiver makes; the order of all the others is
:class:`~llmproto_ref.SecurityPolicy`'s.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from llmproto_ref._canonical import canonicalize
from llmproto_ref._clock import now_ms
from llmproto_ref._ed25519 import BACKEND
from llmproto_ref._envelope import Envelope, Kind
from llmproto_ref._errors import LocalProtocolError
from llmproto_ref._ids import format_timestamp
from llmproto_ref._keys import SIGNATURE_ALGORITHMS, Key, b64url_encode
from llmproto_ref._registry import ErrorCode
from llmproto_ref._validate import MEMBERS

__all__ = ("DEFAULT_LIFETIME_MS", "SIGNATURE_LENGTHS", "Signer", "sign_bytes", "signature_valid")

#: How long a signature stays valid unless the signer is told otherwise: 300 s [SEC-010].
DEFAULT_LIFETIME_MS = 300_000
_CHECK_SIG = MEMBERS["sig"]

#: The length in bytes of a signature of each algorithm [SEC-009].
SIGNATURE_LENGTHS = {"EdDSA": 64, "HS256": 32}


def sign_bytes(key: Key, message: bytes) -> bytes:
    """The signature of ``message`` with a private ``EdDSA`` key or an ``HS256`` key.

    :raises ValueError: for a key of another algorithm, or a public-only key.
    """
    if not key.secret or key.alg not in SIGNATURE_ALGORITHMS:
        raise ValueError(f"{key!r} cannot sign: it is not a private EdDSA or HS256 key")
    if key.alg == "EdDSA":
        return BACKEND.sign(key.secret, message)
    return hmac.digest(key.secret, message, hashlib.sha256)


def signature_valid(key: Key, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``key``'s signature of ``message``; never raises.

    The algorithm is the key's own, never one named by a message [SEC-013]; an HMAC is compared
    in constant time.
    """
    if len(signature) != SIGNATURE_LENGTHS.get(key.alg, -1):
        return False
    if key.alg == "EdDSA":
        return BACKEND.verify(key.public, signature, message)
    if key.alg == "HS256" and key.secret:
        return hmac.compare_digest(hmac.digest(key.secret, message, hashlib.sha256), signature)
    return False


class Signer:
    """Signs the envelopes a participant sends, with one key.

    :param key: a private ``EdDSA`` key, or an ``HS256`` key for point-to-point use only.
    :param lifetime_ms: how long after ``created`` each signature expires; at most what the
        receivers accept (300 s by default) [SEC-010].
    :param clock: milliseconds since the Unix epoch (injectable for tests).
    :raises ValueError: for a key that cannot sign, or a lifetime outside 1 s to 1 h.
    """

    def __init__(
        self,
        key: Key,
        *,
        lifetime_ms: int = DEFAULT_LIFETIME_MS,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if not key.secret or key.alg not in SIGNATURE_ALGORITHMS:
            raise ValueError(f"{key!r} cannot sign: it is not a private EdDSA or HS256 key")
        if not 1_000 <= lifetime_ms <= 3_600_000:
            raise ValueError("lifetime_ms must lie in 1000..3600000")
        self.key = key
        self.lifetime_ms = lifetime_ms
        self._clock = clock

    @property
    def kid(self) -> str:
        """The ``kid`` written into every signature."""
        return self.key.kid

    def sign(self, envelope: Envelope) -> Envelope:
        """A copy of ``envelope`` with a new ``sig`` block (any old one is replaced).

        Sign last: a change to any member after signing breaks the signature [SEC-004]. An
        encrypted envelope is signed after encryption [SEC-037].

        :raises LocalProtocolError: ``PROTOCOL_ERROR`` for an ``HS256`` key and an event, which
            every subscriber receives [SEC-006].
        :raises EnvelopeError: ``INVALID_ENVELOPE`` if the envelope is not I-JSON [SEC-008].
        """
        if self.key.alg == "HS256" and envelope.kind is Kind.EVENT:
            raise LocalProtocolError(
                ErrorCode.PROTOCOL_ERROR,
                "an event goes to every subscriber, so it is never signed with HS256 [SEC-006]",
            )
        now = self._clock()
        block = {
            "alg": self.key.alg,
            "kid": self.key.kid,
            "created": format_timestamp(now),
            "expires": format_timestamp(now + self.lifetime_ms),
            "nonce": b64url_encode(os.urandom(16)),  # 128 bits, new for every signature
        }
        members = envelope.to_dict()
        members["sig"] = block  # the signing input: the envelope, sig without its value
        block["value"] = b64url_encode(sign_bytes(self.key, canonicalize(members)))
        # Only the new block needs checking: the rest is the valid envelope it was added to.
        _CHECK_SIG(block, "/sig")
        return Envelope._wrap(members)  # noqa: SLF001 - members validated above
