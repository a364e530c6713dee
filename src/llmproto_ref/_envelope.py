"""The envelope: one llmproto message (spec/envelope.md).

An :class:`Envelope` is an immutable view over its wire members, a ``dict`` that is never
exposed for writing. Keeping the members as the wire holds them makes :func:`encode` a single
``orjson.dumps`` and :func:`decode` a parse plus a check, with no per-field copying
(spec/envelope.md explains why the hot path matters).

Theory of operation
-------------------
Every envelope is valid: the constructor, :meth:`Envelope.from_members` and
:meth:`Envelope.replace` validate, and :func:`decode` validates before it wraps. The runtime's
own builders (a response from a decoded request, a chunk, a request from a client's checked
arguments) assemble members that are valid by construction and adopt them through
:meth:`Envelope._assembled` without a second full check; they check one by one only what
came from the application. ``tests/test_built_envelopes_valid.py`` judges what they build
with the normative schema, and :data:`VALIDATE_BUILT` (or ``LLMPROTO_VALIDATE_BUILT=1`` in the
environment) makes :meth:`Envelope._assembled` validate everything again.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from llmproto_ref._errors import EnvelopeError
from llmproto_ref._ids import new_id, now_timestamp
from llmproto_ref._registry import ErrorCode
from llmproto_ref._validate import validate_members

__all__ = ("LLMP_VERSION", "Envelope", "Kind")

#: The protocol version this implementation speaks [ENV-010].
LLMP_VERSION = "1.0"

#: Validate the envelopes the runtime assembles itself as well (a debug and test mode).
VALIDATE_BUILT = os.environ.get("LLMPROTO_VALIDATE_BUILT", "") not in ("", "0")


class Kind(enum.StrEnum):
    """What a message is (spec/envelope.md section kind) [ENV-013]."""

    REQUEST = "request"  #: asks for work; may carry ``reply_to``
    RESPONSE = "response"  #: the successful terminal reply to a request
    ERROR = "error"  #: a failed terminal reply, or the rejection of a message
    EVENT = "event"  #: a fact published to a topic
    CHUNK = "chunk"  #: one piece of a streamed reply, ordered by ``seq``
    CANCEL = "cancel"  #: the requester gives up on an exchange


_KINDS = {k.value: k for k in Kind}
_new_object = object.__new__


class Envelope:
    """One message, validated when built (spec/envelope.md).

    Build one with keyword arguments (``None`` leaves a member out) or with :meth:`new`,
    which fills ``id`` and ``time``. Received bytes become one through
    :func:`~llmproto_ref.decode`.

    :raises EnvelopeError: if the members break the envelope schema.
    """

    __slots__ = ("_members",)
    _members: dict[str, Any]

    def __init__(
        self,
        *,
        id: str,
        kind: Kind | str,
        type: str,
        source: str,
        time: str,
        llmp: str = LLMP_VERSION,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        reply_to: str | None = None,
        deadline: str | None = None,
        idempotency_key: str | None = None,
        seq: int | None = None,
        final: bool | None = None,
        finish_reason: str | None = None,
        usage: Mapping[str, int] | None = None,
        content_type: str | None = None,
        dataschema: str | None = None,
        data: Any = None,
        data_base64: str | None = None,
        error: Mapping[str, Any] | None = None,
        trace: Mapping[str, str] | None = None,
        timing: Mapping[str, int] | None = None,
        auth: Mapping[str, str] | None = None,
        sig: Mapping[str, str] | None = None,
        enc: Mapping[str, str] | None = None,
        critical: list[str] | tuple[str, ...] | None = None,
        ext: Mapping[str, Any] | None = None,
    ) -> None:
        members: dict[str, Any] = {
            "llmp": llmp,
            "id": id,
            "kind": kind.value if isinstance(kind, Kind) else kind,
            "type": type,
            "source": source,
            "time": time,
        }
        # One test per optional member, in schema order: this runs for every message sent.
        if correlation_id is not None:
            members["correlation_id"] = correlation_id
        if causation_id is not None:
            members["causation_id"] = causation_id
        if reply_to is not None:
            members["reply_to"] = reply_to
        if deadline is not None:
            members["deadline"] = deadline
        if idempotency_key is not None:
            members["idempotency_key"] = idempotency_key
        if seq is not None:
            members["seq"] = seq
        if final is not None:
            members["final"] = final
        if finish_reason is not None:
            members["finish_reason"] = finish_reason
        if usage is not None:
            members["usage"] = _plain(usage)
        if content_type is not None:
            members["content_type"] = content_type
        if dataschema is not None:
            members["dataschema"] = dataschema
        if data is not None:
            members["data"] = _plain(data)
        if data_base64 is not None:
            members["data_base64"] = data_base64
        if error is not None:
            members["error"] = _plain(error)
        if trace is not None:
            members["trace"] = _plain(trace)
        if timing is not None:
            members["timing"] = _plain(timing)
        if auth is not None:
            members["auth"] = _plain(auth)
        if sig is not None:
            members["sig"] = _plain(sig)
        if enc is not None:
            members["enc"] = _plain(enc)
        if critical is not None:
            members["critical"] = _plain(critical)
        if ext is not None:
            members["ext"] = _plain(ext)
        validate_members(members)
        if content_type is not None and "data" in members and not _is_json(content_type):
            raise EnvelopeError(
                ErrorCode.INVALID_ENVELOPE,
                f"a {content_type} payload goes in data_base64, not data",
                pointer="/data",
                requirement="ENV-040",
            )
        object.__setattr__(self, "_members", members)

    @classmethod
    def new(cls, *, kind: Kind | str, type: str, source: str, **members: Any) -> Envelope:
        """An envelope with a fresh UUIDv7 ``id`` and the current ``time``."""
        return cls(
            id=new_id(), time=now_timestamp(), kind=kind, type=type, source=source, **members
        )

    @classmethod
    def from_members(cls, members: Mapping[str, Any]) -> Envelope:
        """Validate a mapping of wire members (a copy is kept) and wrap it.

        Unlike the constructor this keeps members whose value is JSON ``null``, so it is the
        way to build an envelope whose ``data`` is ``null``.
        """
        copied = {k: _plain(v) for k, v in members.items()}
        validate_members(copied)
        return cls._wrap(copied)

    @classmethod
    def _wrap(cls, members: dict[str, Any]) -> Envelope:
        """Adopt already validated members without copying (the decode path)."""
        envelope = _new_object(cls)
        _set_members(envelope, members)
        return envelope

    @classmethod
    def _assembled(cls, members: dict[str, Any]) -> Envelope:
        """Adopt members a runtime builder assembled from valid parts (see the module notes).

        :raises EnvelopeError: only with :data:`VALIDATE_BUILT`, if the builder erred.
        """
        if VALIDATE_BUILT:
            validate_members(members)
        envelope = _new_object(cls)
        _set_members(envelope, members)
        return envelope

    def replace(self, **changes: Any) -> Envelope:
        """A validated copy with ``changes`` applied; a change to ``None`` removes the member."""
        members = dict(self._members)
        for name, value in changes.items():
            if value is None:
                members.pop(name, None)
            else:
                members[name] = _plain(value)
        validate_members(members)
        return Envelope._wrap(members)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Envelope is immutable; use replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Envelope is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return self._members == other._members

    __hash__ = None  # type: ignore[assignment]  # data may be a mutable JSON value

    def __repr__(self) -> str:
        m = self._members
        return f"Envelope(kind={m['kind']!r}, type={m['type']!r}, id={m['id']!r})"

    @property
    def members(self) -> Mapping[str, Any]:
        """A read-only view of the wire members."""
        return MappingProxyType(self._members)

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the wire members."""
        return dict(self._members)

    def has(self, name: str) -> bool:
        """Whether member ``name`` is present (``data`` may be present and ``null``)."""
        return name in self._members

    @property
    def llmp(self) -> str:
        """Protocol version, ``major.minor``."""
        return self._members["llmp"]  # type: ignore[no-any-return]

    @property
    def id(self) -> str:
        """Unique message identifier."""
        return self._members["id"]  # type: ignore[no-any-return]

    @property
    def kind(self) -> Kind:
        """What the message is."""
        return _KINDS[self._members["kind"]]

    @property
    def type(self) -> str:
        """Operation or event name."""
        return self._members["type"]  # type: ignore[no-any-return]

    @property
    def source(self) -> str:
        """Sender identity."""
        return self._members["source"]  # type: ignore[no-any-return]

    @property
    def time(self) -> str:
        """Creation time."""
        return self._members["time"]  # type: ignore[no-any-return]

    @property
    def correlation_id(self) -> str | None:
        """The ``id`` of the request this message belongs to."""
        return self._members.get("correlation_id")

    @property
    def causation_id(self) -> str | None:
        """The ``id`` of the message that caused this one."""
        return self._members.get("causation_id")

    @property
    def reply_to(self) -> str | None:
        """Where replies go."""
        return self._members.get("reply_to")

    @property
    def deadline(self) -> str | None:
        """Absolute time after which nobody waits for the outcome."""
        return self._members.get("deadline")

    @property
    def idempotency_key(self) -> str | None:
        """Key under which the request is executed at most once."""
        return self._members.get("idempotency_key")

    @property
    def seq(self) -> int | None:
        """Position of a chunk in its stream."""
        value = self._members.get("seq")
        return None if value is None else int(value)

    @property
    def final(self) -> bool:
        """Whether this chunk ends its stream."""
        return self._members.get("final") is True

    @property
    def finish_reason(self) -> str | None:
        """Why a completed exchange stopped, e.g. ``stop`` or ``length``."""
        return self._members.get("finish_reason")

    @property
    def usage(self) -> Mapping[str, int] | None:
        """Resource counts of a completed exchange."""
        return self._members.get("usage")

    @property
    def content_type(self) -> str | None:
        """Media type of the payload (``application/json`` when absent)."""
        return self._members.get("content_type")

    @property
    def dataschema(self) -> str | None:
        """URI of the payload's schema."""
        return self._members.get("dataschema")

    @property
    def data(self) -> Any:
        """The JSON payload (``None`` when absent or ``null``); treat it as read-only."""
        return self._members.get("data")

    @property
    def data_base64(self) -> str | None:
        """The binary payload, base64-encoded."""
        return self._members.get("data_base64")

    @property
    def error(self) -> Mapping[str, Any] | None:
        """The error object of a ``kind=error`` message."""
        return self._members.get("error")

    @property
    def trace(self) -> Mapping[str, str] | None:
        """W3C trace context."""
        return self._members.get("trace")

    @property
    def timing(self) -> Mapping[str, int] | None:
        """Latency stamps, microseconds since the epoch."""
        return self._members.get("timing")

    @property
    def auth(self) -> Mapping[str, str] | None:
        """Credential block."""
        return self._members.get("auth")

    @property
    def sig(self) -> Mapping[str, str] | None:
        """Signature block."""
        return self._members.get("sig")

    @property
    def enc(self) -> Mapping[str, str] | None:
        """Payload encryption block."""
        return self._members.get("enc")

    @property
    def critical(self) -> tuple[str, ...]:
        """Extensions the receiver must understand."""
        return tuple(self._members.get("critical", ()))

    @property
    def ext(self) -> Mapping[str, Any] | None:
        """Namespaced extension members."""
        return self._members.get("ext")


def _is_json(media_type: str) -> bool:
    """Whether ``media_type`` is JSON: ``*/json`` or a ``+json`` suffix, parameters ignored."""
    subtype = media_type.split(";", 1)[0].strip().lower().partition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


def _plain(value: Any) -> Any:
    """Turn read-only views and tuples given by callers into plain JSON containers."""
    if type(value) is dict or type(value) is list or type(value) is str:
        return value  # the common case: nothing to convert at the top
    if isinstance(value, str):
        return str(value)  # a StrEnum member such as Kind.EVENT: its wire value
    if isinstance(value, Mapping) and not isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


_set_members = vars(Envelope)["_members"].__set__  # the slot's setter: adoption in one call
