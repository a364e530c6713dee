"""Hot-path cost of the envelope codec (shared/design.md section 7).

The default test run has benchmarks disabled (``--benchmark-disable`` in pyproject.toml), so
each function below runs once as a smoke test. To measure for real::

    pytest tests/benchmarks --benchmark-enable --benchmark-only

The budget: decoding, validating and re-encoding a typical ~700-byte ``llm.chat`` request
takes at most 10 µs median on the project's 2-core machines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from llmproto_ref import Envelope, decode, encode

TIME = "2026-03-14T09:26:53.589Z"


def _chat_request(messages: list[dict[str, str]]) -> Envelope:
    return Envelope(
        id="01928f6e-5c1a-7b3e-9d4f-2a6b8c0e1f3a",
        kind="request",
        type="llm.chat",
        source="svc://gateway/7",
        time=TIME,
        reply_to="_INBOX.gw7.Q2x9fLmN4pR8sT1v",
        deadline="2026-03-14T09:27:23.589Z",
        idempotency_key="chat-7f3a91c2-4",
        trace={
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "vendor=t61rcWkgMzE",
        },
        data={
            "model": "small-chat-2",
            "messages": messages,
            "max_tokens": 256,
            "temperature": 0.2,
            "stream": False,
        },
    )


TYPICAL = _chat_request(
    [
        {"role": "system", "content": "You are a concise weather assistant."},
        {"role": "user", "content": "Will it rain in Lisbon tomorrow afternoon?"},
        {"role": "assistant", "content": "Light rain is likely after 15:00."},
        {"role": "user", "content": "And on Saturday?"},
    ]
)
#: About 64 KiB: a long conversation, as a chat request with history carries it.
LARGE = _chat_request(
    [
        {"role": ("user", "assistant")[i % 2], "content": f"turn {i:03d} " + "lorem ipsum " * 40}
        for i in range(124)
    ]
)
TYPICAL_RAW = encode(TYPICAL)
LARGE_RAW = encode(LARGE)


def test_the_payloads_have_the_intended_sizes() -> None:
    """The typical envelope is about 700 bytes and the large one about 64 KiB."""
    assert 650 <= len(TYPICAL_RAW) <= 750
    assert 62 * 1024 <= len(LARGE_RAW) <= 66 * 1024


def _round_trip(raw: bytes) -> bytes:
    return encode(decode(raw))


CASES: dict[str, tuple[Callable[[Any], Any], Any, Any]] = {
    "encode-typical": (encode, TYPICAL, TYPICAL_RAW),
    "decode-typical": (decode, TYPICAL_RAW, TYPICAL),
    "decode-validate-encode-typical": (_round_trip, TYPICAL_RAW, TYPICAL_RAW),
    "encode-64k": (encode, LARGE, LARGE_RAW),
    "decode-64k": (decode, LARGE_RAW, LARGE),
    "decode-validate-encode-64k": (_round_trip, LARGE_RAW, LARGE_RAW),
}


@pytest.mark.parametrize("case", list(CASES))
def test_codec(benchmark: Any, case: str) -> None:
    """Time one codec operation and check that it still gives the right answer."""
    function, argument, expected = CASES[case]
    benchmark.group = case.rsplit("-", 1)[1]
    assert expected == benchmark(function, argument)
