"""The service's task pool: bounded concurrency on reused tasks, push-back when full."""

from __future__ import annotations

import anyio
import pytest

from llmproto_ref._pool import TaskPool

pytestmark = pytest.mark.anyio


async def test_at_most_limit_jobs_run_and_tasks_are_reused() -> None:
    """With a limit of 3, 30 jobs never run more than 3 at once, on at most 3 tasks."""
    running = peak = 0
    tasks: set[object] = set()

    async def job() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        tasks.add(anyio.get_current_task().id)
        await anyio.sleep(0.005)
        running -= 1

    with anyio.fail_after(10):
        async with TaskPool(3) as pool:
            for _ in range(30):
                await pool.submit(job)
            assert await pool.wait_drained()
    assert 3 == peak
    assert 3 >= len(tasks)


async def test_submit_waits_while_every_task_is_busy() -> None:
    """A full pool holds the caller of submit until a task is free (back-pressure)."""
    release = anyio.Event()
    order: list[str] = []

    async def blocker() -> None:
        await release.wait()
        order.append("blocker done")

    async def second() -> None:
        order.append("second ran")

    with anyio.fail_after(10):
        async with TaskPool(1) as pool, anyio.create_task_group() as tg:
            await pool.submit(blocker)

            async def submit_second() -> None:
                await pool.submit(second)
                order.append("second accepted")

            tg.start_soon(submit_second)
            await anyio.sleep(0.05)
            assert [] == order  # still waiting: the only task is busy
            release.set()
    assert "blocker done" == order[0]
    assert {"second ran", "second accepted"} == set(order[1:])


async def test_a_failing_job_is_counted_and_the_task_survives() -> None:
    """A job that raises is counted in failures; the pool keeps running jobs."""
    done: list[int] = []

    async def bad() -> None:
        raise ValueError("boom")

    async def good() -> None:
        done.append(1)

    with anyio.fail_after(10):
        async with TaskPool(1) as pool:
            await pool.submit(bad)
            await pool.submit(good)
            assert await pool.wait_drained()
    assert (1, [1]) == (pool.failures, done)
    assert 0 == pool.active
