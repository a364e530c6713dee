"""The signed, tokened and encrypted examples of the spec are real (spec/security.md, Examples).

tests/test_spec_examples.py checks that every example decodes; this test checks that the
security examples also pass the security checks with the published test keys: their signatures
verify [SEC-004, SEC-005], their bearer token is valid for the worker with the scope llm.chat
[SEC-028, SEC-031], the encrypted example decrypts to the plain one's payload [SEC-035], and
a second delivery is a replay [SEC-021].
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmproto_ref import Envelope, decode
from llmproto_ref._bearer import BearerPolicy
from llmproto_ref._ids import parse_timestamp_ms
from llmproto_ref._keys import KeySet
from llmproto_ref._policy import SecurityPolicy
from llmproto_ref._security_error import SecurityError
from test_security_vector_build import AUDIENCE, CEK, ISSUER, ISSUER_URL, published_keys

SPEC = Path(__file__).resolve().parents[1] / "spec"
_BLOCK = re.compile(r"```json envelope( understood=enc)?\n(.*?)```", re.DOTALL)
KEYS = KeySet.from_jwk_set(published_keys())


def _signed_examples() -> list[tuple[str, Envelope]]:
    found = []
    for name in ("security.md", "security-fields.md"):
        for match in _BLOCK.finditer((SPEC / name).read_text(encoding="utf-8")):
            envelope = decode(match.group(2).encode(), understood=frozenset({"enc"}))
            if envelope.sig is not None:
                found.append((name, envelope))
    return found


EXAMPLES = _signed_examples()


def _policy(now: int) -> SecurityPolicy:
    public = KeySet(k.public_key() for k in KEYS if k.alg in ("EdDSA", "HS256"))
    bearer = BearerPolicy(
        audience=AUDIENCE,
        issuers=frozenset({ISSUER_URL}),
        required=False,
        keys=KeySet([k.public_key() for k in KEYS if k.kid == ISSUER]),
        scopes={"llm.chat": frozenset({"llm.chat"})},
    )
    decrypting = KeySet([k for k in KEYS if k.kid == CEK])
    return SecurityPolicy(keys=public, bearer=bearer, decryption_keys=decrypting, clock=lambda: now)


def test_the_spec_has_three_signed_examples() -> None:
    """security-fields.md signs a tool request; security.md a request, plain and encrypted."""
    assert 3 == len(EXAMPLES)


@pytest.mark.parametrize(
    ("name", "envelope"), EXAMPLES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(EXAMPLES)]
)
def test_a_signed_example_verifies_once(name: str, envelope: Envelope) -> None:
    """Ten seconds after signing the example is accepted, and a second time it is a replay."""
    assert envelope.sig is not None
    policy = _policy(parse_timestamp_ms(envelope.sig["created"]) + 10_000)
    verified = policy.check(envelope, 1000)
    assert verified.signer is not None
    assert verified.signer.kid == envelope.sig["kid"]
    if envelope.type == "llm.chat":
        assert verified.token is not None
        assert "llm.chat" in verified.token.scopes
        assert "user:alice" == verified.token.subject
        assert {"model": "small-chat-1", "messages": [{"role": "user", "content": "Hello"}]} == (
            verified.envelope.data
        )
    with pytest.raises(SecurityError, match="replay"):
        policy.check(envelope, 1000)


def test_the_jwk_set_example_holds_published_keys() -> None:
    """The JWK set in section Keys parses and its keys are the published ones [SEC-039]."""
    text = (SPEC / "security.md").read_text(encoding="utf-8")
    block = text.split("```json\n", 1)[1].split("```", 1)[0]
    shown = KeySet.from_jwk_set(json.loads(block))
    for key in shown:
        published = KEYS.resolve(key.kid)
        assert published is not None
        assert published.public_key() == key
