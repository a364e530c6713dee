"""Transport-contract checks (spec/transport.md): names, patterns and wildcards."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from llmproto_conformance._catalogue import check
from llmproto_conformance._context import CheckContext
from llmproto_conformance._model import CheckFailed, Level, Profile
from llmproto_conformance._transport_kit import (
    QUIET_S,
    Background,
    await_total,
    expect_code,
    expect_once,
    fresh_transports,
    name_prefix,
)
from llmproto_ref import (
    ErrorCode,
    QueueOptions,
    TransportError,
)

__all__: tuple[str, ...] = ()


# -- names and patterns -------------------------------------------------------------------

_BAD_NAMES = (
    "",
    "a..b",
    ".a",
    "a.",
    "a b",
    "a/b",
    "a.#",
    "caf\u00e9",
    "a\n",
    "a.*",
    "a.>",
    "x" * 65,
    ".".join(["t"] * 17),
    ".".join(["x" * 64] * 4),
)
_BAD_PATTERNS = (
    "",
    "a..b",
    "a.",
    "a b",
    "a.#",
    "a.>.b",
    ">.a",
    "a.b*",
    "a.**",
    "x" * 65,
    ".".join(["t"] * 17),
)


@check(
    id="trn-invalid-names",
    requirement="TRN-003",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="malformed names and patterns are refused with INVALID_PARAMS, valid ones taken",
    adapter_only=True,
)
async def check_invalid_names(ctx: CheckContext) -> None:
    """Every operation that takes a name or a pattern judges it by the grammar."""
    p = name_prefix(ctx)
    async with fresh_transports(ctx, 1) as (t,):
        queues = t.capabilities.durable_queues
        for bad in _BAD_NAMES:
            checks: dict[str, Callable[[], Awaitable[Any]]] = {
                "send_request": functools.partial(
                    t.send_request, bad, b"x", reply_to="", message_id=ctx.unique("m")
                ),
                "publish_event": functools.partial(t.publish_event, bad, b"x"),
                "publish_cancel": functools.partial(t.publish_cancel, bad, b"x"),
                "serve group": functools.partial(t.serve, f"{p}.a", group=bad),
                "subscribe_events group": functools.partial(
                    t.subscribe_events, f"{p}.a", group=bad
                ),
            }
            if queues:
                checks["enqueue"] = functools.partial(
                    t.enqueue, bad, b"x", message_id=ctx.unique("m")
                )
                checks["consume"] = functools.partial(t.consume, bad, QueueOptions())
                if t.capabilities.dead_letters:
                    checks["dead_letters"] = functools.partial(t.dead_letters, bad)
            for operation, call in checks.items():
                await expect_code(ctx, ErrorCode.INVALID_PARAMS, f"{operation}({bad!r})", call)
        for bad in _BAD_PATTERNS:
            for operation, pattern_call in {
                "serve": functools.partial(t.serve, bad, group="g"),
                "serve_cancels": functools.partial(t.serve_cancels, bad),
                "subscribe_events": functools.partial(t.subscribe_events, bad),
            }.items():
                await expect_code(
                    ctx, ErrorCode.INVALID_PARAMS, f"{operation}({bad!r})", pattern_call
                )
        longest = f"{p}." + ".".join(["t" * 63] * 3)
        longest += "." + "u" * (255 - len(longest) - 1)
        valid = [f"{p}.a", "A-b_9." * 7 + "z", f"{p}.{'x' * 64}", longest]
        valid.append(".".join(["v"] * 16))
        patterns = [*valid]
        if t.capabilities.wildcards:
            patterns += [f"{p}.*", f"{p}.>", "*.*.>", ">", f"{p}.*.b.>"]
        for name in valid:
            await _expect_accepted(ctx, f"publish_event({name!r})", t.publish_event(name, b"x"))
        for pattern in patterns:
            sub = await _expect_accepted(
                ctx, f"subscribe_events({pattern!r})", t.subscribe_events(pattern)
            )
            await sub.aclose()


async def _expect_accepted(ctx: CheckContext, what: str, call: Awaitable[Any]) -> Any:
    try:
        return await call
    except TransportError as exc:
        raise CheckFailed(f"{what} refused a valid name with {exc.code}: {exc.message}") from exc


@check(
    id="trn-wildcards",
    requirement="TRN-004",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="'*' matches exactly one token, '>' one or more at the end, literals exactly",
    needs=frozenset({"wildcards"}),
    adapter_only=True,
)
async def check_wildcards(ctx: CheckContext) -> None:
    """The pattern table of spec/transport.md, on event and cancel subscriptions."""
    p = name_prefix(ctx)
    rest = p.split(".", 1)[1]
    names = [f"{p}.a", f"{p}.A", f"{p}.a.v2", f"{p}.b.v2", p, f"{p}.a.v2.x"]
    expected = {
        f"{p}.a": [f"{p}.a"],
        f"{p}.*": [f"{p}.a", f"{p}.A"],
        f"{p}.>": [f"{p}.a", f"{p}.A", f"{p}.a.v2", f"{p}.b.v2", f"{p}.a.v2.x"],
        f"{p}.*.v2": [f"{p}.a.v2", f"{p}.b.v2"],
        f"{p}.a.>": [f"{p}.a.v2", f"{p}.a.v2.x"],
        f"*.{rest}.a": [f"{p}.a"],
        f"{p}.*.>": [f"{p}.a.v2", f"{p}.b.v2", f"{p}.a.v2.x"],
    }
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        events = {pat: bg.tap(await t2.subscribe_events(pat)) for pat in expected}
        cancels = {pat: bg.tap(await t2.serve_cancels(pat)) for pat in (f"{p}.*", f"{p}.>")}
        for name in names:
            await t1.publish_event(name, name.encode())
            await t1.publish_cancel(name, name.encode())
        await await_total(list(events.values()), sum(len(v) for v in expected.values()))
        await await_total(list(cancels.values()), len(expected[f"{p}.*"]) + len(expected[f"{p}.>"]))
        await anyio.sleep(QUIET_S)
        for pattern, tap in events.items():
            want = [n.encode() for n in expected[pattern]]
            expect_once(ctx, tap.bodies(), want, f"events on pattern {pattern!r}")
        for pattern, tap in cancels.items():
            want = [n.encode() for n in expected[pattern]]
            expect_once(ctx, tap.bodies(), want, f"cancels on pattern {pattern!r}")
