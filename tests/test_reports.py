"""The conformance reports: report.json, junit.xml, report.html and the terminal summary."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from llmproto_conformance._model import (
    Check,
    CheckResult,
    Level,
    Outcome,
    Profile,
    WireRecord,
)
from llmproto_conformance._report import Report
from llmproto_conformance._reports import (
    format_summary,
    format_wire,
    render_html,
    render_junit,
    write_reports,
)

#: What a hostile implementation may put in a message: markup, a NUL, a lone surrogate.
HOSTILE_MESSAGE = "got <script>alert('m')</script> & \x00 and \ud800 back"
#: A body that is not UTF-8, as the recorder shows it (``\xNN`` escapes), with markup.
INVALID_UTF8_BODY = b'{"data":"\xff\xfe"}</pre><script>alert(1)</script>'.decode(
    "utf-8", errors="backslashreplace"
)
SENT_BODY = '{"llmp":"1.0","id":"x-1","kind":"request","data":{"html":"<script>x</script>"}}'


async def _never_run(ctx: Any) -> None:
    """A check function the reports never call."""


def _check(id: str, level: Level, profile: Profile, requirement: str = "ENV-001") -> Check:
    return Check(id=id, requirement=requirement, level=level, profile=profile,
                 description=f"what {id} shows, with `code`", function=_never_run)  # fmt: skip


def _wire() -> list[WireRecord]:
    return [
        WireRecord(direction="sent", operation="send_request", address="llmp.testee.echo",
                   body=SENT_BODY, at_ms=0.25),
        WireRecord(direction="received", operation="inbox", address="_INBOX.<b>1</b>",
                   body=INVALID_UTF8_BODY, at_ms=1.5),
    ]  # fmt: skip


def synthetic_report(*, failing: bool = True) -> Report:
    """A report with every outcome: pass, fail, non-strict, unsupported, informational,
    an expected failure and a stale one (or, unless ``failing``, passes only)."""
    report = Report(transport="memory://reports", implementation="a <synthetic> testee",
                    started="2026-01-31T23:59:58.000Z")  # fmt: skip
    report.checks.append(CheckResult(
        check=_check("selftest-pass", Level.MUST, Profile.CORE), outcome=Outcome.PASS,
        duration_ms=12.4, requirement_text="An envelope MUST be one `JSON` object <b>.",
    ))  # fmt: skip
    if failing:
        report.checks += [
            CheckResult(check=_check("selftest-fail", Level.MUST, Profile.CORE, "ENV-003"),
                        outcome=Outcome.FAIL, duration_ms=3.0, message=HOSTILE_MESSAGE,
                        requirement_text="Duplicates MUST be rejected.", wire=_wire()),
            CheckResult(check=_check("selftest-should", Level.SHOULD, Profile.CORE, "VER-003"),
                        outcome=Outcome.NON_STRICT, duration_ms=0.5,
                        message="no llmp.versions detail", wire=_wire()),
            CheckResult(check=_check("selftest-expected", Level.MUST, Profile.RPC, "RR-004"),
                        outcome=Outcome.FAIL, duration_ms=2.0, message="known to fail",
                        expected_failure="tracked in issue 12"),
            CheckResult(check=_check("selftest-stale", Level.MUST, Profile.RPC, "RR-001"),
                        outcome=Outcome.PASS, duration_ms=2.0, expected_failure="was broken"),
        ]  # fmt: skip
        report.stale_expected_failures.append("selftest-stale")
    report.checks += [
        CheckResult(check=_check("selftest-unsupported", Level.MUST, Profile.RPC),
                    outcome=Outcome.UNSUPPORTED, duration_ms=0.0,
                    message="the transport does not declare durable_queues"),
        CheckResult(check=_check("selftest-figures", Level.MAY, Profile.PERFORMANCE),
                    outcome=Outcome.INFORMATIONAL, duration_ms=1500.0,
                    figures={"p50_ms": 0.123456789, "throughput_per_s": 10000,
                             "eta": float("nan"), "split": {"wire": 0.5}}),
    ]  # fmt: skip
    report.finished = "2026-02-01T00:00:01.500Z"
    return report


class _TagBalance(HTMLParser):
    """Collects the open-element stack; a leftover or a mismatch means broken markup."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.mismatches: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.mismatches.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parsed(page: str) -> _TagBalance:
    parser = _TagBalance()
    parser.feed(page)
    parser.close()
    return parser


def _junit(report: Report) -> ET.Element:
    return ET.fromstring(render_junit(report))  # noqa: S314 - the XML this test just wrote


def test_write_reports_writes_the_three_files(tmp_path: Path) -> None:
    """``write_reports`` creates the directory and writes report.json, junit.xml, report.html."""
    paths = write_reports(synthetic_report(), tmp_path / "out")
    assert {"json", "junit", "html"} == set(paths)
    assert ["junit.xml", "report.html", "report.json"] == sorted(
        p.name for p in (tmp_path / "out").iterdir()
    )


