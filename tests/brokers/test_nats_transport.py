"""The NATS transport against the machine's nats-server (spec/bindings/nats.md).

Each test uses subjects and queues under its own run-id prefix and deletes the JetStream
streams it made. A raw nats-py connection stands beside the transport to look at what really
crosses the wire: subjects, headers, stream and consumer settings.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import nats
import nats.aio.client
import nats.errors
import nats.js.api
import nats.js.errors
import pytest

import llmproto_ref
from llmproto_nats import NatsTransport, mirrored_headers
from llmproto_nats._errors import error_code
from llmproto_nats._jetstream import stream_name
from llmproto_nats._subscription import pending_queue
from llmproto_ref import (
    Client,
    Envelope,
    ErrorCode,
    ExchangeError,
    Job,
    Kind,
    QueueOptions,
    Request,
    Service,
    TransportError,
    encode,
    new_id,
    open_transport,
)

pytestmark = pytest.mark.anyio
WAIT = 5.0
VECTORS = Path(llmproto_ref.__file__).parents[2] / "conformance/llmproto_conformance"


@contextlib.asynccontextmanager
async def raw(url: str) -> AsyncIterator[nats.aio.client.Client]:
    """A plain nats-py connection, to watch the wire."""
    nc = await nats.connect(url)
    try:
        yield nc
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def queues_cleaned(url: str, *queues: str) -> AsyncIterator[None]:
    """Delete the streams of ``queues`` afterwards."""
    try:
        yield
    finally:
        async with raw(url) as nc:
            js = nc.jetstream()
            for queue in queues:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_stream(stream_name(queue))


async def next_job(consumer: Any) -> Job:
    with anyio.fail_after(WAIT):
        job: Job = await consumer.__anext__()
        return job


def request_body(type: str, reply_to: str) -> bytes:
    envelope = Envelope.new(
        kind=Kind.REQUEST, type=type, source="llmp://tests/raw", reply_to=reply_to, data={}
    )
    return encode(envelope)


# -- request-response -------------------------------------------------------------------


async def test_requests_are_shared_in_a_queue_group_named_after_the_service(
    nats_url: str, run_id: str
) -> None:
    """A raw member of the group named after the service shares the requests [NATS-017]."""
    seen: list[str] = []
    async with open_transport(nats_url) as t_service, open_transport(nats_url) as t_client:
        service = Service(t_service, name=f"{run_id}-svc")

        @service.handler(f"{run_id}.echo")
        async def echo(request: Request) -> Any:
            seen.append(request.envelope.id)
            return {}

        async with raw(nats_url) as nc:
            stolen: list[bytes] = []

            async def steal(msg: Any) -> None:
                stolen.append(msg.data)

            await nc.subscribe(f"llmp.rpc.{run_id}.echo", queue=f"{run_id}-svc", cb=steal)
            await nc.flush()
            async with service, Client(t_client, source="llmp://tests", timeout=0.2) as client:
                outcomes = []
                for _ in range(24):
                    try:
                        await client.request(f"{run_id}.echo", {})
                        outcomes.append("ok")
                    except ExchangeError as exc:
                        outcomes.append(str(exc.code))
    # Each request reached exactly one member of the one group: the service or the raw member.
    assert 24 == len(seen) + len(stolen)
    assert seen
    assert stolen
    assert outcomes.count("ok") == len(seen)


async def test_no_responders_is_reported_at_once(nats_url: str, run_id: str) -> None:
    """The server's 503 ends the request with NO_RESPONDERS, not at the deadline [NATS-018]."""
    async with open_transport(nats_url) as t, Client(t, source="llmp://tests", timeout=30) as c:
        started = time.monotonic()
        with pytest.raises(ExchangeError) as caught:
            await c.request(f"{run_id}.nobody", {})
        assert ErrorCode.NO_RESPONDERS == caught.value.code
        assert time.monotonic() - started < 5  # far below the 30 s deadline


