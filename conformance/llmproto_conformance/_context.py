"""What a check gets to work with: the suite's client, raw access, the testee's counters.

Every check talks to the implementation only through the transport: through a reference
:class:`~llmproto_ref.Client` (for well-formed traffic) or raw bytes (for hostile input), both
recorded for the wire log. The testee contract is in spec/conformance.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from llmproto_conformance._model import CheckFailed
from llmproto_conformance._recording import RecordingTransport
from llmproto_ref import (
    Capabilities,
    Client,
    Envelope,
    Kind,
    Transport,
)

__all__ = (
    "SUITE_SOURCE",
    "TESTEE_QUEUE",
    "TESTEE_SECURE_SERVICE",
    "TESTEE_SECURE_TYPES",
    "TESTEE_SERVICE",
    "TESTEE_TYPES",
    "CheckContext",
    "error_of",
    "is_terminal",
)

#: The serve group of every testee (spec/conformance.md).
TESTEE_SERVICE = "llmp-testee"
#: The testee operations, by short name.
TESTEE_TYPES = {
    "echo": "llmp.testee.echo",
    "fail": "llmp.testee.fail",
    "sleep": "llmp.testee.sleep",
    "stream": "llmp.testee.stream",
    "emit": "llmp.testee.emit",
    "counters": "llmp.testee.counters",
    "job": "llmp.testee.job",
}
#: The testee's work queue.
TESTEE_QUEUE = "llmp.testee.jobs"
#: The serve group of the testee's second service, the one that checks security
#: (spec/conformance.md, The secure service; configured as ``_security_kit`` says).
TESTEE_SECURE_SERVICE = "llmp-testee-secure"
#: The secure service's operations, by short name.
TESTEE_SECURE_TYPES = {
    "echo": "llmp.testee.secure.echo",
    "scoped": "llmp.testee.secure.scoped",
    "relay": "llmp.testee.secure.relay",
}
SUITE_SOURCE = "llmp://conformance-suite"


class CheckContext:
    """Handed to every check.

    :param transport: the suite's recording transport (entered).
    :param client: a reference client on it (entered).
    :param adapter_mode: whether the suite holds the transport under test itself.
    :param run_id: makes this run's ids, keys and names unique.
    """

    def __init__(
        self,
        transport: RecordingTransport,
        client: Client,
        *,
        adapter_mode: bool,
        run_id: str,
        open_transport: Callable[[], Transport] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.transport = transport
        self.client = client
        self.adapter_mode = adapter_mode
        self.run_id = run_id
        #: fresh, unentered transports of the kind under test (transport-contract checks)
        self.open_transport = open_transport
        #: run options, e.g. ``in_flight`` for the performance checks (``llmproto bench``)
        self.options: Mapping[str, Any] = dict(options or {})
        self._counter = itertools.count()

    @property
    def capabilities(self) -> Capabilities:
        """What the transport under test declares."""
        return self.transport.capabilities

    def unique(self, what: str = "k") -> str:
        """A name unique to this run, for idempotency keys, event types and queues."""
        return f"{what}-{self.run_id}-{next(self._counter)}"

    def expect(self, condition: bool, message: str) -> None:
        """Fail the check with ``message`` unless ``condition`` holds."""
        if not condition:
            raise CheckFailed(message)

    async def call(self, op: str, data: Any = None, **options: Any) -> Envelope:
        """A well-formed request to the testee operation ``op`` (see TESTEE_TYPES)."""
        return await self.client.request(TESTEE_TYPES[op], data, **options)

    async def counters(self) -> dict[str, Any]:
        """The testee's counters (spec/conformance.md)."""
        reply = await self.call("counters", {}, timeout=5)
        data = reply.data
        self.expect(isinstance(data, dict), f"llmp.testee.counters answered {data!r}")
        return dict(data)

    def request_bytes(self, op: str, data: Any = None, **members: Any) -> Envelope:
        """A well-formed request envelope for ``op``; set ``reply_to`` for replies to reach you."""
        return Envelope.new(kind=Kind.REQUEST, type=TESTEE_TYPES[op], source=SUITE_SOURCE,
                            data=data, **members)  # fmt: skip

    async def eventually(
        self, probe: Any, *, timeout_s: float = 3.0, interval_s: float = 0.02
    ) -> Any:
        """Await ``probe()`` until it returns something truthy or the time is up."""
        result: Any = None
        with anyio.move_on_after(timeout_s):
            while True:
                result = await probe()
                if result:
                    return result
                await anyio.sleep(interval_s)
        return result


def is_terminal(reply: Envelope) -> bool:
    """Whether ``reply`` ends its exchange: a response, an error or the final chunk."""
    return reply.kind in (Kind.RESPONSE, Kind.ERROR) or (reply.kind is Kind.CHUNK and reply.final)


def error_of(reply: Envelope) -> Mapping[str, Any]:
    """The error object of an error reply, or fail the check."""
    if reply.kind is not Kind.ERROR or reply.error is None:
        raise CheckFailed(f"expected an error reply, got a {reply.kind}")
    return reply.error
