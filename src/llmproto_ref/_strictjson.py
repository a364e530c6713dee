"""Strict JSON reading: the byte-level rules of spec/envelope.md [ENV-002..ENV-007].

Order: size, strict parse, depth, repeated member names (spec/envelope.md, Decoding order).

Theory of operation
-------------------
``orjson`` already rejects what RFC 8259 and I-JSON forbid except one thing: duplicate member
names (it keeps the last). Rejecting them with a parse hook would cost more than the whole
rest of the hot path, so the check counts instead. Every object member has exactly one
structural colon in the input; every other colon sits inside a string. ``orjson.dumps`` of the
parsed value writes one colon per *kept* member and the string colons unchanged, so the two
counts are equal exactly when no member was dropped, unless a string spelled a colon as an
escape (``\\u003a``), which the input shows as ``\\u003``: only then do we take the slow path,
a stdlib parse whose hook sees every member. When the re-encoded bytes equal the input (what
an ``orjson`` sender writes) the counts are equal without counting. The depth check is skipped
when the input holds fewer brackets than the limit, which is almost always.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from llmproto_ref._errors import EnvelopeError
from llmproto_ref._limits import Limits
from llmproto_ref._registry import ErrorCode

__all__ = ("escape_pointer", "read_json")

_ESCAPED_COLON_HINT = b"\\u003"


def escape_pointer(token: str) -> str:
    """One reference token of a JSON Pointer (RFC 6901 section 4)."""
    return token.replace("~", "~0").replace("/", "~1")


def read_json(raw: bytes, limits: Limits) -> Any:
    """Parse ``raw`` under the strict rules, or raise :class:`EnvelopeError`.

    :raises EnvelopeError: ``PAYLOAD_TOO_LARGE`` [ENV-006] or ``INVALID_ENVELOPE``.
    """
    if len(raw) > limits.max_envelope_bytes:
        raise EnvelopeError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"envelope is {len(raw)} bytes, the limit is {limits.max_envelope_bytes}",
            requirement="ENV-006",
        )
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _syntax_error(raw, str(exc)) from None
    if raw.count(b"{") + raw.count(b"[") > limits.max_depth:
        _check_depth(value, limits.max_depth)
    again = orjson.dumps(value)
    # The same bytes again have the same colons; orjson peers send exactly these bytes.
    if (again != raw and raw.count(b":") != again.count(b":")) or (
        b"\\" in raw and _ESCAPED_COLON_HINT in raw
    ):
        _find_duplicate(raw)
    return value


def _syntax_error(raw: bytes, reason: str) -> EnvelopeError:
    if "depth limit" in reason:
        return EnvelopeError(
            ErrorCode.INVALID_ENVELOPE, f"nesting too deep: {reason}", requirement="ENV-007"
        )
    at = _error_offset(reason)
    if "infinity" in reason.lower() or (
        at is not None and raw[at:].startswith((b"NaN", b"Infinity", b"-Infinity"))
    ):
        requirement = "ENV-004"
    elif "surrogate" in reason or "UTF-8" in reason or "BOM" in reason:
        requirement = "ENV-005"
    else:
        requirement = "ENV-002"
    return EnvelopeError(
        ErrorCode.INVALID_ENVELOPE, f"not strict JSON: {reason}", requirement=requirement
    )


def _error_offset(reason: str) -> int | None:
    """The byte offset orjson names in its message ``... (char N)``, if it names one."""
    _, sep, tail = reason.rpartition("(char ")
    if not sep or not tail.endswith(")") or not tail[:-1].isdigit():
        return None
    return int(tail[:-1])


class _Marked(dict[str, Any]):
    """A parsed object that held a duplicate member ``name``."""

    duplicate: str = ""


def _find_duplicate(raw: bytes) -> None:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for name, member in pairs:
            if name in obj:
                marked = _Marked(pairs)
                marked.duplicate = name
                return marked
            obj[name] = member
        return obj

    try:
        tree = json.loads(raw, object_pairs_hook=hook)
    except (ValueError, RecursionError) as exc:  # orjson accepted it; be safe all the same
        raise _syntax_error(raw, str(exc)) from None
    found = _locate_marked(tree, "")
    if found is not None:
        raise EnvelopeError(
            ErrorCode.INVALID_ENVELOPE,
            f"duplicate member name {found[1]!r}",
            pointer=found[0],
            requirement="ENV-003",
        )


def _locate_marked(value: Any, pointer: str) -> tuple[str, str] | None:
    stack: list[tuple[Any, str]] = [(value, pointer)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, _Marked):
            return f"{where}/{escape_pointer(node.duplicate)}", node.duplicate
        if isinstance(node, dict):
            stack.extend((v, f"{where}/{escape_pointer(k)}") for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, f"{where}/{i}") for i, v in reversed(list(enumerate(node))))
    return None


def _check_depth(value: Any, max_depth: int) -> None:
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise EnvelopeError(
                ErrorCode.INVALID_ENVELOPE,
                f"nesting deeper than {max_depth} levels",
                requirement="ENV-007",
            )
        nxt: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                nxt.extend(v for v in node.values() if isinstance(v, dict | list))
            elif isinstance(node, list):
                nxt.extend(v for v in node if isinstance(v, dict | list))
        level = nxt
