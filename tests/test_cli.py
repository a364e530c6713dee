"""The ``llmproto`` command line: validate files and stdin, run the vectors, print the trace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmproto_conformance import load_vectors
from llmproto_conformance._traceability import trace
from llmproto_ref import Envelope, __version__, encode
from llmproto_ref._cli import main

ROOT = Path(__file__).resolve().parents[1]
ID = "0190f5a2-7b3c-7d4e-8f00-0123456789ab"
VALID = encode(
    Envelope(
        id=ID,
        kind="request",
        type="llm.chat",
        source="svc://gateway",
        time="2026-01-31T23:59:59.000Z",
        data={"messages": [{"role": "user", "content": "hi"}]},
    )
)
DUPLICATE = VALID.replace(b'"data":{', b'"data":{"a":1,"a":2,')


def _file(tmp_path: Path, name: str, body: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(body)
    return str(path)


def test_a_valid_file_prints_ok_with_kind_type_and_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``validate`` prints ``OK path kind type id`` and exits 0."""
    path = _file(tmp_path, "ok.json", VALID)
    assert 0 == main(["validate", path])
    assert f"OK   {path}  request llm.chat {ID}\n" == capsys.readouterr().out


def test_an_invalid_file_prints_code_pointer_and_requirement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rejected file prints its code, pointer and requirement ID, and the exit status is 1."""
    path = _file(tmp_path, "dup.json", DUPLICATE)
    assert 1 == main(["validate", path])
    expected = f"FAIL {path}  INVALID_ENVELOPE  /data/a  [ENV-003]  duplicate member name 'a'\n"
    assert expected == capsys.readouterr().out


def test_one_bad_file_among_good_ones_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every file gets a line, in order; one invalid file makes the exit status 1."""
    good = _file(tmp_path, "ok.json", VALID)
    bad = _file(tmp_path, "bad.json", b"[]")
    assert 1 == main(["validate", good, bad, good])
    lines = capsys.readouterr().out.splitlines()
    assert ["OK  ", "FAIL", "OK  "] == [line[:4] for line in lines]
    assert f'FAIL {bad}  INVALID_ENVELOPE  ""  [ENV-001]' in lines[1]


def test_a_missing_file_is_an_io_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreadable file is reported as ``IO_ERROR`` on its own line, exit status 1."""
    missing = str(tmp_path / "nope.json")
    assert 1 == main(["validate", missing])
    out = capsys.readouterr().out
    assert out.startswith(f"FAIL {missing}  IO_ERROR  -  cannot read: ")


def test_stdin_is_read_for_a_dash() -> None:
    """``validate -`` decodes standard input (run as a process, as a shell would)."""
    done = subprocess.run(
        [sys.executable, "-m", "llmproto_ref._cli", "validate", "-"],
        input=VALID,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert (0, f"OK   -  request llm.chat {ID}\n") == (done.returncode, done.stdout.decode())


def test_json_output_has_one_entry_per_file_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json`` prints one document: per-file results and the counts."""
    good = _file(tmp_path, "ok.json", VALID)
    bad = _file(tmp_path, "dup.json", DUPLICATE)
    missing = str(tmp_path / "nope.json")
    assert 1 == main(["validate", "--json", good, bad, missing])
    document = json.loads(capsys.readouterr().out)
    assert {"total": 3, "valid": 1, "invalid": 2} == document["summary"]
    ok, dup, io = document["files"]
    assert {"path": good, "valid": True, "kind": "request", "type": "llm.chat", "id": ID} == ok
    assert ("INVALID_ENVELOPE", "/data/a", "ENV-003") == (
        dup["code"],
        dup["pointer"],
        dup["requirement"],
    )
    assert (False, "IO_ERROR") == (io["valid"], io["code"])


