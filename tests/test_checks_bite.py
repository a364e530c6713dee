"""The conformance checks bite: every check fails against at least one broken implementation.

Each fault of :mod:`llmproto_conformance._faults` breaks the reference testee, or the memory
transport under it, in one way; it runs against the checks it is meant to break (TARGETS), in
adapter mode (``faulty`` around every connection, so the transport-contract checks judge the
broken binding too) or, for the faults listed in TESTEE_MODE, with only the testee's connection
broken. The proof: every fault makes one of its checks fail, every check of the catalogue but
the performance ones fails under some fault (or is listed in NOT_CAUGHT with the reason), and
the same checks pass against the sound reference. All runs happen once, concurrently, on
asyncio; the tests below read the results.
"""

from __future__ import annotations

import fnmatch
import functools
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

import anyio
import pytest

from llmproto_conformance._catalogue import catalogue
from llmproto_conformance._faults import FAULTS, fault_choices, faulty
from llmproto_conformance._faults_security import SECURITY_FAULTS
from llmproto_conformance._model import Outcome, Profile
from llmproto_conformance._report import Report
from llmproto_conformance._runner import RunPlan, run_suite
from llmproto_conformance._testee import Testee
from llmproto_ref import MemoryBroker, MemoryTransport

pytestmark = pytest.mark.timeout(300)

#: The checks each fault runs against (fnmatch patterns of check ids): the ones it breaks.
TARGETS: dict[str, tuple[str, ...]] = {
    # replies
    "wrong-correlation": ("rr-reply-correlation", "rr-concurrent-correlation",
                          "core-rejection-names-request", "core-rejection-unreadable",
                          "sync-same-envelopes"),
    "wrong-reply-type": ("rr-reply-type", "core-rejection-unreadable", "str-seq-order"),
    "duplicate-reply": ("rr-single-terminal-reply", "rr-misdirected-kind",
                        "str-nothing-after-cancelled"),
    "drop-final-chunk": ("str-final-chunk", "str-empty-stream"),
    "seq-off-by-one": ("str-seq-order", "str-final-chunk", "str-empty-stream", "str-error-seq",
                       "idem-stream-replay"),
    "no-finish-reason": ("str-final-members",),
    "no-timing": ("rr-timing-stamps",),
    "ascii-data": ("rr-echo-round-trip", "sync-call-returns"),
    "wrong-error-code": ("core-reject-*", "core-fail-every-code", "core-fail-round-trip",
                         "rr-misdirected-kind"),
    "wrong-retryable": ("core-fail-default-retryable", "core-fail-round-trip",
                        "core-rejection-detail", "idem-in-progress"),
    "no-pointer-detail": ("core-reject-*", "core-rejection-detail",
                          "core-unsupported-version-lists", "core-fail-round-trip"),
    "error-extra-member": ("core-error-object-shape",),
    # what the testee receives
    "ignore-deadlines": ("dl-*", "wq-expired-job", "evt-expired-not-handled", "str-error-seq"),
    "no-idempotency": ("idem-*", "wq-idempotent-*"),
    "crash-on-malformed": ("core-reject-not-json", "core-reject-bad-id"),
    "oversize-accepted": ("core-reject-oversize",),
    "lenient-members": ("core-rejected-not-run", "core-reject-unknown-member",
                        "core-reject-forbidden-member", "core-error-object-shape",
                        "evt-malformed-dropped"),
    "strict-minor-version": ("core-accept-minor-version",),
    "answers-errors": ("rr-misdirected-error-dropped", "core-invalid-error-not-answered"),
    "non-events-handled": ("evt-non-event-dropped",),
    "retryable-remembered": ("idem-retryable-forgotten",),
    "one-at-a-time": ("sync-threads-independent", "idem-in-progress"),
    "ignore-cancels": ("can-*", "trn-cancel-broadcast"),
    "leak-late-chunks": ("can-stream-cancelled", "str-nothing-after-cancelled"),
    # what the testee publishes
    "wrong-topic": ("evt-emit-topic",),
    "no-causation": ("evt-emit-causation",),
    # the worker
    "ack-before-handling": ("wq-retry-then-succeed", "trn-consumer-close-redelivers"),
    "redeliver-without-limit": ("wq-dead-lettered", "wq-invalid-job", "trn-delivery-count",
                                "trn-dead-letter"),
    "duplicate-jobs": ("wq-job-result", "wq-many-jobs", "wq-retry-then-succeed",
                       "trn-one-consumer-at-a-time"),
    "greedy-prefetch": ("wq-slot-free",),
    # the binding
    "groups-broadcast": ("evt-group-once", "trn-event-fanout"),
    "serve-groups-broadcast": ("trn-request-groups",),
    "wildcards-literal": ("evt-wildcard-*", "trn-wildcards"),
    "no-responders-silent": ("rr-no-responders", "trn-no-responders"),
    "blocking-send": ("sync-deadline", "rr-no-responders"),
    "lossy-bytes": ("trn-opaque-bytes", "core-reject-invalid-utf8"),
    "raw-exceptions": ("trn-closed-unavailable",),
    "names-unchecked": ("trn-invalid-names",),
    "single-waiter": ("trn-concurrent-readers",),
    "no-reply-address": ("trn-reply-address", "core-rejection-unreadable"),
    "inbox-reused": ("trn-inbox-unique",),
    "reorder": ("trn-order", "str-seq-order"),
    "enqueue-unconfirmed": ("trn-enqueue-stored",),
    "dedup-broken": ("trn-enqueue-dedup",),
    "close-acks": ("trn-consumer-close-redelivers",),
    "prefetch-ignored": ("trn-prefetch",),
    "lease-never-expires": ("trn-lease-expiry", "trn-dead-letter"),
    "extend-lease-noop": ("trn-lease-extend", "wq-lease-extended"),
    "delayed-nack-immediate": ("trn-delayed-nack", "wq-retry-backoff"),
    "stale-settle-raises": ("trn-stale-settle",),
    "oversize-dropped": ("trn-payload-too-large",),
    "capabilities-lie": ("trn-capabilities", "trn-payload-too-large"),
    # the secure service
    "accepts-unsigned": ("sec-unsigned-refused",),
    "signature-unchecked": ("sec-tampered-refused", "sec-rejection-no-secret"),
    "skips-time-window": ("sec-expired-refused", "sec-future-refused", "sec-lifetime-refused"),
    "skips-nonce-cache": ("sec-replay-refused",),
    "alg-unchecked": ("sec-alg-*",),
    "alg-from-message": ("sec-hmac-for-ed25519-kid-refused",),
    "any-kid": ("sec-unknown-kid-refused",),
    "received-bytes-signed": ("sec-canonical-form",),
    "signing-input-with-value": ("sec-signed-echo", "sec-scope-granted", "sec-replay-refused"),
    "sources-unchecked": ("sec-source-not-registered-refused",),
    "token-optional": ("sec-token-missing-refused",),
    "ignores-scopes": ("sec-token-scope-missing-refused",),
    "token-unchecked": ("sec-token-audience-refused", "sec-token-issuer-refused",
                        "sec-token-expired-refused", "sec-token-alg-none-refused"),
    "forwards-tokens": ("sec-token-not-forwarded",),
    "unsigned-replies": ("sec-replies-signed",),
    "leaks-secrets": ("sec-rejection-no-secret",),
}  # fmt: skip

