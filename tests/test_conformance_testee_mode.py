"""The testee path: the suite and a testee in one process, sharing nothing but the transport."""

from __future__ import annotations

import uuid

import anyio
import pytest

from llmproto_conformance import Outcome, Profile, RunPlan, Testee, run_suite
from llmproto_ref import MemoryBroker, MemoryTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the full catalogue once is enough here (other tests cover trio)."""
    return "asyncio"


async def test_every_check_passes_against_a_testee_reached_only_through_the_transport() -> None:
    """In testee mode every MUST and SHOULD check passes; transport checks are unsupported."""
    name = f"testee-mode-{uuid.uuid4().hex[:8]}"
    MemoryBroker.reset(name)
    profiles = frozenset(Profile) - {Profile.PERFORMANCE}
    with anyio.fail_after(120):
        async with MemoryTransport(name) as testee_side, Testee(testee_side):
            report = await run_suite(
                lambda: MemoryTransport(name),
                RunPlan(testee=True, profiles=profiles),
                transport_label=f"memory://{name}",
                implementation="the reference testee, started separately",
            )
    outcomes = {r.check.id: r.outcome for r in report.checks}
    assert report.ok, [(r.check.id, r.message) for r in report.checks if r.outcome is Outcome.FAIL]
    assert [] == [c for c, o in outcomes.items() if o in (Outcome.FAIL, Outcome.NON_STRICT)]
    transport_checks = {r.check.id for r in report.checks if r.check.profile is Profile.TRANSPORT}
    assert transport_checks
    assert {Outcome.UNSUPPORTED} == {outcomes[c] for c in transport_checks}
    assert 50 < sum(o is Outcome.PASS for o in outcomes.values())
