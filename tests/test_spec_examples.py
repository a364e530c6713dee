"""Every JSON example in spec/ does what its block marker says (spec/README.md, section Examples).

A fenced block whose info string starts with ``json`` is an example. The words after ``json``
are its marker:

- ``json envelope``: a complete envelope that :func:`llmproto_ref.decode` accepts
  (``understood=a,b`` names the critical extensions the decoding receiver implements);
- ``json envelope expect=CODE pointer=/x requirement=ENV-003``: an envelope that ``decode``
  rejects with that code and, when given, that pointer and requirement ID;
- ``json schema=NAME``: a fragment valid against ``schemas/NAME.schema.json``;
- plain ``json``: an illustration that is at least strict JSON.

The text of a block is decoded as raw UTF-8, so an example can repeat a member name.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmproto_ref import DEFAULT_LIMITS, EnvelopeError, ErrorCode, Kind, decode
from llmproto_ref._schemas import schema_validator
from llmproto_ref._strictjson import read_json

SPEC = Path(__file__).resolve().parents[1] / "spec"

#: Schema names a ``schema=`` marker may use.
SCHEMA_NAMES = frozenset({"common", "envelope", "error", "auth", "sig", "enc"})

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
_TAG = re.compile(r"\[([A-Z]{2,5}-[0-9]{3})\]")
_ID = re.compile(r"^[A-Z]{2,5}-[0-9]{3}$")
_POINTER = re.compile(r"^(/([^~/]|~[01])*)*$")
_EXTENSION = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*$")
_CODES = frozenset(code.value for code in ErrorCode)
_KEYS = ("expect", "pointer", "requirement", "understood", "schema")


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced code block of a spec file."""

    file: str  #: path relative to spec/
    line: int  #: 1-based line of the opening fence
    info: str  #: the info string after the fence characters
    text: str  #: the content lines, joined by newlines
    closed: bool  #: whether a closing fence was found

    @property
    def name(self) -> str:
        """The test id, such as ``envelope.md:123``."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Marker:
    """The meaning of a ``json`` block's info string."""

    envelope: bool = False
    expect: str | None = None
    pointer: str | None = None
    requirement: str | None = None
    understood: frozenset[str] = frozenset()
    schema: str | None = None


def spec_files() -> list[Path]:
    """Every Markdown file under spec/, in a stable order."""
    return sorted(SPEC.rglob("*.md"))


def read_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one Markdown file."""
    name = path.relative_to(SPEC).as_posix()
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence, info = opening.groups()
        start = index
        body: list[str] = []
        index += 1
        closed = False
        while index < len(lines):
            line = lines[index]
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                closed = True
                break
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        found.append(Block(name, start + 1, info.strip(), "\n".join(body), closed))
        index += 1
    return found


def all_blocks() -> list[Block]:
    """The fenced code blocks of every spec file."""
    return [block for path in spec_files() for block in read_blocks(path)]


def json_blocks() -> list[Block]:
    """The blocks whose info string starts with ``json``."""
    return [block for block in all_blocks() if block.info.startswith("json")]


def defined_ids() -> frozenset[str]:
    """The requirement IDs that spec/ tags outside code blocks and code spans."""
    ids: set[str] = set()
    for path in spec_files():
        outside = _strip_code(path.read_text(encoding="utf-8"))
        ids.update(_TAG.findall(outside))
    return frozenset(ids)


def _strip_code(text: str) -> str:
    kept: list[str] = []
    fence = ""
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence:
            if line.strip().startswith(fence) and set(line.strip()) == {fence[0]}:
                fence = ""
            continue
        if opening is not None:
            fence = opening.group(2)
            continue
        kept.append(line)
    return re.sub(r"(`+)(.+?)\1", " ", "\n".join(kept))


def parse_marker(info: str) -> Marker:
    """Read a ``json`` block's info string.

    :raises ValueError: naming what is wrong with the marker.
    """
    try:
        words = shlex.split(info)
    except ValueError as exc:
        raise ValueError(f"unreadable marker {info!r}: {exc}") from None
    if not words or words[0] != "json":
        raise ValueError(f"info string {info!r} must start with the word 'json'")
    envelope = False
    values: dict[str, str] = {}
    for word in words[1:]:
        if word == "envelope":
            if envelope:
                raise ValueError("'envelope' given twice")
            envelope = True
            continue
        key, sep, value = word.partition("=")
        if not sep or key not in _KEYS:
            raise ValueError(f"unknown marker word {word!r}")
        if key in values:
            raise ValueError(f"{key}= given twice")
        values[key] = value
    if not envelope and values.keys() - {"schema"}:
        raise ValueError("expect=, pointer=, requirement= and understood= need 'envelope'")
    if envelope and "schema" in values:
        raise ValueError("a block is either 'envelope' or 'schema=', not both")
    if "expect" not in values and values.keys() & {"pointer", "requirement"}:
        raise ValueError("pointer= and requirement= need expect=")
    expect = values.get("expect")
    if expect is not None and expect not in _CODES:
        raise ValueError(f"expect={expect} is not a registry code")
    pointer = values.get("pointer")
    if pointer is not None and _POINTER.match(pointer) is None:
        raise ValueError(f"pointer={pointer!r} is not an RFC 6901 JSON Pointer")
    requirement = values.get("requirement")
    if requirement is not None and _ID.match(requirement) is None:
        raise ValueError(f"requirement={requirement} is not a requirement ID like ENV-003")
    understood = frozenset(values["understood"].split(",")) if "understood" in values else None
    if understood is not None and not all(_EXTENSION.match(name) for name in understood):
        raise ValueError(f"understood={values['understood']} is not a list of extension names")
    schema = values.get("schema")
    if schema is not None and schema not in SCHEMA_NAMES:
        raise ValueError(f"schema={schema} is not one of {sorted(SCHEMA_NAMES)}")
    return Marker(
        envelope=envelope,
        expect=expect,
        pointer=pointer,
        requirement=requirement,
        understood=understood or frozenset(),
        schema=schema,
    )


def _strict(raw: bytes) -> Any | None:
    """The parsed value if ``raw`` passes the strict JSON rules, else ``None``."""
    try:
        return read_json(raw, DEFAULT_LIMITS)
    except EnvelopeError:
        return None


EXAMPLES = json_blocks()


@pytest.mark.parametrize("block", EXAMPLES, ids=[block.name for block in EXAMPLES])
def test_example(block: Block) -> None:
    """The example is accepted, rejected, schema-valid or strict JSON, as its marker says."""
    marker = parse_marker(block.info)
    raw = block.text.encode("utf-8")
    if marker.envelope and marker.expect is None:
        envelope = decode(raw, understood=marker.understood)
        errors = [e.message for e in schema_validator("envelope").iter_errors(envelope.to_dict())]
        assert not errors, "\n".join(errors)
    elif marker.envelope:
        with pytest.raises(EnvelopeError) as caught:
            decode(raw, understood=marker.understood)
        assert marker.expect == caught.value.code
        if marker.pointer is not None:
            assert marker.pointer == caught.value.pointer
        if marker.requirement is not None:
            assert marker.requirement == caught.value.requirement
        value = _strict(raw)
        if value is not None and marker.expect != ErrorCode.UNSUPPORTED_EXTENSION:
            assert not schema_validator("envelope").is_valid(value), "the schema accepts it"
    elif marker.schema is not None:
        fragment = orjson.loads(raw)
        errors = [e.message for e in schema_validator(marker.schema).iter_errors(fragment)]
        assert not errors, "\n".join(errors)
    else:
        read_json(raw, DEFAULT_LIMITS)


def test_examples_found() -> None:
    """The extractor finds the spec's examples, so the parametrized test is not vacuous."""
    files = {block.file for block in EXAMPLES}
    assert {"envelope.md", "errors.md", "patterns.md", "security-fields.md"} <= files
    assert len(EXAMPLES) >= 40


