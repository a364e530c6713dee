"""The public API: each package's ``__all__`` is complete, sorted and re-exports its modules.

The public names live in underscore modules and are re-exported by the package (anyio, httpx).
A module's ``__all__`` lists what the module offers the rest of the package; a name there that
the package does not re-export is listed below with the reason, so that leaving a name out is
a decision, not an accident.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import pytest

PACKAGES = ("llmproto_ref", "llmproto_conformance", "llmproto_nats", "llmproto_rabbitmq")

#: Underscore modules whose ``__all__`` is internal to the package, with the reason.
INTERNAL_MODULES = {
    "llmproto_ref._cli": "the console script's module; its API is the command line",
    "llmproto_ref._demo": "behind `llmproto demo`; its API is the command line",
    "llmproto_ref._pool": "the service's reusable handler tasks; Service is the API",
    "llmproto_ref._readers": "the tasks that read a service's subscriptions; Service is the API",
    "llmproto_ref._schemas": "jsonschema validators for tests and tools, off the hot path",
    "llmproto_ref._strictjson": "the codec's byte-level reader; decode() is the API",
    "llmproto_ref._validate": "the fast-path validator; Envelope and decode() are the API",
    "llmproto_conformance._traceability": "a repository tool behind `llmproto trace`",
    "llmproto_conformance._command": "behind `llmproto conformance`; its API is the command line",
    "llmproto_conformance._bench": "behind `llmproto bench`; its API is the command line",
    "llmproto_conformance._testee_command": "behind `llmproto conformance testee`",
    "llmproto_conformance._checks_core": "helpers; checks via catalogue()",
    "llmproto_conformance._checks_events": "checks, reached through catalogue()",
    "llmproto_conformance._checks_performance": "checks and their sizes, via catalogue()",
    "llmproto_conformance._checks_queue": "checks, reached through catalogue()",
    "llmproto_conformance._checks_rpc": "checks, reached through catalogue()",
    "llmproto_conformance._checks_stream": "checks, reached through catalogue()",
    "llmproto_conformance._checks_transport": "checks, reached through catalogue()",
    "llmproto_conformance._checks_transport_readers": "a check, reached through catalogue()",
    "llmproto_conformance._checks_transport_names": "checks, reached through catalogue()",
    "llmproto_conformance._checks_transport_queue": "checks, reached through catalogue()",
    "llmproto_conformance._checks_transport_limits": "checks, reached through catalogue()",
    "llmproto_conformance._transport_kit": "what the transport checks share, not checks",
    "llmproto_ref._clock": "wall-clock readings for the runtime; callers pass now_ms to the core",
    "llmproto_ref._replies": "reply builders the service uses; Service is the API",
    "llmproto_ref._serving": "the service's per-message behaviour; Service is the API",
    "llmproto_ref._memory_queue": "the memory transport's queues; MemoryTransport is the API",
    "llmproto_ref._bearer": "BearerPolicy and TokenClaims are re-exported; the rest is detail",
    "llmproto_ref._canonical": "the bytes a signature covers; canonicalize() is re-exported",
    "llmproto_ref._ed25519": "the Ed25519 backends behind Key (libsodium first, then OpenSSL)",
    "llmproto_ref._encryption": "Encrypter and decrypt are re-exported; the rest is detail",
    "llmproto_ref._keys": "Key, KeySet, KeyResolver and JwkSetFile are re-exported",
    "llmproto_ref._policy": "SecurityPolicy and Verified are re-exported; defaults are detail",
    "llmproto_ref._signing": "Signer is re-exported; the byte-level helpers are detail",
    "llmproto_conformance._checks_security": "helpers; checks via catalogue()",
    "llmproto_conformance._checks_security_exchanges": "checks, reached through catalogue()",
    "llmproto_conformance._faults_security": "the secure testee's faults; faulty() is the API",
    "llmproto_conformance._security_kit": "the secure testee's setup from the published test keys",
    "llmproto_conformance._hostile_corpus": "the corpus; hostile_corpus() is re-exported",
    "llmproto_conformance._native": "behind `llmproto bench --native`; its API is the command line",
    "llmproto_conformance._native_nats": "the native NATS peer behind `llmproto bench --native`",
    "llmproto_conformance._peer_process": "starts the processes behind `llmproto bench --native`",
    "llmproto_conformance._native_amqp": "the native AMQP peer behind `llmproto bench --native`",
    "llmproto_nats._errors": "the adapter's exception mapping; TransportError is the API",
    "llmproto_rabbitmq._declare": "queue declarations and dedup memory; the transport is the API",
    "llmproto_rabbitmq._errors": "the client-error translation; TransportError is the API",
    "llmproto_rabbitmq._job": "one delivery of a job; RabbitMQTransport.consume() hands them out",
    "llmproto_rabbitmq._link": "the connection that reconnects; RabbitMQTransport is the API",
    "llmproto_rabbitmq._queue": "the consumer of a work queue; consume() is the API",
    "llmproto_rabbitmq._stats": "the mutable counters behind RabbitMQTransport.stats",
    "llmproto_rabbitmq._subscription": "subscriptions; the transport operations are the API",
}

#: Single names of otherwise public modules that stay internal, with the reason.
NOT_REEXPORTED = {
    "llmproto_ref._ids.format_timestamp": "Deadline's wire form; now_timestamp() is the API",
    "llmproto_ref._ids.parse_timestamp_ms": "Deadline's parser; Deadline is the API",
    "llmproto_ref._metrics.quantile": "the nearest-rank helper behind Figures.summary()",
    "llmproto_conformance._requirements.build": "regenerates requirements.json from a checkout",
    "llmproto_conformance._reports.CATEGORY_LABELS": "display labels of the reports",
    "llmproto_conformance._reports.category": "display grouping of the reports",
    "llmproto_conformance._reports.format_wire": "the reports' wire-log layout",
    "llmproto_conformance._reports.printable": "the reports' escaping of hostile text",
    "llmproto_conformance._reports.render_html": "write_reports() is the API",
    "llmproto_conformance._reports.render_json": "write_reports() is the API",
    "llmproto_conformance._reports.render_junit": "write_reports() is the API",
}


def _sort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 (isort-style) order: CONSTANTS, then Classes, then functions."""
    if name.isupper() or re.fullmatch(r"[A-Z0-9_]+", name):
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


