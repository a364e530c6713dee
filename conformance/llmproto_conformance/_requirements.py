"""The requirement sentences the reports quote, shipped as data.

``requirements.json`` maps each requirement ID to its sentence in spec/; it is generated from
the spec by :func:`build` (``python -m llmproto_conformance._requirements``), and a test fails
when the shipped file and the spec differ, so a report always quotes the spec it was built from.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
import sys
from pathlib import Path

__all__ = ("build", "requirement_text", "requirements")

_TAG = re.compile(r"\[([A-Z]{2,5}-[0-9]{3})\]")
_KEYWORD = re.compile(r"\b(MUST|SHALL|SHOULD|MAY|REQUIRED|RECOMMENDED|OPTIONAL)\b")


def build(spec_dir: Path) -> dict[str, str]:
    """Each tagged requirement in ``spec_dir``'s Markdown, as one line of text, by ID."""
    found: dict[str, str] = {}
    for path in sorted(spec_dir.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # examples carry no requirements
        for paragraph in _items(text):
            flat = " ".join(line.strip() for line in paragraph.splitlines())
            for sentence in re.split(r"(?<=\])[.;]?\s+(?=[A-Z`*|])|(?<=\.)\s+(?=[A-Z])", flat):
                outside_code = re.sub(r"`[^`]*`", "", sentence)  # mentions, not definitions
                for rid in _TAG.findall(outside_code):
                    if _KEYWORD.search(outside_code) and rid not in found:
                        clean = _TAG.sub("", sentence).strip(" |-*").strip()
                        found[rid] = re.sub(r"\s+([.;,])", r"\1", re.sub(r"\s+", " ", clean))
    return dict(sorted(found.items()))


_ITEM_START = re.compile(r"^\s*(?:[-*+]\s|\d+\.\s|\|)")


def _items(text: str) -> list[str]:
    """Paragraphs, with each list item and table row on its own."""
    items: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        current: list[str] = []
        for line in paragraph.splitlines():
            if _ITEM_START.match(line) and current:
                items.append("\n".join(current))
                current = []
            current.append(line)
        if current:
            items.append("\n".join(current))
    return items


@functools.cache
def requirements() -> dict[str, str]:
    """The shipped requirement sentences, by ID."""
    resource = importlib.resources.files("llmproto_conformance").joinpath("requirements.json")
    loaded: dict[str, str] = json.loads(resource.read_text(encoding="utf-8"))
    return loaded


def requirement_text(rid: str) -> str:
    """The sentence of requirement ``rid``, or ``""`` if the spec has none by that ID."""
    return requirements().get(rid, "")


if (
    __name__ == "__main__"
):  # regenerate from a checkout: python -m llmproto_conformance._requirements
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    target = Path(__file__).with_name("requirements.json")
    body = json.dumps(build(root / "spec"), indent=1, ensure_ascii=False) + "\n"
    target.write_text(body, encoding="utf-8")
    print(f"wrote {target}")
