"""Transport-contract checks (spec/transport.md): payload limits and declared capabilities."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from llmproto_conformance._catalogue import check
from llmproto_conformance._checks_transport import (
    check_event_fanout,
    check_no_responders,
    check_request_groups,
)
from llmproto_conformance._checks_transport_names import check_wildcards
from llmproto_conformance._checks_transport_queue import (
    check_dead_letter,
    check_delayed_nack,
    check_enqueue_stored,
    check_lease_extend,
)
from llmproto_conformance._context import CheckContext
from llmproto_conformance._model import CheckFailed, Level, Profile
from llmproto_conformance._transport_kit import (
    QUIET_S,
    Background,
    Tap,
    ack_job,
    expect_code,
    fresh_transports,
    name_prefix,
)
from llmproto_ref import (
    ErrorCode,
    LlmpError,
    QueueOptions,
)

__all__: tuple[str, ...] = ()


# -- limits and capabilities -----------------------------------------------------------------


@check(
    id="trn-payload-too-large",
    requirement="TRN-024",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a body over max_payload is refused with PAYLOAD_TOO_LARGE; one at it is carried",
    adapter_only=True,
)
async def check_payload_too_large(ctx: CheckContext) -> None:
    """Every sending operation refuses max_payload + 1 bytes, and nothing (truncated) arrives."""
    p = name_prefix(ctx)
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        limit = t1.capabilities.max_payload
        ctx.expect(limit > 0, f"max_payload is {limit}")
        over = b"o" * (limit + 1)
        inbox = await t1.open_inbox()
        receivers: list[Tap[Any]] = [
            bg.tap(await t2.serve(f"{p}.req", group="g")),
            bg.tap(inbox.subscription),
            bg.tap(await t2.subscribe_events(f"{p}.e")),
            bg.tap(await t2.serve_cancels(f"{p}.req")),
        ]
        sends: dict[str, Callable[[], Awaitable[Any]]] = {
            "send_request": functools.partial(
                t1.send_request,
                f"{p}.req",
                over,
                reply_to=inbox.address,
                message_id=ctx.unique("m"),
            ),
            "send_reply": functools.partial(t2.send_reply, inbox.address, over),
            "publish_event": functools.partial(t1.publish_event, f"{p}.e", over),
            "publish_cancel": functools.partial(t1.publish_cancel, f"{p}.req", over),
        }
        if t1.capabilities.durable_queues:
            receivers.append(bg.tap(await t2.consume(f"{p}.q", QueueOptions()), ack_job))
            sends["enqueue"] = functools.partial(
                t1.enqueue, f"{p}.q", over, message_id=ctx.unique("m")
            )
        for operation, send in sends.items():
            await expect_code(
                ctx, ErrorCode.PAYLOAD_TOO_LARGE, f"{operation} of {limit + 1} bytes", send
            )
        at_limit = b"i" * limit
        await t1.publish_event(f"{p}.e", at_limit)
        ctx.expect(await receivers[2].wait(1), f"an event of max_payload ({limit}) bytes was lost")
        await anyio.sleep(QUIET_S)
        for tap in receivers:
            ctx.expect(
                all(b == at_limit for b in tap.bodies()),
                "a body over max_payload was delivered (truncated or whole)",
            )
        ctx.expect(len(receivers[2].items) == 1, "the event at max_payload arrived twice")


#: The checks whose passing shows each declared capability working (trn-capabilities).
_BY_CAPABILITY: dict[str, tuple[Callable[[CheckContext], Awaitable[Any]], ...]] = {
    "max_payload": (check_payload_too_large,),
    "durable_queues": (check_enqueue_stored,),
    "delayed_nack": (check_delayed_nack,),
    "lease_extension": (check_lease_extend,),
    "dead_letters": (check_dead_letter,),
    "wildcards": (check_wildcards,),
    "groups": (check_request_groups, check_event_fanout),
    "no_responders": (check_no_responders,),
}


@check(
    id="trn-capabilities",
    requirement="TRN-025",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="every declared capability works as the contract defines it",
    adapter_only=True,
    timeout_s=40.0,
)
async def check_capabilities(ctx: CheckContext) -> None:
    """For each capability the binding declares, run the checks that exercise it."""
    capabilities = ctx.capabilities
    failures: list[str] = []
    for name, checks in _BY_CAPABILITY.items():
        declared = getattr(capabilities, name)
        if not declared:
            continue
        for probe in checks:
            try:
                await probe(ctx)
            except (CheckFailed, LlmpError) as exc:
                failures.append(f"{name} is declared, but {probe.__name__[6:]}: {exc}")
    ctx.expect(not failures, "; ".join(failures))
