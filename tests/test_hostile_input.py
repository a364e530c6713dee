"""Hostile input on memory://: the whole corpus published raw to a running reference service.

The corpus (``llmproto_conformance._hostile_corpus``) names for every input what the spec
prescribes; :func:`test_decoder_agrees` checks the reference decoder against it input by input
[ENV-039], and :func:`test_hostile_memory` publishes every input to a running
:class:`~llmproto_ref.Service` while valid requests keep flowing: each input gets its error reply
with the right code, pointer and requirement when a reply address can be read [ENV-036], or is
dropped and counted [ENV-038]; an error is never answered [RR-005]; no handler runs for a
rejected message and every valid request is answered [ENV-037].

Two kinds of input are run on their own, as strict expected failures of the reference runtime
(see the lead's report): a body whose only reply address is its valid ``reply_to`` member, which
ENV-036 says to answer there, and a message of another kind without a reply address, which the
runtime counts as rejected although it could not answer it. The faults of the conformance kit
show that the run notices a service that answers wrongly.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import pytest

from llmproto_conformance import faulty
from llmproto_conformance._hostile import HostileReport, run_hostile
from llmproto_conformance._hostile_corpus import (
    DROPPED,
    REPLY_PLACEHOLDER,
    SIGNATURE_KID,
    categories,
    hostile_corpus,
    signatures_available,
    valid_bodies,
)
from llmproto_ref import (
    EnvelopeError,
    MemoryBroker,
    MemoryTransport,
    Transport,
    decode,
)

CORPUS = hostile_corpus(signatures=False)


@pytest.fixture
def broker() -> Iterator[str]:
    """A memory broker of this test's own, forgotten afterwards."""
    name = f"hostile-{secrets.token_hex(4)}"
    yield name
    MemoryBroker.reset(name)


def _memory(name: str) -> Callable[[], Transport]:
    return lambda: MemoryTransport(name)


# -- the corpus -------------------------------------------------------------------------------


def test_corpus_is_large_named_and_deterministic() -> None:
    """At least 500 inputs in every category of issue 7, unique names, the same every build."""
    assert len(CORPUS) >= 500
    assert len({item.name for item in CORPUS}) == len(CORPUS)
    assert [(i.name, i.body) for i in CORPUS] == [(i.name, i.body) for i in hostile_corpus(
        signatures=False)]  # fmt: skip
    counts = categories(CORPUS)
    for category in ("json-syntax", "utf8", "numbers", "envelope", "security-shape",
                     "duplicates", "depth", "size", "kinds", "no-reply"):  # fmt: skip
        assert counts.get(category, 0) > 0, category
    assert counts["json-syntax"] + counts["utf8"] + counts["numbers"] >= 300
    assert sum(not item.reply_address for item in CORPUS) >= 200
    assert sum(item.expect == DROPPED for item in CORPUS) >= 200


def test_corpus_cites_defined_requirements() -> None:
    """Every requirement an input exercises or a rejection may name is defined in spec/."""
    from llmproto_conformance import requirements

    defined = set(requirements())
    cited = {item.requirement for item in CORPUS} | {r for i in CORPUS for r in i.cites}
    cited |= {valid.requirement for valid in valid_bodies()}
    assert cited <= defined, sorted(cited - defined)


def test_signature_category_is_separate() -> None:
    """The bad-signature inputs appear only when asked for, or when signatures are verified."""
    with_sigs = hostile_corpus(signatures=True)
    assert "signatures" not in categories(CORPUS)
    assert categories(with_sigs)["signatures"] >= 8
    assert ("signatures" in categories(hostile_corpus())) is signatures_available()


def test_decoder_agrees() -> None:
    """decode rejects each input with the code, pointer and requirement the corpus names
    [ENV-039]; the inputs that decode are messages of another kind [RR-005]."""
    wrong: list[str] = []
    for item in CORPUS:
        body = item.body.replace(REPLY_PLACEHOLDER.encode(), b"_INBOX.test.1")
        try:
            decode(body)
        except EnvelopeError as exc:
            got = (str(exc.code), exc.pointer)
            if got != (item.code, item.pointer) or exc.requirement not in item.cites:
                wrong.append(f"{item.name}: {exc}, expected {item.code} at {item.pointer!r} "
                             f"under {item.cites}")  # fmt: skip
            continue
        if item.pointer is not None:
            wrong.append(f"{item.name}: decoded, expected {item.code} at {item.pointer!r}")
    assert not wrong, "\n".join(wrong)


