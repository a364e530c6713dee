"""A pool task's shared cancel scope: a stopped handler never leaks its stop into later work.

The service runs each handler in the cancel scope its pool task shares between jobs
(``llmproto_ref._pool.JobScope``). These tests stop handlers every way there is (a cancel
message, the deadline, shutdown, a handler that swallows its stop, a stream, a worker thread, a
queue job) on a service with one pool task, then check that the stopped job still answered and
settled and that the next job on the same task runs to completion.

Requirements: CAN-003, DL-004, WQ-003, WQ-008.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from llmproto_ref import ExchangeError, Final, Request
from llmproto_ref._pool import JobScope, TaskPool, current_job_scope
from runtime_pair import WAIT, RuntimePair, eventually, run_in_background

pytestmark = pytest.mark.anyio


def _pair() -> RuntimePair:
    pair = RuntimePair(max_concurrency=1)  # one pool task: every job shares its scope

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        await anyio.sleep(0.001)  # suspends inside the shared scope
        return request.data

    return pair


async def _next_jobs_run(pair: RuntimePair) -> None:
    for n in range(3):
        assert {"n": n} == (await pair.client.request("t.echo", {"n": n}, timeout=2)).data


async def test_cancelled_handler_then_the_next_job_runs() -> None:
    """A cancel message stops the handler (CANCELLED is answered); the next job completes."""
    pair = _pair()
    started = anyio.Event()

    @pair.service.handler("t.slow")
    async def slow(request: Request) -> Any:
        started.set()
        await anyio.sleep(10)

    async with pair, anyio.create_task_group() as tg:
        with anyio.fail_after(WAIT):
            stream = pair.client.stream("t.slow")
            async with stream:
                await started.wait()
                await stream.cancel()
            await eventually(lambda: not pair.service.running)
            (reply,) = pair.client_transport.replies_to(stream.id)
            assert "CANCELLED" == (reply.error or {})["code"]
            await _next_jobs_run(pair)
        tg.cancel_scope.cancel()


async def test_expired_handler_then_the_next_job_runs() -> None:
    """The deadline stops the handler (DEADLINE_EXCEEDED); the next job completes [DL-004]."""
    pair = _pair()

    @pair.service.handler("t.slow")
    async def slow(request: Request) -> Any:
        await anyio.sleep(10)

    async with pair:
        with anyio.fail_after(WAIT):
            with pytest.raises(ExchangeError) as caught:
                await pair.client.request("t.slow", timeout=0.05)
            assert "DEADLINE_EXCEEDED" == str(caught.value.code)
            await eventually(lambda: not pair.service.running)
            await _next_jobs_run(pair)


async def test_handler_that_swallows_its_stop_then_the_next_job_runs() -> None:
    """A handler catching its stop and returning still gets the error reply, and no leak."""
    pair = _pair()

    @pair.service.handler("t.stubborn")
    async def stubborn(request: Request) -> Any:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            return "ignored the stop"  # bad manners; the service still answers the stop
        return "slept"

    async with pair:
        with anyio.fail_after(WAIT):
            with pytest.raises(ExchangeError) as caught:
                await pair.client.request("t.stubborn", timeout=0.05)
            assert "DEADLINE_EXCEEDED" == str(caught.value.code)
            await eventually(lambda: not pair.service.running)
            await _next_jobs_run(pair)


async def test_stopped_stream_and_thread_handlers_then_the_next_job_runs() -> None:
    """A stream stopped mid-way and a thread handler past its deadline; then normal jobs."""
    pair = _pair()
    release = threading.Event()

    @pair.service.handler("t.chunks")
    async def chunks(request: Request) -> Any:
        for n in range(1000):
            yield n
            await anyio.sleep(0.01)
        yield Final()

    @pair.service.handler("t.blocking", thread=True)
    def blocking(request: Request) -> Any:
        release.wait(5)
        return "late"

    async with pair:
        with anyio.fail_after(WAIT):
            async with pair.client.stream("t.chunks") as stream:
                async for chunk in stream:
                    if chunk.data == 2:
                        break
            with pytest.raises(ExchangeError):
                await pair.client.request("t.blocking", timeout=0.05)
            release.set()
            await eventually(lambda: not pair.service.running)
            await _next_jobs_run(pair)


async def test_stopped_queue_job_is_still_settled_then_the_next_job_runs() -> None:
    """A job stopped by its deadline is answered and settled under the shield [WQ-003]."""
    pair = RuntimePair(max_concurrency=1)

    @pair.service.worker("jobs", concurrency=1)
    async def work(request: Request) -> Any:
        if request.data == "slow":
            await anyio.sleep(10)
        await anyio.sleep(0.001)
        return request.data

    async with pair:
        with anyio.fail_after(WAIT):
            slow = await pair.client.submit("jobs", "t.job", "slow", timeout=0.1)
            with pytest.raises(ExchangeError):
                await slow.result()
            await eventually(lambda: len(pair.client_transport.replies_to(slow.id)) == 1)
            for n in range(3):
                handle = await pair.client.submit("jobs", "t.job", n, timeout=2)
                assert n == (await handle.result()).data
    assert 0 == pair.broker.stats.stale_settles


async def test_shutdown_stops_a_handler_on_a_shared_scope() -> None:
    """Shutdown after the grace period stops a handler; it answers UNAVAILABLE [WQ-008]."""
    pair = RuntimePair(serve=False, max_concurrency=1, grace=0.05)
    started = anyio.Event()

    @pair.service.handler("t.forever")
    async def forever(request: Request) -> Any:
        started.set()
        await anyio.sleep(10)

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    with anyio.fail_after(WAIT):
        async with pair, anyio.create_task_group() as tg:
            async with pair.service:
                outcome = await run_in_background(
                    tg, lambda: pair.client.request("t.forever", timeout=5)
                )
                await started.wait()
            await eventually(lambda: bool(outcome))
    assert "UNAVAILABLE" == str(outcome["error"].code)


async def test_job_scope_is_claimed_once_per_job_and_renewed_after_a_stop() -> None:
    """One claim per job; a cancelled scope is left and a fresh one serves the next job."""
    seen: list[tuple[bool, bool, int]] = []

    async def job(stop: bool) -> None:
        shared = current_job_scope()
        assert isinstance(shared, JobScope)
        scope = shared.claim()
        assert scope is not None
        seen.append((shared.claim() is None, scope.cancel_called, id(scope)))
        if stop:
            scope.cancel()
            try:
                await anyio.sleep(1)
            except anyio.get_cancelled_exc_class():
                shared.shield()
                await anyio.sleep(0)  # shielded: not cancelled again

    with anyio.fail_after(WAIT):
        async with TaskPool(1) as pool:
            await pool.submit(lambda: job(False))
            await pool.submit(lambda: job(False))
            await pool.submit(lambda: job(True))
            await pool.submit(lambda: job(False))
            assert await pool.wait_drained()
    assert [True] * 4 == [again for again, _, _ in seen]
    assert [False] * 4 == [cancelled for _, cancelled, _ in seen]
    scopes = [scope for _, _, scope in seen]
    assert scopes[0] == scopes[1] == scopes[2] != scopes[3]
    assert 0 == pool.failures
    assert current_job_scope() is None  # outside a pool task


async def test_a_task_started_by_a_job_cannot_claim_the_scope() -> None:
    """Code in a task the job started inherits the context but gets no scope to claim."""
    claims: list[object] = []

    async def job() -> None:
        shared = current_job_scope()
        assert shared is not None
        assert shared.claim() is not None
        async with anyio.create_task_group() as tg:

            async def child() -> None:
                inherited = current_job_scope()
                claims.append(inherited.claim() if inherited is not None else "none")

            tg.start_soon(child)

    with anyio.fail_after(WAIT):
        async with TaskPool(1) as pool:
            await pool.submit(job)
            assert await pool.wait_drained()
    assert [None] == claims
