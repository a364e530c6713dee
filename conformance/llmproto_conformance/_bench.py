"""``llmproto bench``: the performance section on its own, each figure next to raw.

It runs the ``performance`` checks of the catalogue (the same measurements the suite's report
carries) and prints, per measurement, the llmproto figure, the raw transport's figure from the
same run, and their ratio. With ``--testee`` the implementation is a separate process started
with ``llmproto conformance testee``, so client and service do not share a process; on
``memory://`` both are in this process by necessity.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio
import orjson

from llmproto_conformance._command import (
    ConformanceUsageError,
    adapter_factory,
    redact,
    url_factory,
)
from llmproto_conformance._model import Outcome
from llmproto_conformance._report import Report
from llmproto_conformance._runner import RunPlan, run_suite

__all__ = ("PATTERN_CHECKS", "add_bench_command", "figure_rows")

#: ``--pattern`` name -> the performance check that measures it.
PATTERN_CHECKS = {
    "rr": "perf-request-response",
    "stream": "perf-stream",
    "event": "perf-events",
    "queue": "perf-queue",
}


def add_bench_command(subparsers: Any) -> None:
    """Register ``llmproto bench`` on ``llmproto``'s subparsers."""
    bench = subparsers.add_parser(
        "bench",
        help="measure llmproto next to the raw transport",
        description="Run the performance measurements (request-response at 1 and N in flight, "
        "streamed chunks, event delivery, the work queue) and print each figure beside the raw "
        "transport's figure from the same run, with the ratio llmproto / raw.",
    )
    source = bench.add_mutually_exclusive_group()
    source.add_argument("--transport", default="memory://bench", metavar="URL",
                        help="the transport (default memory://bench)")  # fmt: skip
    source.add_argument("--adapter", metavar="MODULE:FACTORY", help="a transport factory")
    bench.add_argument(
        "--testee", action="store_true",
        help="drive a testee already serving the transport (a separate process)",
    )  # fmt: skip
    bench.add_argument("--pattern", action="append", choices=sorted(PATTERN_CHECKS),
                       help="measure only these patterns (repeatable; default all)")  # fmt: skip
    bench.add_argument("--in-flight", type=int, default=64, metavar="N",
                       help="requests in flight for the concurrent phase (default 64)")  # fmt: skip
    bench.add_argument("--json", action="store_true", help="print one JSON document")
    bench.add_argument(
        "--native", action="store_true",
        help="compare with the broker's own client instead, across processes (nats://, "
        "amqp://): "
        "the reference testee (or, with --testee, yours) against a plain-client peer",
    )  # fmt: skip
    bench.add_argument("--rounds", type=int, default=5, metavar="N",
                       help="interleaved rounds of --native (default 5)")  # fmt: skip
    bench.add_argument("--signed", action="store_true",
                       help="with --native: also signed round trips (Ed25519 and a bearer "
                       "token) against the testee's secure service")  # fmt: skip
    bench.set_defaults(run=_bench, parser=bench)


def figure_rows(report: Report) -> list[tuple[str, str, Any, Any, Any]]:
    """``(check, figure, llmproto, raw, ratio)`` for every figure that has a raw counterpart."""
    rows: list[tuple[str, str, Any, Any, Any]] = []
    for result in report.checks:
        figures = result.figures
        for key, value in figures.items():
            if key.endswith(("_raw", "_ratio")) or f"{key}_raw" not in figures:
                continue
            ratio_key = key.removesuffix("_ms").removesuffix("_per_s") + "_ratio"
            ratio = figures.get(f"{key}_ratio", figures.get(ratio_key))
            raw = figures[f"{key}_raw"]
            if ratio is None and isinstance(value, int | float) and isinstance(raw, int | float):
                ratio = round(value / raw, 3) if raw else None
            rows.append((result.check.id, key, value, raw, ratio))
    return rows


def _bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.in_flight < 1:
        parser.error("--in-flight must be at least 1")
    if args.native:
        return _bench_native(args, parser)
    try:
        if args.adapter is not None:
            factory, label = adapter_factory(args.adapter), args.adapter
        else:
            factory, label = url_factory(args.transport), redact(args.transport)
    except ConformanceUsageError as exc:
        parser.error(str(exc))
    patterns = args.pattern or sorted(PATTERN_CHECKS)
    plan = RunPlan(
        testee=args.testee,
        check_ids=frozenset(PATTERN_CHECKS[p] for p in patterns),
        options={"in_flight": args.in_flight},
    )
    implementation = "an external testee" if args.testee else f"the reference testee on {label}"
    report = anyio.run(lambda: run_suite(factory, plan, transport_label=label,
                                         implementation=implementation))  # fmt: skip
    broken = [r for r in report.checks if r.outcome is not Outcome.INFORMATIONAL]
    rows = figure_rows(report)
    if args.json:
        document = {
            "transport": label,
            "implementation": implementation,
            "in_flight": args.in_flight,
            "figures": {r.check.id: r.figures for r in report.checks},
            "errors": {r.check.id: r.message for r in broken},
        }
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"llmproto bench on {label} ({implementation}), {args.in_flight} in flight")
        print(f"{'check':24s} {'figure':28s} {'llmproto':>12s} {'raw':>12s} {'ratio':>7s}")
        for check_id, key, value, raw, ratio in rows:
            print(f"{check_id:24s} {key:28s} {_num(value):>12s} {_num(raw):>12s} {_num(ratio):>7s}")
        for r in broken:
            print(f"ERROR {r.check.id}: {r.message}")
        print("ratios: llmproto / raw; for latencies lower is better, for rates higher is better")
    return 1 if broken else 0


def _bench_native(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from llmproto_conformance._native import (
        format_run,
        native_supported,
        run_native,
        summary_document,
    )

    if args.adapter is not None or not native_supported(args.transport):
        parser.error(
            "--native needs --transport nats://... or amqp://... (a broker with a native baseline)"
        )
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    def progress(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    run = anyio.run(
        lambda: run_native(
            args.transport,
            rounds=args.rounds,
            in_flight=args.in_flight,
            external_testee=args.testee,
            progress=progress,
            signed=args.signed,
        )
    )
    if args.json:
        print(orjson.dumps(summary_document(run), option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_run(run).replace(args.transport, redact(args.transport)))
    return 0


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
