"""The requirement sentences shipped with the conformance kit match the spec they quote."""

from __future__ import annotations

import json
from pathlib import Path

from llmproto_conformance._requirements import build, requirement_text, requirements

ROOT = Path(__file__).resolve().parents[1]


def test_requirements_json_is_generated_from_the_current_spec() -> None:
    """requirements.json equals a fresh build from spec/ (regenerate it when this fails)."""
    shipped = json.loads(
        (ROOT / "conformance/llmproto_conformance/requirements.json").read_text(encoding="utf-8")
    )
    fresh = build(ROOT / "spec")
    assert fresh == shipped, (
        "requirements.json is stale: run `python -m llmproto_conformance._requirements` "
        "from the repository root"
    )


def test_every_sentence_states_its_requirement_with_a_keyword() -> None:
    """Each quoted sentence holds an RFC 2119 keyword and no leftover ID tag."""
    texts = requirements()
    assert 100 < len(texts)
    for rid, text in texts.items():
        assert any(k in text for k in ("MUST", "SHOULD", "MAY", "REQUIRED", "SHALL")), rid
        assert f"[{rid}]" not in text
    assert "" == requirement_text("NOPE-999")
