"""llmproto reference implementation.

The envelope codec and error registry, the sans-IO protocol core (exchange state machines,
correlation, stream reassembly, deadlines, idempotency, metrics), the anyio runtime
(:class:`Client`, :class:`SyncClient`, :class:`Service`) and the embedded ``memory://``
transport. The public API lives in the underscore modules and is re-exported here. The runtime names
(those needing anyio) are imported on first use, so the sans-IO core imports no I/O library.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from llmproto_ref._bearer import BearerPolicy, TokenClaims
from llmproto_ref._canonical import canonicalize
from llmproto_ref._codec import MEDIA_TYPE, decode, encode
from llmproto_ref._correlation import Correlator, Pending, Routed
from llmproto_ref._deadline import Deadline
from llmproto_ref._encryption import Encrypter, decrypt
from llmproto_ref._envelope import LLMP_VERSION, Envelope, Kind
from llmproto_ref._errors import (
    EnvelopeError,
    ExchangeError,
    LlmpError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from llmproto_ref._exchange import (
    TERMINAL_STATES,
    TRANSITIONS,
    Action,
    Exchange,
    ExchangeKind,
    Input,
    State,
    render_tables,
)
from llmproto_ref._handling import Event, Final, Request, current_request
from llmproto_ref._idempotency import Claim, IdempotencyStore, request_digest
from llmproto_ref._ids import new_id, now_timestamp
from llmproto_ref._keys import JwkSetFile, Key, KeyResolver, KeySet
from llmproto_ref._limits import DEFAULT_LIMITS, Limits
from llmproto_ref._metrics import Figures, Metrics, Pattern
from llmproto_ref._policy import SecurityPolicy, Verified
from llmproto_ref._registry import ErrorCode, RegistryEntry, registry
from llmproto_ref._replay import NonceCache, Refusal, ReplayCache
from llmproto_ref._resources import load_schema, schema_dir
from llmproto_ref._security_error import SecurityError
from llmproto_ref._signing import Signer
from llmproto_ref._stream import StreamReassembler
from llmproto_ref._transport import (
    Capabilities,
    Consumer,
    Delivery,
    Inbox,
    Job,
    Notice,
    QueueOptions,
    Subscription,
    Transport,
    TransportError,
    pattern_matches,
    validate_pattern,
    validate_queue_name,
)

if _typing.TYPE_CHECKING:
    from llmproto_ref._client import Client, JobHandle, Stream
    from llmproto_ref._memory import BrokerStats, MemoryBroker, MemoryTransport
    from llmproto_ref._service import Registration, Service, ServiceStats
    from llmproto_ref._sync import SyncClient, SyncJobHandle, SyncStream
    from llmproto_ref._transport_url import open_transport

#: Runtime names, by the module that defines them (imported on first access).
_RUNTIME = {
    "Client": "_client",
    "JobHandle": "_client",
    "Stream": "_client",
    "BrokerStats": "_memory",
    "MemoryBroker": "_memory",
    "MemoryTransport": "_memory",
    "Registration": "_service",
    "Service": "_service",
    "ServiceStats": "_service",
    "SyncClient": "_sync",
    "SyncJobHandle": "_sync",
    "SyncStream": "_sync",
    "open_transport": "_transport_url",
}


def __getattr__(name: str) -> _typing.Any:
    module = _RUNTIME.get(name)
    if module is None:
        raise AttributeError(f"module 'llmproto_ref' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"llmproto_ref.{module}"), name)
    globals()[name] = value
    return value


__all__ = (
    "DEFAULT_LIMITS",
    "LLMP_VERSION",
    "MEDIA_TYPE",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Action",
    "BearerPolicy",
    "BrokerStats",
    "Capabilities",
    "Claim",
    "Client",
    "Consumer",
    "Correlator",
    "Deadline",
    "Delivery",
    "Encrypter",
    "Envelope",
    "EnvelopeError",
    "ErrorCode",
    "Event",
    "Exchange",
    "ExchangeError",
    "ExchangeKind",
    "Figures",
    "Final",
    "IdempotencyStore",
    "Inbox",
    "Input",
    "Job",
    "JobHandle",
    "JwkSetFile",
    "Key",
    "KeyResolver",
    "KeySet",
    "Kind",
    "Limits",
    "LlmpError",
    "LocalProtocolError",
    "MemoryBroker",
    "MemoryTransport",
    "Metrics",
    "NonceCache",
    "Notice",
    "Pattern",
    "Pending",
    "ProtocolError",
    "QueueOptions",
    "Refusal",
    "Registration",
    "RegistryEntry",
    "RemoteProtocolError",
    "ReplayCache",
    "Request",
    "Routed",
    "SecurityError",
    "SecurityPolicy",
    "Service",
    "ServiceStats",
    "Signer",
    "State",
    "Stream",
    "StreamReassembler",
    "Subscription",
    "SyncClient",
    "SyncJobHandle",
    "SyncStream",
    "TokenClaims",
    "Transport",
    "TransportError",
    "Verified",
    "canonicalize",
    "current_request",
    "decode",
    "decrypt",
    "encode",
    "load_schema",
    "new_id",
    "now_timestamp",
    "open_transport",
    "pattern_matches",
    "registry",
    "render_tables",
    "request_digest",
    "schema_dir",
    "validate_pattern",
    "validate_queue_name",
)

__version__ = "0.1.0"
