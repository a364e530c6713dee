"""The queue, events, transport and performance checks against the reference, and broken ones.

Every check of those four profiles runs through ``run_suite`` on ``memory://`` with the
reference testee: the checks pass (the performance ones report their figures). Then a few
deliberately broken transports and testees, each the defect one check exists to catch, show
that the check fails; the defects of ``llmproto_conformance._faults`` cover the others.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import anyio
import orjson
import pytest

import llmproto_conformance._testee as testee_module
from llmproto_conformance._catalogue import catalogue
from llmproto_conformance._model import Check, CheckFailed, Level, Outcome, Profile
from llmproto_conformance._report import Report
from llmproto_conformance._requirements import build, requirement_text
from llmproto_conformance._runner import RunPlan, run_suite
from llmproto_conformance._testee import Testee
from llmproto_conformance._transport_kit import Background
from llmproto_ref import (
    Consumer,
    Delivery,
    Envelope,
    EnvelopeError,
    Inbox,
    Job,
    Kind,
    MemoryBroker,
    MemoryTransport,
    QueueOptions,
    Subscription,
    Transport,
    decode,
    encode,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
MODULES = frozenset(
    f"llmproto_conformance._checks_{area}"
    for area in ("queue", "events", "transport", "transport_names", "transport_queue",
                 "transport_limits", "transport_readers", "performance")
)  # fmt: skip
#: The figures each performance check must report, besides its raw counterparts.
FIGURES = {
    "perf-request-response": ("rr_1_p50_ms", "rr_1_p99_ms", "rr_1_p50_ms_raw", "rr_1_p50_ratio",
                              "rr_64_p50_ms", "rr_64_p99_ms_raw", "rr_64_rps", "rr_64_rps_raw",
                              "rr_64_rps_ratio", "rr_1_eta", "rr_1_ts_p50_ms", "rr_1_tt_p50_ms",
                              "rr_1_tr_p50_ms", "rr_1_tt_p50_ms_raw", "rr_1_l_p50_ms", "rr_1_n"),
    "perf-stream": ("stream_first_p50_ms", "stream_first_p50_ms_raw", "stream_chunk_p50_ms",
                    "stream_chunk_p50_ratio", "stream_chunks_per_s", "stream_chunks_per_s_raw",
                    "stream_eta", "stream_first_n"),
    "perf-events": ("events_per_s", "events_per_s_raw", "events_per_s_ratio", "events_eta",
                    "events_n"),
    "perf-queue": ("jobs_p50_ms", "jobs_p50_ms_raw", "jobs_per_s", "jobs_per_s_raw",
                   "jobs_per_s_ratio", "jobs_eta", "jobs_n"),
}  # fmt: skip
#: Checks also run on trio: one of each kind of timing and of each profile.
ON_TRIO = (
    "trn-lease-expiry", "trn-delayed-nack", "trn-stale-settle", "trn-wildcards",
    "evt-group-once", "evt-expired-not-handled", "wq-retry-then-succeed", "wq-slot-free",
    "perf-request-response",
)  # fmt: skip


def _mine() -> list[Check]:
    return [c for c in catalogue() if c.function.__module__ in MODULES]


async def _run(
    check_ids: frozenset[str],
    wrap: Callable[[Transport], Transport] = lambda t: t,
    *,
    testee_wrap: Callable[[Transport], Transport] | None = None,
) -> Report:
    """Run the checks on a fresh broker; ``testee_wrap`` runs a broken testee of our own."""
    name = f"checks{uuid.uuid4().hex}"
    MemoryBroker.reset(name)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if testee_wrap is not None:
                side = await stack.enter_async_context(testee_wrap(MemoryTransport(name)))
                await stack.enter_async_context(Testee(side))
            return await run_suite(
                lambda: wrap(MemoryTransport(name)),
                RunPlan(check_ids=check_ids, testee=testee_wrap is not None),
                transport_label=f"memory://{name}",
                implementation="llmproto_ref",
            )
    finally:
        MemoryBroker.reset(name)


def _verdicts(report: Report) -> dict[str, tuple[Outcome, str]]:
    return {r.check.id: (r.outcome, r.message) for r in report.checks}


def _expected(check: Check) -> Outcome:
    return Outcome.INFORMATIONAL if check.profile is Profile.PERFORMANCE else Outcome.PASS


def test_the_four_profiles_have_checks() -> None:
    """Each module registers checks of its own profile only."""
    profiles = {c.profile for c in _mine()}
    assert {Profile.QUEUE, Profile.EVENTS, Profile.TRANSPORT, Profile.PERFORMANCE} == profiles
    assert [] == [c.id for c in _mine() if not c.id.startswith(("wq-", "evt-", "trn-", "perf-"))]


def test_every_requirement_is_defined_in_the_spec() -> None:
    """Each check's requirement ID is tagged in spec/ and quoted by requirements.json."""
    defined = build(ROOT / "spec")
    assert [] == [f"{c.id}: {c.requirement}" for c in _mine() if c.requirement not in defined]
    assert [] == [c.id for c in _mine() if not requirement_text(c.requirement)]


