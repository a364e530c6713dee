"""Running the catalogue against an implementation (spec/conformance.md).

Theory of operation
-------------------
The suite opens its own transport connection, wrapped so that everything it sends and
receives is recorded, and drives the implementation only through it. In adapter mode it also
opens a second connection and runs the reference testee there, so the transport under test
carries every message between two independent participants; in testee mode the testee is
somebody else's process. Each check runs under a timeout; its outcome follows from its level
and what it raised, and a failure keeps the check's wire log.

Every transport of the run comes from the factory wrapped by
:class:`~llmproto_conformance._cleanup.QueueLog`, which notes the queues the run uses; when the
run ends, normally or not, those the binding can delete are deleted again (all but the
testee's queue), and the report says how many.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio

from llmproto_conformance._catalogue import catalogue
from llmproto_conformance._cleanup import QueueLog, delete_queues
from llmproto_conformance._context import SUITE_SOURCE, TESTEE_QUEUE, CheckContext
from llmproto_conformance._model import (
    Check,
    CheckFailed,
    CheckResult,
    Level,
    Outcome,
    Profile,
    Unsupported,
)
from llmproto_conformance._recording import RecordingTransport
from llmproto_conformance._report import Report
from llmproto_conformance._requirements import requirement_text
from llmproto_ref import Client, LlmpError, Transport, now_timestamp

__all__ = ("RunPlan", "run_one", "run_suite", "select")

_LEVELS = {Level.MUST: (Level.MUST,), Level.SHOULD: (Level.MUST, Level.SHOULD),
           Level.MAY: (Level.MUST, Level.SHOULD, Level.MAY)}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """What to run.

    :param profiles: only these profiles (all when ``None``).
    :param level: run checks of this level and the stronger ones.
    :param testee: drive an external testee instead of starting the reference one.
    :param expected_failures: check id -> reason, for failures that are known.
    :param check_ids: only these checks (for focused runs).
    """

    profiles: frozenset[Profile] | None = None
    level: Level = Level.MAY
    testee: bool = False
    expected_failures: Mapping[str, str] = field(default_factory=dict)
    check_ids: frozenset[str] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  #: e.g. ``in_flight`` for benchmarks


def select(plan: RunPlan) -> list[Check]:
    """The checks ``plan`` asks for, in catalogue order."""
    levels = _LEVELS[plan.level]
    return [
        c for c in catalogue()
        if c.level in levels
        and (plan.profiles is None or c.profile in plan.profiles)
        and (plan.check_ids is None or c.id in plan.check_ids)
    ]  # fmt: skip


async def run_one(check: Check, ctx: CheckContext) -> CheckResult:
    """Run one check and classify what happened."""
    text = requirement_text(check.requirement)
    missing = sorted(n for n in check.needs if not getattr(ctx.capabilities, n, False))
    if missing:
        return CheckResult(
            check=check,
            outcome=Outcome.UNSUPPORTED,
            duration_ms=0.0,
            requirement_text=text,
            message=f"the transport does not declare {', '.join(missing)}",
        )
    if check.adapter_only and not ctx.adapter_mode:
        return CheckResult(
            check=check,
            outcome=Outcome.UNSUPPORTED,
            duration_ms=0.0,
            requirement_text=text,
            message="a transport-contract check: run it with --transport or --adapter alone",
        )
    failed = Outcome.FAIL if check.level is Level.MUST else Outcome.NON_STRICT
    ctx.transport.restart()
    started = time.perf_counter()
    figures: dict[str, object] | None = None
    outcome, message = Outcome.PASS, ""
    try:
        with anyio.fail_after(check.timeout_s):
            figures = await check.function(ctx)
        if figures is not None:
            outcome = Outcome.INFORMATIONAL
    except CheckFailed as exc:
        outcome, message = failed, str(exc)
    except Unsupported as exc:
        outcome, message = Outcome.UNSUPPORTED, str(exc)
    except TimeoutError:
        outcome, message = failed, f"no verdict within {check.timeout_s:g} s"
    except LlmpError as exc:
        outcome, message = failed, f"unexpected {exc.code}: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - a broken implementation must not stop the run
        outcome, message = failed, f"unexpected {type(exc).__name__}: {exc}"
    duration = (time.perf_counter() - started) * 1000
    wire = ctx.transport.restart()
    return CheckResult(
        check=check, outcome=outcome, duration_ms=duration, message=message,
        requirement_text=text, figures=dict(figures or {}),
        wire=wire if outcome in (Outcome.FAIL, Outcome.NON_STRICT) else [],
    )  # fmt: skip


async def run_suite(
    open_transport: Callable[[], Transport],
    plan: RunPlan,
    *,
    transport_label: str,
    implementation: str,
    progress: Callable[[CheckResult], None] | None = None,
) -> Report:
    """Run the checks ``plan`` selects; every transport comes from ``open_transport()``.

    When the run ends, also by an error or a cancellation, the queues it used are deleted if
    the binding offers ``delete_queue`` (see :mod:`llmproto_conformance._cleanup`).
    """
    report = Report(transport=transport_label, implementation=implementation,
                    started=now_timestamp())  # fmt: skip
    log = QueueLog()
    try:
        await _run_checks(log.wrap(open_transport), plan, report, progress)
    finally:
        queues = [q for q in log.names if q != TESTEE_QUEUE]  # an external testee consumes it
        cleanup = await delete_queues(open_transport, queues)
        if cleanup is not None:
            report.cleaned_queues, report.cleanup_failures = cleanup.deleted, cleanup.failed
    report.finished = now_timestamp()
    return report


async def _run_checks(
    open_transport: Callable[[], Transport],
    plan: RunPlan,
    report: Report,
    progress: Callable[[CheckResult], None] | None,
) -> None:
    checks = select(plan)
    async with AsyncExitStack() as stack:
        if not plan.testee:
            from llmproto_conformance._testee import Testee

            testee_side = await stack.enter_async_context(open_transport())
            await stack.enter_async_context(Testee(testee_side))
        suite_side = await stack.enter_async_context(RecordingTransport(open_transport()))
        client = await stack.enter_async_context(
            Client(suite_side, source=SUITE_SOURCE, timeout=10)
        )
        ctx = CheckContext(suite_side, client, adapter_mode=not plan.testee,
                           run_id=secrets.token_hex(4), open_transport=open_transport,
                           options=plan.options)  # fmt: skip
        for check in checks:
            result = await run_one(check, ctx)
            reason = plan.expected_failures.get(check.id)
            if reason is not None:
                result.expected_failure = reason
                if result.outcome is Outcome.PASS:
                    report.stale_expected_failures.append(check.id)
            report.checks.append(result)
            if progress is not None:
                progress(result)