def test_report_json_has_the_required_fields(tmp_path: Path) -> None:
    """report.json is strict JSON with the run's fields, every check and the failure's wire log."""
    path = write_reports(synthetic_report(), tmp_path)["json"]

    def no_constant(name: str) -> None:
        raise AssertionError(f"{name} in report.json")

    document = json.loads(path.read_bytes(), parse_constant=no_constant)
    for name in ("llmp_version", "transport", "implementation", "started", "finished", "ok",
                 "summary", "stale_expected_failures", "checks"):  # fmt: skip
        assert name in document
    assert document["ok"] is False
    assert ["selftest-stale"] == document["stale_expected_failures"]
    assert 7 == len(document["checks"])
    failed = next(c for c in document["checks"] if c["id"] == "selftest-fail")
    assert {"id", "requirement", "requirement_text", "level", "profile", "description",
            "outcome", "duration_ms", "message", "wire"} <= set(failed)  # fmt: skip
    assert "\\ud800" in failed["message"]  # the lone surrogate, spelled out
    assert ["sent", "received"] == [w["direction"] for w in failed["wire"]]
    assert INVALID_UTF8_BODY == failed["wire"][1]["body"]
    assert 1 == document["summary"]["all"]["expected_failures"]


def test_junit_xml_parses_with_one_suite_per_profile_and_the_right_counts() -> None:
    """junit.xml is valid XML: suites per profile, failures for FAIL and stale, skips."""
    root = _junit(synthetic_report())
    assert "testsuites" == root.tag
    assert ("7", "2", "2", "0") == tuple(root.get(k) for k in ("tests", "failures", "skipped",
                                                               "errors"))  # fmt: skip
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert ["core", "rpc", "performance"] == list(suites)
    counts = {n: (s.get("tests"), s.get("failures"), s.get("skipped")) for n, s in suites.items()}
    assert {"core": ("3", "1", "0"), "rpc": ("3", "1", "2"), "performance": ("1", "0", "0")} == (
        counts
    )
    cases = {c.get("name"): c for c in root.iter("testcase")}
    fail = cases["selftest-fail"]
    assert ("core", "0.003") == (fail.get("classname"), fail.get("time"))
    failure = fail.find("failure")
    assert failure is not None
    assert "<script>alert('m')</script>" in (failure.get("message") or "")
    assert "\\x00" in (failure.get("message") or "")
    assert "llmp.testee.echo" in (failure.text or "")
    assert "\\xff\\xfe" in (failure.text or "")
    should = cases["selftest-should"]
    assert should.find("failure") is None
    assert "non-strict" in (should.findtext("system-out") or "")
    skipped = cases["selftest-unsupported"].find("skipped")
    assert skipped is not None
    assert "durable_queues" in (skipped.get("message") or "")
    expected = cases["selftest-expected"].find("skipped")
    assert expected is not None
    assert "expected failure: tracked in issue 12" == expected.get("message")
    assert cases["selftest-stale"].find("failure") is not None
    assert "p50_ms: 0.123457" in (cases["selftest-figures"].findtext("system-out") or "")
    properties = {p.get("name"): p.get("value") for p in fail.iter("property")}
    assert ("ENV-003", "must", "fail") == (properties["requirement"], properties["level"],
                                           properties["outcome"])  # fmt: skip


def test_html_escapes_hostile_text_and_keeps_its_markup_balanced() -> None:
    """Markup, NUL, surrogates and invalid UTF-8 in a message or body show as text, never run."""
    page = render_html(synthetic_report())
    page.encode("utf-8")  # no lone surrogate left
    assert "<script" not in page.lower()
    assert "\x00" not in page
    assert "got &lt;script&gt;alert(&#x27;m&#x27;)&lt;/script&gt; &amp; \\x00 and \\ud800" in page
    assert "\\xff\\xfe&quot;}&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "_INBOX.&lt;b&gt;1&lt;/b&gt;" in page
    assert "a &lt;synthetic&gt; testee" in page
    parsed = _parsed(page)
    assert ([], []) == (parsed.stack, parsed.mismatches)


def test_html_is_self_contained() -> None:
    """The page loads nothing: no script, stylesheet link, image, font or import."""
    page = render_html(synthetic_report()).lower()
    for needle in ("<script", "<link", "<img", "src=", "url(", "@import", "https://"):
        assert needle not in page


