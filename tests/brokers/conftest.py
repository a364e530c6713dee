"""Broker fixtures: the machine's NATS and RabbitMQ, a run-unique prefix, skip or fail.

Outside CI a missing broker skips its tests with a reason that says how to start it; with
``LLMPROTO_REQUIRE_BROKERS=1`` (``.ci/run`` sets it) a missing broker fails them instead
(shared/services.md). The URLs can be moved with ``LLMPROTO_NATS_URL`` and
``LLMPROTO_AMQP_URL``.
"""

from __future__ import annotations

import os
import secrets
import socket
from urllib.parse import urlsplit

import pytest

NATS_URL = os.environ.get("LLMPROTO_NATS_URL", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("LLMPROTO_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

_HOW_TO_START = {
    "NATS": "start it with: start-stop-daemon --start --oknodo --background "
    "--exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server",
    "RabbitMQ": "start it with: rabbitmq-server -detached",
}


def brokers_required() -> bool:
    """Whether a missing broker is a failure (CI) rather than a skip."""
    return os.environ.get("LLMPROTO_REQUIRE_BROKERS", "") not in ("", "0")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            return True
    except OSError:
        return False


def require_broker(name: str, url: str) -> str:
    """``url`` when its broker answers; else skip, or fail under LLMPROTO_REQUIRE_BROKERS."""
    if _reachable(url):
        return url
    message = f"{name} is not reachable at {url}; {_HOW_TO_START[name]}"
    if brokers_required():
        pytest.fail(f"LLMPROTO_REQUIRE_BROKERS=1: {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def nats_url() -> str:
    """The machine's NATS server (JetStream enabled)."""
    return require_broker("NATS", NATS_URL)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The machine's RabbitMQ server."""
    return require_broker("RabbitMQ", AMQP_URL)


@pytest.fixture
def run_id() -> str:
    """A prefix unique to one test, for its subjects, streams, exchanges and queues."""
    return f"t{secrets.token_hex(4)}"


@pytest.fixture
def anyio_backend() -> str:
    """The broker clients (nats-py, aio-pika) are asyncio libraries."""
    return "asyncio"
