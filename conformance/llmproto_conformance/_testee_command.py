"""``llmproto conformance testee --transport URL``: run the reference testee as a process.

The process serves the testee contract (spec/conformance.md) on the transport ``URL`` names,
writes one line to standard output once it serves [CONF-018], and stops cleanly on SIGINT or
SIGTERM. Exit status: 0 after a signal, 1 when the transport fails, 2 for a malformed URL.
"""

from __future__ import annotations

import signal
import sys

import anyio

from llmproto_conformance._command import redact
from llmproto_conformance._context import TESTEE_SERVICE
from llmproto_conformance._testee import Testee
from llmproto_ref import ErrorCode, LlmpError, open_transport

__all__ = ("testee_main",)


def ready_line(url: str) -> str:
    """What the process prints once it serves (a password in ``url`` is not shown)."""
    return f"llmproto testee serving on {redact(url)} (service {TESTEE_SERVICE})"


async def serve(url: str, fault: str | None = None) -> int:
    """Serve the testee on ``url`` until SIGINT or SIGTERM (or until cancelled).

    :param fault: serve a deliberately broken testee (a name of ``_faults.FAULTS``).
    """
    from llmproto_conformance._faults import faulty

    opened = open_transport(url)
    wire = opened if fault is None else faulty(opened, fault)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with wire as transport, Testee(transport):
            print(ready_line(url), flush=True)
            async for _ in signals:
                break
    return 0


def testee_main(url: str, *, fault: str | None = None) -> int:  # noqa: PT028 - not a test
    """Run the reference testee on the transport ``url``; returns the exit status."""
    try:
        return anyio.run(serve, url, fault)
    except LlmpError as exc:
        print(f"llmproto testee: {exc}", file=sys.stderr, flush=True)
        return 2 if exc.code is ErrorCode.INVALID_PARAMS else 1
