"""The NATS binding under broker faults: ``kill -9`` of a private nats-server, and restart.

Every test runs its own nats-server (:mod:`brokers.private_nats`) on a free loopback port with
its own store, never the machine's shared server. The transports connect with short reconnect
waits and JetStream timeouts, and the queue uses a 2 s lease, so that a crash, an outage of
about a second and the recovery all fit in a few seconds.

What is proved here, end to end through the runtime (Client, Service):

- a crash in the middle of a 2,000-job run loses no job, and no idempotency key runs twice,
  although submits fail and are repeated and jobs are delivered again;
- requests in flight or sent during the outage end with ``UNAVAILABLE`` or
  ``DEADLINE_EXCEEDED`` within their deadline, never hang;
- a service's request subscription, its event subscription and a client's inbox deliver again
  after the restart, without being opened again;
- a broker that is down at start is ``UNAVAILABLE`` within the connect timeout.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from brokers.private_nats import PrivateNats, crash, eventually, free_port
from llmproto_nats import NatsTransport
from llmproto_nats._jetstream import WORK_CONSUMER, stream_name
from llmproto_ref import (
    Client,
    ErrorCode,
    Event,
    ExchangeError,
    LlmpError,
    QueueOptions,
    Request,
    Service,
    TransportError,
    open_transport,
)

pytestmark = pytest.mark.anyio

LEASE_MS = 2_000  #: the queue's lease: redeliveries come back within seconds
OUTAGE_S = 1.0  #: how long the server stays dead, unless a test says otherwise
#: reconnect fast, and give up on a PubAck or a JetStream API call after 2 s
URL_OPTIONS = {"reconnect_wait_ms": 100, "request_timeout_ms": 2_000, "connect_timeout_ms": 1_000}
MARGIN_S = 0.5  #: slack for a busy 2-core machine on top of a deadline or a timeout
#: submit failures that leave the job not stored, or stored without our knowing: repeat it
REPEATABLE = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.NO_RESPONDERS, ErrorCode.OVERLOADED})


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[PrivateNats]:
    """A private nats-server with JetStream, stopped at teardown whatever happened."""
    with PrivateNats.started(tmp_path) as server:
        yield server


@contextlib.asynccontextmanager
async def connected(server: PrivateNats) -> AsyncIterator[NatsTransport]:
    """An open NATS transport on the private server."""
    async with NatsTransport.from_url(server.url_with(**URL_OPTIONS)) as transport:
        yield transport


# -- work queues -------------------------------------------------------------------------

JOBS = 2_000
LANES = 8  #: submitters at once


@dataclass
class _Run:
    """What a work-queue run under a crash did."""

    submitted: int = 0
    executed_at_kill: int = -1
    submitted_at_kill: int = -1
    restarted_at: float = 0.0
    last_execution: float = 0.0
    first_execution_after_restart_s: float = -1.0
    repeats: Counter[str] = field(default_factory=Counter)  #: repeated submits, by code
    executions: Counter[str] = field(default_factory=Counter)  #: runs per idempotency key


@pytest.mark.parametrize("outage_s", [0.5, 2.5], ids=["outage-within-lease", "outage-past-lease"])
async def test_a_crash_mid_run_loses_no_job_and_runs_each_key_once(
    nats_server: PrivateNats, run_id: str, outage_s: float
) -> None:
    """A kill -9 during 2,000 jobs: every key runs, and runs once [IDEM-001, IDEM-002].

    The server stays down for less than the 2 s lease, or for longer, so that the leases of
    the jobs the worker holds run out during the outage.

    The client repeats each submit that failed with a registry error (UNAVAILABLE while the
    connection is down or no PubAck came [NATS-031, NATS-032]); a repeat is a new envelope with
    the same idempotency key (spec/idempotency.md), so whether the first one was stored or not,
    the job is stored at least once [TRN-011] and runs at most once. Jobs held by the worker at
    the crash come back after their lease [NATS-024, TRN-013, TRN-015]; acks lost in the crash
    bring back jobs that already ran, which the worker answers from its idempotency record
    without running them [IDEM-001, WQ-003] (or nacks while the first run is still going
    [IDEM-002]). The consumer delivers again after the reconnect without being opened again
    [NATS-033]. At the end the stream is empty: every job was acknowledged, none dead-lettered
    [NATS-026].
    """
    queue, job_type = f"{run_id}.jobs", "t.fault.job"
    run = _Run()

    async with connected(nats_server) as worker_side, connected(nats_server) as client_side:
        service = Service(worker_side, name=f"{run_id}-workers", grace=1.0)
        options = QueueOptions(prefetch=16, lease_ms=LEASE_MS, max_deliveries=50)

        @service.worker(queue, concurrency=16, options=options)
        async def work(request: Request) -> Any:
            run.executions[request.envelope.idempotency_key or "(none)"] += 1
            run.last_execution = time.monotonic()
            await anyio.sleep(0.005)  # jobs are in flight when the crash comes
            return {"n": request.data["n"]}

        async def submit_lane(client: Client, lane: int) -> None:
            for n in range(lane, JOBS, LANES):
                while True:
                    try:
                        await client.submit(
                            queue,
                            job_type,
                            {"n": n},
                            idempotency_key=f"{run_id}-job-{n}",
                            result=False,
                            timeout=300,
                        )
                    except ExchangeError as exc:
                        if exc.code not in REPEATABLE:
                            raise AssertionError(f"submit {n}: {exc.code}: {exc.message}") from exc
                        run.repeats[str(exc.code)] += 1
                        await anyio.sleep(0.05)
                    else:
                        break
                run.submitted += 1

        async def crash_mid_run() -> None:
            await eventually(
                lambda: len(run.executions) >= JOBS // 5 or run.submitted >= 3 * JOBS // 4,
                within=30,
                what="the run under way",
            )
            run.submitted_at_kill, run.executed_at_kill = run.submitted, len(run.executions)
            await crash(nats_server, worker_side, client_side, outage_s=outage_s)
            run.restarted_at = time.monotonic()
            run.first_execution_after_restart_s = await eventually(
                lambda: run.last_execution > run.restarted_at,
                within=15,
                what="a job ran after the restart",
            )

        started = time.monotonic()
        with anyio.fail_after(75):
            async with service, Client(client_side, source=f"llmp://{run_id}-submitter") as client:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(crash_mid_run)
                    for lane in range(LANES):
                        tg.start_soon(submit_lane, client, lane)
                submitted_s = time.monotonic() - started
                await eventually(
                    lambda: len(run.executions) == JOBS, within=40, what="every key ran"
                )
                drained_s, stored = await _drained(worker_side, queue)
        elapsed = time.monotonic() - started
        figures = service.metrics.snapshot()["queue"][job_type]

    executed = sum(run.executions.values())
    print(  # the figures of the run, for `pytest -s`
        f"\n{JOBS} jobs in {elapsed:.1f} s (submits done at {submitted_s:.1f} s, queue drained "
        f"{drained_s:.1f} s after the last key ran); kill at {run.submitted_at_kill} submitted, "
        f"{run.executed_at_kill} run; first run {run.first_execution_after_restart_s:.2f} s "
        f"after the restart; repeated submits {dict(run.repeats)}; jobs stored {stored}; "
        f"deliveries {figures['sent']}, replayed {figures['succeeded'] - executed}; runs per key "
        f"{dict(Counter(run.executions.values()))}"
    )
    assert 0 < run.executed_at_kill < JOBS, "the crash came in the middle of the run"
    assert run.submitted_at_kill < JOBS, "the crash came while jobs were being submitted"
    assert JOBS == run.submitted
    assert stored >= JOBS, "every submit that returned was stored [TRN-011]"
    wanted = {f"{run_id}-job-{n}" for n in range(JOBS)}
    assert set() == wanted - set(run.executions), "jobs lost"
    assert {} == {key: n for key, n in run.executions.items() if n != 1}, "keys run twice"


async def _drained(transport: NatsTransport, queue: str) -> tuple[float, int]:
    """Wait until the queue's stream holds nothing and its consumer nothing unsettled.

    :returns: the seconds it took, and how many jobs the stream ever stored (a repeated
        submit whose first attempt was stored after all is one more).
    """
    js = transport.jetstream()
    stream = stream_name(queue)
    state: dict[str, int] = {}
    ever = [0]

    async def look() -> bool:
        with contextlib.suppress(Exception):  # a reconnect may still be under way
            info = await js.consumer_info(stream, WORK_CONSUMER)
            stored = await js.stream_info(stream)
            state.update(
                pending=info.num_pending or 0,
                unacked=info.num_ack_pending or 0,
                stored=stored.state.messages,
            )
            ever[0] = stored.state.last_seq
            return not any(state.values())
        return False

    started = time.monotonic()
    with anyio.move_on_after(20):
        while not await look():
            await anyio.sleep(0.1)
        return time.monotonic() - started, ever[0]
    pytest.fail(f"the queue did not drain (every job acked, none dead-lettered): {state}")


# -- requests during an outage -----------------------------------------------------------

REQUEST_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class _Outcome:
    sent: str  #: "before", "down" or "after": the server's state when the request was sent
    ended_after_kill: bool
    code: str  #: "ok" or the registry code
    elapsed: float


async def test_requests_during_an_outage_end_in_bounded_time(
    nats_server: PrivateNats, run_id: str
) -> None:
    """In flight at the crash or sent during it: UNAVAILABLE or DEADLINE_EXCEEDED, in time.

    While the client's connection is down a request is refused at once with UNAVAILABLE,
    not buffered [NATS-031]; one in flight when the server died loses its reply and ends at
    its deadline with DEADLINE_EXCEEDED [DL-005]; a streamed request too, or with
    STREAM_INTERRUPTED when chunks arrived after a gap [STR-005]. None takes longer
    than its deadline plus a small margin, and none raises anything but a registry error
    [TRN-002, NATS-029].
    """
    slow, chunks = f"{run_id}.slow", f"{run_id}.chunks"
    phase = ["before"]
    killed_at = [0.0]
    outcomes: list[_Outcome] = []

    async with connected(nats_server) as service_side, connected(nats_server) as client_side:
        service = Service(service_side, name=f"{run_id}-svc", grace=0.5)

        @service.handler(slow)
        async def answer_slowly(request: Request) -> Any:
            await anyio.sleep(0.3)
            return request.data

        @service.handler(chunks)
        async def stream_slowly(request: Request) -> AsyncIterator[int]:
            for n in range(100):
                yield n
                await anyio.sleep(0.05)

        async def requester(client: Client) -> None:
            while phase[0] != "done":
                sent, started = phase[0], time.monotonic()
                code = "ok"
                try:
                    await client.request(slow, {"x": 1}, timeout=REQUEST_TIMEOUT_S)
                except LlmpError as exc:
                    code = str(exc.code)
                ended = time.monotonic()
                outcomes.append(_Outcome(sent, 0 < killed_at[0] < ended, code, ended - started))
                if code != "ok":
                    await anyio.sleep(0.05)

        stream_outcome: list[tuple[str, float, int]] = []

        async def stream_across_the_crash(client: Client) -> None:
            started, got = time.monotonic(), 0
            try:
                async with client.stream(chunks, timeout=2 * REQUEST_TIMEOUT_S) as stream:
                    async for _chunk in stream:
                        got += 1
                code = "ok"
            except LlmpError as exc:  # ExchangeError, or RemoteProtocolError for a gap
                code = str(exc.code)
            stream_outcome.append((code, time.monotonic() - started, got))

        with anyio.fail_after(30):
            async with (
                service,
                Client(client_side, source=f"llmp://{run_id}-asker") as client,
                anyio.create_task_group() as tg,
            ):
                for _ in range(6):
                    tg.start_soon(requester, client)
                await anyio.sleep(0.4)  # requests are in flight now
                tg.start_soon(stream_across_the_crash, client)
                await anyio.sleep(0.2)
                killed_at[0] = time.monotonic()
                nats_server.kill()
                phase[0] = "down"
                await anyio.sleep(1.5)
                await nats_server.arestart()
                phase[0] = "after"
                await eventually(
                    lambda: service_side.reconnects > 0 and client_side.reconnects > 0,
                    within=10,
                    what="both transports reconnected",
                )
                await anyio.sleep(0.5)
                phase[0] = "done"

    late = [o for o in outcomes if o.elapsed > REQUEST_TIMEOUT_S + MARGIN_S]
    assert [] == late, "requests that took longer than their deadline"
    during = Counter(o.code for o in outcomes if o.sent == "down")
    assert set(during) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, during
    assert during["UNAVAILABLE"] > 0, "requests sent while the connection was down"
    refused = [o.elapsed for o in outcomes if o.code == "UNAVAILABLE"]
    assert max(refused) < MARGIN_S, "an UNAVAILABLE refusal is at once, not at the deadline"
    in_flight = Counter(o.code for o in outcomes if o.sent == "before" and o.ended_after_kill)
    assert set(in_flight) <= {"ok", "UNAVAILABLE", "DEADLINE_EXCEEDED"}, in_flight
    assert in_flight["DEADLINE_EXCEEDED"] > 0, f"a request in flight at the kill: {in_flight}"
    assert set(Counter(o.code for o in outcomes)) <= {
        "ok",
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "NO_RESPONDERS",  # after the restart, before the service subscribed again
    }
    # Chunks sent during the gap are lost; those sent after it leave a gap [STR-005].
    [(code, took, got)] = stream_outcome
    assert code in {"DEADLINE_EXCEEDED", "UNAVAILABLE", "STREAM_INTERRUPTED"}, (code, got)
    assert took <= 2 * REQUEST_TIMEOUT_S + MARGIN_S


# -- subscriptions after a restart -------------------------------------------------------


async def test_subscriptions_deliver_again_after_a_restart(
    nats_server: PrivateNats, run_id: str
) -> None:
    """Requests, replies and events flow again after a restart, nothing re-opened [NATS-033].

    The service's request subscription (a queue group [NATS-017]), its event subscriptions
    (one in a group, one without [TRN-010]) and the client's one inbox [NATS-006, TRN-007]
    were all made before the crash; after the restart every request succeeds on its first
    try and every event published reaches both subscriptions.
    """
    echo, topic = f"{run_id}.echo", f"{run_id}.evt.happened"
    seen: dict[str, list[int]] = {"grouped": [], "alone": []}

    async with connected(nats_server) as service_side, connected(nats_server) as client_side:
        service = Service(service_side, name=f"{run_id}-svc", grace=0.5)

        @service.handler(echo)
        async def answer(request: Request) -> Any:
            return request.data

        @service.on_event(f"{run_id}.evt.>", group=f"{run_id}-listeners")
        async def grouped(event: Event) -> None:
            seen["grouped"].append(event.envelope.data["n"])

        @service.on_event(f"{run_id}.evt.*")
        async def alone(event: Event) -> None:
            seen["alone"].append(event.envelope.data["n"])

        with anyio.fail_after(30):
            async with service, Client(client_side, source=f"llmp://{run_id}-asker") as client:
                assert {"n": -1} == (await client.request(echo, {"n": -1}, timeout=5)).data
                await client.publish(topic, {"n": -1})
                await eventually(
                    lambda: seen == {"grouped": [-1], "alone": [-1]},
                    within=5,
                    what="the event before the crash",
                )
                await crash(nats_server, service_side, client_side, outage_s=OUTAGE_S)
                replies = [
                    (await client.request(echo, {"n": n}, timeout=5)).data["n"] for n in range(20)
                ]
                for n in range(20):
                    await client.publish(topic, {"n": n})
                await eventually(
                    lambda: len(seen["grouped"]) == len(seen["alone"]) == 21,
                    within=5,
                    what="the events after the restart",
                )
    assert list(range(20)) == replies
    assert {"grouped": [-1, *range(20)], "alone": [-1, *range(20)]} == seen


# -- a broker down at start --------------------------------------------------------------


async def test_a_broker_down_at_start_is_unavailable_within_the_connect_timeout() -> None:
    """Nothing listens: entering fails with UNAVAILABLE within connect_timeout [NATS-036].

    A refused connection is a transport failure like any other [NATS-029, TRN-002]; the
    binding must not retry it past its connect timeout.
    """
    port = free_port()  # nobody listens there
    connect_timeout_s = URL_OPTIONS["connect_timeout_ms"] / 1000
    transport = open_transport(
        f"nats://127.0.0.1:{port}?connect_timeout_ms={URL_OPTIONS['connect_timeout_ms']}"
        "&reconnect_wait_ms=100"
    )
    started = time.monotonic()
    with anyio.fail_after(10), pytest.raises(TransportError) as caught:
        await transport.__aenter__()
    took = time.monotonic() - started
    assert ErrorCode.UNAVAILABLE == caught.value.code
    assert took <= connect_timeout_s + MARGIN_S, f"refused after {took:.2f} s"
