"""Writing a :class:`~llmproto_conformance._report.Report` out: JSON, JUnit XML, HTML, terminal.

Theory of operation
-------------------
Every report is written from the same :class:`Report`, and every one of them must survive
what a broken or hostile implementation sends: bodies that are not UTF-8 (the recorder already
shows those bytes as ``\\xNN``), control characters that XML forbids, lone surrogates that no
UTF-8 file can hold, ``<script>`` in a message. So all text goes through :func:`_printable`
(which spells out the characters no XML or HTML document may contain) and then through the
escaping of its format: :mod:`xml.etree` for JUnit, :func:`html.escape` for the page.

A check's display category adds the expected-failures file to its outcome: a listed check
that still fails is ``expected``, a listed check that passes is ``stale`` (it fails the run).
"""

from __future__ import annotations

import html
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from llmproto_conformance._model import CheckResult, Level, Outcome, Profile, WireRecord
from llmproto_conformance._report import Report

__all__ = (
    "CATEGORY_LABELS",
    "category",
    "format_summary",
    "format_wire",
    "printable",
    "render_html",
    "render_json",
    "render_junit",
    "write_reports",
)

#: The display categories, most urgent first, with the label the terminal and the page show.
CATEGORY_LABELS = {
    "fail": "FAIL",  # a MUST failed and is not listed as expected
    "stale": "STALE",  # listed as an expected failure, but passed
    "non_strict": "NON-STRICT",  # a SHOULD or MAY is not met
    "expected": "EXPECTED",  # listed as an expected failure, and still not passing
    "informational": "INFO",  # figures only
    "unsupported": "UNSUPPORTED",  # the capability the check needs is not declared
    "pass": "PASS",
}
_ORDER = {name: index for index, name in enumerate(CATEGORY_LABELS)}
#: The summary columns, in the order of :meth:`Report.summary`'s keys as the tables show them.
_COLUMNS = ("passed", "failed", "non_strict", "unsupported", "informational", "expected_failures")
_HEADINGS = ("passed", "failed", "non-strict", "unsupported", "informational", "expected")
#: Longest body the page and the JUnit file show in full (report.json keeps everything).
_BODY_LIMIT = 16_384
#: Deepest JSON the wire log re-indents; deeper bodies are shown as they came.
_INDENT_DEPTH = 40
_UNPRINTABLE = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def category(result: CheckResult) -> str:
    """The display category of ``result`` (a key of :data:`CATEGORY_LABELS`)."""
    if result.expected_failure is not None:
        return "stale" if result.outcome is Outcome.PASS else "expected"
    return {
        Outcome.PASS: "pass",
        Outcome.FAIL: "fail",
        Outcome.NON_STRICT: "non_strict",
        Outcome.INFORMATIONAL: "informational",
        Outcome.UNSUPPORTED: "unsupported",
    }[result.outcome]


def write_reports(report: Report, directory: Path) -> dict[str, Path]:
    """Write ``report.json``, ``junit.xml`` and ``report.html`` into ``directory``.

    :returns: the paths written, by format: ``json``, ``junit``, ``html``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / "report.json",
        "junit": directory / "junit.xml",
        "html": directory / "report.html",
    }
    paths["json"].write_bytes(render_json(report))
    paths["junit"].write_bytes(render_junit(report))
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths


def render_json(report: Report) -> bytes:
    """``report.json``: :meth:`Report.to_json`, indented, with unencodable text escaped."""
    document = _json_safe(report.to_json())
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


# -- text shared by the formats -------------------------------------------------------------


def printable(text: str) -> str:
    """``text`` with the characters no XML or HTML document may hold spelled out as escapes."""
    return _UNPRINTABLE.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_safe(value: Any) -> Any:
    """``value`` with strings made printable and non-finite numbers as strings, for orjson."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return printable(str(value))


