"""The NATS binding and adapter for llmproto (not implemented yet).

Importing this package fails on purpose, so that nothing depends on an adapter that does not
exist; the binding lands with the issue 'NATS binding and adapter'.
"""

from __future__ import annotations

raise ImportError(
    "llmproto_nats is not implemented yet: "
    "the NATS binding lands with the issue 'NATS binding and adapter'"
)
