"""The NATS binding and adapter for llmproto (spec/bindings/nats.md).

This first part is the binding's pure mapping: subjects, header encoding and the message an
envelope becomes. It imports nothing from the NATS client. The transport itself (core NATS
request-reply, JetStream work queues) lands later in the same issue, 'NATS binding and adapter'.
"""

from __future__ import annotations

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
    queue_subject,
    request_subject,
    to_nats,
)

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
    "queue_subject",
    "request_subject",
    "to_nats",
)
