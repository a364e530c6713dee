"""The llmproto pytest plugin (entry point ``pytest11``: ``llmproto``).

It is inert unless one of its options is given, so installing llmproto changes no other
project's test run:

``--llmproto-vectors``
    collect every shipped vector as a test item (node IDs ``llmproto-vectors::<vector id>``),
    judged against :func:`llmproto_ref.decode`, or against the decoder named by
    ``--llmproto-decoder module:function`` (called as ``decoder(raw, limits=..., understood=...)``,
    it returns for a valid envelope and raises for an invalid one, see
    :func:`llmproto_conformance.judge`).
``--llmproto-transport URL`` (or ``--llmproto-adapter module:factory``)
    collect every selected conformance check as a test item (node IDs
    ``llmproto-conformance::<check id>``) and run them over that transport, against the
    reference testee the suite starts, or with ``--llmproto-testee`` against an external testee
    already serving the transport. ``--llmproto-profile P`` (repeatable) and
    ``--llmproto-level must|should|may`` narrow the selection; ``-k`` and ``--deselect`` work
    on the items.

The suite runs once per session, when the first conformance item runs (so that item's
duration is the whole run's; give pytest-timeout room for it), over exactly the items left
after deselection; then each item reports its check's outcome: a MUST failure fails with the
message, the requirement and the wire log; an unsupported check is skipped with the reason; a
non-strict result (a SHOULD or MAY not met) and informational figures pass, with a note in the
item's ``llmproto`` report section (``-rP`` shows it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from llmproto_conformance._model import Level, Profile

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr

    from llmproto_conformance._model import Check, CheckResult
    from llmproto_conformance._report import Report
    from llmproto_conformance._runner import RunPlan
    from llmproto_conformance._vectors import Vector, VectorResult
    from llmproto_ref import Transport

__all__ = ()

#: The node ID of the collector that holds the vector items.
SUITE_NODE_ID = "llmproto-vectors"
#: The node ID of the collector that holds the conformance check items.
CONFORMANCE_NODE_ID = "llmproto-conformance"
#: How many wire records a failed check's report shows.
WIRE_EXCERPT = 12

_DECODER = pytest.StashKey[Callable[..., Any]]()
_SUITE = pytest.StashKey["_SuiteSetting"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the plugin's options; nothing else happens without them."""
    group = parser.getgroup("llmproto", "llmproto conformance")
    group.addoption(
        "--llmproto-vectors",
        action="store_true",
        default=False,
        help="collect every shipped llmproto vector as a test item",
    )
    group.addoption(
        "--llmproto-decoder",
        metavar="MODULE:FUNCTION",
        default=None,
        help="with --llmproto-vectors: judge this decoder instead of llmproto_ref.decode",
    )
    group.addoption(
        "--llmproto-transport",
        metavar="URL",
        default=None,
        help="run the conformance checks over this transport (items llmproto-conformance::ID)",
    )
    group.addoption(
        "--llmproto-adapter",
        metavar="MODULE:FACTORY",
        default=None,
        help="run the conformance checks over the transports this factory returns",
    )
    group.addoption(
        "--llmproto-testee",
        action="store_true",
        default=False,
        help="with --llmproto-transport: drive an external testee instead of the reference one",
    )
    group.addoption(
        "--llmproto-profile",
        action="append",
        default=None,
        choices=[p.value for p in Profile],
        metavar="PROFILE",
        help="with --llmproto-transport: only this profile (repeatable)",
    )
    group.addoption(
        "--llmproto-level",
        default=None,
        choices=[lv.value for lv in Level],
        help="with --llmproto-transport: this level and the stronger ones (default may: all)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Refuse options that cannot work, resolve the decoder and the transport under test."""
    _configure_conformance(config)
    spec: str | None = config.getoption("llmproto_decoder")
    if spec and not config.getoption("llmproto_vectors"):
        raise pytest.UsageError("--llmproto-decoder needs --llmproto-vectors")
    if config.getoption("llmproto_vectors"):
        if spec:
            config.stash[_DECODER] = _load_decoder(spec)
        else:
            from llmproto_ref import decode

            config.stash[_DECODER] = decode


class _SuiteSetting:
    """What ``--llmproto-transport`` and its companions ask for, and the run once it is done."""

    def __init__(self, factory: Callable[[], Transport], label: str, plan: RunPlan) -> None:
        self.factory = factory
        self.label = label
        self.plan = plan
        self.results: dict[str, CheckResult] | None = None
        self.broken: str | None = None  #: why the run broke off, if it did
        self.report: Report | None = None


def _configure_conformance(config: pytest.Config) -> None:
    url: str | None = config.getoption("llmproto_transport")
    adapter: str | None = config.getoption("llmproto_adapter")
    if url is not None and adapter is not None:
        raise pytest.UsageError("give --llmproto-transport or --llmproto-adapter, not both")
    from llmproto_conformance._command import (
        ConformanceUsageError,
        adapter_factory,
        redact,
        url_factory,
    )

    try:
        if url is not None:
            factory, label = url_factory(url, option="--llmproto-transport"), redact(url)
        elif adapter is not None:
            factory, label = adapter_factory(adapter, option="--llmproto-adapter"), adapter
        else:
            for name in ("testee", "profile", "level"):
                if config.getoption(f"llmproto_{name}"):
                    raise pytest.UsageError(
                        f"--llmproto-{name} needs --llmproto-transport or --llmproto-adapter"
                    )
            return
    except ConformanceUsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    from llmproto_conformance._runner import RunPlan

    profiles: list[str] | None = config.getoption("llmproto_profile")
    level: str | None = config.getoption("llmproto_level")
    plan = RunPlan(
        profiles=frozenset(Profile(p) for p in profiles) if profiles else None,
        level=Level(level) if level else Level.MAY,
        testee=bool(config.getoption("llmproto_testee")),
    )
    config.stash[_SUITE] = _SuiteSetting(factory, label, plan)


def _load_decoder(spec: str) -> Callable[..., Any]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise pytest.UsageError(f"--llmproto-decoder {spec!r}: expected module:function")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise pytest.UsageError(f"--llmproto-decoder {spec!r}: cannot import: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise pytest.UsageError(
                f"--llmproto-decoder {spec!r}: {module_name} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise pytest.UsageError(f"--llmproto-decoder {spec!r}: not callable")
    decoder: Callable[..., Any] = target
    return decoder


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Add the vector suite to the session's collection when ``--llmproto-vectors`` is given."""
    report = yield
    if isinstance(collector, pytest.Session) and collector.config.getoption("llmproto_vectors"):
        suite = VectorSuite.from_parent(collector, name=SUITE_NODE_ID, nodeid=SUITE_NODE_ID)
        report.result.append(suite)
    if isinstance(collector, pytest.Session) and _SUITE in collector.config.stash:
        checks = ConformanceSuite.from_parent(
            collector, name=CONFORMANCE_NODE_ID, nodeid=CONFORMANCE_NODE_ID
        )
        report.result.append(checks)
    return report


class VectorSuite(pytest.Collector):
    """Every shipped vector, one item each."""

    def collect(self) -> Iterator[pytest.Item]:
        """One :class:`VectorItem` per vector, in the order the vector files hold them."""
        from llmproto_conformance._vectors import load_vectors

        decoder = self.config.stash[_DECODER]
        for vector in load_vectors():
            yield VectorItem.from_parent(self, name=vector.id, vector=vector, decoder=decoder)


class VectorFailure(Exception):  # noqa: N818 - a verdict, not an error of the plugin
    """The decoder's verdict differs from the vector's expectation."""

    def __init__(self, result: VectorResult) -> None:
        super().__init__(result.message)
        self.result = result


class VectorItem(pytest.Item):
    """One vector judged against the decoder under test."""

    def __init__(self, *, vector: Vector, decoder: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vector = vector
        self.decoder = decoder
        self.user_properties.append(("requirements", " ".join(vector.requirements)))

    def runtest(self) -> None:
        """Judge the vector; raise :class:`VectorFailure` if the verdict differs."""
        from llmproto_conformance._vectors import judge

        result = judge(self.vector, decoder=self.decoder)
        if not result.passed:
            raise VectorFailure(result)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | TerminalRepr:
        """Expected against actual for a failed vector; the usual traceback otherwise."""
        if isinstance(excinfo.value, VectorFailure):
            return explain(excinfo.value.result)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path | str, int | None, str]:
        """The vector file and the vector's id, for the report header."""
        from llmproto_conformance._vectors import vector_dir

        return vector_dir() / self.vector.file, None, f"vector {self.vector.id}"


def explain(result: VectorResult) -> str:
    """A failed vector as the lines a person needs: what it shows, expected against actual."""
    vector = result.vector
    return (
        f"{result.message}\n"
        f"  vector file:  {vector.file}\n"
        f"  description:  {vector.description}\n"
        f"  requirements: {', '.join(vector.requirements)}"
    )


class ConformanceSuite(pytest.Collector):
    """Every conformance check the options select, one item each."""

    def collect(self) -> Iterator[pytest.Item]:
        """One :class:`ConformanceItem` per selected check, in catalogue order."""
        from llmproto_conformance._runner import select

        for check in select(self.config.stash[_SUITE].plan):
            yield ConformanceItem.from_parent(self, name=check.id, check=check)


class ConformanceFailure(Exception):  # noqa: N818 - a verdict, not an error of the plugin
    """A check failed, or the suite could not run it; the message says why."""


class ConformanceItem(pytest.Item):
    """One conformance check; its outcome comes from the session's single run of the suite."""

    def __init__(self, *, check: Check, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.user_properties.append(("requirement", check.requirement))
        self.user_properties.append(("level", check.level.value))

    def runtest(self) -> None:
        """Report the check's outcome (running the suite first, if no item has yet)."""
        from llmproto_conformance._model import Outcome

        setting = self.config.stash[_SUITE]
        results = _run_once(self.session, setting)
        if results is None:
            raise ConformanceFailure(f"the conformance run broke off: {setting.broken}")
        result = results[self.check.id]
        self.user_properties.append(("outcome", result.outcome.value))
        if result.outcome is Outcome.FAIL:
            raise ConformanceFailure(explain_check(result))
        if result.outcome is Outcome.UNSUPPORTED:
            # reported at the check's own location (reportinfo), not at this line
            raise pytest.skip.Exception(f"unsupported: {result.message}", _use_item_location=True)
        if result.outcome is Outcome.NON_STRICT:
            level = self.check.level.value.upper()
            note = f"non-strict: this {level} requirement is not met (not a failure)"
            self.add_report_section("call", "llmproto", f"{note}\n{explain_check(result)}")
        elif result.outcome is Outcome.INFORMATIONAL:
            figures = "\n".join(f"  {k}: {v}" for k, v in result.figures.items())
            self.add_report_section("call", "llmproto", f"informational figures:\n{figures}")

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | TerminalRepr:
        """The check's verdict and wire log for a failed check; the usual traceback otherwise."""
        if isinstance(excinfo.value, ConformanceFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path | str, int | None, str]:
        """The module defining the check, and the check's id and requirement."""
        code = getattr(self.check.function, "__code__", None)
        where: Path | str = Path(code.co_filename) if code is not None else CONFORMANCE_NODE_ID
        line = code.co_firstlineno - 1 if code is not None else None
        return where, line, f"check {self.check.id} [{self.check.requirement}]"


def _run_once(session: pytest.Session, setting: _SuiteSetting) -> dict[str, CheckResult] | None:
    """The results of the session's run of the suite over the items left after deselection."""
    if setting.results is not None or setting.broken is not None:
        return setting.results
    import dataclasses
    import functools

    import anyio

    from llmproto_conformance._runner import run_suite
    from llmproto_ref import LlmpError

    ids = frozenset(i.check.id for i in session.items if isinstance(i, ConformanceItem))
    plan = dataclasses.replace(setting.plan, check_ids=ids)
    who = "an external testee" if plan.testee else "the reference testee"
    run = functools.partial(run_suite, setting.factory, plan, transport_label=setting.label,
                            implementation=f"{who} on {setting.label}")  # fmt: skip
    try:
        setting.report = anyio.run(run)
    except (LlmpError, OSError) as exc:
        setting.broken = str(exc)
        return None
    except ExceptionGroup as group:
        setting.broken = "; ".join(str(e) for e in group.exceptions)
        return None
    setting.results = {r.check.id: r for r in setting.report.checks}
    return setting.results


def explain_check(result: CheckResult) -> str:
    """A check's verdict as the lines a person needs: message, requirement, wire log excerpt."""
    from llmproto_conformance._reports import format_wire, printable

    check = result.check
    lines = [
        result.message or "(no message)",
        f"  check:       {check.id} ({check.level.value.upper()}, profile {check.profile.value})",
        f"  requirement: [{check.requirement}] {result.requirement_text}",
        f"  description: {check.description}",
    ]
    if result.wire:
        lines.append(f"  wire log ({len(result.wire)} records):")
        excerpt = format_wire(result.wire, limit=WIRE_EXCERPT)
        lines.extend(f"    {line}" for line in excerpt.splitlines())
    return printable("\n".join(lines))  # a hostile message must not drive the terminal
