"""``llmproto bench --native`` on NATS: both sides measured in one run, across processes."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from llmproto_conformance._native import NativeRun, native_supported, run_native

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("broker", ["nats", "amqp"])
async def test_a_short_native_run_measures_every_pattern(
    broker: str, request: pytest.FixtureRequest
) -> None:
    """Each measurement has a raw and an llmproto figure per round, and a ratio [MET-003]."""
    url = request.getfixturevalue(f"{broker}_url")
    run = await run_native(url, rounds=2, in_flight=8, scale=0.1)
    summary = run.summary()
    assert {"rr_1", "rr_8", "events", "jobs"} == set(summary)
    for name, row in summary.items():
        assert 2 == row["rounds"], name
        assert row["raw_per_s"] > 0
        assert row["llmproto_per_s"] > 0
        assert 0 < row["ratio"] < 10


async def test_signed_round_trips_are_measured_beside_unsigned(nats_url: str) -> None:
    """--signed adds Ed25519-signed, token-carrying round trips to the secure testee [SEC-005]."""
    run = await run_native(nats_url, rounds=1, in_flight=4, scale=0.1, signed=True)
    summary = run.summary()
    assert {"rr_1_signed", "rr_4_signed"} <= set(summary)
    assert summary["rr_1_signed"]["llmproto_per_s"] > 0


def test_the_summary_is_the_median_of_per_round_ratios() -> None:
    """Ratios pair rounds: a noisy round moves one ratio, not the median."""
    run = NativeRun(url="nats://x", in_flight=64)
    for raw, mine in ((100.0, 50.0), (200.0, 90.0), (10.0, 9.0)):
        run.add("rr_1", raw, mine)
    row = run.summary()["rr_1"]
    assert 0.5 == row["ratio"]  # ratios 0.5, 0.45, 0.9
    assert 100.0 == row["raw_per_s"]
    assert 50.0 == row["llmproto_per_s"]


def test_only_brokers_with_a_native_peer_are_offered() -> None:
    assert native_supported("nats://127.0.0.1:4222")
    assert native_supported("amqp://guest:guest@127.0.0.1:5672/")
    assert not native_supported("memory://")


def test_the_command_prints_json(nats_url: str) -> None:
    """``llmproto bench --native --json`` runs end to end in its own process."""
    done = subprocess.run(
        [sys.executable, "-m", "llmproto_ref._cli", "bench", "--transport", nats_url,
         "--native", "--rounds", "1", "--in-flight", "4", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert 0 == done.returncode, done.stderr
    document = orjson.loads(done.stdout)
    assert {"rr_1", "rr_4", "events", "jobs"} == set(document["summary"])


def test_native_needs_a_broker_url() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llmproto_ref._cli", "bench", "--native"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert 2 == done.returncode
    assert "--native needs --transport nats://... or amqp://..." in done.stderr
