"""Error requirements, checked on the errors the runtime sends and receives (spec/errors.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson
import pytest

from llmproto_ref import (
    Deadline,
    Envelope,
    ErrorCode,
    ExchangeError,
    Kind,
    QueueOptions,
    Request,
    Service,
    Stream,
    decode,
    encode,
    registry,
)
from llmproto_ref._clock import now_ms
from runtime_pair import WAIT, RuntimePair, eventually, quiet

pytestmark = pytest.mark.anyio

#: What the service's own error messages must name, per scenario (see _own_errors).
NAMED_IN_MESSAGE = {
    "unknown-type": ("UNKNOWN_TYPE", ["t.other.two"]),
    "expired": ("DEADLINE_EXCEEDED", ["deadline"]),
    "not-a-request": ("PROTOCOL_ERROR", ["event", "request address"]),
    "not-json": ("INVALID_ENVELOPE", ["not strict JSON"]),
    "duplicate": ("INVALID_ENVELOPE", ["duplicate", "'a'"]),
    "too-deep": ("INVALID_ENVELOPE", ["nesting", "32"]),
    "too-large": ("PAYLOAD_TOO_LARGE", ["1048600", "1048576"]),
    "version": ("UNSUPPORTED_VERSION", ["2.0"]),
    "critical": ("UNSUPPORTED_EXTENSION", ["acme.unknown"]),
    "handler-bug": ("INTERNAL", ["ValueError"]),
    "key-reused": ("IDEMPOTENCY_KEY_REUSED", ["k-7"]),
    "in-progress": ("IN_PROGRESS", ["k-8"]),
    "cancelled": ("CANCELLED", ["cancel"]),
    "deadline-while-running": ("DEADLINE_EXCEEDED", ["deadline"]),
    "shutdown": ("UNAVAILABLE", ["shut down"]),
}


async def _own_errors() -> dict[str, dict[str, Any]]:
    """Provoke every error the service makes up itself; the error object sent for each."""
    pair = RuntimePair(serve=False, grace=0.05)
    release = anyio.Event()
    started: list[str] = []

    @pair.service.handler("t.op.*")
    async def op(request: Request) -> Any:
        started.append(str(request.data))
        if request.data == "bug":
            raise ValueError("boom")
        if request.data in ("hold", "shutdown"):
            await anyio.sleep(10)
        if request.data == "wait":
            await release.wait()
        return request.data

    found: dict[str, dict[str, Any]] = {}
    async with pair:
        raw = pair.raw
        errors: dict[str, Envelope] = {}

        async def reply_to(body: bytes, name: str, type_: str = "t.op.x") -> None:
            await raw.send_request(type_, body)
            errors[name] = await raw.next_reply()

        async def request(name: str, data: Any, **members: Any) -> None:
            await reply_to(encode(await raw.request("t.op.x", data, **members)), name)

        async with pair.service:
            with anyio.fail_after(WAIT):
                other = await raw.request("t.other.two")
                await reply_to(encode(other), "unknown-type", "t.op.x")
                await request("expired", 1, deadline=Deadline(now_ms() - 1000).to_timestamp())
                event = Envelope.new(kind=Kind.EVENT, type="t.op.x", source=raw.source)
                await reply_to(encode(event), "not-a-request")
                await reply_to(b"{not json", "not-json")
                await reply_to(b'{"a": 1, "a": 2}', "duplicate")
                await reply_to(b"[" * 40 + b"]" * 40, "too-deep")
                await reply_to(b'"' + b"x" * 1_048_598 + b'"', "too-large")
                version = (await raw.request("t.op.x")).to_dict() | {"llmp": "2.0"}
                await reply_to(orjson.dumps(version), "version")
                await request("critical", 1, critical=["acme.unknown"])
                await request("handler-bug", "bug")
                await request("key-reused-first", "a", idempotency_key="k-7")
                await request("key-reused", "b", idempotency_key="k-7")
                first = await raw.request("t.op.x", "wait", idempotency_key="k-8")
                await raw.send_request("t.op.x", encode(first))
                await eventually(lambda: "wait" in started)
                await request("in-progress", "wait", idempotency_key="k-8")
                release.set()
                errors["in-progress-first"] = await raw.next_reply()
                held = await raw.request("t.op.x", "hold")
                await raw.send_request("t.op.x", encode(held))
                await eventually(lambda: "hold" in started)
                cancel = Envelope.new(
                    kind=Kind.CANCEL, type="t.op.x", source=raw.source, correlation_id=held.id
                )
                await pair.raw_transport.publish_cancel("t.op.x", encode(cancel))
                errors["cancelled"] = await raw.next_reply()
                await request(
                    "deadline-while-running",
                    "hold",
                    deadline=Deadline(now_ms() + 100).to_timestamp(),
                )
                stopped = await raw.request("t.op.x", "shutdown")
                await raw.send_request("t.op.x", encode(stopped))
                await eventually(lambda: "shutdown" in started)
        with anyio.fail_after(WAIT):
            errors["shutdown"] = await raw.next_reply()
        await quiet(0.05)
    for name, envelope in errors.items():
        if envelope.kind is Kind.ERROR:
            found[name] = dict(envelope.error or {})
    return found


async def test_the_service_takes_each_code_it_sends_from_the_registry() -> None:
    """Every error the service makes up carries the registry code for its case.

    Requirements: ERR-002.
    """
    errors = await _own_errors()
    assert {name: code for name, (code, _) in NAMED_IN_MESSAGE.items()} == {
        name: error["code"] for name, error in errors.items()
    }
    assert set() == {error["code"] for error in errors.values()} - set(registry())


async def test_the_service_sets_retryable_to_the_registry_default() -> None:
    """Every error the service makes up has the registry's default ``retryable`` for its code.

    Requirements: ERR-007.
    """
    errors = await _own_errors()
    defaults = registry()
    assert {name: defaults[error["code"]].retryable for name, error in errors.items()} == {
        name: error["retryable"] for name, error in errors.items()
    }


async def test_the_services_own_messages_name_the_problem() -> None:
    """Each error the service makes up says what was wrong: the type, member, limit or key.

    Requirements: ERR-013.
    """
    errors = await _own_errors()
    missing = {
        name: [word for word in words if word not in errors[name]["message"]]
        for name, (_, words) in NAMED_IN_MESSAGE.items()
    }
    assert {name: [] for name in NAMED_IN_MESSAGE} == missing


async def _answered_by_raw(
    reply: Callable[[Envelope], Envelope], call: Callable[[RuntimePair], Awaitable[Any]]
) -> tuple[Any, int]:
    """Let ``call`` talk to a raw server that answers with ``reply(request)``.

    :returns: what ``call`` returned or raised, and how many requests the server saw.
    """
    async with RuntimePair() as pair:
        requests = await pair.raw_transport.serve("t.raw", group="raw")
        seen: list[Envelope] = []

        async def serve() -> None:
            async for delivery in requests:
                request = decode(delivery.body)
                seen.append(request)
                await pair.raw.reply(request.reply_to or "", reply(request))

        outcome: Any = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            with anyio.fail_after(WAIT):
                try:
                    outcome = await call(pair)
                except ExchangeError as exc:
                    outcome = exc
            tg.cancel_scope.cancel()
        return outcome, len(seen)


def _error(code: str, *, retryable: bool, **more: Any) -> Callable[[Envelope], Envelope]:
    """A raw server's reply: an error with ``code`` and ``retryable`` as given."""

    def reply(request: Envelope) -> Envelope:
        return Envelope.new(
            kind=Kind.ERROR, type=request.type, source="llmp://tests/raw-server",
            correlation_id=request.id,
            error={"code": code, "message": "as the test says", "retryable": retryable, **more},
        )  # fmt: skip

    return reply


