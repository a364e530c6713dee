"""The conformance vectors: well formed, covering the spec, passed by the reference codec."""

from __future__ import annotations

import enum
import json
import pathlib
import re
import shutil
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import llmproto_conformance._vectors as vectors_module
import llmproto_ref
from llmproto_conformance import Vector, judge, load_vectors, vector_dir
from llmproto_ref import EnvelopeError, ErrorCode, Kind

VECTORS = load_vectors()

#: Requirement IDs the codec cites (notes: decode rules); each needs at least one vector.
CITED = frozenset(
    [f"ENV-{n:03d}" for n in range(1, 35) if n != 12]
    + ["ERR-001", "ERR-004", "ERR-005", "SEC-001", "SEC-002", "SEC-003"]
)
_UINT53_MAX = 2**53 - 1


def _files() -> list[pathlib.Path]:
    return sorted(vector_dir().glob("*/*.json"))


def _documents() -> list[tuple[str, Any]]:
    return [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in _files()]


def test_files_match_vector_schema() -> None:
    """Every vector file validates against vector.schema.json."""
    schema = json.loads((vector_dir() / "vector.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    problems = [
        f"{name}: {error.json_path}: {error.message}"
        for name, document in _documents()
        for error in validator.iter_errors(document)
    ]
    assert not problems, "\n".join(problems)


def test_ids_unique_across_files() -> None:
    """No vector id appears twice, in one file or across files."""
    ids = [vector["id"] for _, document in _documents() for vector in document["vectors"]]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    assert not repeated, repeated
    assert len(ids) == len(VECTORS)


def test_requirement_ids_well_formed() -> None:
    """Every cited requirement looks like AREA-NNN."""
    pattern = re.compile(r"[A-Z]{2,5}-[0-9]{3}")
    bad = [(v.id, r) for v in VECTORS for r in v.requirements if not pattern.fullmatch(r)]
    assert not bad, bad


def test_at_least_150_vectors() -> None:
    """The envelope group holds at least 150 vectors."""
    assert len(load_vectors("envelope")) >= 150


def test_every_kind_has_a_valid_vector() -> None:
    """Each kind appears in at least one vector that must be accepted."""
    kinds = {json.loads(v.raw)["kind"] for v in VECTORS if v.expect_valid}
    assert {k.value for k in Kind} == kinds


def test_every_cited_requirement_has_a_vector() -> None:
    """Each ENV/ERR/SEC requirement the codec cites is exercised by some vector."""
    covered = {r for v in VECTORS for r in v.requirements}
    uncovered = sorted(CITED - covered)
    assert not uncovered, uncovered


def test_expected_codes_are_registry_codes() -> None:
    """Every expected code is in the error registry."""
    known = {code.value for code in ErrorCode}
    unknown = sorted({str(v.expect_code) for v in VECTORS if not v.expect_valid} - known)
    assert not unknown, unknown


def _portable(value: Any, where: str) -> list[str]:
    """Places in a ``json`` input that languages would serialize differently."""
    if isinstance(value, float):
        return [f"{where}: fraction or exponent {value!r}"]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _UINT53_MAX:
        return [f"{where}: integer beyond 2^53-1"]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _portable(item, f"{where}/{i}")]
    if isinstance(value, dict):
        index_like = [f"{where}: index-like name {k!r}" for k in value if k.isdigit()]
        nested = [p for k, item in value.items() for p in _portable(item, f"{where}/{k}")]
        return index_like + nested
    return []


