"""Signing envelopes, and checking one signature (spec/security.md section Signatures).

A :class:`Signer` is what a sender configures (``Client(..., signer=...)``): it adds the ``sig``
block to an envelope, covering every member but ``sig.value`` [SEC-004], with a fresh 128-bit
nonce and a ``created``/``expires`` window [SEC-010]. :func:`signature_valid` is the one
cryptographic check a receiver makes; the order of all the others is
:class:`~llmproto_ref.SecurityPolicy`'s. :class:`Outgoing` is what the runtime applies to each
message a participant sends: its bearer token on requests, then its signature, last.
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

__all__ = (
    "DEFAULT_LIFETIME_MS",
    "SIGNATURE_LENGTHS",
    "Outgoing",
    "Signer",
    "sign_bytes",
    "signature_valid",
)

#: How long a signature stays valid unless the signer is told otherwise: 300 s [SEC-010].
DEFAULT_LIFETIME_MS = 300_000
_CHECK_SIG = MEMBERS["sig"]
_CHECK_AUTH = MEMBERS["auth"]

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


class Outgoing:
    """What a sender adds to the messages it sends: a bearer token on requests, a signature.

    The runtime holds one only when it is configured with a signer or a token, so a client
    without either does no work for security at all (one ``is None`` test per message).

    :param signer: signs every message sent, after every other member is final [SEC-010].
    :param bearer_token: the token put into ``auth`` of every request (work-queue jobs and
        streamed requests included), or a function returning the current one (called per
        request, so a token can be refreshed). Only requests carry it: a service checks tokens
        on requests (spec/security.md, Bearer tokens), and an event would show it to every
        subscriber.
    """

    __slots__ = ("_token", "signer")

    def __init__(
        self,
        signer: Signer | None = None,
        bearer_token: str | Callable[[], str] | None = None,
    ) -> None:
        if isinstance(bearer_token, str):
            _CHECK_AUTH({"scheme": "bearer", "token": bearer_token}, "/auth")  # [SEC-001]
        self.signer = signer
        self._token = bearer_token

    @classmethod
    def of(
        cls, signer: Signer | None, bearer_token: str | Callable[[], str] | None
    ) -> Outgoing | None:
        """An :class:`Outgoing`, or ``None`` when there is nothing to add."""
        if signer is None and bearer_token is None:
            return None
        return cls(signer, bearer_token)

    def request(self, envelope: Envelope) -> Envelope:
        """``envelope`` with the bearer token in ``auth`` (unless it has one), then signed.

        The token is this sender's own; a service's handler sees requests without ``auth``,
        so a client it uses downstream never passes a caller's token on [SEC-032].

        :raises EnvelopeError: for a token that is not 1 to 16384 printable ASCII characters
            without space [SEC-001], or an envelope that is not I-JSON [SEC-008].
        """
        token = self._token
        if token is not None and not envelope.has("auth"):
            auth = {"scheme": "bearer", "token": token() if callable(token) else token}
            _CHECK_AUTH(auth, "/auth")
            members = envelope.to_dict()
            members["auth"] = auth
            envelope = Envelope._wrap(members)  # noqa: SLF001 - the new member was checked
        return envelope if self.signer is None else self.signer.sign(envelope)

    def sign(self, envelope: Envelope) -> Envelope:
        """``envelope`` signed (events, cancels), or as it is without a signer.

        :raises LocalProtocolError: ``PROTOCOL_ERROR`` for an event and an ``HS256`` signer
            [SEC-006].
        """
        return envelope if self.signer is None else self.signer.sign(envelope)
