"""The error-code registry, loaded from ``schemas/error-codes.json``.

The JSON file is the truth (spec/errors.md); :class:`ErrorCode` is built from it at import,
so the enum cannot drift from the data. A test also checks the spec's table against both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from llmproto_ref._resources import load_schema

__all__ = ("ErrorCode", "RegistryEntry", "registry")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryEntry:
    """One row of the registry: what a code means and how it maps elsewhere."""

    code: str  #: the wire value, UPPER_SNAKE
    meaning: str  #: one sentence
    retryable: bool  #: default for the error object's ``retryable``
    http: int  #: nearest HTTP status, for gateways
    grpc: str  #: nearest gRPC status name, for gateways


def _load() -> dict[str, RegistryEntry]:
    doc: dict[str, Any] = load_schema("error-codes.json")
    return {row["code"]: RegistryEntry(**row) for row in doc["codes"]}


_REGISTRY = _load()


def registry() -> dict[str, RegistryEntry]:
    """Every registered code with its entry, in registry order."""
    return dict(_REGISTRY)


class ErrorCode(enum.StrEnum):
    """Registry error codes (spec/errors.md section Registry; schemas/error-codes.json).

    The members mirror the registry file; importing this module fails if they disagree.
    """

    INVALID_ENVELOPE = "INVALID_ENVELOPE"  #: not strict JSON or not schema-valid
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"  #: major version not implemented
    UNSUPPORTED_EXTENSION = "UNSUPPORTED_EXTENSION"  #: a critical extension not understood
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"  #: over a size limit
    INVALID_PARAMS = "INVALID_PARAMS"  #: payload not acceptable to the operation
    UNKNOWN_TYPE = "UNKNOWN_TYPE"  #: no such operation or event
    PROTOCOL_ERROR = "PROTOCOL_ERROR"  #: exchange state machine broken
    UNAUTHENTICATED = "UNAUTHENTICATED"  #: credential missing, bad or expired
    SIGNATURE_INVALID = "SIGNATURE_INVALID"  #: signature does not verify
    REPLAY_REJECTED = "REPLAY_REJECTED"  #: nonce seen or outside the window
    PERMISSION_DENIED = "PERMISSION_DENIED"  #: authenticated but not allowed
    NOT_FOUND = "NOT_FOUND"  #: named resource does not exist
    NO_RESPONDERS = "NO_RESPONDERS"  #: nothing at the destination
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"  #: key reused with other content
    IN_PROGRESS = "IN_PROGRESS"  #: same key still executing
    RATE_LIMITED = "RATE_LIMITED"  #: caller over a rate limit
    QUOTA_EXHAUSTED = "QUOTA_EXHAUSTED"  #: budget used up
    OVERLOADED = "OVERLOADED"  #: service out of capacity
    UNAVAILABLE = "UNAVAILABLE"  #: transport or service unreachable
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"  #: deadline passed
    CANCELLED = "CANCELLED"  #: cancelled by requester or operator
    CONTEXT_LENGTH_EXCEEDED = "CONTEXT_LENGTH_EXCEEDED"  #: over the context window
    CONTENT_REFUSED = "CONTENT_REFUSED"  #: model or policy refused
    UPSTREAM_ERROR = "UPSTREAM_ERROR"  #: provider or dependency failed
    STREAM_INTERRUPTED = "STREAM_INTERRUPTED"  #: stream broke before its end
    DEAD_LETTERED = "DEAD_LETTERED"  #: delivery limit reached
    INTERNAL = "INTERNAL"  #: unexpected failure, a bug

    @property
    def entry(self) -> RegistryEntry:
        """This code's registry row."""
        return _REGISTRY[self.value]

    @property
    def retryable(self) -> bool:
        """The registry default for ``retryable``."""
        return _REGISTRY[self.value].retryable

    @classmethod
    def parse(cls, raw: str) -> ErrorCode | str:
        """The member for a registered code, or ``raw`` itself for an unknown one."""
        try:
            return cls(raw)
        except ValueError:
            return raw


if [m.value for m in ErrorCode] != list(_REGISTRY):  # pragma: no cover - guarded by a test too
    raise ImportError("ErrorCode and schemas/error-codes.json disagree; update both together")