async def test_a_request_id_that_is_no_token_still_gets_its_notice(
    nats_url: str, run_id: str
) -> None:
    """An id with ':' gets a '~n' request token, and the 503 still names it [NATS-006]."""
    async with open_transport(nats_url) as t:
        inbox = await t.open_inbox()
        await t.send_request(
            f"{run_id}.nobody", b"{}", reply_to=inbox.address, message_id="urn:x:1"
        )
        with anyio.fail_after(WAIT):
            delivery = await inbox.subscription.__aiter__().__anext__()
        assert llmproto_ref.Notice.NO_RESPONDERS == delivery.notice
        assert "urn:x:1" == delivery.message_id


async def test_replies_and_chunks_are_core_nats_on_the_reply_subject(
    nats_url: str, run_id: str
) -> None:
    """A raw requester gets the response and every chunk on its own reply subject [NATS-019]."""
    async with open_transport(nats_url) as t:
        service = Service(t, name=f"{run_id}-svc")

        @service.handler(f"{run_id}.echo")
        async def echo(request: Request) -> Any:
            return {"echo": request.data}

        @service.handler(f"{run_id}.count")
        async def count(request: Request) -> Any:
            for n in range(3):
                yield {"n": n}

        async with service, raw(nats_url) as nc:
            inbox = f"_INBOX.{run_id}.r1"
            sub = await nc.subscribe(f"_INBOX.{run_id}.*")
            await nc.publish(
                f"llmp.rpc.{run_id}.echo", request_body(f"{run_id}.echo", inbox), reply=inbox
            )
            reply = await sub.next_msg(timeout=WAIT)
            assert inbox == reply.subject
            assert "response" == json.loads(reply.data)["kind"]
            assert not reply.headers  # replies carry no headers [NATS-011]
            await nc.publish(
                f"llmp.rpc.{run_id}.count", request_body(f"{run_id}.count", inbox), reply=inbox
            )
            chunks: list[dict[str, Any]] = []
            while not chunks or not chunks[-1].get("final"):
                message = await sub.next_msg(timeout=WAIT)
                assert inbox == message.subject
                chunks.append(json.loads(message.data))
    assert [("chunk", n) for n in range(4)] == [(c["kind"], c["seq"]) for c in chunks]
    assert [{"n": 0}, {"n": 1}, {"n": 2}] == [c["data"] for c in chunks[:3]]


async def test_an_oversize_body_is_refused_and_nothing_is_sent(nats_url: str, run_id: str) -> None:
    """Over max_payload less the header allowance: PAYLOAD_TOO_LARGE, nothing sent [NATS-020]."""
    async with open_transport(nats_url) as t, raw(nats_url) as nc:
        sub = await nc.subscribe(f"llmp.evt.{run_id}.>")
        await nc.flush()
        limit = t.capabilities.max_payload
        assert 0 < limit < nc.max_payload
        with pytest.raises(TransportError) as caught:
            await t.publish_event(f"{run_id}.big", b"x" * (limit + 1))
        assert ErrorCode.PAYLOAD_TOO_LARGE == caught.value.code
        await t.publish_event(f"{run_id}.small", b"x" * limit)  # at the limit: carried
        message = await sub.next_msg(timeout=WAIT)
        assert f"llmp.evt.{run_id}.small" == message.subject
        with pytest.raises(nats.errors.TimeoutError):
            await sub.next_msg(timeout=0.3)


# -- the wire matches the binding vectors ---------------------------------------------------


async def test_what_the_transport_sends_is_what_the_vectors_say(nats_url: str, run_id: str) -> None:
    """Subjects, reply subjects and headers on the wire follow NATS-001..004, 006 and 011."""
    type_ = f"{run_id}.op"
    async with open_transport(nats_url) as t, raw(nats_url) as nc:
        sub = await nc.subscribe(f"llmp.*.{run_id}.>")
        await nc.flush()
        inbox = await t.open_inbox()
        env_id = new_id()
        await t.send_request(type_, b"{}", reply_to=inbox.address, message_id=env_id)
        await t.publish_cancel(type_, b"{}")
        await t.publish_event(type_, b"{}")
        received = [await sub.next_msg(timeout=WAIT) for _ in range(3)]
    request, cancel, event = received
    assert f"llmp.rpc.{type_}" == request.subject
    assert inbox.address.rsplit(".", 1)[0] + f".{env_id}" == request.reply
    expected = mirrored_headers(request.subject, type=type_, message_id=env_id)
    assert expected == request.headers
    assert f"llmp.cancel.{type_}" == cancel.subject
    assert mirrored_headers(cancel.subject, type=type_, message_id="") == (cancel.headers or {})
    assert f"llmp.evt.{type_}" == event.subject
    assert mirrored_headers(event.subject, type=type_, message_id="") == (event.headers or {})


