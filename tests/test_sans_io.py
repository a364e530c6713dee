"""The protocol core is sans-IO: it imports no event loop, broker client or socket library."""

from __future__ import annotations

import json
import subprocess
import sys

#: Top-level modules the core must not import, even indirectly.
BLOCKED = ("anyio", "trio", "asyncio", "nats", "aio_pika", "socket")

PROGRAM = """
import importlib.abc
import json
import sys

BLOCKED = frozenset(sys.argv[1].split(","))


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"the sans-IO core imported {name}")
        return None


already = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
sys.meta_path.insert(0, Blocker())

import llmproto_ref

envelope = llmproto_ref.Envelope.new(
    kind="request", type="llm.chat", source="svc://gateway", reply_to="_INBOX.a",
    data={"messages": [{"role": "user", "content": "hi"}]},
)
raw = llmproto_ref.encode(envelope)
assert llmproto_ref.decode(raw) == envelope
try:
    llmproto_ref.decode(b"[]")
except llmproto_ref.EnvelopeError as exc:
    assert exc.requirement == "ENV-001"
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
print(json.dumps({"already": already, "loaded": loaded}))
"""


def test_the_core_imports_and_works_with_io_libraries_blocked() -> None:
    """Importing llmproto_ref, encoding and decoding succeed with the I/O modules blocked."""
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, ",".join(BLOCKED)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (0, "") == (done.returncode, done.stderr)
    assert {"already": [], "loaded": []} == json.loads(done.stdout)
