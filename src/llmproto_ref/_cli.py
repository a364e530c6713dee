"""The ``llmproto`` command line: validate envelopes, run the vectors, print the trace table.

Exit status, for every subcommand: 0 when everything checked is fine, 1 when something checked
is not (an invalid or unreadable envelope, a failing vector, an uncited requirement), 2 for a
usage error (bad option, no such vector directory).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from llmproto_ref import __version__
from llmproto_ref._codec import decode
from llmproto_ref._errors import EnvelopeError
from llmproto_ref._limits import DEFAULT_LIMITS, Limits

__all__ = ()

_EPILOG = """\
exit status: 0 all valid, 1 some file invalid or unreadable (reported as IO_ERROR), 2 usage error.
With --vectors: 0 every vector passed, 1 some vector failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FileResult:
    """The verdict on one envelope file."""

    path: str  #: as given on the command line, ``-`` for standard input
    valid: bool
    kind: str = ""  #: of a valid envelope
    type: str = ""  #: of a valid envelope
    id: str = ""  #: of a valid envelope
    code: str = ""  #: registry code, or ``IO_ERROR`` for a file that could not be read
    pointer: str = ""  #: RFC 6901 pointer to the problem; ``""`` is the whole document
    requirement: str = ""  #: the spec requirement broken
    message: str = ""

    def line(self) -> str:
        """One line of the text report."""
        if self.valid:
            return f"OK   {self.path}  {self.kind} {self.type} {self.id}"
        if self.code == "IO_ERROR":
            return f"FAIL {self.path}  IO_ERROR  -  {self.message}"
        pointer = self.pointer if self.pointer else '""'
        return f"FAIL {self.path}  {self.code}  {pointer}  [{self.requirement}]  {self.message}"

    def to_json(self) -> dict[str, Any]:
        """The JSON report entry: only the members that apply."""
        if self.valid:
            return {"path": self.path, "valid": True, "kind": self.kind, "type": self.type,
                    "id": self.id}  # fmt: skip
        entry: dict[str, Any] = {"path": self.path, "valid": False, "code": self.code}
        if self.code != "IO_ERROR":
            entry["pointer"] = self.pointer
            entry["requirement"] = self.requirement
        entry["message"] = self.message
        return entry


def check_file(path: str, *, limits: Limits, understood: frozenset[str]) -> FileResult:
    """Read and decode one envelope file (``-`` reads standard input)."""
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return FileResult(path=path, valid=False, code="IO_ERROR", message=f"cannot read: {reason}")
    try:
        envelope = decode(raw, limits=limits, understood=understood)
    except EnvelopeError as exc:
        return FileResult(
            path=path, valid=False, code=str(exc.code), pointer=exc.pointer,
            requirement=exc.requirement, message=exc.message,
        )  # fmt: skip
    return FileResult(
        path=path, valid=True, kind=str(envelope.kind), type=envelope.type, id=envelope.id
    )


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.vectors is not None:
        if args.files:
            parser.error("give either FILE arguments or --vectors, not both")
        return _run_vectors(args.vectors or None, as_json=args.json, parser=parser)
    if not args.files:
        parser.error("give at least one FILE (or - for standard input), or --vectors")
    try:
        limits = Limits(
            max_envelope_bytes=(
                DEFAULT_LIMITS.max_envelope_bytes if args.max_bytes is None else args.max_bytes
            ),
            max_depth=DEFAULT_LIMITS.max_depth if args.max_depth is None else args.max_depth,
        )
    except ValueError as exc:
        parser.error(str(exc))
    understood = frozenset(args.understood or ())
    results = [check_file(p, limits=limits, understood=understood) for p in args.files]
    invalid = sum(not r.valid for r in results)
    if args.json:
        document = {
            "files": [r.to_json() for r in results],
            "summary": {"total": len(results), "valid": len(results) - invalid,
                        "invalid": invalid},
        }  # fmt: skip
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        for result in results:
            print(result.line())
    return 1 if invalid else 0


