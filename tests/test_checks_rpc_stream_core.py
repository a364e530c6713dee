"""The rpc, sync, stream and core checks pass against the reference testee on memory://."""

from __future__ import annotations

import functools
from pathlib import Path

import anyio
import pytest

from llmproto_conformance._catalogue import catalogue
from llmproto_conformance._model import Check, CheckResult, Level, Outcome, Profile
from llmproto_conformance._requirements import build, requirements
from llmproto_conformance._runner import RunPlan, run_suite
from llmproto_ref import MemoryTransport

SPEC = Path(__file__).resolve().parents[1] / "spec"
MODULES = {
    "llmproto_conformance._checks_core": {Profile.CORE},
    "llmproto_conformance._checks_rpc": {Profile.RPC, Profile.SYNC},
    "llmproto_conformance._checks_stream": {Profile.STREAM},
}
CHECKS: list[Check] = [c for c in catalogue() if c.function.__module__ in MODULES]
IDS = frozenset(c.id for c in CHECKS)

#: Checks the reference runtime fails, with the bug (src/ is not ours to change here).
RUNTIME_BUGS: dict[str, str] = {}
#: A quick cross-section run on trio as well: raw calls, deadlines, cancels, threads, streams.
TRIO_SUBSET = frozenset({
    "rr-echo-round-trip", "rr-reply-correlation", "rr-concurrent-correlation",
    "dl-stopped-at-deadline", "idem-in-progress", "sync-call-returns",
    "core-reject-duplicate-member", "core-reject-oversize", "core-fail-round-trip",
    "str-final-chunk", "can-request-cancelled", "idem-stream-replay",
})  # fmt: skip
#: The keywords that give a requirement each level (spec/conformance.md).
KEYWORDS = {
    Level.MUST: ("MUST", "SHALL", "REQUIRED"),
    Level.SHOULD: ("SHOULD", "RECOMMENDED"),
    Level.MAY: ("MAY", "OPTIONAL"),
}


@functools.cache
def _results(backend: str, ids: frozenset[str]) -> dict[str, CheckResult]:
    """Run ``ids`` once per backend against the reference testee; results by check id."""

    async def run() -> dict[str, CheckResult]:
        report = await run_suite(
            lambda: MemoryTransport(f"checks-rpc-stream-core-{backend}"),
            RunPlan(check_ids=ids),
            transport_label=f"memory://checks-rpc-stream-core-{backend}",
            implementation="the reference testee",
        )
        return {result.check.id: result for result in report.checks}

    return anyio.run(run, backend=backend)


def _params(ids: frozenset[str]) -> list[object]:
    return [
        pytest.param(
            check_id,
            id=check_id,
            marks=[pytest.mark.xfail(strict=True, reason=RUNTIME_BUGS[check_id])]
            if check_id in RUNTIME_BUGS
            else [],
        )
        for check_id in sorted(ids)
    ]


def _verdict(result: CheckResult) -> tuple[Outcome, str]:
    wire = "\n".join(f"{w.direction} {w.operation} {w.address} {w.body[:200]}" for w in result.wire)
    return result.outcome, f"{result.message}\n{wire}" if result.outcome is not Outcome.PASS else ""


@pytest.mark.parametrize("check_id", _params(IDS))
def test_check_passes_on_asyncio(check_id: str) -> None:
    """The check passes against the reference testee on memory:// under asyncio."""
    assert (Outcome.PASS, "") == _verdict(_results("asyncio", IDS)[check_id])


@pytest.mark.parametrize("check_id", _params(TRIO_SUBSET))
def test_check_passes_on_trio(check_id: str) -> None:
    """The check passes against the reference testee on memory:// under trio."""
    assert (Outcome.PASS, "") == _verdict(_results("trio", TRIO_SUBSET)[check_id])


def test_the_modules_register_checks_of_their_profiles() -> None:
    """Each module's checks belong to its profiles, and the subsets name real checks."""
    assert len(CHECKS) >= 50
    assert [] == [c.id for c in CHECKS if c.profile not in MODULES[c.function.__module__]]
    assert set() == (TRIO_SUBSET | set(RUNTIME_BUGS)) - IDS


def test_every_requirement_is_defined_in_the_spec() -> None:
    """Each check cites a requirement ID that spec/ defines (and requirements.json ships)."""
    defined = build(SPEC)
    assert [] == sorted(c.id for c in CHECKS if c.requirement not in defined)
    assert [] == sorted(c.id for c in CHECKS if c.requirement not in requirements())


def test_every_level_matches_its_requirement() -> None:
    """A MUST check tests a MUST sentence and a SHOULD check a SHOULD sentence."""
    defined = build(SPEC)
    wrong = [
        f"{c.id} ({c.level}, {c.requirement})"
        for c in CHECKS
        if not any(word in defined.get(c.requirement, "") for word in KEYWORDS[c.level])
    ]
    assert [] == wrong


def test_every_check_has_a_one_line_description() -> None:
    """Descriptions are one line, lower-case first, without a final full stop."""
    wrong = [
        c.id
        for c in CHECKS
        if not c.description
        or "\n" in c.description
        or c.description.endswith(".")
        or c.description[0].isupper()
    ]
    assert [] == wrong
