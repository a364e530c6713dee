"""The AMQP 0-9-1 binding's pure mapping: names, properties, headers (spec/bindings/amqp.md).

Nothing here talks to a broker or imports an AMQP client; the transport builds every message
it publishes with the functions below, and the binding vectors check them without a broker::

    message = request_message("llm.chat", body, reply_to=inbox, message_id=envelope.id)
    assert (message.exchange, message.routing_key) == (EXCHANGE_RPC, "llm.chat")
    assert from_amqp(message) == body

A message is described as plain data (:class:`AmqpMessage`): the exchange and routing key it
is published to, whether it is ``mandatory``, its properties under their AMQP names, its
string-valued headers and its body, which is always the envelope's bytes untouched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import llmproto_ref
from llmproto_ref import (
    Envelope,
    ErrorCode,
    TransportError,
    validate_pattern,
    validate_queue_name,
)

__all__ = (
    "CONTENT_TYPE",
    "EXCHANGES",
    "EXCHANGE_CANCEL",
    "EXCHANGE_DEAD",
    "EXCHANGE_EVENTS",
    "EXCHANGE_RPC",
    "EXCHANGE_WORK",
    "HEADER_DEAD_REASON",
    "HEADER_DELIVERIES",
    "AmqpMessage",
    "Route",
    "binding_key",
    "cancel_message",
    "dead_letter_message",
    "dead_letter_queue",
    "dead_reason",
    "delay_message",
    "delay_queue",
    "delivery_count",
    "event_message",
    "event_queue",
    "expiration_hint",
    "from_amqp",
    "inbox_queue",
    "is_fresh",
    "job_message",
    "private_queue",
    "reply_message",
    "request_message",
    "serve_queue",
    "to_amqp",
    "validate_reply_address",
    "work_queue",
)

EXCHANGE_RPC = "llmp.rpc"  #: topic exchange of requests, routing key = type [AMQP-001]
EXCHANGE_CANCEL = "llmp.cancel"  #: topic exchange of cancels, routing key = type [AMQP-001]
EXCHANGE_EVENTS = "llmp.evt"  #: topic exchange of events, routing key = type [AMQP-001]
EXCHANGE_WORK = "llmp.wq"  #: direct exchange of jobs, routing key = queue [AMQP-001]
EXCHANGE_DEAD = "llmp.dlx"  #: direct exchange of dead letters, routing key = queue [AMQP-001]
#: Every exchange of the binding with its type; all are durable [AMQP-001].
EXCHANGES: Mapping[str, Literal["topic", "direct"]] = {
    EXCHANGE_RPC: "topic",
    EXCHANGE_CANCEL: "topic",
    EXCHANGE_EVENTS: "topic",
    EXCHANGE_WORK: "direct",
    EXCHANGE_DEAD: "direct",
}
CONTENT_TYPE = "application/llmp+json"  #: the ``content_type`` of every message [AMQP-007]
HEADER_DEAD_REASON = "llmp-dead-reason"  #: why a job was dead-lettered [AMQP-022]
HEADER_DELIVERIES = "llmp-deliveries"  #: deliveries before a job was republished [AMQP-020]

_QUEUE_NAME_MAX = 255  # AMQP short string
_PERSISTENT = 2
_TRANSIENT = 1
#: What the broker's own dead-letter reasons (``x-first-death-reason``) mean [AMQP-023].
_BROKER_REASONS = {"delivery_limit": "max_deliveries"}

Route = Literal["send_request", "send_reply", "publish_cancel", "publish_event", "enqueue"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AmqpMessage:
    """One AMQP message as the binding publishes it.

    :param exchange: the exchange (``""`` is the default exchange).
    :param routing_key: the routing key.
    :param mandatory: whether an unroutable publish comes back as ``basic.return``.
    :param properties: basic properties under their AMQP names (``message_id``, ``type``...).
    :param headers: the header table; every value is a string [AMQP-009].
    :param body: the envelope's bytes [AMQP-007].
    """

    exchange: str
    routing_key: str
    mandatory: bool
    properties: dict[str, str | int] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


# -- names ------------------------------------------------------------------------------------


def _bounded(area: str, *parts: str) -> str:
    """``llmp.<area>:<part>:<part>``, or a digest of it when over 255 bytes [AMQP-005]."""
    name = f"llmp.{area}:" + ":".join(parts)
    if len(name.encode("utf-8")) <= _QUEUE_NAME_MAX:
        return name
    digest = hashlib.sha256(":".join(parts).encode("utf-8")).hexdigest()
    return f"llmp.{area}:sha256:{digest}"


def binding_key(pattern: str) -> str:
    """The topic binding key of a pattern: ``*`` stays ``*``, a final ``>`` becomes ``#``.

    ``#`` also matches zero words, which ``>`` does not; a receiver therefore drops a message
    whose routing key the pattern itself does not match [AMQP-004].
    """
    validate_pattern(pattern)
    return pattern[:-1] + "#" if pattern == ">" or pattern.endswith(".>") else pattern


def _pattern_part(pattern: str) -> str:
    """A pattern as queue-name characters: ``*`` becomes ``+``, a final ``>`` becomes ``#``."""
    return binding_key(pattern).replace("*", "+")


