"""``llmproto conformance run``: runs, reports, exit status, expected failures, usage errors.

The tests register a few ``selftest-*`` checks of their own (:func:`selftest_checks`) and take
them out of the catalogue again afterwards, so no other test sees them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llmproto_conformance._catalogue import _REGISTRY, check
from llmproto_conformance._context import CheckContext
from llmproto_conformance._model import CheckFailed, Level, Profile, Unsupported
from llmproto_ref._cli import main

#: A message a broken implementation might provoke: markup and a control character.
HOSTILE = "echoed <script>alert(1)</script> \x01 back"


async def _passes(ctx: CheckContext) -> None:
    """Always passes."""


async def _fails(ctx: CheckContext) -> None:
    """Always fails, after sending something for the wire log."""
    await ctx.transport.publish_event("selftest.event", b'{"a":"\xff<script>"}')
    raise CheckFailed(HOSTILE)


async def _misses_a_should(ctx: CheckContext) -> None:
    """Always fails; registered as a SHOULD, so the outcome is non-strict."""
    raise CheckFailed("a SHOULD missed")


async def _unsupported(ctx: CheckContext) -> None:
    """Always reports a missing capability."""
    raise Unsupported("the selftest capability is not declared")


async def _figures(ctx: CheckContext) -> dict[str, Any]:
    """Always informational."""
    return {"p50_ms": 0.5}


SELFTESTS = {
    "selftest-pass": (_passes, Level.MUST),
    "selftest-fail": (_fails, Level.MUST),
    "selftest-should": (_misses_a_should, Level.SHOULD),
    "selftest-unsupported": (_unsupported, Level.MUST),
    "selftest-figures": (_figures, Level.MAY),
}


@contextmanager
def registered_selftests() -> Iterator[None]:
    """The ``selftest-*`` checks in the catalogue (profile core), and out of it afterwards."""
    try:
        for check_id, (function, level) in SELFTESTS.items():
            check(id=check_id, requirement="ENV-001", level=level, profile=Profile.CORE,
                  description=f"{check_id}: a check of the suite itself")(function)  # fmt: skip
        yield
    finally:
        for check_id in SELFTESTS:
            _REGISTRY.pop(check_id, None)


@pytest.fixture
def selftests() -> Iterator[None]:
    """The ``selftest-*`` checks, registered for one test."""
    with registered_selftests():
        yield


def _run(*args: str) -> int:
    return main(["conformance", "run", *args])


def _usage_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``args``; assert exit status 2 and return standard error."""
    with pytest.raises(SystemExit) as stopped:
        _run(*args)
    assert 2 == stopped.value.code
    return capsys.readouterr().err


def _checks(*ids: str) -> list[str]:
    return [arg for check_id in ids for arg in ("--check", check_id)]


def test_selftests_leave_the_catalogue_as_they_found_it() -> None:
    """The context manager takes its checks out again, even when the body fails."""
    before = dict(_REGISTRY)
    seen: set[str] = set()

    def fail_inside() -> None:
        with registered_selftests():
            seen.update(_REGISTRY)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_inside()
    assert set(SELFTESTS) <= seen
    assert before == _REGISTRY


