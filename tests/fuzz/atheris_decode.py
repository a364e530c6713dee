"""An atheris (libFuzzer) target for ``llmproto_ref.decode``, for long coverage-guided runs.

The property is that of ``tests/test_fuzz_decode.py``: whatever the bytes, ``decode`` raises
nothing but ``EnvelopeError`` [ENV-039], and an envelope it accepts survives ``encode`` and a
second ``decode`` unchanged. pytest does not collect this file (its name does not start with
``test_``), and atheris, which is optional, is imported only when the file runs as a script::

    pip install atheris
    python tests/fuzz/atheris_decode.py --export-seeds /tmp/llmp-seeds   # hostile corpus as seeds
    python tests/fuzz/atheris_decode.py -max_len=65536 -atheris_runs=10000000 /tmp/llmp-seeds

Any libFuzzer option may follow; a crash leaves its input in ``crash-*`` for a regression test.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from llmproto_ref import EnvelopeError, decode, encode


def fuzz_one_input(data: bytes) -> None:
    """One input: only ``EnvelopeError`` may escape, and what decodes must round-trip."""
    try:
        envelope = decode(data)
    except EnvelopeError:
        return
    if decode(encode(envelope)) != envelope:
        raise AssertionError("an accepted envelope changed on encode and decode")


def export_seeds(directory: Path) -> int:
    """Write the hostile corpus and the valid bodies at the limits as seed files; how many."""
    from llmproto_conformance._hostile_corpus import hostile_corpus, valid_bodies

    directory.mkdir(parents=True, exist_ok=True)
    bodies = [item.body for item in hostile_corpus(signatures=True)]
    bodies += [valid.make("fuzz.echo", "_INBOX.fuzz.1") for valid in valid_bodies()]
    for index, body in enumerate(bodies):
        (directory / f"seed-{index:05d}").write_bytes(body)
    return len(bodies)


def main(argv: list[str]) -> int:
    """``--export-seeds DIR``, or run the fuzzer with libFuzzer's arguments."""
    if len(argv) == 3 and argv[1] == "--export-seeds":
        print(f"wrote {export_seeds(Path(argv[2]))} seeds to {argv[2]}")
        return 0
    try:
        atheris = importlib.import_module("atheris")  # optional: no stubs, no hard dependency
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    atheris.instrument_all()  # llmproto_ref is imported already; instrument what is loaded
    atheris.Setup(argv, fuzz_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
