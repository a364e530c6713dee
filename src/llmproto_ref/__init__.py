"""llmproto reference implementation: the envelope codec and error registry.

The public API lives in the underscore modules and is re-exported here.
"""

from __future__ import annotations

from llmproto_ref._codec import MEDIA_TYPE, decode, encode
from llmproto_ref._envelope import LLMP_VERSION, Envelope, Kind
from llmproto_ref._errors import (
    EnvelopeError,
    LlmpError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from llmproto_ref._ids import new_id, now_timestamp
from llmproto_ref._limits import DEFAULT_LIMITS, Limits
from llmproto_ref._registry import ErrorCode, RegistryEntry, registry
from llmproto_ref._resources import load_schema, schema_dir

__all__ = (
    "DEFAULT_LIMITS",
    "LLMP_VERSION",
    "MEDIA_TYPE",
    "Envelope",
    "EnvelopeError",
    "ErrorCode",
    "Kind",
    "Limits",
    "LlmpError",
    "LocalProtocolError",
    "ProtocolError",
    "RegistryEntry",
    "RemoteProtocolError",
    "decode",
    "encode",
    "load_schema",
    "new_id",
    "now_timestamp",
    "registry",
    "schema_dir",
)

__version__ = "0.1.0"
