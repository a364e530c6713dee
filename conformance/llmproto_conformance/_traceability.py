"""Which spec requirements the project checks, and where (the traceability table).

Theory of operation
-------------------
A requirement is *defined* where its ID, written ``[AREA-NNN]``, tags a sentence of ``spec/**/*.md``
that holds an upper-case RFC 2119 keyword; the strongest keyword in that sentence is its level.
An ID in a sentence without a keyword is a reference, not a definition.

A requirement is *cited* where its ID appears in a test (``tests/**/*.py``), in a vector's
``requirement`` field (``conformance/llmproto_conformance/vectors/**/*.json``) or in the
conformance kit's code (``conformance/llmproto_conformance/**/*.py``, this module aside).
A requirement that nothing here can check (a runtime or deployment rule, until the conformance
kit lands) is *excluded* in ``spec/traceability-exclusions.toml`` with a reason.

Only IDs of the known areas (:data:`AREAS` and those the spec defines) are considered, so
``SHA-256`` is not a requirement.
Every defined ID must be cited or excluded; an exclusion must name a defined, uncited ID; and
every ID the code or the tests cite (``src/`` included) must be tagged somewhere in the spec
(a withdrawn requirement keeps its tag without a keyword, spec/README.md).
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = (
    "AREAS",
    "EXCLUSIONS_FILE",
    "Citation",
    "Level",
    "Origin",
    "Requirement",
    "TraceReport",
    "TraceRow",
    "find_root",
    "read_requirements",
    "trace",
)

#: Where the exclusions live, relative to the repository root.
EXCLUSIONS_FILE = "spec/traceability-exclusions.toml"

#: Requirement areas the spec uses or will use (spec/README.md); with the areas the spec
#: defines, an ``AREA-NNN`` string of one of these is taken for a requirement ID.
AREAS = frozenset(
    {"ENV", "ERR", "SEC", "PAT", "VER", "RR", "SYNC", "WQ", "EVT", "STR", "CAN", "DL", "IDEM",
     "TERM", "TRN", "NATS", "AMQP", "CONF"}
)  # fmt: skip

_VECTOR_DIR = "conformance/llmproto_conformance/vectors"
_KIT_DIR = "conformance/llmproto_conformance"
_ID = re.compile(r"\b([A-Z]{2,6})-([0-9]{3})\b")
_TAG = re.compile(r"\[\s*([A-Z]{2,6}-[0-9]{3}(?:\s*,\s*[A-Z]{2,6}-[0-9]{3})*)\s*\]")
_KEYWORD = re.compile(
    r"\b(MUST NOT|MUST|REQUIRED|SHALL NOT|SHALL|SHOULD NOT|SHOULD|NOT RECOMMENDED|RECOMMENDED|"
    r"MAY|OPTIONAL)\b"
)
_SENTENCE_END = re.compile(r"(?:[.!?][)\]*_`\"']*|\])\s+(?=[^a-z\s])")
_ABBREVIATIONS = frozenset({"e.g.", "i.e.", "etc.", "cf.", "vs.", "resp.", "approx.", "incl."})
_UNIT_START = re.compile(r"^\s*(#{1,6}\s|\||[-*+]\s|[0-9]+[.)]\s|>)")


class Level(enum.StrEnum):
    """The strength of a requirement (RFC 2119, RFC 8174)."""

    MUST = "MUST"  #: MUST, MUST NOT, REQUIRED, SHALL, SHALL NOT
    SHOULD = "SHOULD"  #: SHOULD, SHOULD NOT, RECOMMENDED, NOT RECOMMENDED
    MAY = "MAY"  #: MAY, OPTIONAL


_LEVEL_OF = {
    "MUST": Level.MUST, "MUST NOT": Level.MUST, "REQUIRED": Level.MUST,
    "SHALL": Level.MUST, "SHALL NOT": Level.MUST,
    "SHOULD": Level.SHOULD, "SHOULD NOT": Level.SHOULD,
    "RECOMMENDED": Level.SHOULD, "NOT RECOMMENDED": Level.SHOULD,
    "MAY": Level.MAY, "OPTIONAL": Level.MAY,
}  # fmt: skip
_STRENGTH = {Level.MUST: 0, Level.SHOULD: 1, Level.MAY: 2}


class Origin(enum.StrEnum):
    """Where an ID was found outside its definition."""

    TEST = "test"  #: a file under tests/
    VECTOR = "vector"  #: a vector's requirement field
    KIT = "kit"  #: the conformance kit's code
    SOURCE = "source"  #: the reference implementation (checked to exist, not coverage)


@dataclass(frozen=True, slots=True, kw_only=True)
class Requirement:
    """One requirement as the spec defines it."""

    id: str  #: e.g. ``ENV-003``
    level: Level  #: the strongest keyword of its defining sentence
    file: str  #: the spec file, relative to the root
    line: int  #: 1-based line where the paragraph, list item or table row holding it starts
    sentence: str  #: the defining sentence, Markdown as written


@dataclass(frozen=True, slots=True, kw_only=True)
class Citation:
    """One place that names a requirement ID."""

    id: str  #: the ID cited
    origin: Origin  #: what kind of place it is
    file: str  #: relative to the root
    line: int  #: 1-based; 0 for a vector (the file is JSON, the vector is the unit)
    vector: str = ""  #: the vector's id, for a vector citation


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceRow:
    """A requirement with the number of places citing it, or its exclusion."""

    requirement: Requirement
    tests: int  #: test files naming the ID
    vectors: int  #: vectors whose requirement field names it
    kit: int  #: conformance-kit modules naming it
    exclusion: str | None  #: the reason it is excluded, if it is

    @property
    def cited(self) -> bool:
        """Whether a test, a vector or the kit names it."""
        return self.tests + self.vectors + self.kit > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceReport:
    """The whole table and what is wrong with it."""

    rows: tuple[TraceRow, ...]  #: one per defined requirement, in ID order
    uncited: tuple[str, ...]  #: defined, not cited, not excluded
    unknown_exclusions: tuple[str, ...]  #: excluded IDs the spec does not define
    stale_exclusions: tuple[str, ...]  #: excluded IDs that are cited anyway
    undefined: tuple[Citation, ...]  #: citations of IDs the spec does not define

    @property
    def ok(self) -> bool:
        """Whether every requirement is accounted for and every exclusion is needed."""
        return not (
            self.uncited or self.unknown_exclusions or self.stale_exclusions or self.undefined
        )

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready document."""
        return {
            "requirements": [
                {
                    "id": row.requirement.id,
                    "level": row.requirement.level.value,
                    "file": row.requirement.file,
                    "line": row.requirement.line,
                    "tests": row.tests,
                    "vectors": row.vectors,
                    "kit": row.kit,
                    "exclusion": row.exclusion,
                }
                for row in self.rows
            ],
            "uncited": list(self.uncited),
            "unknown_exclusions": list(self.unknown_exclusions),
            "stale_exclusions": list(self.stale_exclusions),
            "undefined": [
                {"id": c.id, "origin": c.origin.value, "file": c.file, "line": c.line}
                for c in self.undefined
            ],
            "ok": self.ok,
        }

    def format_table(self) -> str:
        """The report as an aligned text table with a summary and the problems."""
        lines = [f"{'ID':<9} {'LEVEL':<6} {'TESTS':>5} {'VECTORS':>7} {'KIT':>4}  STATUS"]
        for row in self.rows:
            if row.cited:
                status = "cited"
            elif row.exclusion is not None:
                status = f"excluded: {row.exclusion}"
            else:
                status = "UNCITED"
            lines.append(
                f"{row.requirement.id:<9} {row.requirement.level:<6} {row.tests:>5} "
                f"{row.vectors:>7} {row.kit:>4}  {status}"
            )
        cited = sum(row.cited for row in self.rows)
        excluded = sum(not row.cited and row.exclusion is not None for row in self.rows)
        lines.append(
            f"{len(self.rows)} requirements: {cited} cited, {excluded} excluded, "
            f"{len(self.uncited)} uncited"
        )
        lines.extend(f"uncited: {rid} is neither cited nor excluded" for rid in self.uncited)
        lines.extend(
            f"unknown exclusion: {rid} is not defined in spec/ ({EXCLUSIONS_FILE})"
            for rid in self.unknown_exclusions
        )
        lines.extend(
            f"stale exclusion: {rid} is cited, remove it from {EXCLUSIONS_FILE}"
            for rid in self.stale_exclusions
        )
        places: dict[str, list[str]] = {}
        for c in self.undefined:
            places.setdefault(c.id, []).append(f"{c.file}:{c.line}" if c.line else c.file)
        for rid, where in places.items():
            more = f" and {len(where) - 3} more" if len(where) > 3 else ""
            cited_in = ", ".join(where[:3])
            lines.append(f"undefined: {rid} is not defined in spec/ but cited in {cited_in}{more}")
        return "\n".join(lines)