@pytest.mark.usefixtures("selftests")
def test_a_passing_run_exits_0_and_writes_the_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run whose checks pass prints a line per check and the summary, writes the reports."""
    status = _run("--transport", "memory://cli-pass", "--report-dir", str(tmp_path),
                  *_checks("selftest-pass", "selftest-should", "selftest-unsupported",
                           "selftest-figures"))  # fmt: skip
    out = capsys.readouterr().out
    assert 0 == status
    lines = out.splitlines()
    assert lines[0].startswith("INFO         selftest-figures  ENV-001 may  ")
    assert lines[1].startswith("PASS         selftest-pass  ENV-001 must  ")
    assert lines[2].startswith("NON-STRICT   selftest-should  ENV-001 should  ")
    assert lines[2].endswith("  a SHOULD missed")
    assert "UNSUPPORTED  selftest-unsupported  ENV-001 must  <1 ms  the selftest capability is" in (
        out
    )
    assert lines[-1].startswith("verdict: PASS: no unexpected MUST failure among 4 checks")
    for name in ("report.json", "junit.xml", "report.html"):
        assert f"wrote {tmp_path / name}" in out
    document = json.loads((tmp_path / "report.json").read_bytes())
    assert (True, "memory://cli-pass") == (document["ok"], document["transport"])
    assert "the reference testee on memory://cli-pass" == document["implementation"]


@pytest.mark.usefixtures("selftests")
def test_a_failing_must_exits_1_and_is_listed_with_its_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed MUST check makes the exit status 1; the summary names it and the report has
    its wire log."""
    status = _run("--transport", "memory://cli-fail", "--testee", "--report-dir", str(tmp_path),
                  *_checks("selftest-pass", "selftest-fail"))  # fmt: skip
    out = capsys.readouterr().out
    assert 1 == status
    assert "  echoed <script>alert(1)</script> \\x01 back\n" in out  # the progress line
    assert "\x01" not in out
    assert "  selftest-fail  [ENV-001]  echoed <script>alert(1)</script> \\x01 back" in out
    assert "verdict: FAIL: 1 MUST check failed; 2 checks run" in out
    document = json.loads((tmp_path / "report.json").read_bytes())
    failed = next(c for c in document["checks"] if c["id"] == "selftest-fail")
    assert [("sent", "publish_event", "selftest.event")] == [
        (w["direction"], w["operation"], w["address"]) for w in failed["wire"]
    ]
    assert "an external testee on memory://cli-fail" == document["implementation"]
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.usefixtures("selftests")
def test_json_prints_the_report_and_sends_progress_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--json`` makes standard output one JSON document, the report."""
    status = _run("--transport", "memory://cli-json", "--json", *_checks("selftest-pass"))
    captured = capsys.readouterr()
    assert 0 == status
    document = json.loads(captured.out)
    assert ["selftest-pass"] == [c["id"] for c in document["checks"]]
    assert captured.err.startswith("PASS         selftest-pass")


def test_the_core_profile_against_the_reference_testee(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--profile core`` over memory:// runs every core check; the status follows report.ok."""
    status = _run("--transport", "memory://cli-core", "--profile", "core", "--report-dir",
                  str(tmp_path))  # fmt: skip
    capsys.readouterr()
    document = json.loads((tmp_path / "report.json").read_bytes())
    assert (0 if document["ok"] else 1) == status
    assert document["checks"]
    assert {"core"} == {c["profile"] for c in document["checks"]}
    assert (tmp_path / "junit.xml").is_file()
    assert (tmp_path / "report.html").is_file()


@pytest.mark.usefixtures("selftests")
def test_an_expected_failure_that_fails_keeps_the_run_green(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A listed check that still fails is reported as expected, and the exit status is 0."""
    listed = tmp_path / "expected.toml"
    listed.write_text('[expected_failures]\n"selftest-fail" = "a known bug, issue 7"\n')
    status = _run("--transport", "memory://cli-xf", "--expected-failures", str(listed),
                  *_checks("selftest-pass", "selftest-fail"))  # fmt: skip
    out = capsys.readouterr().out
    assert 0 == status
    assert "EXPECTED     selftest-fail" in out


@pytest.mark.usefixtures("selftests")
def test_an_expected_failure_that_passes_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A listed check that passes is stale: the exit status is 1 and the report says so."""
    listed = tmp_path / "expected.toml"
    listed.write_text('[expected_failures]\nselftest-pass = "was broken"\n')
    status = _run("--transport", "memory://cli-stale", "--expected-failures", str(listed),
                  "--report-dir", str(tmp_path / "r"), *_checks("selftest-pass"))  # fmt: skip
    out = capsys.readouterr().out
    assert 1 == status
    assert "STALE        selftest-pass" in out
    assert "stale expected failures (listed, but passed):\n  selftest-pass" in out
    document = json.loads((tmp_path / "r" / "report.json").read_bytes())
    assert ["selftest-pass"] == document["stale_expected_failures"]


@pytest.mark.usefixtures("selftests")
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[expected_failures\n", "not valid TOML"),
        ('selftest-pass = "x"\n', "unknown top-level key 'selftest-pass'"),
        ("[other]\n", "unknown top-level key 'other'"),
        ("expected_failures = 3\n", "no [expected_failures] table"),
        ("[expected_failures]\nselftest-pass = 1\n", "the reason must be a non-empty string"),
        ('[expected_failures]\nselftest-pass = " "\n', "the reason must be a non-empty string"),
        ('[expected_failures]\nno-such-check = "x"\n', "no check has the id 'no-such-check'"),
    ],
)
def test_a_malformed_expected_failures_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    """Every way the TOML file can be wrong stops the run with status 2 and says how."""
    listed = tmp_path / "expected.toml"
    listed.write_text(content)
    err = _usage_error(capsys, "--transport", "memory://x", "--expected-failures", str(listed))
    assert f"--expected-failures {listed}: " in err
    assert message in err


