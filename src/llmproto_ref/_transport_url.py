"""Transports named by URL: ``memory://[name][?max_payload=N&dedup_window_ms=N]``.

``nats://`` (and ``tls://``) and ``amqp://`` (and ``amqps://``) are recognised and refused
with ``UNAVAILABLE`` until their adapters land; any other scheme is ``INVALID_PARAMS``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from llmproto_ref._memory import DEFAULT_MAX_PAYLOAD, MemoryTransport
from llmproto_ref._registry import ErrorCode
from llmproto_ref._transport import Transport, TransportError

__all__ = ("open_transport",)

_PENDING = {
    "nats": ("NATS", "llmproto_nats", "nats"),
    "tls": ("NATS", "llmproto_nats", "nats"),
    "amqp": ("RabbitMQ", "llmproto_rabbitmq", "rabbitmq"),
    "amqps": ("RabbitMQ", "llmproto_rabbitmq", "rabbitmq"),
}
_MEMORY_OPTIONS = {"max_payload": DEFAULT_MAX_PAYLOAD, "dedup_window_ms": 120_000}
_SUPPORTED = "memory:// (nats:// and amqp:// once their adapters land)"


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
    if scheme in _PENDING:
        broker, package, extra = _PENDING[scheme]
        raise TransportError(
            ErrorCode.UNAVAILABLE,
            f"the {broker} binding ({package}) is not available yet: it lands with its issue; "
            f"then install the {extra!r} extra (pip install 'llmproto[{extra}]') to use {url!r}",
        )
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