def find_root(start: Path | None = None) -> Path | None:
    """The repository root: ``start`` if it holds ``spec/``; without ``start``, the working
    directory if it does, else the source checkout this module was imported from.
    ``None`` if there is no such directory."""
    if start is not None:
        return start if (start / "spec").is_dir() else None
    here = Path.cwd()
    if (here / "spec").is_dir():
        return here
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "spec").is_dir() and (checkout / _KIT_DIR).is_dir():
        return checkout
    return None


def read_requirements(root: Path) -> dict[str, Requirement]:
    """Every requirement defined in ``root/spec/**/*.md``, by ID, in ID order."""
    found: dict[str, Requirement] = {}
    for path in sorted((root / "spec").rglob("*.md")):
        relative = path.relative_to(root).as_posix()
        for line, sentence in _sentences(path.read_text(encoding="utf-8")):
            levels = [_LEVEL_OF[k] for k in _KEYWORD.findall(_strip_code(sentence))]
            if not levels:
                continue
            level = min(levels, key=_STRENGTH.__getitem__)
            for tag in _TAG.findall(sentence):
                for rid in re.split(r"\s*,\s*", tag):
                    known = found.get(rid)
                    if known is None:
                        found[rid] = Requirement(
                            id=rid, level=level, file=relative, line=line, sentence=sentence
                        )
                    elif _STRENGTH[level] < _STRENGTH[known.level]:
                        found[rid] = Requirement(
                            id=rid, level=level, file=known.file, line=known.line,
                            sentence=known.sentence,
                        )  # fmt: skip
    return dict(sorted(found.items()))