async def _request(pair: RuntimePair) -> Any:
    return await pair.client.request("t.raw")


@pytest.mark.parametrize("retryable", [True, False])
async def test_an_unknown_error_code_is_kept_as_sent(retryable: bool) -> None:
    """An error code from a later version reaches the caller as its raw string, with retryable.

    Requirements: ERR-003.
    """
    error, _ = await _answered_by_raw(
        _error("MODEL_WARMING_UP", retryable=retryable, retry_after_ms=15_000), _request
    )
    assert isinstance(error, ExchangeError)
    assert ("MODEL_WARMING_UP", False, retryable, 15_000) == (
        error.code,
        isinstance(error.code, ErrorCode),
        error.retryable,
        error.retry_after_ms,
    )
    assert "MODEL_WARMING_UP" == (error.envelope.error or {})["code"]


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        pytest.param("UPSTREAM_ERROR", False, id="registry-says-yes"),
        pytest.param("INVALID_PARAMS", True, id="registry-says-no"),
    ],
)
async def test_the_reply_decides_retryable_not_the_registry(code: str, retryable: bool) -> None:
    """The caller learns the reply's ``retryable`` even where the registry default differs.

    Requirements: ERR-006.
    """
    assert retryable != ErrorCode(code).retryable
    error, _ = await _answered_by_raw(_error(code, retryable=retryable), _request)
    assert isinstance(error, ExchangeError)
    assert (code, retryable) == (error.code, error.retryable)