def _underscore_modules(package: ModuleType) -> list[ModuleType]:
    found = []
    for info in pkgutil.iter_modules(package.__path__, prefix=f"{package.__name__}."):
        if info.name.rpartition(".")[2].startswith("_"):
            found.append(importlib.import_module(info.name))
    return found


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_a_sorted_tuple_of_existing_names(name: str) -> None:
    """``__all__`` is a tuple in RUF022 order, without duplicates, of names that exist."""
    package = importlib.import_module(name)
    exported = package.__all__
    assert isinstance(exported, tuple)
    assert sorted(exported, key=_sort_key) == list(exported)
    assert len(set(exported)) == len(exported)
    assert [] == [n for n in exported if not hasattr(package, n)]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_attribute_is_in_all(name: str) -> None:
    """A public name the package defines or imports is listed in ``__all__``."""
    package = importlib.import_module(name)
    public = {
        attribute
        for attribute, value in vars(package).items()
        if not attribute.startswith("_")
        and not isinstance(value, ModuleType)
        and attribute != "annotations"  # bound by `from __future__ import annotations`
    }
    assert set() == public - set(package.__all__)


@pytest.mark.parametrize("name", PACKAGES)
def test_underscore_modules_are_re_exported(name: str) -> None:
    """Every name in an underscore module's ``__all__`` is the package's, or listed as internal."""
    package = importlib.import_module(name)
    missing = []
    for module in _underscore_modules(package):
        if module.__name__ in INTERNAL_MODULES:
            continue
        for attribute in getattr(module, "__all__", ()):
            qualified = f"{module.__name__}.{attribute}"
            if qualified in NOT_REEXPORTED:
                continue
            if getattr(package, attribute, None) is not getattr(module, attribute):
                missing.append(qualified)
    hint = f"re-export these in {name}/__init__.py, or list them in {__name__} with a reason"
    assert [] == missing, "\n".join([hint, *missing])


def test_internal_listings_are_not_stale() -> None:
    """Each listed module exists and each listed name exists and is indeed not re-exported."""
    for module_name in INTERNAL_MODULES:
        importlib.import_module(module_name)
    stale = []
    for qualified in NOT_REEXPORTED:
        module_name, _, attribute = qualified.rpartition(".")
        module = importlib.import_module(module_name)
        package = importlib.import_module(module_name.partition(".")[0])
        if attribute not in module.__all__ or attribute in package.__all__:
            stale.append(qualified)
    assert [] == stale


def test_the_version_is_the_distribution_version() -> None:
    """``llmproto_ref.__version__`` matches pyproject.toml's version."""
    import tomllib
    from pathlib import Path

    import llmproto_ref

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    assert version == llmproto_ref.__version__