def test_transport_checks_need_fresh_transports() -> None:
    """Transport-contract checks are adapter-only; performance checks are informational MAYs."""
    assert [] == [c.id for c in _mine() if (c.profile is Profile.TRANSPORT) != c.adapter_only]
    performance = [c for c in _mine() if c.profile is Profile.PERFORMANCE]
    assert [] == [c.id for c in performance if c.level is not Level.MAY]
    assert set(FIGURES) == {c.id for c in performance}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_every_check_passes_against_the_reference(anyio_backend: str) -> None:
    """On asyncio every check passes, and every performance check reports its figures."""
    checks = _mine()
    report = await _run(frozenset(c.id for c in checks))
    verdicts = _verdicts(report)
    assert {c.id: _expected(c) for c in checks} == {k: v[0] for k, v in verdicts.items()}, {
        k: v[1] for k, v in verdicts.items() if v[1]
    }
    figures = {r.check.id: r.figures for r in report.checks if r.figures}
    for check_id, names in FIGURES.items():
        assert [] == [n for n in names if not isinstance(figures[check_id].get(n), int | float)]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_checks_pass_on_trio(anyio_backend: str) -> None:
    """A subset of the checks passes on trio as well."""
    report = await _run(frozenset(ON_TRIO))
    expected = {c.id: _expected(c) for c in _mine() if c.id in ON_TRIO}
    assert expected == {k: v[0] for k, v in _verdicts(report).items()}, _verdicts(report)


# -- broken implementations: each check fails for the defect it exists to catch -------------


class _Wrapped:
    """A transport delegating everything to ``inner``; subclasses break one operation."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def __aenter__(self) -> _Wrapped:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)


class _NeverCloses(_Wrapped):
    """Leaving the block leaves the connection open, so a closed transport still works."""

    async def __aexit__(self, *exc: object) -> None:
        return None


class _SharedInbox(_Wrapped):
    """Every inbox after the first claims the first one's address."""

    first: str | None = None

    async def open_inbox(self) -> Inbox:
        inbox: Inbox = await self.inner.open_inbox()
        if _SharedInbox.first is None:
            _SharedInbox.first = inbox.address
        return Inbox(address=_SharedInbox.first, subscription=inbox.subscription)


class _Swapping(_Wrapped):
    """Events are published in swapped pairs: the second of each pair goes out first."""

    held: tuple[str, bytes] | None = None

    async def publish_event(self, type: str, body: bytes) -> None:
        if self.held is None:
            self.held = (type, body)
            return
        await self.inner.publish_event(type, body)
        await self.inner.publish_event(*self.held)
        self.held = None


class _EnqueuesTwice(_Wrapped):
    """Each job is stored twice, so two consumers may both get it."""

    async def enqueue(self, queue: str, body: bytes, *, message_id: str) -> None:
        await self.inner.enqueue(queue, body, message_id=message_id)
        await self.inner.enqueue(queue, body, message_id=f"{message_id}.copy")


class _UnconfirmedEnqueue(_Wrapped):
    """enqueue returns before storing; what was not stored by closing time is lost."""

    async def enqueue(self, queue: str, body: bytes, *, message_id: str) -> None:
        return None


class _Rewriting(_Wrapped):
    """Event deliveries pass through ``rewrite`` (what the broken testee gets to see)."""

    def rewrite(self, envelope: Envelope | None, body: bytes) -> bytes:
        return body

    async def subscribe_events(self, pattern: str, *, group: str | None = None) -> Subscription:
        inner: Subscription = await self.inner.subscribe_events(pattern, group=group)
        return _RewrittenSubscription(inner, self.rewrite)


class _RewrittenSubscription:
    def __init__(self, inner: Subscription, rewrite: Callable[[Envelope | None, bytes], bytes]):
        self._inner = inner
        self._rewrite = rewrite

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._deliveries()

    async def _deliveries(self) -> AsyncIterator[Delivery]:
        async for delivery in self._inner:
            try:
                envelope: Envelope | None = decode(delivery.body)
            except EnvelopeError:
                envelope = None
            yield Delivery(body=self._rewrite(envelope, delivery.body))

    async def aclose(self) -> None:
        await self._inner.aclose()