def trace(root: Path) -> TraceReport:
    """Build the traceability report for the repository at ``root``.

    :raises ValueError: if the exclusions file is malformed.
    """
    requirements = read_requirements(root)
    areas = AREAS | {rid.split("-")[0] for rid in requirements}
    known = set(requirements) | _tagged(root)  # withdrawn IDs keep a keyword-less entry
    citations = [c for c in _citations(root) if c.id.split("-")[0] in areas]
    exclusions = _read_exclusions(root)
    counted: dict[str, dict[Origin, set[str]]] = {}
    for c in citations:
        unit = f"{c.file}#{c.vector}" if c.origin is Origin.VECTOR else c.file
        counted.setdefault(c.id, {}).setdefault(c.origin, set()).add(unit)
    rows = []
    for rid, requirement in requirements.items():
        by = counted.get(rid, {})
        rows.append(
            TraceRow(
                requirement=requirement,
                tests=len(by.get(Origin.TEST, ())),
                vectors=len(by.get(Origin.VECTOR, ())),
                kit=len(by.get(Origin.KIT, ())),
                exclusion=exclusions.get(rid),
            )
        )
    cited = {row.requirement.id for row in rows if row.cited}
    return TraceReport(
        rows=tuple(rows),
        uncited=tuple(r.requirement.id for r in rows if not r.cited and r.exclusion is None),
        unknown_exclusions=tuple(sorted(set(exclusions) - set(requirements))),
        stale_exclusions=tuple(sorted(set(exclusions) & cited)),
        undefined=tuple(
            sorted(
                {(c.id, c.file, c.line): c for c in citations if c.id not in known}.values(),
                key=lambda c: (c.id, c.file, c.line),
            )
        ),
    )


def _tagged(root: Path) -> set[str]:
    """Every ID written as a tag anywhere in the spec, requirement or not."""
    found: set[str] = set()
    for path in (root / "spec").rglob("*.md"):
        for tag in _TAG.findall(path.read_text(encoding="utf-8")):
            found.update(re.split(r"\s*,\s*", tag))
    return found


def _strip_code(text: str) -> str:
    """``text`` without inline code spans, where keywords are quoted rather than used."""
    return re.sub(r"`[^`]*`", "", text)