def _run_vectors(directory: str | None, *, as_json: bool, parser: argparse.ArgumentParser) -> int:
    from llmproto_conformance import judge, load_vectors, vector_dir

    shipped = vector_dir().resolve()
    try:
        vectors = load_vectors()
    except ValueError as exc:  # a broken installation, not a usage error
        print(f"llmproto: the shipped vectors do not load: {exc}", file=sys.stderr)
        return 1
    if directory is not None:
        base = Path(directory)
        if not base.is_dir() and (shipped / directory).is_dir():
            base = shipped / directory  # a group name such as "envelope"
        if not base.is_dir():
            parser.error(f"--vectors {directory}: no such directory")
        base = base.resolve()
        if not base.is_relative_to(shipped):
            parser.error(
                f"--vectors {directory}: not under the shipped vectors ({shipped}); "
                "running other vector sets comes with the conformance kit"
            )
        vectors = [v for v in vectors if (shipped / v.file).resolve().is_relative_to(base)]
    results = [judge(v) for v in vectors]
    failed = [r for r in results if not r.passed]
    summary = f"{len(results)} vectors: {len(results) - len(failed)} passed, {len(failed)} failed"
    if as_json:
        document = {
            "vectors": [
                {"id": r.vector.id, "file": r.vector.file, "passed": r.passed,
                 "requirements": list(r.vector.requirements), "message": r.message}
                for r in results
            ],
            "summary": {"total": len(results), "passed": len(results) - len(failed),
                        "failed": len(failed)},
        }  # fmt: skip
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        for r in results:
            if r.passed:
                print(f"PASS {r.vector.id}")
            else:
                print(f"FAIL {r.vector.id}  [{', '.join(r.vector.requirements)}]  {r.message}")
        if failed:
            print("failed:", " ".join(r.vector.id for r in failed))
        print(summary)
    return 1 if failed or not results else 0


def _trace(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from llmproto_conformance._traceability import find_root, trace

    root = find_root(Path(args.root) if args.root else None)
    if root is None or not (root / "spec").is_dir():
        where = args.root or "the working directory"
        parser.error(f"no spec/ directory in {where}; run it in a checkout or pass --root DIR")
    try:
        report = trace(root)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        print(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(report.format_table())
    return 0 if report.ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmproto", description="llmproto envelope tools (protocol version 1.0)."
    )
    parser.add_argument("--version", action="version", version=f"llmproto {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="decode envelope files, or run the conformance vectors",
        description="Decode each FILE as one envelope and report the first problem in each; "
        "with --vectors, run the shipped test vectors against the reference decoder.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("files", nargs="*", metavar="FILE", help="an envelope file, - for stdin")
    validate.add_argument(
        "--vectors", nargs="?", const="", default=None, metavar="DIR",
        help="run every shipped vector, or only those under DIR",
    )  # fmt: skip
    validate.add_argument("--json", action="store_true", help="print one JSON document")
    validate.add_argument(
        "--max-bytes", type=int, metavar="N",
        help=f"receiver size limit (default {DEFAULT_LIMITS.max_envelope_bytes})",
    )  # fmt: skip
    validate.add_argument(
        "--max-depth", type=int, metavar="N",
        help=f"receiver nesting limit (default {DEFAULT_LIMITS.max_depth})",
    )  # fmt: skip
    validate.add_argument(
        "--understood", action="append", metavar="NAME",
        help="a critical extension this receiver understands (repeatable)",
    )  # fmt: skip
    validate.set_defaults(run=_validate, parser=validate)

    trace = commands.add_parser(
        "trace",
        help="print the requirement traceability table",
        description="List every requirement the spec defines with the tests and vectors citing "
        "it, or the reason it is excluded. Exit status 1 if any requirement is uncited or any "
        "exclusion is stale.",
    )
    trace.add_argument("--root", metavar="DIR", help="repository root (default: here)")
    trace.add_argument("--json", action="store_true", help="print one JSON document")
    trace.set_defaults(run=_trace, parser=trace)

    demo = commands.add_parser(
        "demo",
        help="run the designed-for scenarios end to end",
        description="Run a weather service (sync call and work queue), a streaming chat service "
        "with one stream cancelled, an event fanned out to two groups, a missed deadline and a "
        "registry error, then print the latency split and efficiency per pattern.",
    )
    demo.add_argument(
        "--transport", default="memory://demo", metavar="URL",
        help="memory://NAME (default memory://demo), nats://HOST:PORT or amqp://USER:PASS@HOST/",
    )  # fmt: skip
    demo.set_defaults(run=_demo, parser=demo)

    from llmproto_conformance._bench import add_bench_command
    from llmproto_conformance._command import add_conformance_commands

    add_conformance_commands(commands)
    add_bench_command(commands)
    return parser


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import anyio

    from llmproto_ref._demo import run_demo
    from llmproto_ref._transport import TransportError

    try:
        return anyio.run(run_demo, args.transport)
    except TransportError as exc:
        print(f"llmproto demo: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmproto`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    status: int = args.run(args, args.parser)
    return status


if __name__ == "__main__":
    sys.exit(main())
