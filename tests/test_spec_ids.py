"""Structure of the spec text: every requirement sentence carries exactly one well-formed ID.

spec/README.md (section Requirement IDs) states the rules this file checks:
an upper-case RFC 2119 keyword outside code makes a sentence, list item or table row normative,
and a normative unit ends with its tag ``[AREA-NNN]``; a tag is defined by exactly one unit in
all of spec/; notes are not normative; plain mentions of an ID (without brackets) refer to a
defined one. Keywords and tags inside code spans and fenced blocks are quotations, not requirements.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "spec"

KEYWORD = re.compile(r"\b(MUST|SHALL|SHOULD|REQUIRED|RECOMMENDED|MAY|OPTIONAL)\b")
#: Anything that looks like a tag, well-formed or not, such as ``[ENV-3]`` or ``[ENVELOPE-001]``.
TAG_LIKE = re.compile(r"\[([A-Z][A-Z0-9]*-[0-9]+)\]")
ID = re.compile(r"^[A-Z]{2,5}-[0-9]{3}$")
MENTION = re.compile(r"\b([A-Z]{2,5}-[0-9]{3})\b")

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|[0-9]+[.)])\s+")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_ABBREVIATIONS = ("e.g.", "i.e.", "cf.", "etc.", "vs.")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_AREA_ROW = re.compile(r"^\|\s*`([A-Z]{2,5})`\s*\|")


@dataclass(frozen=True, slots=True)
class Unit:
    """A sentence, list-item sentence, table row or heading of the spec, code spans removed."""

    file: str  #: path relative to spec/
    line: int  #: 1-based line where the paragraph, item or row starts
    text: str
    note: bool  #: part of a note: from a sentence starting with "Note:" to the end of its block

    @property
    def where(self) -> str:
        """``file:line`` for messages."""
        return f"{self.file}:{self.line}"


def spec_files() -> list[Path]:
    """Every Markdown file under spec/, in a stable order."""
    return sorted(SPEC.rglob("*.md"))


def _sentences(text: str) -> list[str]:
    protected = text
    for abbreviation in _ABBREVIATIONS:
        protected = protected.replace(abbreviation, abbreviation.replace(".", "\0"))
    parts = _SENTENCE_END.split(protected)
    return [part.replace("\0", ".") for part in parts if part.strip()]


def units(path: Path, root: Path = SPEC) -> list[Unit]:
    """Split one Markdown file into the units the ID rules apply to.

    :param root: the directory that unit file names are relative to.
    """
    name = path.relative_to(root).as_posix()
    found: list[Unit] = []
    block: list[str] = []
    block_line = 0
    fence = ""

    def flush() -> None:
        if not block:
            return
        text = _CODE_SPAN.sub(" code ", " ".join(part.strip() for part in block))
        note = False
        for sentence in _sentences(text):
            note = note or sentence.startswith("Note:")  # a note runs to the end of its block
            found.append(Unit(name, block_line, sentence, note))
        block.clear()

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        opening = _FENCE.match(raw)
        if fence:
            if raw.strip().startswith(fence) and set(raw.strip()) == {fence[0]}:
                fence = ""
            continue
        if opening is not None:
            flush()
            fence = opening.group(1)
            continue
        line = raw.lstrip()
        while line.startswith(">"):
            line = line[1:].lstrip()
        if not line:
            flush()
        elif line.startswith(("|", "#")):
            flush()
            found.append(Unit(name, number, _CODE_SPAN.sub(" code ", line), False))
        elif _LIST_ITEM.match(line):
            flush()
            block_line = number
            block.append(_LIST_ITEM.sub("", line, count=1))
        else:
            if not block:
                block_line = number
            block.append(line)
    flush()
    return found


def all_units() -> list[Unit]:
    """The units of every spec file."""
    return [unit for path in spec_files() for unit in units(path)]


def areas() -> frozenset[str]:
    """The requirement areas listed in spec/README.md's table of areas."""
    text = (SPEC / "README.md").read_text(encoding="utf-8")
    return frozenset(m.group(1) for line in text.splitlines() if (m := _AREA_ROW.match(line)))


def definitions() -> Counter[str]:
    """How often each tag occurs in the spec text (code excluded)."""
    return Counter(tag for unit in all_units() for tag in TAG_LIKE.findall(unit.text))


def _withdrawn(unit: Unit) -> bool:
    return "Withdrawn" in unit.text


def test_spec_has_units() -> None:
    """The splitter finds the spec's text, so the checks below are not vacuous."""
    normative = [unit for unit in all_units() if KEYWORD.search(unit.text)]
    assert len(normative) >= 60


def test_normative_units_tagged() -> None:
    """Every sentence, item or row with an RFC 2119 keyword carries exactly one tag."""
    problems = [
        f"{unit.where}: {unit.text}"
        for unit in all_units()
        if not unit.note and KEYWORD.search(unit.text) and len(TAG_LIKE.findall(unit.text)) != 1
    ]
    assert not problems, "\n".join(problems)


def test_notes_not_normative() -> None:
    """Notes carry neither RFC 2119 keywords nor requirement tags."""
    problems = [
        f"{unit.where}: {unit.text}"
        for unit in all_units()
        if unit.note and (KEYWORD.search(unit.text) or TAG_LIKE.search(unit.text))
    ]
    assert not problems, "\n".join(problems)


def test_tags_define_requirements() -> None:
    """A tag appears only on a normative unit (or on a withdrawn requirement's entry)."""
    problems = [
        f"{unit.where}: {unit.text}"
        for unit in all_units()
        if TAG_LIKE.search(unit.text) and not KEYWORD.search(unit.text) and not _withdrawn(unit)
    ]
    assert not problems, "\n".join(problems)


def test_tags_well_formed() -> None:
    """Every tag is AREA-NNN with an area listed in spec/README.md."""
    known = areas()
    assert {"ENV", "ERR", "SEC", "PAT", "VER"} <= known
    problems = [
        tag for tag in definitions() if ID.match(tag) is None or tag.split("-")[0] not in known
    ]
    assert not problems, "\n".join(problems)


def test_ids_defined_once() -> None:
    """No requirement ID is defined twice anywhere in spec/."""
    repeated = sorted(tag for tag, count in definitions().items() if count > 1)
    assert not repeated, repeated


def test_mentions_resolve() -> None:
    """Every mention of an ID of a listed area, code and examples included, is defined."""
    known = areas()
    defined = set(definitions())
    problems: list[str] = []
    for path in spec_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for mention in MENTION.findall(line):
                if mention.split("-")[0] in known and mention not in defined:
                    problems.append(f"{path.name}:{number}: {mention}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("Receivers MUST reject it [ENV-003].\n", ["Receivers MUST reject it [ENV-003]."]),
        ("A sender SHOULD\nsplit [ENV-012].\n", ["A sender SHOULD split [ENV-012]."]),
        ("One, e.g. this. Two MAY [ENV-001].\n", ["One, e.g. this.", "Two MAY [ENV-001]."]),
        ("Quote `MUST` here.\n", ["Quote  code  here."]),
        ("- item MUST [PAT-001]\n- next\n", ["item MUST [PAT-001]", "next"]),
        ('```json\n{"a": "MUST"}\n```\n', []),
    ],
)
def test_splitter(tmp_path: Path, markdown: str, expected: list[str]) -> None:
    """The splitter cuts paragraphs into sentences and list items, and skips code."""
    page = tmp_path / "page.md"
    page.write_text(markdown, encoding="utf-8")
    assert expected == [unit.text for unit in units(page, tmp_path)]
