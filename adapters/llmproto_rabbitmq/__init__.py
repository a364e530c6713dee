"""The RabbitMQ (AMQP 0-9-1) binding and adapter for llmproto (not implemented yet).

Importing this package fails on purpose, so that nothing depends on an adapter that does not
exist; the binding lands with the issue 'RabbitMQ binding and adapter'.
"""

from __future__ import annotations

raise ImportError(
    "llmproto_rabbitmq is not implemented yet: "
    "the RabbitMQ binding lands with the issue 'RabbitMQ binding and adapter'"
)