def test_markers_well_formed() -> None:
    """Every json block's marker parses, and its requirement= names an ID the spec defines."""
    ids = defined_ids()
    problems: list[str] = []
    for block in EXAMPLES:
        try:
            marker = parse_marker(block.info)
        except ValueError as exc:
            problems.append(f"{block.name}: {exc}")
            continue
        if marker.requirement is not None and marker.requirement not in ids:
            problems.append(f"{block.name}: {marker.requirement} is not defined in spec/")
    assert not problems, "\n".join(problems)


def test_fences_closed() -> None:
    """Every fenced block in spec/ is closed, so no example swallows the text after it."""
    unclosed = [block.name for block in all_blocks() if not block.closed]
    assert not unclosed, unclosed


def test_every_kind_has_an_example() -> None:
    """spec/ holds at least one accepted example envelope of each kind, and a final chunk."""
    kinds: set[str] = set()
    final_chunk = False
    for block in EXAMPLES:
        marker = parse_marker(block.info)
        if marker.envelope and marker.expect is None:
            envelope = decode(block.text.encode("utf-8"), understood=marker.understood)
            kinds.add(envelope.kind)
            final_chunk |= (
                envelope.kind == Kind.CHUNK
                and envelope.final
                and envelope.finish_reason is not None
                and envelope.usage is not None
            )
    assert {kind.value for kind in Kind} == kinds
    assert final_chunk


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        ("jsonc", "must start with the word 'json'"),
        ("json envelope expect=NOT_A_CODE", "not a registry code"),
        ("json envelope expect=INVALID_ENVELOPE pointer=data", "JSON Pointer"),
        ("json envelope pointer=/a", "need expect="),
        ("json expect=INVALID_ENVELOPE", "need 'envelope'"),
        ("json schema=nothing", "is not one of"),
        ("json envelope schema=error", "not both"),
        ("json envelope expect=INVALID_ENVELOPE requirement=ENV-3", "requirement ID"),
        ("json envelope colour=blue", "unknown marker word"),
    ],
)
def test_malformed_markers_rejected(info: str, reason: str) -> None:
    """The marker reader refuses a malformed marker instead of ignoring it."""
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_marker(info)


def test_empty_pointer_marker() -> None:
    """``pointer=""`` is the whole document."""
    marker = parse_marker('json envelope expect=INVALID_ENVELOPE pointer=""')
    whole_document = ""
    assert whole_document == marker.pointer