def test_receiver_limits_and_understood_extensions_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--max-bytes``, ``--max-depth`` and ``--understood`` set the receiver's policy."""
    members = json.loads(VALID)
    members.update(critical=["acme.trace"], ext={"acme.trace": {"on": True}})
    critical = _file(tmp_path, "critical.json", json.dumps(members).encode())
    assert 1 == main(["validate", critical])
    assert "UNSUPPORTED_EXTENSION  /critical/0  [ENV-031]" in capsys.readouterr().out
    assert 0 == main(["validate", "--understood", "acme.trace", critical])
    capsys.readouterr()
    big = _file(tmp_path, "big.json", VALID.replace(b'"hi"', b'"' + b"x" * 2000 + b'"'))
    assert 1 == main(["validate", "--max-bytes", "1024", big])
    assert 'PAYLOAD_TOO_LARGE  ""  [ENV-006]' in capsys.readouterr().out
    deep = _file(tmp_path, "deep.json", VALID.replace(b'"hi"', b'[[[["hi"]]]]'))
    assert 0 == main(["validate", deep])
    assert 1 == main(["validate", "--max-depth", "7", deep])
    assert 'INVALID_ENVELOPE  ""  [ENV-007]' in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize(
    "args",
    [
        ["validate"],
        ["validate", "--max-bytes", "10", "x.json"],
        ["validate", "--vectors", "x.json", "y.json"],
        ["validate", "--vectors", "/no/such/dir"],
        ["validate", "--vectors", "/"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Missing arguments, impossible limits, bad vector directories: exit status 2."""
    with pytest.raises(SystemExit) as info:
        main(args)
    assert 2 == info.value.code
    assert "usage: llmproto" in capsys.readouterr().err


def test_every_shipped_vector_passes(capsys: pytest.CaptureFixture[str]) -> None:
    """``validate --vectors`` judges every vector and ends with an all-passed summary."""
    total = len(load_vectors())
    status = main(["validate", "--vectors"])
    lines = capsys.readouterr().out.splitlines()
    failures = [line for line in lines if line.startswith("FAIL")]
    assert ([], 0) == (failures, status)
    assert f"{total} vectors: {total} passed, 0 failed" == lines[-1]
    assert total + 1 == len(lines)


def test_vectors_of_one_group(capsys: pytest.CaptureFixture[str]) -> None:
    """``--vectors envelope`` (a group name or its directory) runs that group only."""
    main(["validate", "--vectors", "envelope", "--json"])
    document = json.loads(capsys.readouterr().out)
    expected = [v.id for v in load_vectors("envelope")]
    assert expected == [entry["id"] for entry in document["vectors"]]
    assert len(expected) == document["summary"]["total"]


def test_trace_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    """``trace`` prints one row per requirement; its status is 0 exactly when nothing is amiss."""
    report = trace(ROOT)
    status = main(["trace", "--root", str(ROOT)])
    lines = capsys.readouterr().out.splitlines()
    assert (0 if report.ok else 1) == status
    assert lines[0].startswith("ID        LEVEL  TESTS VECTORS  KIT  STATUS")
    assert [row.requirement.id for row in report.rows] == [
        line.split()[0] for line in lines[1 : 1 + len(report.rows)]
    ]
    main(["trace", "--root", str(ROOT), "--json"])
    assert report.to_json() == json.loads(capsys.readouterr().out)


def test_trace_without_a_spec_is_a_usage_error(tmp_path: Path) -> None:
    """``trace --root`` on a directory without spec/ exits 2."""
    with pytest.raises(SystemExit) as info:
        main(["trace", "--root", str(tmp_path)])
    assert 2 == info.value.code


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``--version`` prints the distribution version."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert (0, f"llmproto {__version__}\n") == (info.value.code, capsys.readouterr().out)


def test_demo_runs_every_scenario_on_memory() -> None:
    """``llmproto demo`` runs the four scenarios on memory:// and exits 0 well under 30 s."""
    done = subprocess.run(
        [sys.executable, "-m", "llmproto_ref._cli", "demo"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert 0 == done.returncode, done.stdout + done.stderr
    for marker in (
        "(a) weather.get",
        "(b) llm.chat",
        "(c) device.lamp-7.state",
        "(d) a request",
        "DEADLINE_EXCEEDED",
        "CONTEXT_LENGTH_EXCEEDED",
        "all scenarios ran as designed",
    ):
        assert marker in done.stdout
    for pattern in ("sync", "queue", "stream", "request", "event"):
        assert f"  {pattern} " in done.stdout  # a metrics row with the L split and eta


def test_demo_on_an_unknown_scheme_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    """A transport URL llmproto cannot open ends the demo with status 1 and says why."""
    assert 1 == main(["demo", "--transport", "carrier-pigeon://coop"])
    assert "memory://" in capsys.readouterr().err


def test_bench_prints_each_figure_beside_raw(capsys: pytest.CaptureFixture[str]) -> None:
    """``llmproto bench --json`` measures on memory:// and gives every figure a raw twin."""
    assert 0 == main(["bench", "--transport", "memory://bench-test", "--pattern", "rr",
                      "--pattern", "event", "--in-flight", "8", "--json"])  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert {"perf-request-response", "perf-events"} == set(document["figures"])
    rr = document["figures"]["perf-request-response"]
    assert {"rr_1_rps", "rr_1_rps_raw", "rr_8_rps", "rr_8_rps_raw", "rr_1_p50_ms_raw"} <= set(rr)
    assert 0 < rr["rr_1_rps"]
    assert 0 < rr["rr_1_rps_raw"]
    assert {} == document["errors"]


def test_bench_table_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """The table names the ratio column; a bad --in-flight is a usage error (exit 2)."""
    assert 0 == main(["bench", "--transport", "memory://bench-table", "--pattern", "stream"])
    out = capsys.readouterr().out
    assert "ratio" in out
    assert "stream_chunks_per_s" in out
    with pytest.raises(SystemExit) as caught:
        main(["bench", "--in-flight", "0"])
    assert 2 == caught.value.code


def test_testee_fault_names_are_checked() -> None:
    """``conformance testee --fault`` takes only the names of the known faults."""
    with pytest.raises(SystemExit) as caught:
        main(["conformance", "testee", "--transport", "memory://", "--fault", "no-such-fault"])
    assert 2 == caught.value.code