def _units(text: str) -> Iterator[tuple[int, str]]:
    """Paragraphs, list items, table rows and headings of a Markdown text, fences skipped."""
    start = 0
    lines: list[str] = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            if lines:
                yield start, " ".join(lines)
            lines = []
            continue
        if in_fence:
            continue
        if not line.strip() or _UNIT_START.match(line) or line.lstrip().startswith("|"):
            if lines:
                yield start, " ".join(lines)
            lines = []
            if not line.strip():
                continue
        if not lines:
            start = number
        lines.append(line.strip())
    if lines and not in_fence:
        yield start, " ".join(lines)


def _sentences(text: str) -> Iterator[tuple[int, str]]:
    """Sentences with the line their unit starts on.

    A piece made only of tags (``Senders MUST x. [ENV-012]``, or ``[ENV-012] Senders MUST x.``)
    joins the sentence before it when that one has a keyword and no tag, else the one after.
    """
    for line, unit in _units(text):
        pieces: list[str] = []
        begin = 0
        for match in _SENTENCE_END.finditer(unit):
            candidate = unit[begin : match.end()].strip()
            words = candidate.split()
            if words and words[-1].lower() in _ABBREVIATIONS:
                continue
            pieces.append(candidate)
            begin = match.end()
        if unit[begin:].strip():
            pieces.append(unit[begin:].strip())
        merged: list[str] = []
        pending = ""
        for piece in pieces:
            if _only_tags(piece):
                previous = merged[-1] if merged else ""
                if previous and _KEYWORD.search(previous) and not _TAG.search(previous):
                    merged[-1] = f"{previous} {piece}"
                else:
                    pending = f"{pending} {piece}".strip()
                continue
            merged.append(f"{pending} {piece}".strip())
            pending = ""
        if pending:
            merged.append(pending)
        for sentence in merged:
            yield line, sentence


def _only_tags(piece: str) -> bool:
    return bool(_TAG.search(piece)) and not re.sub(r"[\s.;,()\[\]*_]", "", _TAG.sub("", piece))


def _read_exclusions(root: Path) -> dict[str, str]:
    path = root / EXCLUSIONS_FILE
    if not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{EXCLUSIONS_FILE}: {exc}") from None
    table = document.get("exclusions", {})
    if not isinstance(table, dict):
        raise ValueError(f"{EXCLUSIONS_FILE}: [exclusions] must be a table")
    for rid, reason in table.items():
        if _ID.fullmatch(rid) is None:
            raise ValueError(f"{EXCLUSIONS_FILE}: {rid!r} is not a requirement ID like ENV-036")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"{EXCLUSIONS_FILE}: {rid} needs a reason (a non-empty string)")
    return dict(table)


def _citations(root: Path) -> Iterator[Citation]:
    yield from _scan_text(root, "tests", "*.py", Origin.TEST)
    own = Path(__file__).name
    yield from (
        c for c in _scan_text(root, _KIT_DIR, "*.py", Origin.KIT) if Path(c.file).name != own
    )
    yield from _scan_text(root, "src", "*.py", Origin.SOURCE)
    for path in sorted((root / _VECTOR_DIR).rglob("*.json")):
        relative = path.relative_to(root).as_posix()
        try:
            document = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            continue  # the vector sanity tests report unreadable files
        for vector, rid in _vector_requirements(document):
            yield Citation(id=rid, origin=Origin.VECTOR, file=relative, line=0, vector=vector)


def _scan_text(root: Path, folder: str, pattern: str, origin: Origin) -> Iterator[Citation]:
    for path in sorted((root / folder).rglob(pattern)):
        relative = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for match in _ID.finditer(line):
                yield Citation(id=match.group(0), origin=origin, file=relative, line=number)


def _vector_requirements(document: Any) -> Iterator[tuple[str, str]]:
    """(vector, ID) for every ``requirement``/``requirements`` field in a vector file.

    A vector is the innermost object with a string ``id`` around the field (the file itself if
    there is none), so an ID repeated inside one vector's ``expect`` counts once.
    """
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        node, unit = stack.pop()
        if isinstance(node, list):
            stack.extend((item, unit) for item in reversed(node))
        elif isinstance(node, dict):
            if isinstance(node.get("id"), str):
                unit = node["id"]
            for key in ("requirement", "requirements"):
                value = node.get(key)
                values = [value] if isinstance(value, str) else value
                if isinstance(values, list):
                    for text in values:
                        if isinstance(text, str):
                            yield from ((unit, m.group(0)) for m in _ID.finditer(text))
            stack.extend((child, unit) for child in reversed(list(node.values())))