class _DeadlinesStripped(_Rewriting):
    """The subscriber never sees an event's deadline."""

    def rewrite(self, envelope: Envelope | None, body: bytes) -> bytes:
        return body if envelope is None else encode(envelope.replace(deadline=None))


class _EverythingAnEvent(_Rewriting):
    """Requests and responses on an event topic are handled as if they were events."""

    def rewrite(self, envelope: Envelope | None, body: bytes) -> bytes:
        if envelope is None or envelope.kind is Kind.EVENT:
            return body
        return encode(envelope.replace(kind=str(Kind.EVENT), correlation_id=None))


class _Lenient(_Rewriting):
    """An event with an unknown member is repaired instead of rejected."""

    def rewrite(self, envelope: Envelope | None, body: bytes) -> bytes:
        if envelope is not None or not body.startswith(b"{"):
            return body
        try:
            members = {k: v for k, v in orjson.loads(body).items() if k != "bogus"}
            return encode(Envelope.from_members(members))
        except (orjson.JSONDecodeError, EnvelopeError):
            return body


class _PublishesElsewhere(_Wrapped):
    """Events go to a topic one token longer than their type."""

    async def publish_event(self, type: str, body: bytes) -> None:
        await self.inner.publish_event(f"{type}.elsewhere", body)


class _NoCausation(_Wrapped):
    """Published events lose their causation_id."""

    async def publish_event(self, type: str, body: bytes) -> None:
        await self.inner.publish_event(type, encode(decode(body).replace(causation_id=None)))


class _HandledTwice(_Wrapped):
    """The worker gets every job twice, as if its ack did not hold."""

    async def consume(self, queue: str, options: QueueOptions) -> Consumer:
        return _TwiceConsumer(await self.inner.consume(queue, options))


class _TwiceConsumer:
    def __init__(self, inner: Consumer) -> None:
        self._inner = inner

    def __aiter__(self) -> AsyncIterator[Job]:
        return self._jobs()

    async def _jobs(self) -> AsyncIterator[Job]:
        async for job in self._inner:
            yield job
            yield job

    async def aclose(self) -> None:
        await self._inner.aclose()


def _as_transport(kind: type[_Wrapped]) -> Callable[[Transport], Transport]:
    def wrap(inner: Transport) -> Transport:
        return cast(Transport, kind(inner))  # a Transport by delegation

    return wrap


#: (check, broken transport under the suite, broken transport under the testee)
BROKEN = {
    "trn-closed-unavailable": (_NeverCloses, None),
    "trn-inbox-unique": (_SharedInbox, None),
    "trn-order": (_Swapping, None),
    "trn-one-consumer-at-a-time": (_EnqueuesTwice, None),
    "trn-enqueue-stored": (_UnconfirmedEnqueue, None),
    "evt-expired-not-handled": (None, _DeadlinesStripped),
    "evt-non-event-dropped": (None, _EverythingAnEvent),
    "evt-malformed-dropped": (None, _Lenient),
    "evt-emit-topic": (None, _PublishesElsewhere),
    "evt-emit-causation": (None, _NoCausation),
    "wq-job-result": (None, _HandledTwice),
}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("check_id", "broken"), sorted(BROKEN.items()))
async def test_check_fails_for_its_defect(
    anyio_backend: str,
    check_id: str,
    broken: tuple[type[_Wrapped] | None, type[_Wrapped] | None],
) -> None:
    """The check does not pass against an implementation with the defect it looks for."""
    suite_side, testee_side = broken
    _SharedInbox.first = None
    report = await _run(
        frozenset({check_id}),
        _as_transport(suite_side) if suite_side is not None else lambda t: t,
        testee_wrap=_as_transport(testee_side) if testee_side is not None else None,
    )
    outcome, message = _verdicts(report)[check_id]
    assert outcome in (Outcome.FAIL, Outcome.NON_STRICT), message


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_slot_check_fails_for_a_worker_running_more_jobs(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker taking more jobs than its four slots fails wq-slot-free."""
    monkeypatch.setattr(testee_module, "TESTEE_CONCURRENCY", 8)
    report = await _run(frozenset({"wq-slot-free"}), testee_wrap=lambda t: t)
    outcome, message = _verdicts(report)["wq-slot-free"]
    assert Outcome.FAIL == outcome, message


async def test_background_failure_is_reported_as_itself() -> None:
    """A check's failure inside its background block reaches the runner unwrapped."""

    async def failing() -> None:
        async with Background() as bg:
            bg.start(anyio.sleep_forever)
            raise CheckFailed("the finding")

    with pytest.raises(CheckFailed, match="the finding"):
        await failing()
