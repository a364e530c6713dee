"""The pytest plugin's conformance mode: ``--llmproto-transport`` collects and runs checks.

The inner pytest runs are in-process, so they see the ``selftest-*`` checks this module
registers (and removes again) with :func:`test_conformance_cli.registered_selftests`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from test_conformance_cli import registered_selftests

pytest_plugins = ["pytester"]

PLUGIN = "llmproto_conformance.pytest_plugin"


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.Pytester]:
    """A pytester whose runs see the plugin, no other third-party plugin, and the selftests."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    with registered_selftests():
        yield pytester


def _pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", PLUGIN, "-p", "no:cacheprovider", *args)


def test_checks_are_items_named_after_their_ids(run: pytest.Pytester) -> None:
    """Node IDs are ``llmproto-conformance::<check id>``, one per selected check."""
    result = _pytest(run, "--llmproto-transport", "memory://plug-ids", "--collect-only", "-q",
                     "--llmproto-profile", "core", "--llmproto-level", "must")  # fmt: skip
    ids = [line for line in result.outlines if line.startswith("llmproto-conformance::")]
    assert "llmproto-conformance::selftest-pass" in ids
    assert "llmproto-conformance::selftest-fail" in ids
    assert "llmproto-conformance::selftest-should" not in ids  # a SHOULD, above --level must
    assert "llmproto-conformance::selftest-figures" not in ids


def test_each_item_reports_its_checks_outcome(run: pytest.Pytester) -> None:
    """Fail fails with message and wire log, unsupported skips, non-strict and figures pass."""
    result = _pytest(run, "--llmproto-transport", "memory://plug-run", "--llmproto-testee",
                     "-k", "selftest", "-rA")  # fmt: skip
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*check selftest-fail [[]ENV-001[]]*",
            "echoed <script>alert(1)</script> \\x01 back",
            "*check:       selftest-fail (MUST, profile core)",
            "*requirement: [[]ENV-001[]] An envelope MUST be exactly one JSON object*",
            "*wire log (1 records):",
            "*-> sent      publish_event  selftest.event  +*",
            '*{"a":"\\xff<script>"}',
        ]
    )
    result.stdout.fnmatch_lines(["*non-strict: this SHOULD requirement is not met*"])
    result.stdout.fnmatch_lines(["*informational figures:*", "*p50_ms: 0.5*"])
    result.stdout.fnmatch_lines(["SKIPPED*unsupported: the selftest capability is not declared"])


def test_only_the_items_left_after_deselection_run(run: pytest.Pytester) -> None:
    """The suite runs once, over the selected items only."""
    result = _pytest(run, "--llmproto-transport", "memory://plug-k", "--llmproto-testee",
                     "-k", "selftest-pass or selftest-fail", "-q")  # fmt: skip
    result.assert_outcomes(passed=1, failed=1)


def test_a_run_against_the_reference_testee(run: pytest.Pytester) -> None:
    """Without ``--llmproto-testee`` the suite starts the reference testee itself."""
    result = _pytest(run, "--llmproto-transport", "memory://plug-ref", "-k", "selftest-pass",
                     "-q")  # fmt: skip
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--llmproto-testee"], "*--llmproto-testee needs --llmproto-transport*"),
        (["--llmproto-level", "must"], "*--llmproto-level needs --llmproto-transport*"),
        (["--llmproto-profile", "core"], "*--llmproto-profile needs --llmproto-transport*"),
        (["--llmproto-transport", "nats://127.0.0.1:4222?colour=blue"],
         "*--llmproto-transport nats://127.0.0.1:4222?colour=blue: INVALID_PARAMS: unknown NATS*"),
        (["--llmproto-transport", "foo://x"], "*unsupported transport scheme 'foo'*"),
        (["--llmproto-transport", "memory://a", "--llmproto-adapter", "m:f"], "*not both*"),
        (["--llmproto-adapter", "json:nope"],
         "*--llmproto-adapter 'json:nope': json has no attribute 'nope'*"),
    ],
)  # fmt: skip
def test_unusable_conformance_options_are_usage_errors(
    run: pytest.Pytester, args: list[str], message: str
) -> None:
    """Options that cannot work stop the run with a usage error, never a silent pass."""
    result = _pytest(run, *args)
    assert pytest.ExitCode.USAGE_ERROR == result.ret
    result.stderr.fnmatch_lines([message])