def test_json_inputs_serialize_alike_everywhere() -> None:
    """json inputs avoid numbers and names whose serialization varies between languages."""
    problems = [
        f"{vector['id']}{problem}"
        for _, document in _documents()
        for vector in document["vectors"]
        if "json" in vector["input"]
        for problem in _portable(vector["input"]["json"], "")
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("vector", VECTORS, ids=[v.id for v in VECTORS])
def test_reference_decoder_passes(vector: Vector) -> None:
    """The reference decoder produces exactly the outcome the vector expects."""
    result = judge(vector)
    expected = (vector.expect_valid, vector.expect_code, vector.expect_pointer)
    actual = (result.actual_valid, result.actual_code, result.actual_pointer)
    assert expected == actual, result.message
    assert result.passed


def test_reference_decoder_cites_a_vector_requirement() -> None:
    """When the reference decoder rejects a vector, it cites one of the vector's requirements."""
    mismatches = []
    for vector in VECTORS:
        try:
            llmproto_ref.decode(
                vector.raw, limits=vector.receiver_limits, understood=vector.understood
            )
        except EnvelopeError as exc:
            if exc.requirement not in vector.requirements:
                mismatches.append((vector.id, vector.requirements, exc.requirement))
    assert not mismatches, mismatches


def _accept_everything(raw: bytes, **_: object) -> None:
    return None


def test_judge_fails_a_decoder_that_accepts_everything() -> None:
    """Every vector expecting a rejection fails against a decoder that accepts all input."""
    failed = {r.vector.id for r in (judge(v, _accept_everything) for v in VECTORS) if not r.passed}
    assert {v.id for v in VECTORS if not v.expect_valid} == failed


def _wrong_code(raw: bytes, **options: Any) -> object:
    try:
        return llmproto_ref.decode(raw, **options)
    except EnvelopeError as exc:
        raise EnvelopeError(
            ErrorCode.INTERNAL, exc.message, pointer=exc.pointer, requirement=exc.requirement
        ) from None


def _wrong_pointer(raw: bytes, **options: Any) -> object:
    try:
        return llmproto_ref.decode(raw, **options)
    except EnvelopeError as exc:
        raise EnvelopeError(
            exc.code, exc.message, pointer=exc.pointer + "/0", requirement=exc.requirement
        ) from None


@pytest.mark.parametrize("decoder", [_wrong_code, _wrong_pointer])
def test_judge_fails_a_decoder_reporting_the_wrong_place_or_code(decoder: Any) -> None:
    """A decoder that rejects the right inputs but misreports code or pointer fails them."""
    results = [judge(v, decoder) for v in VECTORS]
    failed = {r.vector.id for r in results if not r.passed}
    assert {v.id for v in VECTORS if not v.expect_valid} == failed


def test_judge_reports_a_crash_as_a_failure() -> None:
    """An exception without code and pointer is a failed result, not an error in judge."""

    def crash(raw: bytes, **_: object) -> None:
        raise RuntimeError("boom")

    result = judge(VECTORS[0], crash)
    expected = (False, None, None)
    assert expected == (result.passed, result.actual_code, result.actual_pointer)
    assert "RuntimeError: boom" in result.message


class _ForeignCode(enum.Enum):
    INVALID_ENVELOPE = "INVALID_ENVELOPE"


class _ForeignError(Exception):
    def __init__(self, pointer: str) -> None:
        super().__init__("rejected")
        self.code = _ForeignCode.INVALID_ENVELOPE
        self.pointer = pointer


def test_judge_accepts_a_foreign_exception_with_code_and_pointer() -> None:
    """A third-party decoder's exception is judged by its code and pointer attributes."""
    vector = next(v for v in VECTORS if v.id == "dup-in-data")

    def foreign(raw: bytes, **_: object) -> None:
        raise _ForeignError("/data/a")

    result = judge(vector, foreign)
    expected = (True, "INVALID_ENVELOPE", "/data/a")
    assert expected == (result.passed, result.actual_code, result.actual_pointer)


def test_load_vectors_by_group() -> None:
    """A group holds exactly the vectors from its folder; an unknown group is an error."""
    assert [v for v in VECTORS if v.file.startswith("envelope/")] == load_vectors("envelope")
    with pytest.raises(ValueError, match="no vector group"):
        load_vectors("no-such-group")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"description": "x", "vectors": [{"id": "a"}]}', "breaks vector.schema.json"),
        ('{"description": "x", "description": "y", "vectors": []}', "duplicate member name"),
        ("{not json", "not a valid vector file"),
    ],
)
def test_load_vectors_names_a_bad_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, content: str, reason: str
) -> None:
    """A vector file that is not valid raises ValueError naming the file."""
    shutil.copy(vector_dir() / "vector.schema.json", tmp_path / "vector.schema.json")
    (tmp_path / "group").mkdir()
    (tmp_path / "group" / "broken.json").write_text(content, encoding="utf-8")
    monkeypatch.setattr(vectors_module, "vector_dir", lambda: tmp_path)
    with pytest.raises(ValueError, match=f"group/broken.json: .*{reason}"):
        load_vectors("group")
