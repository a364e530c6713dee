"""The AMQP binding's pure mapping, by the binding vectors and by unit tests, without a broker."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import aiormq.exceptions
import pamqp.exceptions
import pytest
from jsonschema import Draft202012Validator
from pamqp.commands import Basic

import llmproto_ref
from llmproto_rabbitmq import (
    CONTENT_TYPE,
    EXCHANGES,
    HEADER_DEAD_REASON,
    HEADER_DELIVERIES,
    AmqpMessage,
    RabbitMQTransport,
    binding_key,
    dead_letter_message,
    dead_letter_queue,
    dead_reason,
    delay_message,
    delay_queue,
    delivery_count,
    event_queue,
    expiration_hint,
    from_amqp,
    inbox_queue,
    is_fresh,
    job_message,
    request_message,
    serve_queue,
    to_amqp,
    validate_reply_address,
    work_queue,
)
from llmproto_rabbitmq._declare import delay_bucket
from llmproto_rabbitmq._errors import translated
from llmproto_ref import Envelope, ErrorCode, TransportError

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "conformance" / "llmproto_conformance" / "binding_vectors"
DOCUMENT: dict[str, Any] = json.loads((VECTORS / "amqp.json").read_text(encoding="utf-8"))
MESSAGES: list[dict[str, Any]] = DOCUMENT["messages"]
NAMES: list[dict[str, Any]] = DOCUMENT["names"]
DELIVERIES: list[dict[str, Any]] = DOCUMENT["deliveries"]
SCHEMA = json.loads((VECTORS / "binding.schema.json").read_text(encoding="utf-8"))


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["id"] for case in cases]


def test_the_binding_vectors_match_their_schema() -> None:
    """amqp.json and nats.json are valid against the shared schema; ids are unique."""
    Draft202012Validator.check_schema(SCHEMA)
    validator = Draft202012Validator(SCHEMA)
    assert [] == [e.message for e in validator.iter_errors(DOCUMENT)]
    nats = json.loads((VECTORS / "nats.json").read_text(encoding="utf-8"))
    assert [] == [e.message for e in validator.iter_errors(nats)]
    ids = _ids(MESSAGES) + _ids(NAMES) + _ids(DELIVERIES)
    assert len(set(ids)) == len(ids)


def test_the_schema_keeps_each_binding_to_its_shape() -> None:
    """An AMQP file with NATS expectations, or without names, is invalid."""
    validator = Draft202012Validator(SCHEMA)
    nats_shaped = {**DOCUMENT, "messages": [{**MESSAGES[0], "expect": {"subject": "x"}}]}
    assert list(validator.iter_errors(nats_shaped))
    assert list(validator.iter_errors({k: v for k, v in DOCUMENT.items() if k != "names"}))


def test_the_vectors_cover_every_kind_and_operation() -> None:
    """There is a message vector for each kind and each sending operation."""
    assert {str(kind) for kind in llmproto_ref.Kind} == {c["envelope"]["kind"] for c in MESSAGES}
    operations = {"send_request", "send_reply", "publish_cancel", "publish_event", "enqueue"}
    assert operations == {c["route"]["operation"] for c in MESSAGES}


@pytest.mark.parametrize("case", MESSAGES, ids=_ids(MESSAGES))
def test_message_vector(case: dict[str, Any]) -> None:
    """Exchange, key, mandatory, properties and headers as the vector says; the body is the
    envelope (AMQP-002 AMQP-007 AMQP-008 AMQP-011 AMQP-013 AMQP-015)."""
    envelope = Envelope.from_members(case["envelope"])
    route = case["route"]
    address = route.get("reply") or route.get("address") or ""
    message = to_amqp(envelope, route["operation"], address)
    expect = case["expect"]
    assert expect["exchange"] == message.exchange
    assert expect["routing_key"] == message.routing_key
    assert expect["mandatory"] == message.mandatory
    assert expect["properties"] == message.properties
    assert expect["headers"] == message.headers
    assert llmproto_ref.encode(envelope) == message.body
    assert envelope == llmproto_ref.decode(from_amqp(message))


def _call(function: str, args: list[Any]) -> str:
    if function == "binding_key":
        return binding_key(args[0])
    if function == "serve_queue":
        return serve_queue(args[0], args[1])
    if function == "event_queue":
        return event_queue(args[0], args[1])
    if function == "work_queue":
        return work_queue(args[0])
    if function == "dead_letter_queue":
        return dead_letter_queue(args[0])
    if function == "delay_queue":
        return delay_queue(args[0], args[1], dead=len(args) > 2)
    if function == "inbox_queue":
        return inbox_queue(args[0])
    validate_reply_address(args[0])
    address: str = args[0]
    return address


@pytest.mark.parametrize("case", NAMES, ids=_ids(NAMES))
def test_name_vector(case: dict[str, Any]) -> None:
    """Binding keys and queue names (AMQP-004 AMQP-005 AMQP-006 AMQP-012 AMQP-021), and the
    names refused with INVALID_PARAMS (AMQP-003)."""
    if case.get("rejected"):
        with pytest.raises(TransportError) as caught:
            _call(case["function"], case["args"])
        assert ErrorCode.INVALID_PARAMS == caught.value.code
        return
    assert case["expect"] == _call(case["function"], case["args"])


@pytest.mark.parametrize("case", DELIVERIES, ids=_ids(DELIVERIES))
def test_delivery_vector(case: dict[str, Any]) -> None:
    """Delivery count (AMQP-020), freshness for dedup (AMQP-017) and dead reason (AMQP-023)."""
    headers, expect = case["headers"], case["expect"]
    assert expect["delivery_count"] == delivery_count(headers)
    assert expect["fresh"] == is_fresh(headers, case["redelivered"])
    assert expect["dead_reason"] == dead_reason(headers)


def test_exchanges() -> None:
    """Five durable exchanges: three topic, two direct [AMQP-001]."""
    assert {
        "llmp.rpc": "topic",
        "llmp.cancel": "topic",
        "llmp.evt": "topic",
        "llmp.wq": "direct",
        "llmp.dlx": "direct",
    } == dict(EXCHANGES)


@pytest.mark.parametrize(
    "name", ["", "a..b", "a.*", "a.>", "a b", "caf\u00e9", "a.b\n", "x" * 65, ".".join("a" * 17)]
)
def test_malformed_names_are_refused(name: str) -> None:
    """Names breaking the token grammar never reach the broker (AMQP-003)."""
    for build in (
        lambda: request_message(name, b"x", reply_to="", message_id="m"),
        lambda: job_message(name, b"x", message_id="m"),
        lambda: work_queue(name),
        lambda: serve_queue(name, "a.b"),
        lambda: event_queue(name, "a.b"),
    ):
        with pytest.raises(TransportError) as caught:
            build()
        assert ErrorCode.INVALID_PARAMS == caught.value.code


def test_a_binding_key_matches_what_the_pattern_matches() -> None:
    """``#`` may match zero words; the receiver's re-check makes the result exact (AMQP-004)."""
    names = ["model", "model.loaded", "model.loaded.v2", "tool.loaded"]
    for pattern in ["model.*", "model.>", "*.loaded", ">", "*.*.>"]:
        key = binding_key(pattern).split(".")
        for name in names:
            topic = _topic_matches(key, name.split("."))
            exact = llmproto_ref.pattern_matches(pattern, name)
            assert exact == (topic and llmproto_ref.pattern_matches(pattern, name))
            assert not exact or topic  # the broker never withholds a match


