"""Load llmproto's language-neutral conformance vectors and judge a decoder by them.

The vectors are JSON files under ``vectors/<group>/`` (``vectors/README.md`` describes the format
for implementers in any language). :func:`load_vectors` reads and checks them against
``vectors/vector.schema.json``; :func:`judge` feeds one vector to a decoder and compares the
outcome, never raising because a decoder got it wrong::

    for vector in load_vectors("envelope"):
        result = judge(vector)
        assert result.passed, result.message
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.resources
import json
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

import llmproto_ref
from llmproto_ref import DEFAULT_LIMITS, Limits

__all__ = ("Vector", "VectorResult", "judge", "load_vectors", "vector_dir")

_SCHEMA_FILE = "vector.schema.json"
_MISSING = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class Vector:
    """One conformance vector: an input, the receiver's settings and the expected outcome.

    :param id: stable name, unique across all vector files.
    :param description: what the vector shows, in one sentence.
    :param requirements: the spec requirement IDs it exercises, e.g. ``("ENV-003",)``.
    :param file: its file, relative to :func:`vector_dir`, e.g. ``envelope/valid.json``.
    :param input_kind: how the file gave the input: ``json``, ``text`` or ``base64``.
    :param raw: the message body to decode.
    :param receiver_limits: the receiver's size and depth limits for this vector.
    :param understood: extension names the receiver implements, for ``critical``.
    :param expect_valid: whether the receiver must accept the input.
    :param expect_code: the registry code of the rejection, or ``None`` when valid.
    :param expect_pointer: the JSON Pointer of the rejection, or ``None`` when valid.
    """

    id: str
    description: str
    requirements: tuple[str, ...]
    file: str
    input_kind: str
    raw: bytes
    receiver_limits: Limits
    understood: frozenset[str]
    expect_valid: bool
    expect_code: str | None
    expect_pointer: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class VectorResult:
    """What a decoder did with one vector.

    :param vector: the vector judged.
    :param passed: whether the outcome matched the expectation exactly.
    :param actual_valid: whether the decoder accepted the input.
    :param actual_code: the code the decoder reported, or ``None`` if it accepted or crashed.
    :param actual_pointer: the pointer the decoder reported, or ``None`` if it accepted or crashed.
    :param message: one line saying what happened, naming the vector.
    """

    vector: Vector
    passed: bool
    actual_valid: bool
    actual_code: str | None
    actual_pointer: str | None
    message: str


def vector_dir() -> pathlib.Path:
    """The directory holding ``vector.schema.json`` and one subfolder per vector group."""
    return pathlib.Path(str(importlib.resources.files("llmproto_conformance") / "vectors"))


def load_vectors(group: str | None = None) -> list[Vector]:
    """Every vector of ``group`` (a subfolder such as ``"envelope"``), or of all groups.

    Vectors come sorted by file, then in file order.

    :raises ValueError: naming the file, if a file is not valid JSON, breaks the vector schema,
        or reuses an id.
    """
    root = vector_dir()
    if group is None:
        files = [p for p in root.glob("*/*.json") if p.is_file()]
    else:
        folder = root / group
        if not folder.is_dir():
            raise ValueError(f"no vector group {group!r} in {root}")
        files = [p for p in folder.glob("*.json") if p.is_file()]
    vectors: list[Vector] = []
    origin: dict[str, str] = {}
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        name = path.relative_to(root).as_posix()
        for vector in _load_file(path, name):
            if vector.id in origin:
                raise ValueError(
                    f"{name}: vector id {vector.id!r} is already used in {origin[vector.id]}"
                )
            origin[vector.id] = name
            vectors.append(vector)
    return vectors


def judge(vector: Vector, decoder: Callable[..., object] = llmproto_ref.decode) -> VectorResult:
    """Run ``decoder`` on one vector and compare its outcome with the expectation.

    ``decoder`` is called as ``decoder(raw, limits=..., understood=...)``. A rejection is any
    :class:`~llmproto_ref.EnvelopeError`, or any exception with ``code`` and ``pointer``
    attributes (for decoders written elsewhere); any other exception fails the vector.

    :returns: the result; a wrong outcome is a failed result, never an exception.
    """
    code: str | None = None
    pointer: str | None = None
    crash: str | None = None
    try:
        decoder(vector.raw, limits=vector.receiver_limits, understood=vector.understood)
    except Exception as exc:  # noqa: BLE001 - a decoder's crash is a result to report
        valid = False
        reported_code = getattr(exc, "code", _MISSING)
        reported_pointer = getattr(exc, "pointer", _MISSING)
        if reported_code is _MISSING or reported_pointer is _MISSING:
            crash = f"{type(exc).__name__}: {exc}"
        else:
            code, pointer = _code_text(reported_code), str(reported_pointer)
    else:
        valid = True
    passed = (
        crash is None
        and valid == vector.expect_valid
        and (valid or (code == vector.expect_code and pointer == vector.expect_pointer))
    )
    if crash is not None:
        outcome = f"the decoder raised {crash}"
    elif valid:
        outcome = "the decoder accepted it"
    else:
        outcome = f"the decoder rejected it with {code} at {pointer!r}"
    verdict = "passed" if passed else "FAILED"
    return VectorResult(
        vector=vector,
        passed=passed,
        actual_valid=valid,
        actual_code=code,
        actual_pointer=pointer,
        message=f"{vector.id} {verdict}: {_expected(vector)}; {outcome}",
    )


def _expected(vector: Vector) -> str:
    if vector.expect_valid:
        return "expected acceptance"
    return f"expected {vector.expect_code} at {vector.expect_pointer!r}"


def _code_text(code: object) -> str:
    """A reported code as its wire string, whether an enum member (``ErrorCode``) or not."""
    return str(code.value) if isinstance(code, Enum) else str(code)


@functools.cache
def _file_validator() -> Draft202012Validator:
    schema = json.loads((vector_dir() / _SCHEMA_FILE).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise ValueError(f"duplicate member name {name!r}")
        members[name] = value
    return members


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load_file(path: pathlib.Path, name: str) -> list[Vector]:
    try:
        document = json.loads(
            path.read_text(encoding="utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{name}: not a valid vector file: {exc}") from exc
    error = best_match(_file_validator().iter_errors(document))
    if error is not None:
        raise ValueError(f"{name}: breaks {_SCHEMA_FILE} at {error.json_path}: {error.message}")
    vectors: list[Vector] = []
    for item in document["vectors"]:
        try:
            vectors.append(_vector(item, name))
        except ValueError as exc:
            raise ValueError(f"{name}: vector {item['id']!r}: {exc}") from exc
    return vectors


def _vector(item: dict[str, Any], name: str) -> Vector:
    requirement = item["requirement"]
    requirements = (requirement,) if isinstance(requirement, str) else tuple(requirement)
    [(input_kind, value)] = item["input"].items()
    receiver: dict[str, Any] = item.get("receiver", {})
    limits = Limits(
        max_envelope_bytes=receiver.get("max_envelope_bytes", DEFAULT_LIMITS.max_envelope_bytes),
        max_depth=receiver.get("max_depth", DEFAULT_LIMITS.max_depth),
    )
    expect: dict[str, Any] = item["expect"]
    return Vector(
        id=item["id"],
        description=item["description"],
        requirements=requirements,
        file=name,
        input_kind=input_kind,
        raw=_raw(input_kind, value),
        receiver_limits=limits,
        understood=frozenset(receiver.get("understood", ())),
        expect_valid=expect["valid"],
        expect_code=expect.get("code"),
        expect_pointer=expect.get("pointer"),
    )


def _raw(input_kind: str, value: Any) -> bytes:
    """The bytes a vector's input stands for (vectors/README.md, section Input)."""
    if input_kind == "json":
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")
    if input_kind == "text":
        return str(value).encode("utf-8")
    try:
        return base64.b64decode(str(value), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"input is not standard base64: {exc}") from exc
