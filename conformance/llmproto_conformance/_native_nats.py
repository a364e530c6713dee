"""The raw nats-py side of ``llmproto bench --native`` (a peer process, and its driver).

Theory of operation
-------------------
The peer is a separate process (``python -m llmproto_conformance._native_nats URL PREFIX``)
that does with plain nats-py what the reference testee does with llmproto, and no more:

- ``<PREFIX>.echo`` (queue group ``native``): publish the request's bytes back to its reply;
- ``<PREFIX>.emit``: publish N copies of the request's body on ``<PREFIX>.evt``, then reply;
- the JetStream stream ``<PREFIX>`` on ``<PREFIX>.jobs``: a durable pull consumer that acks each
  job and publishes its first 16 bytes to ``<PREFIX>.done``.

The driver (:class:`NatsNative`) starts the peer, waits for its ready line, measures with a
nats-py connection of its own, and stops the peer and deletes the stream afterwards. The same
measurements, with llmproto on both sides, are in :mod:`llmproto_conformance._native`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from types import TracebackType

import nats
import nats.aio.client
import nats.aio.msg
import nats.errors
import nats.js.api
import nats.js.errors

from llmproto_conformance._peer_process import PeerProcess

__all__ = ("NatsNative",)

_READY = "native peer ready"
_KEY = 16


async def _peer(url: str, prefix: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()

    async def echo(msg: nats.aio.msg.Msg) -> None:
        await nc.publish(msg.reply, msg.data)

    async def emit(msg: nats.aio.msg.Msg) -> None:
        count, _, body = msg.data.partition(b"|")
        for _ in range(int(count)):
            await nc.publish(f"{prefix}.evt", body)
        await nc.publish(msg.reply, b"done")

    await nc.subscribe(f"{prefix}.echo", queue="native", cb=echo)
    await nc.subscribe(f"{prefix}.emit", cb=emit)
    with contextlib.suppress(nats.js.errors.BadRequestError):
        await js.add_stream(
            name=prefix,
            subjects=[f"{prefix}.jobs"],
            retention=nats.js.api.RetentionPolicy.WORK_QUEUE,
            storage=nats.js.api.StorageType.FILE,
        )
    pull = await js.pull_subscribe(f"{prefix}.jobs", durable="native", stream=prefix)
    await nc.flush()
    print(_READY, flush=True)
    while True:  # the plain loop: one job per pull, handed over as soon as it arrives
        try:
            jobs = await pull.fetch(batch=1, timeout=1)
        except TimeoutError:  # nats-py's own TimeoutError is one too
            continue
        for job in jobs:
            await job.ack()
            await nc.publish(f"{prefix}.done", job.data[:_KEY])


class NatsNative:
    """Raw nats-py round trips, events and JetStream jobs against a peer process."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._process = PeerProcess(
            "llmproto_conformance._native_nats",
            url,
            prefix,
            ready=_READY,
            what="the native NATS peer",
        )
        self._nc: nats.aio.client.Client | None = None

    async def __aenter__(self) -> NatsNative:
        await self._process.start()
        self._nc = await nats.connect(self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._process.stop()
        if self._nc is not None:
            with contextlib.suppress(nats.js.errors.NotFoundError, nats.errors.Error):
                await self._nc.jetstream().delete_stream(self.prefix)
            await self._nc.close()

    def _conn(self) -> nats.aio.client.Client:
        if self._nc is None:
            raise RuntimeError("use NatsNative inside 'async with'")
        return self._nc

    async def round_trips(self, body: bytes, width: int, per_caller: int) -> float:
        """Round trips per second with ``width`` callers of ``per_caller`` requests each."""
        nc = self._conn()
        subject = f"{self.prefix}.echo"

        async def caller() -> None:
            for _ in range(per_caller):
                await nc.request(subject, body, timeout=10)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(width)))
        return width * per_caller / (time.perf_counter() - started)

    async def events(self, body: bytes, count: int) -> float:
        """Events per second from the peer's publish to this side's receipt of the last one."""
        nc = self._conn()
        got = 0
        done = asyncio.Event()

        async def on_event(msg: nats.aio.msg.Msg) -> None:
            nonlocal got
            got += 1
            if got >= count:
                done.set()

        sub = await nc.subscribe(f"{self.prefix}.evt", cb=on_event)
        await nc.flush()
        started = time.perf_counter()
        await nc.request(f"{self.prefix}.emit", b"%d|" % count + body, timeout=30)
        await asyncio.wait_for(done.wait(), 30)
        took = time.perf_counter() - started
        await sub.unsubscribe()
        return count / took

    async def jobs(self, body: bytes, count: int) -> float:
        """Jobs per second, each published and confirmed, consumed, acked and reported done."""
        nc = self._conn()
        js = nc.jetstream()
        finished = 0
        done = asyncio.Event()

        async def on_done(msg: nats.aio.msg.Msg) -> None:
            nonlocal finished
            finished += 1
            if finished >= count:
                done.set()

        sub = await nc.subscribe(f"{self.prefix}.done", cb=on_done)
        await nc.flush()
        started = time.perf_counter()
        for n in range(count):
            key = b"%016d" % n
            await js.publish(f"{self.prefix}.jobs", key + body[_KEY:], timeout=10)
        await asyncio.wait_for(done.wait(), 60)
        took = time.perf_counter() - started
        await sub.unsubscribe()
        return count / took


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_peer(sys.argv[1], sys.argv[2]))