def test_html_shows_header_summary_and_failures_first() -> None:
    """The header has the verdict and the run's facts; each profile lists failures first."""
    report = synthetic_report()
    page = render_html(report)
    text = " ".join(_parsed(page).text)
    verdict = '<p class="verdict verdict-fail" id="verdict"><span class="verdict-word">FAIL</span>'
    assert verdict in page
    for fact in ("memory://reports", "llmp 1.0", "2026-01-31T23:59:58.000Z",
                 "2026-02-01T00:00:01.500Z", "3.5 s"):  # fmt: skip
        assert fact in text
    assert "1 MUST check failed, 1 expected failure passed" in text
    core = page.index('id="profile-core"')
    order = [page.index(f'id="check-{name}"', core) for name in
             ("selftest-fail", "selftest-should", "selftest-pass")]  # fmt: skip
    assert sorted(order) == order
    rpc = page.index('id="profile-rpc"')
    order = [page.index(f'id="check-{name}"', rpc) for name in
             ("selftest-stale", "selftest-expected", "selftest-unsupported")]  # fmt: skip
    assert sorted(order) == order
    assert '<tr class="row-all"><th scope="row">all levels</th><td class="col-passed">2</td>' in (
        page
    )


def test_html_shows_requirement_quotes_wire_logs_and_figures() -> None:
    """A check shows its quoted requirement; a failure its wire log, open; figures a table."""
    page = render_html(synthetic_report())
    assert "An envelope MUST be one <code>JSON</code> object &lt;b&gt;." in page
    assert '<details class="wire" open><summary>Wire log: 2 envelopes' in page
    assert '<details class="wire"><summary>Wire log: 2 envelopes' in page  # non-strict: closed
    assert "&quot;html&quot;: &quot;&lt;script&gt;x&lt;/script&gt;&quot;" in page  # pretty body
    assert '<tr><th scope="row">p50_ms</th><td>0.123457</td></tr>' in page
    assert '<tr><th scope="row">split</th><td>{&quot;wire&quot;:0.5}</td></tr>' in page
    assert "Listed in the expected-failures file (still failing): tracked in issue 12" in page


def test_a_passing_report_says_pass() -> None:
    """Without failures the verdict is PASS in every format."""
    report = synthetic_report(failing=False)
    assert report.ok
    assert 'class="verdict verdict-pass"' in render_html(report)
    assert "0" == _junit(report).get("failures")
    assert format_summary(report).endswith(
        "verdict: PASS: no unexpected MUST failure among 3 checks (1 passed, 0 non-strict, "
        "1 unsupported, 1 informational, 0 expected)"
    )


def test_format_summary_has_the_table_the_failures_and_the_verdict() -> None:
    """The terminal summary: profiles by outcome, failed MUST checks, stale entries, verdict."""
    lines = format_summary(synthetic_report()).splitlines()
    assert [
        "profile      passed  failed  non-strict  unsupported  informational  expected",
        "core              1       1           1            0              0         0",
        "rpc               1       1           0            1              0         1",
        "performance       0       0           0            0              1         0",
        "all               2       2           1            1              1         1",
    ] == lines[:5]
    message = "got <script>alert('m')</script> & \\x00 and \\ud800 back"
    assert f"  selftest-fail  [ENV-003]  {message}" in lines
    assert "  selftest-stale" in lines
    assert lines[-1].startswith("verdict: FAIL: 1 MUST check failed, 1 expected failure passed")


def test_the_wire_log_keeps_the_bytes_as_sent() -> None:
    """Bodies are re-indented, never re-serialised: duplicates and 1e400 stay; others verbatim."""
    record = WireRecord(direction="sent", operation="publish_event", address="a.b",
                        body='{"a":1,"a":[],"n":1e400,"s":"x,\\"y:"}', at_ms=0.0)  # fmt: skip
    text = format_wire([record])
    assert ('-> sent      publish_event  a.b  +0.0 ms\n     {\n       "a": 1,\n       "a": [],\n'
            '       "n": 1e400,\n       "s": "x,\\"y:"\n     }') == text  # fmt: skip
    raw = WireRecord(direction="received", operation="inbox", address="i", body="{NaN", at_ms=0)
    assert "<- received  inbox  i  +0.0 ms\n     {NaN" == format_wire([raw])
    assert format_wire([raw, raw, raw], limit=1).endswith("… 2 more records")


def test_a_huge_or_deep_body_is_clipped_or_left_flat() -> None:
    """A 1 MiB body is cut with a note; JSON nested deeper than the page can indent stays flat."""
    big = WireRecord(direction="sent", operation="enqueue", address="q",
                     body='"' + "x" * 1_048_576 + '"', at_ms=0)  # fmt: skip
    assert "more characters (report.json has the whole body)" in format_wire([big])
    assert len(format_wire([big])) < 20_000
    deep = WireRecord(direction="sent", operation="enqueue", address="q",
                      body="[" * 100 + "]" * 100, at_ms=0)  # fmt: skip
    assert format_wire([deep]).endswith("[" * 99 + "[]" + "]" * 99)
