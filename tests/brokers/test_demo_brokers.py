"""``llmproto demo`` runs every scenario on the real brokers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from brokers.conftest import AMQP_URL, NATS_URL, require_broker


@pytest.mark.parametrize(
    ("broker", "url"), [("NATS", NATS_URL), ("RabbitMQ", AMQP_URL)], ids=["nats", "amqp"]
)
def test_the_demo_runs_all_scenarios(broker: str, url: str) -> None:
    """Request-response, streams with cancel, events, deadlines and errors, queue [MET-001]."""
    require_broker(broker, url)
    done = subprocess.run(
        [sys.executable, "-m", "llmproto_ref._cli", "demo", "--transport", url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert 0 == done.returncode, done.stdout + done.stderr
    assert "all scenarios ran as designed" in done.stdout
    for scenario in ("(a)", "(b)", "(c)", "(d)"):
        assert scenario in done.stdout