# -- work queues on JetStream ----------------------------------------------------------------


async def test_a_queue_has_one_stream_with_its_jobs_and_dead_letters(
    nats_url: str, run_id: str
) -> None:
    """Stream layout: exactly wq and dlq subjects, work-queue retention, file [NATS-021]."""
    queue = f"{run_id}.jobs"
    async with queues_cleaned(nats_url, queue), open_transport(nats_url) as t:
        await t.enqueue(queue, b"{}", message_id=new_id())
        async with raw(nats_url) as nc:
            info = await nc.jetstream().stream_info(stream_name(queue))
    assert [f"llmp.wq.{queue}", f"llmp.dlq.{queue}"] == info.config.subjects
    assert nats.js.api.RetentionPolicy.WORK_QUEUE == info.config.retention
    assert nats.js.api.StorageType.FILE == info.config.storage
    assert 1 == info.state.messages
    assert stream_name(queue) != stream_name(f"{run_id}_jobs")


async def test_a_repeated_enqueue_is_a_success_that_stores_nothing(
    nats_url: str, run_id: str
) -> None:
    """Nats-Msg-Id = id [NATS-022]; the duplicate PubAck is a success [NATS-023]."""
    queue = f"{run_id}.jobs"
    async with queues_cleaned(nats_url, queue), open_transport(nats_url) as t:
        job_id = new_id()
        await t.enqueue(queue, b'{"n":1}', message_id=job_id)
        await t.enqueue(queue, b'{"n":1}', message_id=job_id)  # returns normally
        await t.enqueue(queue, b'{"n":2}', message_id=new_id())
        async with raw(nats_url) as nc:
            js = nc.jetstream()
            info = await js.stream_info(stream_name(queue))
            first = await js.get_msg(stream_name(queue), 1)
    assert 2 == info.state.messages
    assert first.headers is not None
    assert job_id == first.headers["Nats-Msg-Id"]


async def test_consumers_ack_explicitly_with_the_lease_as_ack_wait(
    nats_url: str, run_id: str
) -> None:
    """ack_policy explicit, ack_wait = lease [NATS-024], max_deliver = limit + 1 [NATS-026]."""
    queue = f"{run_id}.jobs"
    options = QueueOptions(prefetch=2, lease_ms=1500, max_deliveries=3)
    async with queues_cleaned(nats_url, queue), open_transport(nats_url) as t:
        consumer = await t.consume(queue, options)
        async with raw(nats_url) as nc:
            info = await nc.jetstream().consumer_info(stream_name(queue), "work")
        await consumer.aclose()
    assert nats.js.api.AckPolicy.EXPLICIT == info.config.ack_policy
    assert 1.5 == info.config.ack_wait
    assert 4 == info.config.max_deliver
    assert f"llmp.wq.{queue}" == info.config.filter_subject


async def test_extending_the_lease_keeps_the_job(nats_url: str, run_id: str) -> None:
    """+WPI restarts the lease: a job held past two leases is not redelivered [NATS-025]."""
    queue = f"{run_id}.jobs"
    options = QueueOptions(prefetch=1, lease_ms=1000, max_deliveries=5)
    async with queues_cleaned(nats_url, queue), open_transport(nats_url) as t:
        first = await t.consume(queue, options)
        other = await t.consume(queue, options)
        await t.enqueue(queue, b"held", message_id=new_id())
        job = await next_job(first)
        other_jobs = []

        async def watch() -> None:
            async for j in other:
                other_jobs.append(j)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            for _ in range(6):  # 2.4 s: more than two leases
                await anyio.sleep(0.4)
                await job.extend_lease()
            await job.ack()
            await anyio.sleep(1.2)
            tg.cancel_scope.cancel()
        await first.aclose()
        await other.aclose()
    assert [] == other_jobs
    assert 1 == job.delivery_count