def _pretty_body(body: str) -> str:
    """A JSON body re-indented for reading, keeping every token as sent; others unchanged.

    The body is only re-laid, never re-serialised, so duplicate names, ``1e400`` and escapes
    stay exactly as they were on the wire.
    """
    try:
        json.loads(body, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return body
    return _reindent(body) or body


def _pairs(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return pairs


def _no_constant(name: str) -> None:
    raise ValueError(name)


def _reindent(text: str) -> str | None:
    """``text`` (valid JSON) with one member or item per line; ``None`` if nested too deep."""
    out: list[str] = []
    depth, i, n = 0, 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            end = i + 1
            while text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
            continue
        if char in "{[":
            after = i + 1
            while text[after] in " \t\r\n":
                after += 1
            if text[after] in "}]":  # an empty object or array stays on its line
                out.append(char + text[after])
                i = after + 1
                continue
            depth += 1
            if depth > _INDENT_DEPTH:
                return None
            out.append(char + "\n" + "  " * depth)
        elif char in "}]":
            depth -= 1
            out.append("\n" + "  " * depth + char)
        elif char == ",":
            out.append(",\n" + "  " * depth)
        elif char == ":":
            out.append(": ")
        elif char not in " \t\r\n":
            out.append(char)
        i += 1
    return "".join(out)


def _clip(body: str) -> str:
    if len(body) <= _BODY_LIMIT:
        return body
    more = len(body) - _BODY_LIMIT
    return f"{body[:_BODY_LIMIT]}\n… {more:,} more characters (report.json has the whole body)"


def _arrow(record: WireRecord) -> str:
    return "->" if record.direction == "sent" else "<-"


def format_wire(records: Sequence[WireRecord], *, limit: int | None = None) -> str:
    """A wire log as text: one header line per envelope, then its body, indented.

    :param limit: show at most this many records (the rest are counted).
    """
    shown = records if limit is None else records[:limit]
    lines: list[str] = []
    for record in shown:
        lines.append(
            f"{_arrow(record)} {record.direction:<8}  {record.operation}  {record.address}  "
            f"+{record.at_ms:.1f} ms"
        )
        body = _clip(_pretty_body(record.body)) or "(empty body)"
        lines.extend(f"     {line}" for line in body.splitlines())
    if len(shown) < len(records):
        lines.append(f"… {len(records) - len(shown)} more records")
    return printable("\n".join(lines))


def _duration(ms: float) -> str:
    if ms < 1:
        return "<1 ms"
    if ms < 10_000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s"


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return orjson.dumps(_json_safe(value)).decode()
    return str(value)


def _counts(results: Iterable[CheckResult]) -> dict[str, int]:
    """The :meth:`Report.summary` counts for ``results`` (expected failures counted twice)."""
    counts = dict.fromkeys(_COLUMNS, 0)
    names = {
        Outcome.PASS: "passed",
        Outcome.FAIL: "failed",
        Outcome.NON_STRICT: "non_strict",
        Outcome.INFORMATIONAL: "informational",
        Outcome.UNSUPPORTED: "unsupported",
    }
    for result in results:
        counts[names[result.outcome]] += 1
        if result.expected_failure is not None and result.outcome is not Outcome.PASS:
            counts["expected_failures"] += 1
    return counts


def _by_profile(report: Report) -> list[tuple[Profile, list[CheckResult]]]:
    """The profiles that ran, in declaration order, each with its results most urgent first."""
    groups: dict[Profile, list[CheckResult]] = {}
    for result in report.checks:
        groups.setdefault(result.check.profile, []).append(result)
    return [
        (profile, sorted(groups[profile], key=lambda r: _ORDER[category(r)]))
        for profile in Profile
        if profile in groups
    ]


def _verdict(report: Report) -> tuple[str, str]:
    """``PASS`` or ``FAIL``, and why."""
    counts = _counts(report.checks)
    total = len(report.checks)
    if report.ok:
        return "PASS", (
            f"no unexpected MUST failure among {total} checks ({counts['passed']} passed, "
            f"{counts['non_strict']} non-strict, {counts['unsupported']} unsupported, "
            f"{counts['informational']} informational, {counts['expected_failures']} expected)"
        )
    reasons = []
    failed = len(report.unexpected_must_failures)
    if failed:
        reasons.append(f"{failed} MUST check{'s' if failed != 1 else ''} failed")
    stale = len(report.stale_expected_failures)
    if stale:
        reasons.append(
            f"{stale} expected failure{'s' if stale != 1 else ''} passed (stale: remove "
            f"{'them' if stale != 1 else 'it'} from the expected-failures file)"
        )
    return "FAIL", f"{', '.join(reasons)}; {total} checks run"


# -- terminal ---------------------------------------------------------------------------------


def format_summary(report: Report) -> str:
    """The terminal summary: profiles by outcome, the failed MUST checks, the verdict line."""
    rows = [(p.value, _counts(results)) for p, results in _by_profile(report)]
    rows.append(("all", _counts(report.checks)))
    width = max(len("profile"), *(len(name) for name, _ in rows))
    lines = ["  ".join([f"{'profile':<{width}}", *_HEADINGS])]
    for name, counts in rows:
        cells = [f"{counts[c]:>{len(h)}}" for c, h in zip(_COLUMNS, _HEADINGS, strict=True)]
        lines.append("  ".join([f"{name:<{width}}", *cells]))
    if any(r.expected_failure is not None for r in report.checks):
        lines.append("(expected: listed in the expected-failures file; also counted by outcome)")
    failures = report.unexpected_must_failures
    if failures:
        lines.append("")
        lines.append("failed MUST checks:")
        for result in failures:
            message = result.message.splitlines()[0] if result.message else "(no message)"
            lines.append(f"  {result.check.id}  [{result.check.requirement}]  {message}")
    if report.stale_expected_failures:
        lines.append("")
        lines.append("stale expected failures (listed, but passed):")
        lines.extend(f"  {check_id}" for check_id in report.stale_expected_failures)
    verdict, reason = _verdict(report)
    lines.append("")
    lines.append(f"verdict: {verdict}: {reason}")
    return printable("\n".join(lines))


# -- JUnit XML --------------------------------------------------------------------------------


def render_junit(report: Report) -> bytes:
    """``junit.xml``: one ``testsuite`` per profile, one ``testcase`` per check."""
    root = ET.Element("testsuites", name="llmproto conformance")
    totals = {"tests": 0, "failures": 0, "skipped": 0, "time": 0.0}
    for profile, results in _by_profile(report):
        suite = ET.SubElement(root, "testsuite", name=profile.value)
        counts = {"tests": 0, "failures": 0, "skipped": 0, "time": 0.0}
        for result in sorted(results, key=lambda r: r.check.id):
            kind = _junit_case(suite, result)
            counts["tests"] += 1
            counts["time"] += result.duration_ms / 1000
            if kind:
                counts[kind] += 1
        for key, value in counts.items():
            totals[key] += value
        suite.set("timestamp", printable(report.started))
        _set_counts(suite, counts)
    _set_counts(root, totals)
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"


def _set_counts(element: ET.Element, counts: dict[str, float]) -> None:
    element.set("tests", str(int(counts["tests"])))
    element.set("failures", str(int(counts["failures"])))
    element.set("errors", "0")
    element.set("skipped", str(int(counts["skipped"])))
    element.set("time", f"{counts['time']:.3f}")


def _junit_case(suite: ET.Element, result: CheckResult) -> str:
    """Add ``result``'s testcase; returns ``failures``, ``skipped`` or ``""``."""
    check = result.check
    case = ET.SubElement(
        suite,
        "testcase",
        name=check.id,
        classname=check.profile.value,
        time=f"{result.duration_ms / 1000:.3f}",
    )
    properties = ET.SubElement(case, "properties")
    for name, value in (
        ("requirement", check.requirement),
        ("level", check.level.value),
        ("outcome", result.outcome.value),
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    if result.requirement_text:
        ET.SubElement(
            properties,
            "property",
            name="requirement_text",
            value=printable(result.requirement_text),
        )
    kind = category(result)
    message = printable(result.message)
    if kind == "fail":
        failure = ET.SubElement(case, "failure", message=message or "failed", type="MUST")
        failure.text = _failure_text(result)
        return "failures"
    if kind == "stale":
        reason = printable(result.expected_failure or "")
        ET.SubElement(
            case,
            "failure",
            type="stale-expected-failure",
            message=(f"listed as an expected failure ({reason}) but passed: remove the entry"),
        )
        return "failures"
    if kind == "expected":
        reason = printable(result.expected_failure or "")
        ET.SubElement(case, "skipped", message=f"expected failure: {reason}")
        _system_out(case, f"{result.outcome.value}: {message}")
        return "skipped"
    if kind == "unsupported":
        ET.SubElement(case, "skipped", message=message or "unsupported")
        return "skipped"
    if kind == "non_strict":
        _system_out(
            case,
            f"non-strict: a {check.level.value.upper()} requirement is not met "
            f"(not a failure): {message}\n\n{_failure_text(result)}",
        )
    elif kind == "informational":
        figures = "\n".join(f"{k}: {_figure(v)}" for k, v in result.figures.items())
        _system_out(case, f"informational figures:\n{printable(figures)}")
    return ""


def _system_out(case: ET.Element, text: str) -> None:
    ET.SubElement(case, "system-out").text = text


def _failure_text(result: CheckResult) -> str:
    parts = [printable(result.message)]
    if result.requirement_text:
        quote = printable(result.requirement_text)
        parts.append(f"[{result.check.requirement}] {quote}")
    if result.wire:
        parts.append(f"wire log ({len(result.wire)} records):\n{format_wire(result.wire)}")
    return "\n\n".join(parts)


# -- HTML -------------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(printable(str(text)), quote=True)


def _prose(text: str) -> str:
    """Escaped ``text`` with its Markdown code spans (the spec's backticks) as ``<code>``."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _when(stamp: str) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


def render_html(report: Report) -> str:
    """``report.html``: one self-contained page, no script, nothing fetched."""
    verdict, reason = _verdict(report)
    groups = _by_profile(report)
    started, finished = _when(report.started), _when(report.finished)
    took = f"{(finished - started).total_seconds():.1f} s" if started and finished else "—"
    meta = [
        ("Implementation", report.implementation),
        ("Transport", report.transport),
        ("Protocol", f"llmp {report.llmp_version}"),
        ("Started", report.started),
        ("Finished", report.finished or "—"),
        ("Duration", took),
        ("Checks run", str(len(report.checks))),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>llmproto conformance: {verdict} — {_e(report.implementation)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header>",
        "<h1>llmproto conformance report</h1>",
        f'<p class="verdict verdict-{verdict.lower()}" id="verdict">'
        f'<span class="verdict-word">{verdict}</span> '
        f'<span class="verdict-reason">{_e(reason)}</span></p>',
        '<dl class="meta">',
        *(f"<dt>{name}</dt><dd>{_e(value)}</dd>" for name, value in meta),
        "</dl></header>",
        "<main>",
        _html_summary(report, groups),
    ]
    for profile, results in groups:
        parts.append(_html_profile(profile, results))
    if not groups:
        parts.append('<p class="empty">No check was run.</p>')
    parts += [
        "</main>",
        "<footer>Written by llmproto's conformance suite.</footer>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts)


def _html_summary(report: Report, groups: list[tuple[Profile, list[CheckResult]]]) -> str:
    summary = report.summary()
    head = "".join(f'<th scope="col">{h}</th>' for h in _HEADINGS)
    rows = []
    for level in [*(lv.value for lv in Level), "all"]:
        counts = summary[level]
        cells = "".join(
            f'<td class="{"zero" if counts[c] == 0 else "col-" + c}">{counts[c]}</td>'
            for c in _COLUMNS
        )
        label = level.upper() if level != "all" else "all levels"
        rows.append(f'<tr class="row-{level}"><th scope="row">{label}</th>{cells}</tr>')
    parts = [
        '<section id="summary"><h2>Summary</h2>',
        f'<table class="summary"><thead><tr><th scope="col">level</th>{head}</tr></thead>',
        f"<tbody>{''.join(rows)}</tbody></table>",
        '<p class="note">Expected failures are also counted under their outcome.</p>',
    ]
    attention = [r for r in report.checks if category(r) in ("fail", "stale", "non_strict")]
    if attention:
        items = []
        for result in sorted(attention, key=lambda r: _ORDER[category(r)]):
            kind = category(result)
            first = result.message.splitlines()[0] if result.message else ""
            items.append(
                f'<li><span class="badge badge-{kind}">{CATEGORY_LABELS[kind]}</span> '
                f'<a href="#check-{_e(result.check.id)}"><code>{_e(result.check.id)}</code></a> '
                f'<span class="req">{_e(result.check.requirement)}</span> {_e(first)}</li>'
            )
        parts.append(
            f'<div class="attention"><h3>Needs attention</h3><ul>{"".join(items)}</ul></div>'
        )
    if groups:
        links = []
        for profile, results in groups:
            bad = sum(category(r) in ("fail", "stale") for r in results)
            note = f' <span class="bad">{bad} failing</span>' if bad else ""
            links.append(
                f'<li><a href="#profile-{profile.value}">{profile.value}</a> '
                f"({len(results)}){note}</li>"
            )
        parts.append(f"<nav><h3>Profiles</h3><ul>{''.join(links)}</ul></nav>")
    parts.append("</section>")
    return "\n".join(parts)


def _html_profile(profile: Profile, results: list[CheckResult]) -> str:
    counts = _counts(results)
    shown = ", ".join(
        f"{counts[c]} {h}" for c, h in zip(_COLUMNS, _HEADINGS, strict=True) if counts[c]
    )
    parts = [
        f'<section class="profile" id="profile-{profile.value}">',
        f'<h2>{profile.value} <span class="counts">{shown}</span></h2>',
    ]
    parts.extend(_html_check(result) for result in results)
    parts.append("</section>")
    return "\n".join(parts)


def _html_check(result: CheckResult) -> str:
    check = result.check
    kind = category(result)
    parts = [
        f'<article class="check cat-{kind}" id="check-{_e(check.id)}">',
        '<div class="check-head">',
        f'<span class="badge badge-{kind}">{CATEGORY_LABELS[kind]}</span>',
        f'<code class="check-id">{_e(check.id)}</code>',
        f'<span class="req">{_e(check.requirement)}</span>',
        f'<span class="level level-{check.level.value}">{check.level.value.upper()}</span>',
        f'<span class="duration">{_duration(result.duration_ms)}</span>',
        "</div>",
        f'<p class="description">{_prose(check.description)}</p>',
    ]
    if result.requirement_text:
        parts.append(
            f'<blockquote class="requirement"><span class="req">'
            f"{_e(check.requirement)}</span> {_prose(result.requirement_text)}</blockquote>"
        )
    else:
        parts.append(
            f'<blockquote class="requirement missing">{_e(check.requirement)}: '
            "no sentence with this ID in requirements.json</blockquote>"
        )
    if result.expected_failure is not None:
        what = "passed, so the entry is stale" if kind == "stale" else "still failing"
        parts.append(
            f'<p class="expected-reason">Listed in the expected-failures file '
            f"({what}): {_e(result.expected_failure)}</p>"
        )
    if result.message:
        parts.append(f'<pre class="message">{_e(result.message)}</pre>')
    if result.figures:
        rows = "".join(
            f'<tr><th scope="row">{_e(k)}</th><td>{_e(_figure(v))}</td></tr>'
            for k, v in result.figures.items()
        )
        parts.append(f'<table class="figures"><tbody>{rows}</tbody></table>')
    if result.wire:
        is_open = " open" if kind in ("fail", "expected") else ""
        parts.append(
            f'<details class="wire"{is_open}><summary>Wire log: '
            f"{len(result.wire)} envelopes sent and received</summary>"
        )
        parts.extend(_html_record(record) for record in result.wire)
        parts.append("</details>")
    parts.append("</article>")
    return "\n".join(parts)


def _html_record(record: WireRecord) -> str:
    direction = "sent" if record.direction == "sent" else "received"
    body = _clip(_pretty_body(record.body)) or "(empty body)"
    return (
        f'<div class="record record-{direction}"><div class="record-head">'
        f'<span class="direction">{_arrow(record)} {_e(record.direction)}</span>'
        f'<span class="operation">{_e(record.operation)}</span>'
        f'<code class="address">{_e(record.address)}</code>'
        f'<span class="at">+{record.at_ms:.1f} ms</span></div>'
        f'<pre class="body">{_e(body)}</pre></div>'
    )


_CSS = """
:root { --fg: #1d232b; --muted: #5b6675; --line: #d8dde3; --bg: #ffffff; --panel: #f5f7f9;
  --fail: #b42318; --fail-bg: #fdecea; --pass: #17703a; --pass-bg: #e7f5ec;
  --warn: #8a5a00; --warn-bg: #fff4da; --info: #1f5fa8; --info-bg: #e8f0fb;
  --skip: #5b6675; --skip-bg: #eef0f3; --exp: #6b3fa0; --exp-bg: #f1eafa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header, main, footer { max-width: 1100px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; }
h1 { font-size: 24px; margin: 0 0 12px; }
h2 { font-size: 19px; margin: 32px 0 12px; padding-bottom: 4px;
  border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 16px 0 4px; }
code, pre { font-size: 13px;
  font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; }
.verdict { display: flex; align-items: baseline; gap: 14px; margin: 0 0 16px; padding: 12px 16px;
  border-radius: 8px; border: 1px solid; }
.verdict-word { font-size: 22px; font-weight: 700; letter-spacing: .04em; }
.verdict-pass { color: var(--pass); background: var(--pass-bg); border-color: #9fd3b2; }
.verdict-fail { color: var(--fail); background: var(--fail-bg); border-color: #f0a9a2; }
.verdict-reason { color: var(--fg); }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
.meta dt { color: var(--muted); }
.meta dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; }
.summary th, .summary td { padding: 4px 12px; border-bottom: 1px solid var(--line);
  text-align: right; }
.summary th[scope=row], .summary thead th:first-child { text-align: left; }
.summary thead th { color: var(--muted); font-weight: 600; }
.summary .row-all th, .summary .row-all td { font-weight: 700; border-top: 2px solid var(--line); }
.summary td.zero { color: #a3acb8; }
.summary td.col-failed { color: var(--fail); font-weight: 700; }
.summary td.col-non_strict { color: var(--warn); font-weight: 600; }
.note { color: var(--muted); font-size: 13px; margin: 6px 0; }
nav ul { list-style: none; padding: 0; margin: 0; display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav a { color: var(--info); }
.bad { color: var(--fail); font-weight: 600; }
.attention ul { list-style: none; padding: 0; margin: 0; }
.attention li { margin: 3px 0; overflow-wrap: anywhere; }
.attention a { color: var(--fg); }
.attention .badge-fail, .attention .badge-stale { color: #fff; background: var(--fail); }
.attention .badge-non_strict { color: var(--warn); background: var(--warn-bg); }
.counts { font-size: 13px; font-weight: 400; color: var(--muted); margin-left: 8px; }
.check { border: 1px solid var(--line); border-left: 5px solid var(--skip); border-radius: 6px;
  padding: 8px 14px; margin: 8px 0; background: var(--bg); }
.check-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 12px; }
.check-id { font-weight: 700; font-size: 14px; }
.req { font-family: ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 13px;
  color: var(--info); }
.level { font-size: 12px; font-weight: 700; color: var(--muted); }
.level-must { color: var(--fg); }
.duration { margin-left: auto; color: var(--muted); font-size: 13px; }
.badge { display: inline-block; min-width: 92px; text-align: center; font-size: 12px;
  font-weight: 700; padding: 1px 8px; border-radius: 10px;
  color: var(--skip); background: var(--skip-bg); }
.description { margin: 4px 0; }
.requirement { margin: 4px 0; padding: 4px 10px; border-left: 3px solid var(--line);
  color: var(--muted); font-style: italic; }
.requirement .req { font-style: normal; margin-right: 4px; }
.message { white-space: pre-wrap; overflow-wrap: anywhere; margin: 6px 0; padding: 6px 10px;
  border-radius: 4px; background: var(--panel); }
.expected-reason { margin: 4px 0; color: var(--exp); }
.figures { margin: 6px 0; }
.figures th, .figures td { padding: 2px 12px 2px 0; border-bottom: 1px solid var(--line);
  text-align: left; }
.figures th { font-weight: 400; color: var(--muted); }
.figures td { font-family: ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
.wire { margin: 6px 0 4px; }
.wire summary { cursor: pointer; color: var(--muted); font-weight: 600; }
.record { margin: 6px 0 0 0; border: 1px solid var(--line); border-radius: 4px; }
.record-head { display: flex; flex-wrap: wrap; gap: 4px 14px; padding: 3px 10px; font-size: 13px;
  background: var(--panel); border-bottom: 1px solid var(--line); }
.record-sent .direction { color: var(--info); font-weight: 700; }
.record-received .direction { color: var(--pass); font-weight: 700; }
.record-head .at { margin-left: auto; color: var(--muted); }
.record .body { margin: 0; padding: 6px 10px; white-space: pre-wrap; overflow-wrap: anywhere;
  max-height: 420px; overflow: auto; }
.cat-fail, .cat-stale { border-left-color: var(--fail); }
.cat-fail .badge, .cat-stale .badge { color: #fff; background: var(--fail); }
.cat-non_strict { border-left-color: var(--warn); }
.cat-non_strict .badge { color: var(--warn); background: var(--warn-bg); }
.cat-expected { border-left-color: var(--exp); }
.cat-expected .badge { color: var(--exp); background: var(--exp-bg); }
.cat-informational { border-left-color: var(--info); }
.cat-informational .badge { color: var(--info); background: var(--info-bg); }
.cat-pass { border-left-color: var(--pass); }
.cat-pass .badge { color: var(--pass); background: var(--pass-bg); }
.empty { color: var(--muted); }
footer { color: var(--muted); font-size: 12px; padding: 32px 24px; }
@media print { .record .body { max-height: none; } details { display: block; } }
"""