#: Faults of the implementation rather than the binding: only the testee's connection is
#: broken, and the suite drives it over a sound one (testee mode).
TESTEE_MODE: frozenset[str] = frozenset({
    "wrong-correlation", "wrong-reply-type", "duplicate-reply", "drop-final-chunk",
    "seq-off-by-one", "no-finish-reason", "no-timing", "ascii-data", "wrong-error-code",
    "wrong-retryable", "no-pointer-detail", "error-extra-member", "ignore-deadlines",
    "no-idempotency", "crash-on-malformed", "oversize-accepted", "lenient-members",
    "strict-minor-version", "answers-errors", "non-events-handled", "retryable-remembered",
    "one-at-a-time", "leak-late-chunks", "wrong-topic", "no-causation", "greedy-prefetch",
    *SECURITY_FAULTS,
})  # fmt: skip

#: Checks no fault makes fail, each with the reason.
NOT_CAUGHT: dict[str, str] = {}

#: Fault runs at once (the runs mostly wait: for timeouts, leases, quiet periods).
CONCURRENCY = 8
FAILED = frozenset({Outcome.FAIL, Outcome.NON_STRICT})
PROFILES = frozenset(p for p in Profile if p is not Profile.PERFORMANCE)


def _checked() -> list[str]:
    """Every check the proof covers: the catalogue without the performance profile."""
    return [c.id for c in catalogue() if c.profile in PROFILES]


