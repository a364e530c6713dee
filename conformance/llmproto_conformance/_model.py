"""What the conformance suite reports: checks, outcomes, results (spec/conformance.md).

A check is a plain function with a requirement ID, a level and a profile; running it gives a
:class:`CheckResult` with one :class:`Outcome` and, for a failure, the wire log of what was
sent and received while it ran.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmproto_conformance._context import CheckContext

__all__ = (
    "Check",
    "CheckFailed",
    "CheckResult",
    "Level",
    "Outcome",
    "Profile",
    "Unsupported",
    "WireRecord",
)


class Level(enum.StrEnum):
    """How strongly the spec asks for what a check tests (RFC 2119)."""

    MUST = "must"  #: a failure makes the implementation non-conformant
    SHOULD = "should"  #: a failure is reported as non-strict
    MAY = "may"  #: optional behaviour; a failure is reported as non-strict


class Profile(enum.StrEnum):
    """Groups of checks an implementer selects with ``--profile``."""

    CORE = "core"  #: envelope handling over the wire: malformed input, limits, errors
    RPC = "rpc"  #: request-response, deadlines, idempotency
    SYNC = "sync"  #: the synchronous call
    QUEUE = "queue"  #: the work queue
    EVENTS = "events"  #: pub/sub with groups and wildcards
    STREAM = "stream"  #: streamed responses and cancellation
    SECURITY = "security"  #: signatures, replay, authorization (issue 'Security')
    TRANSPORT = "transport"  #: the transport contract itself (adapter mode only)
    PERFORMANCE = "performance"  #: figures next to the raw transport's, informational


class Outcome(enum.StrEnum):
    """The verdict on one check."""

    PASS = "pass"  #: the implementation did what the requirement asks
    FAIL = "fail"  #: a MUST is not met
    NON_STRICT = "non_strict"  #: a SHOULD or MAY is not met
    INFORMATIONAL = "informational"  #: figures only (performance)
    UNSUPPORTED = "unsupported"  #: the capability the check needs is not declared


class CheckFailed(Exception):  # noqa: N818 - named for the verdict it carries
    """Raised by a check: the implementation is wrong, and the message says how."""


class Unsupported(Exception):  # noqa: N818 - named for the verdict it carries
    """Raised by a check: the implementation does not declare what the check needs."""


CheckFunction = Callable[["CheckContext"], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One entry of the catalogue.

    :param id: stable check id, lower-kebab, e.g. ``rr-echo``.
    :param requirement: the spec requirement it tests, e.g. ``RR-004``.
    :param function: ``async def (ctx) -> figures | None``.
    :param needs: capability names (attributes of ``Capabilities``) the check requires.
    :param adapter_only: runs only when the suite holds the transport under test (adapter mode).
    """

    id: str
    requirement: str
    level: Level
    profile: Profile
    description: str
    function: CheckFunction
    needs: frozenset[str] = frozenset()
    adapter_only: bool = False
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WireRecord:
    """One message the suite sent or received during a check."""

    direction: str  #: ``sent`` or ``received``
    operation: str  #: the transport operation, e.g. ``send_request``
    address: str  #: type, queue or reply address
    body: str  #: the bytes as text (invalid UTF-8 shown with escapes)
    at_ms: float  #: milliseconds since the check started


@dataclass(slots=True, kw_only=True)
class CheckResult:
    """The outcome of running one check."""

    check: Check
    outcome: Outcome
    duration_ms: float
    message: str = ""
    requirement_text: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    wire: list[WireRecord] = field(default_factory=list)
    expected_failure: str | None = None  #: the reason, when listed in the expected-failures file

    def to_json(self) -> dict[str, Any]:
        """The entry of ``report.json``'s ``checks`` list."""
        entry: dict[str, Any] = {
            "id": self.check.id,
            "requirement": self.check.requirement,
            "requirement_text": self.requirement_text,
            "level": self.check.level.value,
            "profile": self.check.profile.value,
            "description": self.check.description,
            "outcome": self.outcome.value,
            "duration_ms": round(self.duration_ms, 3),
            "message": self.message,
        }
        if self.figures:
            entry["figures"] = self.figures
        if self.expected_failure is not None:
            entry["expected_failure"] = self.expected_failure
        if self.wire:
            entry["wire"] = [
                {"direction": w.direction, "operation": w.operation, "address": w.address,
                 "body": w.body, "at_ms": round(w.at_ms, 3)}
                for w in self.wire
            ]  # fmt: skip
        return entry
