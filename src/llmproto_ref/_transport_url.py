"""Transports named by URL.

- ``memory://[name][?max_payload=N&dedup_window_ms=N]``: the embedded transport;
- ``nats://host:port`` (or ``tls://``): the NATS adapter, :mod:`llmproto_nats` (extra ``nats``);
- ``amqp://user:password@host:port/vhost`` (or ``amqps://``): the RabbitMQ adapter,
  :mod:`llmproto_rabbitmq` (extra ``rabbitmq``).

An adapter whose package or broker client is not installed is ``UNAVAILABLE`` with the
install command; any other scheme is ``INVALID_PARAMS``.
"""

from __future__ import annotations

import importlib
from urllib.parse import parse_qsl, urlsplit

from llmproto_ref._memory import DEFAULT_MAX_PAYLOAD, MemoryTransport
from llmproto_ref._registry import ErrorCode
from llmproto_ref._transport import Transport, TransportError

__all__ = ("open_transport",)

#: scheme -> (broker, adapter module, its transport class, the extra that installs its client)
_ADAPTERS = {
    "nats": ("NATS", "llmproto_nats", "NatsTransport", "nats"),
    "tls": ("NATS", "llmproto_nats", "NatsTransport", "nats"),
    "amqp": ("RabbitMQ", "llmproto_rabbitmq", "RabbitMQTransport", "rabbitmq"),
    "amqps": ("RabbitMQ", "llmproto_rabbitmq", "RabbitMQTransport", "rabbitmq"),
}
_MEMORY_OPTIONS = {"max_payload": DEFAULT_MAX_PAYLOAD, "dedup_window_ms": 120_000}
_SUPPORTED = "memory://, nats://, tls://, amqp://, amqps://"


def _adapter(scheme: str, url: str) -> Transport:
    broker, module_name, class_name, extra = _ADAPTERS[scheme]
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, class_name)
    except ImportError as exc:
        raise TransportError(
            ErrorCode.UNAVAILABLE,
            f"the {broker} binding needs its client library ({exc.name or module_name} is not "
            f"installed): pip install 'llmproto[{extra}]' to use {url!r}",
        ) from exc
    transport: Transport = factory.from_url(url)
    return transport


def open_transport(url: str) -> Transport:
    """The transport ``url`` names, not yet entered (use it with ``async with``).

    :raises TransportError: ``INVALID_PARAMS`` for a malformed URL or an unknown scheme;
        ``UNAVAILABLE`` for a broker whose adapter is not available.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise TransportError(ErrorCode.INVALID_PARAMS, f"malformed transport URL {url!r}") from exc
    scheme = parts.scheme.lower()
    if scheme in _ADAPTERS:
        return _adapter(scheme, url)
    if scheme != "memory":
        raise TransportError(
            ErrorCode.INVALID_PARAMS,
            f"unsupported transport scheme {parts.scheme!r} in {url!r}; supported: {_SUPPORTED}",
        )
    if parts.path not in ("", "/") or parts.fragment:
        raise TransportError(
            ErrorCode.INVALID_PARAMS, f"a memory URL is memory://[name][?options], not {url!r}"
        )
    options = dict(_MEMORY_OPTIONS)
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise TransportError(ErrorCode.INVALID_PARAMS, f"malformed query in {url!r}") from exc
    for key, value in pairs:
        if key not in options:
            raise TransportError(
                ErrorCode.INVALID_PARAMS,
                f"unknown memory transport option {key!r}; known: {', '.join(_MEMORY_OPTIONS)}",
            )
        if not value.isascii() or not value.isdigit():
            raise TransportError(
                ErrorCode.INVALID_PARAMS, f"{key} must be a decimal integer, not {value!r}"
            )
        options[key] = int(value)
    try:
        return MemoryTransport(
            parts.netloc or "default",
            max_payload=options["max_payload"],
            dedup_window_ms=options["dedup_window_ms"],
        )
    except ValueError as exc:
        raise TransportError(ErrorCode.INVALID_PARAMS, f"{exc} (in {url!r})") from exc