def _targets(fault: str) -> list[str]:
    patterns = TARGETS.get(fault, ())
    return [c for c in _checked() if any(fnmatch.fnmatchcase(c, p) for p in patterns)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Proof:
    """What the runs found."""

    baseline: dict[str, tuple[Outcome, str]]  #: check id -> outcome, message (sound testee)
    caught: dict[str, dict[str, str]]  #: fault -> failed check id -> message
    ran: dict[str, list[str]]  #: fault -> the checks it ran
    seconds: float

    def catchers(self) -> dict[str, list[str]]:
        """Check id -> the faults that made it fail."""
        found: dict[str, list[str]] = {}
        for fault, failed in self.caught.items():
            for check_id in failed:
                found.setdefault(check_id, []).append(fault)
        return found

    def table(self) -> str:
        """The fault -> failing checks table."""
        rows = [f"{len(self.caught)} faults, {self.seconds:.0f} s"]
        for fault in sorted(self.caught):
            failed = sorted(self.caught[fault])
            rows.append(f"  {fault:24} {len(failed)}/{len(self.ran[fault])}: {', '.join(failed)}")
        return "\n".join(rows)


async def _run(fault: str | None, check_ids: Iterable[str]) -> Report:
    """The checks ``check_ids`` against the testee with ``fault`` (``None``: the sound one)."""
    name = f"bite-{fault or 'baseline'}-{secrets.token_hex(3)}"
    plan = RunPlan(profiles=PROFILES, check_ids=frozenset(check_ids),
                   testee=fault in TESTEE_MODE)  # fmt: skip
    label = f"memory://{name}"
    try:
        if fault is None:
            return await run_suite(lambda: MemoryTransport(name), plan,
                                   transport_label=label, implementation="reference")  # fmt: skip
        if fault in TESTEE_MODE:
            async with faulty(MemoryTransport(name), fault) as broken, Testee(broken):
                return await run_suite(lambda: MemoryTransport(name), plan,
                                       transport_label=label, implementation=fault)  # fmt: skip
        return await run_suite(lambda: faulty(MemoryTransport(name), fault), plan,
                               transport_label=label, implementation=fault)  # fmt: skip
    finally:
        MemoryBroker.reset(name)


async def _prove() -> Proof:
    started = time.perf_counter()
    baseline = await _run(None, _checked())
    caught: dict[str, dict[str, str]] = {}
    ran: dict[str, list[str]] = {}
    limiter = anyio.Semaphore(CONCURRENCY)

    async def one(fault: str) -> None:
        async with limiter:
            ran[fault] = _targets(fault)
            report = await _run(fault, ran[fault])
        caught[fault] = {r.check.id: r.message for r in report.checks if r.outcome in FAILED}

    async with anyio.create_task_group() as tg:
        for fault in fault_choices():
            tg.start_soon(one, fault)
    return Proof(
        baseline={r.check.id: (r.outcome, r.message) for r in baseline.checks},
        caught=caught,
        ran=ran,
        seconds=time.perf_counter() - started,
    )


@functools.cache
def proof() -> Proof:
    """Run the baseline and every fault once (the first test to ask pays for it)."""
    return anyio.run(_prove, backend="asyncio")


def test_fault_registry() -> None:
    """Every fault has targets, fault_choices lists them all, and unknown names are refused."""
    assert sorted(FAULTS) == fault_choices()
    assert set(FAULTS) == set(TARGETS)
    assert set() == TESTEE_MODE - set(FAULTS)
    with pytest.raises(ValueError, match="unknown fault"):
        faulty(MemoryTransport("bite-registry"), "no-such-fault")


def test_targets_name_checks() -> None:
    """Every target pattern and every NOT_CAUGHT entry names checks of the catalogue."""
    checked = _checked()
    stale = [f"{fault}: {pattern}" for fault, patterns in TARGETS.items() for pattern in patterns
             if not fnmatch.filter(checked, pattern)]  # fmt: skip
    assert [] == stale
    assert [] == sorted(set(NOT_CAUGHT) - set(checked))
    assert all(NOT_CAUGHT.values())


def test_baseline_passes() -> None:
    """The sound reference testee passes every check the proof covers."""
    result = proof()
    wrong = {c: f"{o}: {m}" for c, (o, m) in result.baseline.items()
             if o is not Outcome.PASS and c not in NOT_CAUGHT}  # fmt: skip
    assert {} == wrong, result.table()


@pytest.mark.parametrize("fault", fault_choices())
def test_fault_bites(fault: str) -> None:
    """The fault makes at least one of the checks it targets fail."""
    result = proof()
    assert result.ran[fault], f"{fault} targets no check"
    assert result.caught[fault], f"{fault} broke none of {result.ran[fault]}\n{result.table()}"


def test_every_check_caught() -> None:
    """Every check but the performance ones fails under some fault, or is in NOT_CAUGHT."""
    result = proof()
    catchers = result.catchers()
    missed = [c for c in _checked() if c not in catchers and c not in NOT_CAUGHT]
    assert [] == missed, result.table()
    needless = sorted(c for c in NOT_CAUGHT if c in catchers)
    assert [] == needless, "caught after all: drop them from NOT_CAUGHT"