@pytest.mark.parametrize(
    ("code", "retryable", "runs"),
    [
        pytest.param("UPSTREAM_ERROR", False, 1, id="registry-retryable-raised-not"),
        pytest.param("INVALID_PARAMS", True, 3, id="registry-not-retryable-raised-so"),
    ],
)
async def test_a_worker_redelivers_by_the_raised_retryable(
    code: str, retryable: bool, runs: int
) -> None:
    """A worker redelivers a failed job by the error's ``retryable``, not its code's default.

    Requirements: ERR-006.
    """
    pair = RuntimePair()
    deliveries: list[int] = []

    @pair.service.worker("jobs", options=QueueOptions(prefetch=4, max_deliveries=3))
    async def work(request: Request) -> Any:
        deliveries.append(request.delivery_count)
        raise ExchangeError(ErrorCode(code), "as the test says", retryable=retryable)

    async with pair:
        with anyio.fail_after(WAIT), pytest.raises(ExchangeError) as caught:
            await (await pair.client.submit("jobs", "t.job")).result()
    assert list(range(1, runs + 1)) == deliveries
    assert (code if runs == 1 else "DEAD_LETTERED") == caught.value.code


async def test_the_client_never_retries_on_its_own_and_reports_retry_after() -> None:
    """A retryable error with retry_after_ms is raised to the caller; nothing is resent.

    Requirements: ERR-008.
    """

    async def request_then_wait(pair: RuntimePair) -> Any:
        try:
            return await pair.client.request("t.raw")
        except ExchangeError as exc:
            await quiet(0.3)  # longer than retry_after_ms: a retry would have come by now
            return exc

    error, requests = await _answered_by_raw(
        _error("RATE_LIMITED", retryable=True, retry_after_ms=200), request_then_wait
    )
    assert isinstance(error, ExchangeError)
    assert (ErrorCode.RATE_LIMITED, True, 200, 1) == (
        error.code,
        error.retryable,
        error.retry_after_ms,
        requests,
    )


async def test_local_and_remote_errors_are_told_apart() -> None:
    """A DEADLINE_EXCEEDED the peer sent carries its envelope; one detected locally has none.

    Requirements: ERR-014.
    """
    pair = RuntimePair()

    @pair.service.handler("t.remote")
    async def remote(request: Request) -> Any:
        raise ExchangeError(ErrorCode.DEADLINE_EXCEEDED, "the provider timed out")

    async with pair:
        await pair.raw_transport.serve("t.silent", group="raw")
        failures: list[ExchangeError] = []
        with anyio.fail_after(WAIT):
            for type_ in ("t.remote", "t.silent", "t.nobody"):
                with pytest.raises(ExchangeError) as caught:
                    await pair.client.request(type_, timeout=0.2)
                failures.append(caught.value)
    received, timed_out, nobody = failures
    assert [ErrorCode.DEADLINE_EXCEEDED, ErrorCode.DEADLINE_EXCEEDED, ErrorCode.NO_RESPONDERS] == [
        f.code for f in failures
    ]
    assert isinstance(received.envelope, Envelope)
    assert (Kind.ERROR, "llmp://svc") == (received.envelope.kind, received.envelope.source)
    assert (None, None) == (timed_out.envelope, nobody.envelope)


