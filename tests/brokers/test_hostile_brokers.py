"""Hostile input over NATS and RabbitMQ: the corpus published raw to a reference service.

The same run as ``tests/test_hostile_input.py`` on memory://, through ``open_transport`` against
the machine's brokers: every input gets its error reply with the right code, pointer and
requirement when a reply address can be read [ENV-036], or is dropped and counted [ENV-038];
bodies over the binding's ``max_payload`` are refused at the sender [TRN-024]; valid requests
keep being answered throughout [ENV-037]. The service and the type it serves are named after the
test's run id, so parallel runs on a shared broker do not meet. Core request-reply only: no
stream, queue or exchange outlives the test except what the binding itself declares for the
service and its inboxes.

The two kinds of input that the reference runtime does not handle yet (see
``test_hostile_input.py``) are left out here. A transport whose ``send_request`` refuses an empty
reply address cannot send the inputs without one; they are reported as skipped, not failed.
"""

from __future__ import annotations

import importlib
import time

import pytest

from llmproto_conformance._hostile import HostileReport, run_hostile
from llmproto_conformance._hostile_corpus import hostile_corpus
from llmproto_ref import open_transport

pytestmark = pytest.mark.anyio


INPUTS = hostile_corpus(signatures=False)


def _require_adapter(module: str, name: str) -> None:
    try:
        adapter = importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} cannot be imported: {exc}")
    if not hasattr(adapter, name):
        pytest.skip(f"{module}.{name} is not implemented yet")


def _check(report: HostileReport) -> None:
    assert report.ok, report.summary()
    skipped = [r for r in report.results if r.outcome == "skipped"]
    assert all(r.name.startswith("no-reply/") for r in skipped), report.summary()
    answered = sum(r.outcome == "answered" for r in report.results)
    assert answered >= 500, report.summary()
    assert report.counters["rejected"] == answered


async def test_hostile_nats(nats_url: str, run_id: str) -> None:
    """The corpus against a service on NATS [ENV-036, ENV-037, ENV-038, RR-005, TRN-024]."""
    _require_adapter("llmproto_nats", "NatsTransport")
    started = time.monotonic()
    report = await run_hostile(lambda: open_transport(nats_url), inputs=INPUTS, prefix=run_id)
    _check(report)
    assert time.monotonic() - started < 90, report.summary()


async def test_hostile_rabbitmq(amqp_url: str, run_id: str) -> None:
    """The corpus against a service on RabbitMQ [ENV-036, ENV-037, ENV-038, RR-005, TRN-024]."""
    _require_adapter("llmproto_rabbitmq", "RabbitMQTransport")
    started = time.monotonic()
    report = await run_hostile(lambda: open_transport(amqp_url), inputs=INPUTS, prefix=run_id)
    _check(report)
    assert time.monotonic() - started < 90, report.summary()