def test_valid_bodies_decode() -> None:
    """The valid bodies at the limits decode, the one at the size limit exactly 1 MiB long."""
    for valid in valid_bodies():
        body = valid.make("t.hostile.echo", "_INBOX.test.1")
        decode(body)
        if valid.name == "size-at-limit":
            assert len(body) == 1_048_576


# -- over the wire ----------------------------------------------------------------------------


def _assert_ok(report: HostileReport) -> None:
    assert report.ok, report.summary()


@pytest.mark.anyio
async def test_hostile_memory(broker: str) -> None:
    """Every input, with valid requests in between: all answered or dropped as the spec says
    (a valid reply_to member is an address too) [ENV-036, ENV-037, ENV-038, RR-005]; over the
    transport's max_payload, refused [TRN-024]; and in well under a minute."""
    inputs = CORPUS
    started = time.monotonic()
    report = await run_hostile(_memory(broker), inputs=inputs)
    _assert_ok(report)
    outcomes = {r.outcome for r in report.results}
    assert outcomes == {"answered", "dropped", "refused"}, report.summary()
    assert len(report.results) == len(inputs)
    assert report.valid_sent >= len(inputs) // 8
    assert report.counters["rejected"] == sum(r.outcome == "answered" for r in report.results)
    assert report.counters["dropped"] == sum(r.outcome == "dropped" for r in report.results)
    assert time.monotonic() - started < 30


@pytest.mark.anyio
async def test_bad_signatures(broker: str) -> None:
    """Well-formed signatures that a verifying service refuses, each at its step of the
    verification order [SEC-007, SEC-008, SEC-009, SEC-012, SEC-013, SEC-014, SEC-016, SEC-017]."""
    if not signatures_available():
        pytest.skip("Service(..., security=) is not wired yet (issue 'Security')")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from llmproto_ref._keys import Key, KeySet
    from llmproto_ref._policy import SecurityPolicy

    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    key = Key.ed25519(SIGNATURE_KID, public=public.public_bytes(Encoding.Raw, PublicFormat.Raw))
    inputs = [i for i in hostile_corpus(signatures=True) if i.category == "signatures"]
    report = await run_hostile(
        _memory(broker), inputs=inputs, service_options={"security": SecurityPolicy(
            keys=KeySet([key]))},
    )  # fmt: skip
    _assert_ok(report)


# -- the run notices faults -------------------------------------------------------------------

#: A small, mixed selection: every 31st input, and every one a fault below needs to show.
SAMPLE = [
    item
    for index, item in enumerate(CORPUS)
    if index % 31 == 0 or item.category in ("kinds", "size") or "/unknown-" in item.name
]
#: Faults of the conformance kit that a service with them shows on hostile input.
FAULTS = ("wrong-error-code", "wrong-retryable", "no-pointer-detail", "wrong-correlation",
          "wrong-reply-type", "duplicate-reply", "lenient-members", "answers-errors",
          "no-reply-address", "oversize-accepted", "crash-on-malformed")  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize("fault", FAULTS)
async def test_hostile_notices_fault(broker: str, fault: str) -> None:
    """With the fault in the service's transport, the same inputs no longer pass."""
    assert {"json-syntax", "kinds", "size", "no-reply", "envelope"} <= categories(SAMPLE).keys()
    inputs = SAMPLE[:8] if fault == "crash-on-malformed" else SAMPLE  # the rest would time out
    report = await run_hostile(
        _memory(broker), inputs=inputs, timeout_s=0.3,
        service_factory=lambda: faulty(MemoryTransport(broker), fault),
    )  # fmt: skip
    assert not report.ok, f"{fault} went unnoticed: {report.summary()}"