async def test_an_error_passed_on_keeps_its_code_and_origin() -> None:
    """A service passing on a downstream service's error keeps its code and its origin.

    Requirements: ERR-011.
    """
    pair = RuntimePair()
    back_transport = pair.transport()
    back = Service(back_transport, name="back")

    @pair.service.handler("t.front")
    async def front(request: Request) -> Any:
        return await pair.client.request("t.back")

    @back.handler("t.back")
    async def refuse(request: Request) -> Any:
        raise ExchangeError(ErrorCode.RATE_LIMITED, "slow down", retry_after_ms=5)

    async with pair, back_transport, back:
        with anyio.fail_after(WAIT), pytest.raises(ExchangeError) as caught:
            await pair.client.request("t.front")
    error = caught.value.envelope.error or {}
    assert ("RATE_LIMITED", "llmp://back") == (error["code"], error.get("origin"))


async def _read_to_the_end(stream: Stream) -> None:
    """Open ``stream`` and take every chunk until it ends (or raises)."""
    async with stream:
        async for _ in stream:
            pass


async def test_a_handler_failure_does_not_leak_its_text_into_the_message() -> None:
    """INTERNAL names the exception class only, never the exception's text (which may be secret).

    Requirements: ERR-012.
    """
    pair = RuntimePair()
    secret = "sk-live-0123456789abcdef"

    @pair.service.handler("t.leaky")
    async def leaky(request: Request) -> Any:
        raise ValueError(f"provider refused api_key={secret}")

    @pair.service.handler("t.leaky.stream")
    async def leaky_stream(request: Request) -> Any:
        yield "one"
        raise RuntimeError(f"provider refused api_key={secret}")

    async with pair:
        with anyio.fail_after(WAIT):
            with pytest.raises(ExchangeError):
                await pair.client.request("t.leaky")
            with pytest.raises(ExchangeError):
                await _read_to_the_end(pair.client.stream("t.leaky.stream"))
    errors = [e.error or {} for e in map(decode, pair.client_transport.received) if e.error]
    assert ["INTERNAL", "INTERNAL"] == [error["code"] for error in errors]
    assert [] == [error["message"] for error in errors if secret in orjson.dumps(error).decode()]


@pytest.mark.parametrize(
    ("member", "secret"),
    [
        pytest.param("auth", {"scheme": "bearer", "token": "Bearer s3cr3t-t0ken"}, id="auth-token"),
        pytest.param(
            "sig",
            {
                "alg": "EdDSA",
                "kid": "k1",
                "created": "2026-01-01T00:00:00.000Z",
                "expires": "2026-01-01T00:01:00.000Z",
                "nonce": "A" * 22,
                "value": "s3cr3t+s1gnature",
            },
            id="sig-value",
        ),
    ],
)
async def test_a_rejection_does_not_quote_a_credential(member: str, secret: dict[str, str]) -> None:
    """The rejection of a malformed credential or signature does not repeat it in its message.

    Requirements: ERR-012.
    """
    pair = RuntimePair()

    @pair.service.handler("t.x")
    async def handler(request: Request) -> Any:
        return None

    async with pair:
        request = (await pair.raw.request("t.x")).to_dict() | {member: secret}
        with anyio.fail_after(WAIT):
            await pair.raw.send_request("t.x", orjson.dumps(request))
            error = (await pair.raw.next_reply()).error or {}
    assert "INVALID_ENVELOPE" == error["code"]
    assert "s3cr3t" not in error["message"]