async def _dead_letter(consumer: Any) -> Job:
    return await next_job(consumer)


async def test_a_job_out_of_deliveries_is_dead_lettered_with_its_reason(
    nats_url: str, run_id: str
) -> None:
    """Nack on the last delivery, terminate, and an expired last lease all reach the DLQ
    with llmp-dead-reason, then +TERM [NATS-026]."""
    queue = f"{run_id}.jobs"
    options = QueueOptions(prefetch=1, lease_ms=800, max_deliveries=2)
    async with queues_cleaned(nats_url, queue), open_transport(nats_url) as t:
        work = await t.consume(queue, options)
        dead = await t.dead_letters(queue)
        await t.enqueue(queue, b"failing", message_id="job-failing")
        job = await next_job(work)
        await job.nack()
        job = await next_job(work)
        assert 2 == job.delivery_count
        await job.nack()  # the last allowed delivery failed
        letter = await _dead_letter(dead)
        assert b"failing" == letter.body
        assert "max_deliveries" == letter.reason
        await letter.ack()

        await t.enqueue(queue, b"poison", message_id="job-poison")
        job = await next_job(work)
        await job.terminate(reason="bad input: ünïcode")
        letter = await _dead_letter(dead)
        assert "terminated: bad input: ünïcode" == letter.reason
        await letter.ack()

        await t.enqueue(queue, b"abandoned", message_id="job-abandoned")
        await next_job(work)  # never settled: its lease runs out
        job = await next_job(work)  # the redelivery
        assert 2 == job.delivery_count
        # Abandon the last allowed delivery too, while a worker waits for more: the extra
        # delivery goes to the dead letters instead of to that worker.
        handed: list[Job] = []
        async with anyio.create_task_group() as tg:

            async def worker() -> None:
                async for extra in work:
                    handed.append(extra)

            tg.start_soon(worker)
            letter = await _dead_letter(dead)
            tg.cancel_scope.cancel()
        assert (b"abandoned", "max_deliveries") == (letter.body, letter.reason)
        assert [] == handed
        await letter.ack()
        async with raw(nats_url) as nc:
            info = await nc.jetstream().stream_info(stream_name(queue))
        await work.aclose()
        await dead.aclose()
    assert 0 == info.state.messages  # terminated jobs and acked dead letters are gone


async def test_a_job_carries_its_reply_address_in_the_envelope(nats_url: str, run_id: str) -> None:
    """JetStream keeps no reply subject, so reply_to travels in the body [NATS-027]."""
    queue = f"{run_id}.jobs"
    async with queues_cleaned(nats_url, queue), open_transport(nats_url) as t:
        service = Service(t, name=f"{run_id}-svc")

        @service.worker(queue)
        async def work(request: Request) -> Any:
            return {"done": request.data}

        async with raw(nats_url) as nc:
            sub = await nc.subscribe(f"llmp.wq.{queue}")
            await nc.flush()
            async with service, Client(t, source="llmp://tests", timeout=WAIT) as client:
                handle = await client.submit(queue, f"{run_id}.task", {"n": 1})
                result = await handle.result()
            stored = await sub.next_msg(timeout=WAIT)
    assert {"done": {"n": 1}} == result.data
    assert json.loads(stored.data)["reply_to"].startswith("_INBOX.")


async def test_a_consumer_pulls_only_for_waiting_readers(nats_url: str, run_id: str) -> None:
    """A consumer nobody reads from takes no job; a reading one gets it [NATS-028]."""
    queue = f"{run_id}.jobs"
    options = QueueOptions(prefetch=8, lease_ms=5000, max_deliveries=3)
    async with queues_cleaned(nats_url, queue), open_transport(nats_url) as t:
        idle = await t.consume(queue, options)
        await anyio.sleep(0.3)
        reading = await t.consume(queue, options)
        for n in range(3):
            await t.enqueue(queue, b"%d" % n, message_id=new_id())
        bodies = []
        for _ in range(3):
            job = await next_job(reading)
            bodies.append(job.body)
            await job.ack()
        await idle.aclose()
        await reading.aclose()
    assert [b"0", b"1", b"2"] == bodies


