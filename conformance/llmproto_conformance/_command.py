"""``llmproto conformance``: run the conformance suite, or serve the reference testee.

``llmproto conformance run`` drives an implementation over a transport and reports on it
(spec/conformance.md); ``llmproto conformance testee`` serves the testee operations so that
another suite (or this one, with ``run --testee``) can drive the reference implementation.

Exit status of ``run``: 0 when no MUST check failed unexpectedly and no expected failure passed
(the report's ``ok``); 1 when one did, or when the run broke off (the transport under test
failed to connect, the testee did not start); 2 for a usage error or when the suite could not
start at all: a bad option, an unknown check id, a selection of no checks, a malformed
expected-failures file, a bad ``--adapter`` spec, or a transport URL that
:func:`llmproto_ref.open_transport` refuses (an unknown scheme, a malformed option, an adapter
whose broker client is not installed). Nothing was checked then, so
the status is not 1, which means "checked and not conformant".
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from llmproto_conformance._model import CheckResult, Level, Profile

if TYPE_CHECKING:
    from llmproto_conformance._report import Report
    from llmproto_conformance._runner import RunPlan
    from llmproto_ref import Transport

__all__ = (
    "ConformanceUsageError",
    "adapter_factory",
    "add_conformance_commands",
    "load_expected_failures",
    "progress_line",
    "redact",
    "url_factory",
)

_EPILOG = """\
exit status: 0 conformant (no unexpected MUST failure, no stale expected failure),
1 not conformant, or the run broke off (the transport or the testee failed),
2 usage error, or the suite could not start (bad option, unknown check, malformed
expected-failures file, bad --adapter, a transport URL that cannot be opened: an unknown
scheme or option, a broker client that is not installed).

The expected-failures file is TOML with one table:
  [expected_failures]
  rr-echo = "why it fails, and the issue that tracks it"