@pytest.mark.usefixtures("selftests")
def test_a_report_dir_that_is_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report directory is checked before the run, not after it."""
    taken = tmp_path / "taken"
    taken.write_text("")
    err = _usage_error(capsys, "--transport", "memory://x", "--report-dir", str(taken),
                       *_checks("selftest-pass"))  # fmt: skip
    assert f"--report-dir {taken}: not a directory" in err


def test_a_missing_expected_failures_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreadable file is a usage error too."""
    err = _usage_error(capsys, "--transport", "memory://x", "--expected-failures",
                       str(tmp_path / "absent.toml"))  # fmt: skip
    assert "cannot read" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give the transport under test"),
        (["--transport", "memory://x", "--check", "no-such-check"], "no check has the id"),
        (["--transport", "memory://x", "--level", "must", "--check", "selftest-should"],
         "matches no check"),
        (["--transport", "memory://x", "--profile", "nope"], "invalid choice: 'nope'"),
        (["--transport", "memory://x", "--adapter", "a:b"], "not allowed with argument"),
        (["--transport", "foo://x"], "unsupported transport scheme 'foo'"),
        (["--transport", "nats://127.0.0.1:4222?colour=blue"], "unknown NATS transport option"),
        (["--transport", "amqp://guest:secret@localhost/?prefetch=x"], "malformed AMQP URL"),
        (["--adapter", "nocolon"], "expected module:factory"),
        (["--adapter", "no_such_module_here:f"], "cannot import"),
        (["--adapter", "json:nope"], "json has no attribute 'nope'"),
        (["--adapter", "json:__doc__"], "is not callable"),
        (["--adapter", "json:dumps"], "dumps() raised TypeError"),
        (["--adapter", "builtins:object"], "returned object, not a transport"),
    ],
)  # fmt: skip
@pytest.mark.usefixtures("selftests")
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Options the suite cannot work with stop it with status 2 before anything runs."""
    err = _usage_error(capsys, *args)
    assert message in err
    assert "secret" not in err


@pytest.mark.usefixtures("selftests")
def test_an_adapter_factory_is_called_for_each_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--adapter module:factory`` runs the suite over the transports the factory returns."""
    (tmp_path / "selftest_adapter.py").write_text(
        "from llmproto_ref import MemoryTransport\n"
        "calls = []\n"
        "def make() -> MemoryTransport:\n"
        "    calls.append(1)\n"
        "    return MemoryTransport('cli-adapter')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    status = _run("--adapter", "selftest_adapter:make", *_checks("selftest-pass"))
    out = capsys.readouterr().out
    assert 0 == status
    assert "verdict: PASS" in out
    # one call to try the factory, one for the testee's transport, one for the suite's
    assert 3 == len(sys.modules["selftest_adapter"].calls)


@pytest.mark.usefixtures("selftests")
def test_list_prints_the_selection_without_running(capsys: pytest.CaptureFixture[str]) -> None:
    """``--list`` needs no transport and runs nothing."""
    assert 0 == _run("--list", "--level", "should", *_checks("selftest-pass", "selftest-should",
                                                              "selftest-figures"))  # fmt: skip
    assert [
        "selftest-pass  ENV-001 must  core  selftest-pass: a check of the suite itself",
        "selftest-should  ENV-001 should  core  selftest-should: a check of the suite itself",
    ] == capsys.readouterr().out.splitlines()


def test_the_testee_command_reports_a_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    """``conformance testee`` hands the URL to the testee process, which refuses a bad one."""
    assert 2 == main(["conformance", "testee", "--transport", "foo://x"])
    assert "unsupported transport scheme 'foo'" in capsys.readouterr().err