# -- failures ----------------------------------------------------------------------------


def test_every_client_failure_has_a_registry_code() -> None:
    """No nats-py exception escapes: each maps to a code [NATS-029]."""
    cases = [
        (nats.errors.MaxPayloadError(), ErrorCode.PAYLOAD_TOO_LARGE),
        (nats.errors.NoRespondersError(), ErrorCode.NO_RESPONDERS),
        (nats.errors.BadSubjectError(), ErrorCode.INVALID_PARAMS),
        (nats.errors.ConnectionClosedError(), ErrorCode.UNAVAILABLE),
        (nats.errors.OutboundBufferLimitError(), ErrorCode.UNAVAILABLE),
        (nats.errors.TimeoutError(), ErrorCode.UNAVAILABLE),
        (nats.errors.NoServersError(), ErrorCode.UNAVAILABLE),
        (nats.js.errors.NoStreamResponseError(), ErrorCode.UNAVAILABLE),
        (nats.js.errors.APIError(err_code=10077), ErrorCode.OVERLOADED),
        (nats.js.errors.NotFoundError(), ErrorCode.NOT_FOUND),
        (ConnectionResetError(), ErrorCode.UNAVAILABLE),
        (TimeoutError(), ErrorCode.UNAVAILABLE),
        (nats.errors.Error("something new"), ErrorCode.UNAVAILABLE),
    ]
    assert cases == [(exc, error_code(exc)) for exc, _ in cases]


async def test_a_transport_that_is_not_open_is_unavailable(run_id: str) -> None:
    """Every operation outside ``async with`` raises UNAVAILABLE, not a client error [NATS-029]."""
    t = NatsTransport.from_url("nats://127.0.0.1:4222")
    with pytest.raises(TransportError) as caught:
        await t.send_request(f"{run_id}.x", b"{}", reply_to="_INBOX.a.b", message_id="m")
    assert ErrorCode.UNAVAILABLE == caught.value.code
    with pytest.raises(TransportError) as caught:
        await t.enqueue(f"{run_id}.q", b"{}", message_id="m")
    assert ErrorCode.UNAVAILABLE == caught.value.code


async def test_a_refused_connection_is_unavailable_in_bounded_time() -> None:
    """Nobody listening: UNAVAILABLE within the connect timeout, no endless retry [NATS-029]."""
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        async with open_transport("nats://127.0.0.1:9?connect_timeout_ms=500"):
            pass
    assert ErrorCode.UNAVAILABLE == caught.value.code
    assert "cannot connect" in caught.value.message
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "address",
    ["llmp.rpc.other.op", "_INBOX.a", "_INBOX.a.b.c", "_INBOX.*.x", "_INBOX.a.>", "x y", ""],
)
async def test_replies_go_only_to_inbox_subjects(nats_url: str, address: str) -> None:
    """A reply address from an envelope cannot aim at a service subject [NATS-030]."""
    async with open_transport(nats_url) as t:
        with pytest.raises(TransportError) as caught:
            await t.send_reply(address, b"{}")
        assert ErrorCode.INVALID_PARAMS == caught.value.code
        await t.send_reply("_INBOX.abc.def", b"{}")  # an inbox subject is fine


async def test_close_drains_what_was_published(nats_url: str, run_id: str) -> None:
    """Events published just before close still arrive: close drains [NATS-034]."""
    async with raw(nats_url) as nc:
        sub = await nc.subscribe(f"llmp.evt.{run_id}.>")
        await nc.flush()
        async with open_transport(nats_url) as t:
            for n in range(200):
                await t.publish_event(f"{run_id}.e", b"%d" % n)
        got = [await sub.next_msg(timeout=WAIT) for _ in range(200)]
    assert [b"%d" % n for n in range(200)] == [m.data for m in got]


