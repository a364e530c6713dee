"""The report of one conformance run: what ran, against what, with which outcomes.

``report.json``, ``junit.xml`` and ``report.html`` are all written from a :class:`Report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmproto_conformance._model import CheckResult, Level, Outcome
from llmproto_ref import LLMP_VERSION

__all__ = ("Report",)


@dataclass(slots=True, kw_only=True)
class Report:
    """One run of the suite."""

    transport: str  #: the transport URL or adapter factory
    implementation: str  #: what was tested: the reference, an adapter, or a testee
    started: str  #: RFC 3339 UTC
    finished: str = ""
    llmp_version: str = LLMP_VERSION
    checks: list[CheckResult] = field(default_factory=list)
    stale_expected_failures: list[str] = field(default_factory=list)  #: listed but passed
    #: queues the run declared and deleted again at its end (0 when it declared none);
    #: ``None`` when the binding offers no ``delete_queue``, so they are left on the broker
    cleaned_queues: int | None = None
    cleanup_failures: int = 0  #: queues whose deletion failed or ran out of time

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts of each outcome per level, plus ``all``."""
        keys = ("passed", "failed", "non_strict", "informational", "unsupported",
                "expected_failures")  # fmt: skip
        out: dict[str, dict[str, int]] = {level.value: dict.fromkeys(keys, 0) for level in Level}
        out["all"] = dict.fromkeys(keys, 0)
        name = {
            Outcome.PASS: "passed", Outcome.FAIL: "failed", Outcome.NON_STRICT: "non_strict",
            Outcome.INFORMATIONAL: "informational", Outcome.UNSUPPORTED: "unsupported",
        }  # fmt: skip
        for result in self.checks:
            for bucket in (out[result.check.level.value], out["all"]):
                bucket[name[result.outcome]] += 1
                if result.expected_failure is not None and result.outcome is not Outcome.PASS:
                    bucket["expected_failures"] += 1
        return out

    @property
    def unexpected_must_failures(self) -> list[CheckResult]:
        """MUST checks that failed and are not listed as expected failures."""
        return [
            r for r in self.checks
            if r.outcome is Outcome.FAIL and r.check.level is Level.MUST
            and r.expected_failure is None
        ]  # fmt: skip

    @property
    def ok(self) -> bool:
        """The run's verdict: no unexpected MUST failure and no stale expected failure."""
        return not self.unexpected_must_failures and not self.stale_expected_failures

    def to_json(self) -> dict[str, Any]:
        """The ``report.json`` document."""
        return {
            "llmp_version": self.llmp_version,
            "transport": self.transport,
            "implementation": self.implementation,
            "started": self.started,
            "finished": self.finished,
            "ok": self.ok,
            "summary": self.summary(),
            "stale_expected_failures": list(self.stale_expected_failures),
            "checks": [r.to_json() for r in self.checks],
        } | self._cleanup_json()

    def _cleanup_json(self) -> dict[str, int]:
        """The cleanup's members, present only when the run deleted (or tried to delete) its
        queues, so a report of a binding without ``delete_queue`` is as it always was."""
        if self.cleaned_queues is None:
            return {}
        return {"cleaned_queues": self.cleaned_queues, "cleanup_failures": self.cleanup_failures}