A listed check that still fails is reported as expected; one that passes fails the run."""


class ConformanceUsageError(Exception):
    """An option the suite cannot work with; the message says which and why."""


def add_conformance_commands(subparsers: Any) -> Any:
    """Register ``conformance run`` and ``conformance testee`` on ``llmproto``'s subparsers.

    :param subparsers: what ``ArgumentParser.add_subparsers()`` returned.
    :returns: the ``conformance`` command's own subparsers, for commands added elsewhere.
    """
    conformance = subparsers.add_parser(
        "conformance",
        help="run the conformance suite, or serve the reference testee",
        description="Drive an implementation over a transport and report which requirements "
        "it meets (run), or serve the testee operations on a transport (testee).",
    )
    commands = conformance.add_subparsers(
        dest="conformance_command", required=True, metavar="COMMAND"
    )
    run = commands.add_parser(
        "run",
        help="run the conformance checks against an implementation",
        description="Run the conformance checks over a transport. By default the suite starts "
        "the reference testee on its own connection and drives it, which tests the transport "
        "(--transport URL or --adapter module:factory); with --testee it drives a testee "
        "process that already serves the transport instead.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = run.add_mutually_exclusive_group()
    source.add_argument(
        "--transport",
        metavar="URL",
        help="the transport under test: memory://NAME, nats://HOST:PORT, amqp://USER:PASS@HOST/",
    )
    source.add_argument(
        "--adapter",
        metavar="MODULE:FACTORY",
        help="a Python transport factory, called with no arguments for each connection",
    )
    run.add_argument(
        "--testee",
        action="store_true",
        help="drive an external testee already serving the transport (no reference testee)",
    )
    run.add_argument(
        "--profile",
        action="append",
        choices=[p.value for p in Profile],
        metavar="PROFILE",
        help=f"only this profile (repeatable; one of {', '.join(p.value for p in Profile)})",
    )
    run.add_argument(
        "--level",
        choices=[lv.value for lv in Level],
        default=Level.MAY.value,
        help="run checks of this level and the stronger ones (default may: all)",
    )
    run.add_argument("--check", action="append", metavar="ID", help="only this check (repeatable)")
    run.add_argument(
        "--expected-failures",
        metavar="FILE",
        type=Path,
        help="a TOML file listing known failures (see below)",
    )
    run.add_argument(
        "--report-dir",
        metavar="DIR",
        type=Path,
        help="write report.json, junit.xml and report.html here",
    )
    run.add_argument(
        "--implementation",
        metavar="NAME",
        help="what is tested, as the reports name it (default: derived from the options)",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="print report.json on standard output (progress goes to standard error)",
    )
    run.add_argument(
        "--list", action="store_true", help="list the selected checks and exit, running nothing"
    )
    run.set_defaults(run=_run, parser=run)

    testee = commands.add_parser(
        "testee",
        help="serve the reference testee on a transport",
        description="Serve the testee operations (spec/conformance.md) on the transport until "
        "interrupted, so that a conformance suite can drive the reference implementation.",
    )
    testee.add_argument("--transport", required=True, metavar="URL", help="where to serve")
    from llmproto_conformance._faults import fault_choices

    testee.add_argument(
        "--fault", choices=fault_choices(), metavar="NAME",
        help="serve a deliberately broken testee (see llmproto_conformance._faults.FAULTS), "
        "to watch the checks that should catch it fail",
    )  # fmt: skip
    testee.set_defaults(run=_testee, parser=testee)
    return commands


# -- building blocks, shared with the pytest plugin -----------------------------------------


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for reports and messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return url


def url_factory(url: str, *, option: str = "--transport") -> Callable[[], Transport]:
    """A factory of fresh transports for ``url``, tried once now.

    :param option: the option that gave ``url``, for the error message.
    :raises ConformanceUsageError: when :func:`llmproto_ref.open_transport` refuses ``url``.
    """
    from llmproto_ref import TransportError, open_transport

    try:
        open_transport(url)
    except TransportError as exc:
        shown = redact(url)
        raise ConformanceUsageError(f"{option} {shown}: {str(exc).replace(url, shown)}") from None
    return functools.partial(open_transport, url)


def adapter_factory(spec: str, *, option: str = "--adapter") -> Callable[[], Transport]:
    """The factory ``module:attribute`` names; called once now to see that it gives a transport.

    :param option: the option that gave ``spec``, for the error messages.
    :raises ConformanceUsageError: for a malformed spec, a module that does not import, a
        missing or uncallable attribute, or a factory that fails or returns no transport.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConformanceUsageError(f"{option} {spec!r}: expected module:factory")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConformanceUsageError(f"{option} {spec!r}: cannot import: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConformanceUsageError(
                f"{option} {spec!r}: {module_name} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise ConformanceUsageError(f"{option} {spec!r}: {attribute} is not callable")
    try:
        sample = target()
    except Exception as exc:  # noqa: BLE001 - any failure of foreign code is reported as such
        raise ConformanceUsageError(
            f"{option} {spec!r}: {attribute}() raised {type(exc).__name__}: {exc}"
        ) from None
    missing = [
        n
        for n in ("__aenter__", "__aexit__", "capabilities", "send_request", "serve")
        if not hasattr(sample, n)
    ]
    if missing:
        raise ConformanceUsageError(
            f"{option} {spec!r}: {attribute}() returned {type(sample).__name__}, not a "
            f"transport (it lacks {', '.join(missing)})"
        )
    factory: Callable[[], Transport] = target
    return factory


def load_expected_failures(path: Path, known: set[str]) -> dict[str, str]:
    """Check id -> reason, from an expected-failures TOML file.

    :param known: the check ids of the catalogue; an entry naming another id is an error.
    :raises ConformanceUsageError: for a file that cannot be read or is not of the form
        ``[expected_failures]`` with ``check-id = "reason"`` entries.
    """
    where = f"--expected-failures {path}"
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConformanceUsageError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConformanceUsageError(f"{where}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConformanceUsageError(f"{where}: not valid TOML: {exc}") from None
    unexpected = sorted(set(document) - {"expected_failures"})
    if unexpected:
        raise ConformanceUsageError(
            f"{where}: unknown top-level key {unexpected[0]!r}; the file holds one "
            "[expected_failures] table"
        )
    table = document.get("expected_failures")
    if not isinstance(table, dict):
        raise ConformanceUsageError(
            f'{where}: no [expected_failures] table (check-id = "reason" entries)'
        )
    entries: dict[str, str] = {}
    for check_id, reason in table.items():
        if not isinstance(reason, str) or not reason.strip():
            raise ConformanceUsageError(
                f"{where}: {check_id} = {reason!r}: the reason must be a non-empty string"
            )
        if check_id not in known:
            raise ConformanceUsageError(f"{where}: no check has the id {check_id!r}")
        entries[check_id] = reason
    return entries


def progress_line(result: CheckResult) -> str:
    """One line per finished check: ``PASS  rr-echo  RR-004 must  12 ms``, then the message."""
    from llmproto_conformance._reports import CATEGORY_LABELS, category, printable

    label = CATEGORY_LABELS[category(result)]
    ms = result.duration_ms
    took = "<1 ms" if ms < 1 else f"{ms:.0f} ms"
    check = result.check
    line = f"{label:<11}  {check.id}  {check.requirement} {check.level.value}  {took}"
    if result.message:
        first = result.message.splitlines()[0]
        line += f"  {first}"
    return printable(line)  # a hostile message must not drive the terminal


# -- the subcommands --------------------------------------------------------------------------


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from llmproto_conformance._catalogue import catalogue
    from llmproto_conformance._runner import RunPlan, select

    known = {c.id for c in catalogue()}
    unknown = sorted(set(args.check or ()) - known)
    if unknown:
        parser.error(f"no check has the id {unknown[0]!r} (llmproto conformance run --list)")
    try:
        expected = (
            {}
            if args.expected_failures is None
            else load_expected_failures(args.expected_failures, known)
        )
    except ConformanceUsageError as exc:
        parser.error(str(exc))
    plan = RunPlan(
        profiles=frozenset(Profile(p) for p in args.profile) if args.profile else None,
        level=Level(args.level),
        testee=args.testee,
        expected_failures=expected,
        check_ids=frozenset(args.check) if args.check else None,
    )
    selected = select(plan)
    if args.list:
        for c in selected:
            print(f"{c.id}  {c.requirement} {c.level.value}  {c.profile.value}  {c.description}")
        return 0
    if not selected:
        parser.error("the selection (--profile, --level, --check) matches no check")
    if args.report_dir is not None and args.report_dir.exists() and not args.report_dir.is_dir():
        parser.error(f"--report-dir {args.report_dir}: not a directory")
    if args.transport is None and args.adapter is None:
        parser.error("give the transport under test: --transport URL or --adapter MODULE:FACTORY")
    try:
        if args.adapter is not None:
            factory, label = adapter_factory(args.adapter), args.adapter
        else:
            factory, label = url_factory(args.transport), redact(args.transport)
    except ConformanceUsageError as exc:
        parser.error(str(exc))
    implementation = args.implementation or (
        f"an external testee on {label}" if args.testee else f"the reference testee on {label}"
    )
    out: TextIO = sys.stderr if args.json else sys.stdout
    report = _execute(factory, plan, label=label, implementation=implementation, out=out)
    if report is None:
        return 1
    if args.report_dir is not None:
        from llmproto_conformance._reports import write_reports

        try:
            written = write_reports(report, args.report_dir)
        except OSError as exc:
            print(f"llmproto conformance: cannot write the reports: {exc}", file=sys.stderr)
            return 1
        for path in written.values():
            print(f"wrote {path}", file=out)
    if args.json:
        from llmproto_conformance._reports import render_json

        sys.stdout.write(render_json(report).decode())
    else:
        from llmproto_conformance._reports import format_summary

        print()
        print(format_summary(report))
    return 0 if report.ok else 1


def _execute(
    factory: Callable[[], Transport],
    plan: RunPlan,
    *,
    label: str,
    implementation: str,
    out: TextIO,
) -> Report | None:
    """Run the suite; the report, or ``None`` (after saying why) if the run broke off."""
    import anyio

    from llmproto_conformance._runner import run_suite
    from llmproto_ref import LlmpError

    def progress(result: CheckResult) -> None:
        print(progress_line(result), file=out, flush=True)

    run = functools.partial(
        run_suite,
        factory,
        plan,
        transport_label=label,
        implementation=implementation,
        progress=progress,
    )
    try:
        report: Report = anyio.run(run)
    except (LlmpError, OSError) as exc:
        reason = str(exc)
    except ExceptionGroup as group:
        leaves = _leaves(group)
        if not all(isinstance(e, LlmpError | OSError) for e in leaves):
            raise
        reason = "; ".join(str(e) for e in leaves)
    else:
        return report
    print(f"llmproto conformance: the run broke off: {reason}", file=sys.stderr)
    return None


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _testee(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from llmproto_conformance._testee_command import testee_main

    status: int = testee_main(args.transport, fault=args.fault)
    return status
