"""The NATS binding and adapter for llmproto (spec/bindings/nats.md).

- :class:`NatsTransport`: the transport contract on nats-py (extra ``nats``); core NATS for
  request-response, streams, cancels and events, JetStream for work queues. Use it through
  ``llmproto_ref.open_transport("nats://127.0.0.1:4222")`` or directly.
- The pure mapping (:mod:`llmproto_nats._mapping`, no broker client imported): subjects, header
  encoding and the message an envelope becomes, as the binding vectors state it.

Importing this package needs nats-py only for :class:`NatsTransport`, which is imported on
first use, so the mapping works without the extra.
"""

from __future__ import annotations

import typing as _typing

from llmproto_nats._mapping import (
    HEADER_CORRELATION_ID,
    HEADER_DEAD_REASON,
    HEADER_DEADLINE,
    HEADER_KIND,
    HEADER_MSG_ID,
    HEADER_TYPE,
    INBOX_PREFIX,
    PREFIX,
    NatsMessage,
    cancel_subject,
    dead_letter_subject,
    decode_header_value,
    encode_header_value,
    event_pattern,
    event_subject,
    from_nats,
    inbox_subject,
    mirrored_headers,
    queue_subject,
    request_subject,
    to_nats,
)

if _typing.TYPE_CHECKING:
    from llmproto_nats._transport import NatsTransport

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
    "NatsTransport",
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


def __getattr__(name: str) -> _typing.Any:
    if name == "NatsTransport":
        from llmproto_nats._transport import NatsTransport

        return NatsTransport
    raise AttributeError(f"module 'llmproto_nats' has no attribute {name!r}")