def serve_queue(group: str, pattern: str) -> str:
    """The shared queue of one serving group and pattern: ``llmp.rpc:<group>:<pattern>``."""
    validate_queue_name(group)
    return _bounded("rpc", group, _pattern_part(pattern))


def event_queue(group: str, pattern: str) -> str:
    """The shared queue of one event group and pattern: ``llmp.evt:<group>:<pattern>``."""
    validate_queue_name(group)
    return _bounded("evt", group, _pattern_part(pattern))


def private_queue(area: Literal["evt", "cancel"], token: str) -> str:
    """The exclusive queue of one ungrouped event or cancel subscription."""
    return _bounded(f"{area}.sub", token)


def inbox_queue(token: str) -> str:
    """The exclusive queue of one inbox; its name is the inbox's reply address [AMQP-012]."""
    return _bounded("inbox", token)


def work_queue(queue: str) -> str:
    """The quorum queue holding the jobs of ``queue``: ``llmp.wq:<queue>`` [AMQP-006]."""
    validate_queue_name(queue)
    return _bounded("wq", queue)


def dead_letter_queue(queue: str) -> str:
    """The quorum queue holding the dead letters of ``queue``: ``llmp.dlq:<queue>``."""
    validate_queue_name(queue)
    return _bounded("dlq", queue)


def delay_queue(queue: str, delay_ms: int, *, dead: bool = False) -> str:
    """The queue that holds jobs of ``queue`` nacked with ``delay_ms`` [AMQP-021]."""
    validate_queue_name(queue)
    return _bounded("dlq-delay" if dead else "wq-delay", str(delay_ms), queue)


def validate_reply_address(address: str) -> None:
    """A reply address is a queue name of 1 to 255 characters from ``!`` to ``~`` [AMQP-012].

    :raises TransportError: ``INVALID_PARAMS`` otherwise.
    """
    if not 0 < len(address) <= _QUEUE_NAME_MAX or not all("!" <= c <= "~" for c in address):
        raise TransportError(ErrorCode.INVALID_PARAMS, f"malformed reply address {address!r}")


# -- messages ---------------------------------------------------------------------------------


def request_message(type: str, body: bytes, *, reply_to: str, message_id: str) -> AmqpMessage:
    """A request of ``type`` [AMQP-002, AMQP-008, AMQP-011]."""
    validate_queue_name(type)
    properties: dict[str, str | int] = {
        "content_type": CONTENT_TYPE,
        "delivery_mode": _TRANSIENT,
        "message_id": message_id,
        "type": type,
    }
    if reply_to:
        validate_reply_address(reply_to)
        properties["reply_to"] = reply_to
    return AmqpMessage(
        exchange=EXCHANGE_RPC, routing_key=type, mandatory=True, properties=properties, body=body
    )


def reply_message(address: str, body: bytes) -> AmqpMessage:
    """A reply (response, error, chunk) to an inbox's queue [AMQP-013]."""
    validate_reply_address(address)
    return AmqpMessage(
        exchange="",
        routing_key=address,
        mandatory=not address.startswith("amq.rabbitmq.reply-to"),
        properties={"content_type": CONTENT_TYPE, "delivery_mode": _TRANSIENT},
        body=body,
    )


def cancel_message(type: str, body: bytes) -> AmqpMessage:
    """A cancel, broadcast on the cancel exchange [AMQP-002]."""
    validate_queue_name(type)
    return AmqpMessage(
        exchange=EXCHANGE_CANCEL,
        routing_key=type,
        mandatory=False,
        properties={"content_type": CONTENT_TYPE, "delivery_mode": _TRANSIENT, "type": type},
        body=body,
    )