async def test_subscriptions_read_the_queue_nats_py_fills(nats_url: str, run_id: str) -> None:
    """The transport's subscriptions are made without a callback and read nats-py's pending
    queue; a nats-py release without it is refused by name, not misread."""
    async with open_transport(nats_url) as t:
        assert isinstance(t, NatsTransport)
        events = await t.subscribe_events(f"{run_id}.>")
        inner = events._sub  # type: ignore[attr-defined]  # noqa: SLF001
        assert inner is not None
        assert inner._cb is None  # noqa: SLF001
        assert pending_queue(inner) is events._queue  # type: ignore[attr-defined]  # noqa: SLF001
        await t.publish_event(f"{run_id}.a", b"1")
        with anyio.fail_after(WAIT):
            assert b"1" == (await events.__aiter__().__anext__()).body
        assert 0 == inner._pending_size  # noqa: SLF001 - nats-py's slow-consumer accounting
        inner._pending_queue = None  # noqa: SLF001 - as if a release had moved it
        with pytest.raises(TransportError, match="_pending_queue"):
            pending_queue(inner)


async def test_concurrent_readers_share_a_subscription_and_all_end_on_close(
    nats_url: str, run_id: str
) -> None:
    """Several tasks may read one subscription: each message reaches one of them, and
    closing ends every reader, including those waiting."""
    got: list[list[bytes]] = [[], [], []]
    async with open_transport(nats_url) as t:
        events = await t.subscribe_events(f"{run_id}.>")

        async def reader(mine: list[bytes]) -> None:
            async for delivery in events:
                mine.append(delivery.body)
                await anyio.sleep(0)

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for mine in got:
                    tg.start_soon(reader, mine)
                for n in range(60):
                    await t.publish_event(f"{run_id}.a", b"%d" % n)
                while sum(map(len, got)) < 60:
                    await anyio.sleep(0.01)
                await events.aclose()
    assert sorted(b"%d" % n for n in range(60)) == sorted(b for mine in got for b in mine)
    assert all(got)


async def test_close_counts_what_was_never_read_and_does_not_wait_for_it(
    nats_url: str, run_id: str
) -> None:
    """Deliveries still queued when the transport closes are dropped and counted [TRN-020];
    the drain does not wait its timeout for a reader that will never come."""
    t = NatsTransport.from_url(f"{nats_url}?drain_timeout_ms=8000")
    async with t:
        await t.subscribe_events(f"{run_id}.>")
        for n in range(25):
            await t.publish_event(f"{run_id}.a", b"%d" % n)
        await t.connection().flush()
        await anyio.sleep(0.1)  # the messages come back to this connection's subscription
        started = time.monotonic()
    assert time.monotonic() - started < 4.0
    assert 25 == t.dropped


async def test_a_request_without_a_reply_address_is_sent_without_one(
    nats_url: str, run_id: str
) -> None:
    """An empty reply_to sends the request with no NATS reply subject (TRN-008's absence)."""
    async with open_transport(nats_url) as t:
        requests = await t.serve(f"{run_id}.op", group="g")
        await t.send_request(f"{run_id}.op", b"{}", reply_to="", message_id="m1")
        with anyio.fail_after(WAIT):
            delivery = await requests.__aiter__().__anext__()
        assert delivery.reply_to is None
        assert "m1" == delivery.message_id


def test_urls_and_options() -> None:
    """from_url takes servers, credentials and options, and refuses what it does not know."""
    t = NatsTransport.from_url("nats://u:p@h1:4222,h2:4223?request_timeout_ms=700&name=x")
    assert 0.7 == t.request_timeout_s
    assert "nats://h1,h2:4222" == t.name
    for bad in ("nats://h:1?nope=1", "nats://h:1?request_timeout_ms=x", "nats:///p", "http://h"):
        with pytest.raises(TransportError) as caught:
            NatsTransport.from_url(bad)
        assert ErrorCode.INVALID_PARAMS == caught.value.code
