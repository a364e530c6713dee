"""The NATS binding's pure mapping: subjects, headers and messages (spec/bindings/nats.md).

Nothing here talks to a broker or imports the NATS client; the transport builds on it::

    message = to_nats(envelope, request_subject(envelope.type), reply=inbox)
    assert from_nats(message) == llmproto_ref.encode(envelope)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import llmproto_ref
from llmproto_ref import Envelope, ErrorCode, TransportError, validate_pattern, validate_queue_name

__all__ = (
    "HEADER_CORRELATION_ID",
    "HEADER_DEADLINE",
    "HEADER_DEAD_REASON",
    "HEADER_KIND",
    "HEADER_MSG_ID",
    "HEADER_TYPE",
    "INBOX_PREFIX",
    "PREFIX",
    "NatsMessage",
    "cancel_subject",
    "dead_letter_subject",
    "decode_header_value",
    "encode_header_value",
    "event_pattern",
    "event_subject",
    "from_nats",
    "inbox_subject",
    "mirrored_headers",
    "queue_subject",
    "request_subject",
    "to_nats",
)

PREFIX = "llmp"  #: the first token of every binding subject except inboxes [NATS-001]
INBOX_PREFIX = "_INBOX"  #: the first token of reply subjects [NATS-006]
HEADER_MSG_ID = "Nats-Msg-Id"  #: mirrors ``id``; JetStream's dedup key [NATS-011, NATS-022]
HEADER_KIND = "llmp-kind"  #: may mirror ``kind`` (reserved; the reference does not write it)
HEADER_TYPE = "llmp-type"  #: may mirror ``type`` (reserved; the subject carries it)
HEADER_CORRELATION_ID = "llmp-correlation-id"  #: may mirror ``correlation_id`` (reserved)
HEADER_DEADLINE = "llmp-deadline"  #: may mirror ``deadline`` (reserved)
HEADER_DEAD_REASON = "llmp-dead-reason"  #: why a job was dead-lettered [NATS-026]

_UNRESERVED = frozenset(range(0x21, 0x7F)) - {ord("%")}
_HEX = "0123456789ABCDEFabcdef"


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsMessage:
    """One NATS message as the binding publishes it.

    :param subject: the subject it is published on.
    :param reply: the reply subject, or ``None``.
    :param headers: header name to (encoded) value, one value per name [NATS-013].
    :param payload: the body: always the structured envelope [NATS-010].
    """

    subject: str
    reply: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    payload: bytes = b""


def _subject(area: str, name: str) -> str:
    validate_queue_name(name)
    return f"{PREFIX}.{area}.{name}"


def request_subject(type: str) -> str:
    """The subject requests of ``type`` go to [NATS-001]."""
    return _subject("rpc", type)


def cancel_subject(type: str) -> str:
    """The subject cancels of ``type`` are broadcast on [NATS-002]."""
    return _subject("cancel", type)


def event_subject(type: str) -> str:
    """The subject events of ``type`` are published on [NATS-003]."""
    return _subject("evt", type)


def event_pattern(pattern: str) -> str:
    """The NATS subject filter for an event pattern; ``*`` and ``>`` map natively [NATS-008]."""
    validate_pattern(pattern)
    return f"{PREFIX}.evt.{pattern}"


def queue_subject(queue: str) -> str:
    """The JetStream subject jobs of ``queue`` are published on [NATS-004]."""
    return _subject("wq", queue)


def dead_letter_subject(queue: str) -> str:
    """The JetStream subject dead jobs of ``queue`` move to [NATS-005]."""
    return _subject("dlq", queue)


def inbox_subject(client_token: str, request_token: str) -> str:
    """The reply subject of one request (its envelope id, when a single token) [NATS-006]."""
    validate_queue_name(client_token)
    validate_queue_name(request_token)
    if "." in client_token or "." in request_token:
        raise TransportError(ErrorCode.INVALID_PARAMS, "inbox tokens must be single tokens")
    return f"{INBOX_PREFIX}.{client_token}.{request_token}"


def encode_header_value(value: str) -> str:
    """Percent-encode ``value`` into printable ASCII without spaces [NATS-014].

    :raises TransportError: ``INVALID_PARAMS`` if ``value`` holds CR or LF [NATS-015].
    """
    if value.isascii() and value.isprintable() and " " not in value and "%" not in value:
        return value  # printable ASCII without space or '%': written as is (the usual case)
    if "\r" in value or "\n" in value:
        raise TransportError(ErrorCode.INVALID_PARAMS, "a header value must not hold CR or LF")
    return "".join(
        chr(byte) if byte in _UNRESERVED else f"%{byte:02X}" for byte in value.encode("utf-8")
    )


def decode_header_value(value: str) -> str:
    """Reverse :func:`encode_header_value` [NATS-016].

    :raises ValueError: for a malformed escape, a raw non-ASCII character or CR/LF, or bytes
        that are not UTF-8; the caller treats the header as absent.
    """
    out = bytearray()
    index = 0
    while index < len(value):
        char = value[index]
        if char == "%":
            escape = value[index + 1 : index + 3]
            if len(escape) != 2 or any(c not in _HEX for c in escape):
                raise ValueError(f"malformed percent escape at {index} in header value")
            out.append(int(escape, 16))
            index += 3
            continue
        if not 0x21 <= ord(char) <= 0x7E:
            raise ValueError(f"raw character {char!r} in header value")
        out.append(ord(char))
        index += 1
    return out.decode("utf-8")  # UnicodeDecodeError is a ValueError


def mirrored_headers(subject: str, *, type: str, message_id: str) -> dict[str, str]:
    """The headers a sender writes on ``subject`` [NATS-011].

    Requests and jobs carry ``Nats-Msg-Id`` (for a job, JetStream's dedup key); cancels, events
    and replies carry none: the subject already names the type, and a header costs every
    receiver a parse. ``type`` is accepted for symmetry with the other members a later version
    may mirror.
    """
    del type  # the subject carries it
    area = subject.split(".", 2)[1] if subject.startswith(f"{PREFIX}.") else ""
    if area in ("rpc", "wq"):
        return {HEADER_MSG_ID: encode_header_value(message_id)}
    return {}


def to_nats(envelope: Envelope, subject: str, reply: str | None = None) -> NatsMessage:
    """The message that carries ``envelope`` on ``subject``, with its headers [NATS-011]."""
    return NatsMessage(
        subject=subject,
        reply=reply,
        headers=mirrored_headers(subject, type=envelope.type, message_id=envelope.id),
        payload=llmproto_ref.encode(envelope),
    )


def from_nats(message: NatsMessage) -> bytes:
    """The envelope bytes of ``message``: the body alone; headers are never trusted [NATS-012]."""
    return message.payload
