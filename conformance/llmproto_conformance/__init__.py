"""llmproto conformance kit: the vectors, the check catalogue, the testee, the runner, reports.

The public API lives in the underscore modules and is re-exported here: run the catalogue with
:func:`run_suite` (or ``llmproto conformance run``), serve the testee contract with
:class:`Testee` (or ``llmproto conformance testee``), write checks with :func:`check`.
"""

from __future__ import annotations

from llmproto_conformance._catalogue import catalogue, check
from llmproto_conformance._context import (
    SUITE_SOURCE,
    TESTEE_QUEUE,
    TESTEE_SECURE_SERVICE,
    TESTEE_SECURE_TYPES,
    TESTEE_SERVICE,
    TESTEE_TYPES,
    CheckContext,
    error_of,
    is_terminal,
)
from llmproto_conformance._faults import FAULTS, FaultyTransport, fault_choices, faulty
from llmproto_conformance._hostile import HostileReport, HostileResult, run_hostile
from llmproto_conformance._hostile_corpus import HostileInput, hostile_corpus
from llmproto_conformance._model import (
    Check,
    CheckFailed,
    CheckResult,
    Level,
    Outcome,
    Profile,
    Unsupported,
    WireRecord,
)
from llmproto_conformance._recording import RecordingTransport
from llmproto_conformance._report import Report
from llmproto_conformance._reports import format_summary, write_reports
from llmproto_conformance._requirements import requirement_text, requirements
from llmproto_conformance._runner import RunPlan, run_one, run_suite, select
from llmproto_conformance._testee import (
    COUNTER_LIMIT,
    EVENT_GROUPS,
    TESTEE_CONCURRENCY,
    TESTEE_QUEUE_OPTIONS,
    Counters,
    Testee,
    TesteeOutcome,
)
from llmproto_conformance._vectors import Vector, VectorResult, judge, load_vectors, vector_dir

__all__ = (
    "COUNTER_LIMIT",
    "EVENT_GROUPS",
    "FAULTS",
    "SUITE_SOURCE",
    "TESTEE_CONCURRENCY",
    "TESTEE_QUEUE",
    "TESTEE_QUEUE_OPTIONS",
    "TESTEE_SECURE_SERVICE",
    "TESTEE_SECURE_TYPES",
    "TESTEE_SERVICE",
    "TESTEE_TYPES",
    "Check",
    "CheckContext",
    "CheckFailed",
    "CheckResult",
    "Counters",
    "FaultyTransport",
    "HostileInput",
    "HostileReport",
    "HostileResult",
    "Level",
    "Outcome",
    "Profile",
    "RecordingTransport",
    "Report",
    "RunPlan",
    "Testee",
    "TesteeOutcome",
    "Unsupported",
    "Vector",
    "VectorResult",
    "WireRecord",
    "catalogue",
    "check",
    "error_of",
    "fault_choices",
    "faulty",
    "format_summary",
    "hostile_corpus",
    "is_terminal",
    "judge",
    "load_vectors",
    "requirement_text",
    "requirements",
    "run_hostile",
    "run_one",
    "run_suite",
    "select",
    "vector_dir",
    "write_reports",
)