def event_message(type: str, body: bytes) -> AmqpMessage:
    """An event, published on the event exchange [AMQP-002]."""
    validate_queue_name(type)
    return AmqpMessage(
        exchange=EXCHANGE_EVENTS,
        routing_key=type,
        mandatory=False,
        properties={"content_type": CONTENT_TYPE, "delivery_mode": _TRANSIENT, "type": type},
        body=body,
    )


def job_message(queue: str, body: bytes, *, message_id: str) -> AmqpMessage:
    """A job: persistent, mandatory, on the work exchange [AMQP-002, AMQP-011, AMQP-015]."""
    validate_queue_name(queue)
    return AmqpMessage(
        exchange=EXCHANGE_WORK,
        routing_key=queue,
        mandatory=True,
        properties={
            "content_type": CONTENT_TYPE,
            "delivery_mode": _PERSISTENT,
            "message_id": message_id,
        },
        body=body,
    )


def dead_letter_message(queue: str, body: bytes, *, message_id: str, reason: str) -> AmqpMessage:
    """A job moved to the dead letters of ``queue`` by a consumer, with its reason [AMQP-022]."""
    validate_queue_name(queue)
    return AmqpMessage(
        exchange=EXCHANGE_DEAD,
        routing_key=queue,
        mandatory=True,
        properties={
            "content_type": CONTENT_TYPE,
            "delivery_mode": _PERSISTENT,
            "message_id": message_id,
        },
        headers={HEADER_DEAD_REASON: reason},
        body=body,
    )


def delay_message(
    queue: str, body: bytes, *, message_id: str, delay_ms: int, deliveries: int, dead: bool = False
) -> AmqpMessage:
    """A job nacked with a delay, parked in its delay queue [AMQP-020, AMQP-021]."""
    return AmqpMessage(
        exchange="",
        routing_key=delay_queue(queue, delay_ms, dead=dead),
        mandatory=True,
        properties={
            "content_type": CONTENT_TYPE,
            "delivery_mode": _PERSISTENT,
            "message_id": message_id,
        },
        headers={HEADER_DELIVERIES: str(deliveries)},
        body=body,
    )


def to_amqp(envelope: Envelope, operation: Route, address: str = "") -> AmqpMessage:
    """The message the binding publishes for ``envelope`` through ``operation``.

    :param address: the reply address for ``send_request`` and ``send_reply``, the queue for
        ``enqueue``; unused otherwise.
    """
    body = llmproto_ref.encode(envelope)
    if operation == "send_request":
        return request_message(envelope.type, body, reply_to=address, message_id=envelope.id)
    if operation == "send_reply":
        return reply_message(address, body)
    if operation == "publish_cancel":
        return cancel_message(envelope.type, body)
    if operation == "publish_event":
        return event_message(envelope.type, body)
    return job_message(address, body, message_id=envelope.id)


def from_amqp(message: AmqpMessage) -> bytes:
    """The envelope bytes of ``message``: its body alone, whatever the properties say [AMQP-009]."""
    return message.body


# -- what a receiver reads --------------------------------------------------------------------


def _decimal(value: object) -> int:
    """A binding header's count: a string of decimal digits; anything else is absent [AMQP-009]."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return 0


def _broker_count(value: object) -> int:
    """The broker's ``x-delivery-count``: an integer (0 when absent or malformed)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def delivery_count(headers: Mapping[str, object] | None) -> int:
    """This delivery's number: deliveries before a republish, plus the quorum queue's returns,
    plus one [AMQP-020]."""
    if not headers:
        return 1
    return (
        _decimal(headers.get(HEADER_DELIVERIES))
        + _broker_count(headers.get("x-delivery-count"))
        + 1
    )


def is_fresh(headers: Mapping[str, object] | None, redelivered: bool) -> bool:
    """Whether this is the first delivery of a stored message (what dedup may drop) [AMQP-017]."""
    return not redelivered and not (headers and isinstance(headers.get(HEADER_DELIVERIES), str))


def dead_reason(headers: Mapping[str, object] | None) -> str | None:
    """Why a dead letter is dead: the binding's header, else the broker's reason [AMQP-023]."""
    if headers:
        reason = headers.get(HEADER_DEAD_REASON)
        if isinstance(reason, str):
            return reason
        broker = headers.get("x-first-death-reason")
        if isinstance(broker, str):
            return _BROKER_REASONS.get(broker, broker)
    return None


def expiration_hint(deadline_ms: int, now_ms: int) -> str:
    """The ``expiration`` property for a deadline: the milliseconds left, at least 1 [AMQP-010]."""
    return str(max(1, deadline_ms - now_ms))