def _topic_matches(key: list[str], words: list[str]) -> bool:
    """AMQP topic matching: ``*`` one word, ``#`` zero or more."""
    if not key:
        return not words
    if key[0] == "#":
        return any(_topic_matches(key[1:], words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (key[0] in ("*", words[0])) and _topic_matches(key[1:], words[1:])


def test_long_names_become_digests() -> None:
    """Over 255 bytes: ``llmp.<area>:sha256:<hex of the parts joined by ':'>`` (AMQP-005)."""
    group = ".".join(["g" * 64] * 3)
    pattern = ".".join(["p" * 64] * 3) + ".>"
    digest = hashlib.sha256(f"{group}:{pattern[:-1]}#".encode()).hexdigest()
    assert f"llmp.rpc:sha256:{digest}" == serve_queue(group, pattern)
    assert 255 >= len(serve_queue(group, pattern))
    short = serve_queue("g", "p.q")
    assert "llmp.rpc:g:p.q" == short


def test_queue_names_use_only_what_amqp_clients_accept() -> None:
    """Wildcards are spelt ``+`` and ``#`` in queue names (AMQP-005)."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@#,/+ ")
    for name in (serve_queue("g", "*.a.>"), event_queue("g", "*.*"), inbox_queue("t.1")):
        assert set(name) <= allowed


def test_bodies_are_opaque() -> None:
    """Any bytes travel untouched with the binding's content type (AMQP-007)."""
    body = bytes(range(256))
    message = request_message("a.b", body, reply_to="llmp.inbox:t.1", message_id="m-1")
    assert body == from_amqp(message)
    assert CONTENT_TYPE == message.properties["content_type"]


def test_the_sender_sets_only_what_the_operation_knows() -> None:
    """No correlation_id, timestamp or expiration without reading the body (AMQP-008 AMQP-010)."""
    message = job_message("q", b"{}", message_id="m-1")
    assert {"content_type", "delivery_mode", "message_id"} == set(message.properties)
    assert 2 == message.properties["delivery_mode"]


def test_headers_are_strings_with_the_binding_prefix() -> None:
    """The binding's own headers are strings named ``llmp-...`` (AMQP-009)."""
    dead = dead_letter_message("q", b"x", message_id="m", reason="terminated: caf\u00e9")
    delayed = delay_message("q", b"x", message_id="m", delay_ms=100, deliveries=3)
    assert {HEADER_DEAD_REASON: "terminated: caf\u00e9"} == dead.headers
    assert {HEADER_DELIVERIES: "3"} == delayed.headers
    for message in (dead, delayed):
        assert all(isinstance(v, str) and k.startswith("llmp-") for k, v in message.headers.items())


def test_a_forged_property_never_overrides_the_body() -> None:
    """The receiver reads the body only (AMQP-009)."""
    envelope = Envelope.new(kind="event", type="a.b", source="s")
    message = to_amqp(envelope, "publish_event")
    forged = AmqpMessage(
        exchange=message.exchange,
        routing_key="x.y",
        mandatory=False,
        properties={**message.properties, "type": "x.y", "message_id": "forged"},
        body=message.body,
    )
    decoded = llmproto_ref.decode(from_amqp(forged))
    assert ("a.b", envelope.id) == (decoded.type, decoded.id)


def test_expiration_is_the_time_left() -> None:
    """``expiration`` is the milliseconds left until the deadline, at least 1 (AMQP-010)."""
    assert "30000" == expiration_hint(1_030_000, 1_000_000)
    assert "1" == expiration_hint(1_000_000, 1_000_500)


def test_requests_and_jobs_are_mandatory_replies_mostly() -> None:
    """Requests, jobs and dead letters are mandatory; events and cancels are not (AMQP-011)."""
    envelope = Envelope.new(kind="request", type="a.b", source="s")
    mandatory = {
        op: to_amqp(envelope, op, "llmp.inbox:t.1" if op != "enqueue" else "q").mandatory
        for op in ("send_request", "send_reply", "publish_cancel", "publish_event", "enqueue")
    }
    assert {
        "send_request": True,
        "send_reply": True,
        "publish_cancel": False,
        "publish_event": False,
        "enqueue": True,
    } == mandatory
    assert dead_letter_message("q", b"", message_id="m", reason="r").mandatory


@pytest.mark.parametrize("address", ["", "a b", "caf\u00e9", "x" * 256, "tab\there"])
def test_malformed_reply_addresses_are_refused(address: str) -> None:
    """A reply address is a printable ASCII queue name of at most 255 characters (AMQP-012)."""
    with pytest.raises(TransportError) as caught:
        validate_reply_address(address)
    assert ErrorCode.INVALID_PARAMS == caught.value.code


def test_a_direct_reply_to_address_is_not_mandatory() -> None:
    """RabbitMQ 3.10 returns mandatory replies to direct reply-to even when delivered (AMQP-013)."""
    envelope = Envelope.new(kind="response", type="a.b", source="s", correlation_id="r")
    assert not to_amqp(envelope, "send_reply", "amq.rabbitmq.reply-to.abc==").mandatory
    assert to_amqp(envelope, "send_reply", "llmp.inbox:t.1").mandatory


@pytest.mark.parametrize(("delay", "bucket"), [(1, 1), (99, 99), (100, 100), (123, 130),
                                               (1999, 2000), (30_001, 31_000)])  # fmt: skip
def test_delays_round_up_to_two_digits(delay: int, bucket: int) -> None:
    """Never sooner than asked, on few delay queues (AMQP-021)."""
    assert bucket == delay_bucket(delay)
    assert delay_bucket(delay) >= delay


def test_a_dead_letter_goes_to_the_dead_letter_exchange() -> None:
    """Persistent, mandatory, to ``llmp.dlx`` with the queue as key and the reason (AMQP-022)."""
    message = dead_letter_message("jobs", b"x", message_id="m-1", reason="max_deliveries")
    assert ("llmp.dlx", "jobs", True) == (message.exchange, message.routing_key, message.mandatory)
    assert 2 == message.properties["delivery_mode"]
    assert "m-1" == message.properties["message_id"]
    assert "max_deliveries" == dead_reason(message.headers)


def test_transport_options_come_from_the_url() -> None:
    """Options ride in the query; the rest goes to the client (AMQP-024) and the name
    prefixes the connection's name (AMQP-025)."""
    transport = RabbitMQTransport.from_url(
        "amqp://u:p@broker:5673/vh?max_payload=2048&prefetch=8&heartbeat=5&name=svc"
    )
    assert 2048 == transport.capabilities.max_payload
    assert "amqp://broker:5673/vh" == transport.name
    assert transport.connection_name.startswith("svc.")
    other = RabbitMQTransport.from_url("amqp://u:p@broker:5673/vh?name=svc")
    assert transport.connection_name != other.connection_name
    assert RabbitMQTransport.from_url("amqp://h/").connection_name.startswith("llmp.")


@pytest.mark.parametrize(
    "url",
    [
        "amqp://h/?prefetch=x",
        "amqp://h/?prefetch=0",
        "http://h/",
        "amqp:///",
        "amqp://h/?max_payload=-1",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    """A malformed URL or option is INVALID_PARAMS (AMQP-024)."""
    with pytest.raises(TransportError) as caught:
        RabbitMQTransport.from_url(url)
    assert ErrorCode.INVALID_PARAMS == caught.value.code


@pytest.mark.parametrize("url", ["amqp://user:s3cret@h/?prefetch=x", "http://user:s3cret@h/"])
def test_a_refused_url_never_shows_its_password(url: str) -> None:
    """The message names the URL with ``***`` for the password (AMQP-024)."""
    with pytest.raises(TransportError) as caught:
        RabbitMQTransport.from_url(url)
    assert "s3cret" not in caught.value.message
    assert "user:***@h" in caught.value.message


@pytest.mark.anyio
async def test_a_body_over_the_limit_is_refused_before_any_io() -> None:
    """PAYLOAD_TOO_LARGE, even on a transport never opened: nothing was sent (AMQP-016)."""
    transport = RabbitMQTransport.from_url("amqp://guest:guest@127.0.0.1:1/?max_payload=10")
    with pytest.raises(TransportError) as caught:
        await transport.enqueue("q", b"x" * 11, message_id="m")
    assert ErrorCode.PAYLOAD_TOO_LARGE == caught.value.code
    with pytest.raises(TransportError) as refused:
        await transport.enqueue("q", b"x" * 10, message_id="m")
    assert ErrorCode.UNAVAILABLE == refused.value.code


@pytest.mark.anyio
async def test_trio_is_refused_with_unavailable(anyio_backend: str) -> None:
    """aiormq needs asyncio; under trio the transport says so (AMQP-028)."""
    transport = RabbitMQTransport.from_url("amqp://guest:guest@127.0.0.1:1/")
    if anyio_backend != "trio":
        return
    with pytest.raises(TransportError) as caught:
        await transport.__aenter__()
    assert ErrorCode.UNAVAILABLE == caught.value.code
    assert "asyncio" in caught.value.message


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (aiormq.exceptions.DeliveryError(None, None), ErrorCode.OVERLOADED),  # type: ignore[arg-type]
        (aiormq.exceptions.DeliveryError(None, Basic.Nack(delivery_tag=1)), ErrorCode.OVERLOADED),
        (
            aiormq.exceptions.ChannelPreconditionFailed("PRECONDITION_FAILED"),
            ErrorCode.INVALID_PARAMS,
        ),
        (aiormq.exceptions.ConnectionResourceError("RESOURCE_ERROR"), ErrorCode.OVERLOADED),
        (aiormq.exceptions.ChannelNotFoundEntity("NOT_FOUND"), ErrorCode.UNAVAILABLE),
        (aiormq.exceptions.ChannelInvalidStateError("closed"), ErrorCode.UNAVAILABLE),
        (aiormq.exceptions.AMQPConnectionError("lost"), ErrorCode.UNAVAILABLE),
        (ConnectionResetError("reset"), ErrorCode.UNAVAILABLE),
        (TimeoutError(), ErrorCode.UNAVAILABLE),
        (pamqp.exceptions.AMQPFrameError("bad"), ErrorCode.INVALID_PARAMS),
        (KeyError("bug"), ErrorCode.INTERNAL),
    ],
)
def test_client_errors_become_transport_errors(error: Exception, code: ErrorCode) -> None:
    """No client exception escapes; each has its registry code (AMQP-028, TRN-002)."""
    with pytest.raises(TransportError) as caught, translated("an operation"):
        raise error
    assert code == caught.value.code


def test_a_cancellation_nobody_asked_for_is_unavailable() -> None:
    """aiormq cancels a waiting call when its channel closes: that is UNAVAILABLE (AMQP-028)."""

    async def closed_under_us() -> None:
        with translated("a publish"):
            raise asyncio.CancelledError

    with pytest.raises(TransportError) as caught:
        asyncio.run(closed_under_us())
    assert ErrorCode.UNAVAILABLE == caught.value.code


def test_the_mapping_imports_no_amqp_client() -> None:
    """The mapping is pure: its source imports nothing from aiormq, aio-pika or pamqp."""
    source = (ROOT / "adapters" / "llmproto_rabbitmq" / "_mapping.py").read_text(encoding="utf-8")
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    clients = {"aiormq", "aio_pika", "pamqp"}
    assert [] == [line for line in imports if line.split()[1].partition(".")[0] in clients]
