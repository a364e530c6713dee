"""A helper process that announces itself on standard output: started, awaited, stopped.

``llmproto bench --native`` starts two kinds: the reference testee and a native-client peer.
Each prints one line once it serves; :class:`PeerProcess` waits for that line (bounded), and
stops the process (SIGTERM, then waits) and closes its pipe, also when starting failed.
"""

from __future__ import annotations

import subprocess
import sys

import anyio

__all__ = ("PeerProcess",)

_START_S = 30.0  #: longest wait for the ready line
_STOP_S = 10.0  #: longest wait for the process to end after SIGTERM


class PeerProcess:
    """``python -m <module> <args>``, ready once a line containing ``ready`` is printed."""

    def __init__(self, module: str, *args: str, ready: str, what: str) -> None:
        self._command = [sys.executable, "-m", module, *args]
        self._ready = ready
        self._what = what
        self._process: subprocess.Popen[str] | None = None

    async def start(self) -> None:
        """Start the process and wait for its ready line.

        :raises RuntimeError: when it prints something else first, or exits.
        """
        self._process = subprocess.Popen(  # noqa: S603 - our own modules, fixed arguments
            self._command, stdout=subprocess.PIPE, text=True
        )
        stdout = self._process.stdout
        if stdout is None:  # pragma: no cover - PIPE always gives one
            raise RuntimeError(f"{self._what} has no standard output")
        try:
            with anyio.fail_after(_START_S):
                line = await anyio.to_thread.run_sync(stdout.readline)
            if self._ready not in line:
                raise RuntimeError(f"{self._what} did not start: {line!r}")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the process and close its pipe; a process never started is fine."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        await anyio.to_thread.run_sync(process.wait, _STOP_S)
        if process.stdout is not None:
            process.stdout.close()
