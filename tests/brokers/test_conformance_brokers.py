"""The conformance suite on the real brokers, and the same outcomes on every transport.

Each run is the command a user types, in a process of its own: ``llmproto conformance run
--transport URL`` (adapter mode: the suite holds the transport and runs the reference testee
beside it) and ``--testee`` against ``llmproto conformance testee`` started as a separate
process. A run is done once per session per transport and shared by the tests below.

The cross-transport test compares the per-check outcomes of memory://, NATS and RabbitMQ: a
difference is allowed only where a check was unsupported because a transport does not declare
a capability (spec/conformance.md: unsupported outcomes name the capability).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from brokers.conftest import AMQP_URL, NATS_URL, require_broker

_CLI = [sys.executable, "-m", "llmproto_ref._cli"]
_RUN_TIMEOUT_S = 300


def _run(url: str, report_dir: Path, *, testee: bool = False) -> dict[str, Any]:
    command = [*_CLI, "conformance", "run", "--transport", url, "--report-dir", str(report_dir)]
    if testee:
        command.append("--testee")
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=_RUN_TIMEOUT_S, check=False
    )
    report: dict[str, Any] = orjson.loads((report_dir / "report.json").read_bytes())
    report["_exit"] = done.returncode
    report["_output"] = done.stdout[-4000:] + done.stderr[-4000:]
    return report


@contextlib.contextmanager
def _testee(url: str) -> Iterator[None]:
    process = subprocess.Popen(
        [*_CLI, "conformance", "testee", "--transport", url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "serving" in line, line
        yield
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


_REPORTS: dict[tuple[str, bool], dict[str, Any]] = {}


def report_for(name: str, url: str, tmp_root: Path, *, testee: bool = False) -> dict[str, Any]:
    """The session's report of ``url`` (run on first use)."""
    key = (url, testee)
    if key not in _REPORTS:
        out = tmp_root / f"{name}-{'testee' if testee else 'adapter'}"
        out.mkdir(parents=True, exist_ok=True)
        if testee:
            with _testee(url):
                _REPORTS[key] = _run(url, out, testee=True)
        else:
            _REPORTS[key] = _run(url, out)
    return _REPORTS[key]


@pytest.fixture(scope="session")
def reports_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance-reports")


def _must_failures(report: dict[str, Any]) -> list[str]:
    return [
        f"{c['id']} [{c['requirement']}]: {c['message']}"
        for c in report["checks"]
        if c["level"] == "must" and c["outcome"] == "fail"
    ]


BROKERS = [("nats", "NATS", NATS_URL), ("amqp", "RabbitMQ", AMQP_URL)]


@pytest.mark.parametrize(("name", "broker", "url"), BROKERS, ids=[b[0] for b in BROKERS])
@pytest.mark.parametrize("testee", [False, True], ids=["adapter", "testee"])
def test_every_must_passes_on_the_broker(
    name: str, broker: str, url: str, testee: bool, reports_root: Path
) -> None:
    """The suite's verdict is PASS on the real server, in both modes [CONF-001]."""
    require_broker(broker, url)
    report = report_for(name, url, reports_root, testee=testee)
    assert [] == _must_failures(report), report["_output"]
    assert report["ok"], report["_output"]
    assert 0 == report["_exit"], report["_output"]
    passed = report["summary"]["must"]["passed"]
    assert passed >= (70 if testee else 90)


def _capability_gap(check: dict[str, Any]) -> bool:
    """An unsupported outcome that a transport's declared capabilities explain."""
    message = check["message"]
    return check["outcome"] == "unsupported" and (
        "declare" in message or "carries at most" in message or "capabilit" in message
    )


def test_the_same_outcomes_on_every_transport(reports_root: Path) -> None:
    """memory://, NATS and RabbitMQ agree on every check but declared capability gaps."""
    reports = {"memory": report_for("memory", "memory://cross", reports_root)}
    for name, broker, url in BROKERS:
        require_broker(broker, url)
        reports[name] = report_for(name, url, reports_root)
    outcomes = {name: {c["id"]: c for c in report["checks"]} for name, report in reports.items()}
    ids = set(outcomes["memory"])
    assert all(set(o) == ids for o in outcomes.values())
    differences = []
    for check_id in sorted(ids):
        seen = {name: o[check_id] for name, o in outcomes.items()}
        kinds = {c["outcome"] for c in seen.values()}
        if len(kinds) == 1:
            continue
        if all(c["outcome"] == "pass" or _capability_gap(c) for c in seen.values()):
            continue
        differences.append(
            f"{check_id}: "
            + ", ".join(f"{n}={c['outcome']} {c['message'][:80]}" for n, c in seen.items())
        )
    assert [] == differences
