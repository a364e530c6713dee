"""The RabbitMQ (AMQP 0-9-1) binding and adapter for llmproto (spec/bindings/amqp.md).

:class:`RabbitMQTransport` is the transport contract on RabbitMQ, installed with the
``rabbitmq`` extra (``pip install 'llmproto[rabbitmq]'``, which brings aio-pika and its AMQP
layer aiormq); ``llmproto_ref.open_transport("amqp://...")`` makes one. The binding's pure
mapping (exchanges, queue names, properties, headers) imports no AMQP client and is exported
here too, for other implementations and the binding vectors.
"""

from __future__ import annotations

from llmproto_rabbitmq._mapping import (
    CONTENT_TYPE,
    EXCHANGE_CANCEL,
    EXCHANGE_DEAD,
    EXCHANGE_EVENTS,
    EXCHANGE_RPC,
    EXCHANGE_WORK,
    EXCHANGES,
    HEADER_DEAD_REASON,
    HEADER_DELIVERIES,
    AmqpMessage,
    Route,
    binding_key,
    cancel_message,
    dead_letter_message,
    dead_letter_queue,
    dead_reason,
    delay_message,
    delay_queue,
    delivery_count,
    event_message,
    event_queue,
    expiration_hint,
    from_amqp,
    inbox_queue,
    is_fresh,
    job_message,
    private_queue,
    reply_message,
    request_message,
    serve_queue,
    to_amqp,
    validate_reply_address,
    work_queue,
)
from llmproto_rabbitmq._transport import DEFAULT_OPTIONS, RabbitMQTransport

__all__ = (
    "CONTENT_TYPE",
    "DEFAULT_OPTIONS",
    "EXCHANGES",
    "EXCHANGE_CANCEL",
    "EXCHANGE_DEAD",
    "EXCHANGE_EVENTS",
    "EXCHANGE_RPC",
    "EXCHANGE_WORK",
    "HEADER_DEAD_REASON",
    "HEADER_DELIVERIES",
    "AmqpMessage",
    "RabbitMQTransport",
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
