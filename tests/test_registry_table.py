"""spec/errors.md's Registry table, schemas/error-codes.json and ErrorCode say the same thing.

Three copies of the registry exist: the table readers see, the data file programs load, and the
enum the reference implementation uses. Each comparison below fails when one copy changes alone.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from llmproto_ref import ErrorCode, registry

ROOT = Path(__file__).resolve().parents[1]
ERRORS_MD = ROOT / "spec" / "errors.md"
CODES_JSON = ROOT / "schemas" / "error-codes.json"

HEADER = ("Code", "Retryable", "HTTP", "gRPC", "Meaning")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_CODE_CELL = re.compile(r"^`([A-Z][A-Z0-9_]*)`$")


class Row(NamedTuple):
    """One registry entry, in the table's column order."""

    code: str
    retryable: bool
    http: int
    grpc: str
    meaning: str


def _cells(line: str) -> list[str]:
    inner = line.strip()
    if not (inner.startswith("|") and inner.endswith("|")):
        raise ValueError(f"not a table row: {line!r}")
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(inner[1:-1])]


def _row(line: str) -> Row:
    cells = _cells(line)
    if len(cells) != len(HEADER):
        raise ValueError(f"expected {len(HEADER)} cells, got {len(cells)}: {line!r}")
    code, retryable, http, grpc, meaning = cells
    code_match = _CODE_CELL.match(code)
    if code_match is None:
        raise ValueError(f"Code must be an UPPER_SNAKE name in backticks: {code!r}")
    if retryable not in ("yes", "no"):
        raise ValueError(f"Retryable must be yes or no: {retryable!r}")
    if not http.isdigit():
        raise ValueError(f"HTTP must be a status number: {http!r}")
    return Row(code_match.group(1), retryable == "yes", int(http), grpc, meaning)


def table_rows(markdown: str) -> list[Row]:
    """The rows of the first table under the ``## Registry`` heading.

    :raises ValueError: if the heading, the header row or a row is malformed.
    """
    lines = markdown.splitlines()
    try:
        start = lines.index("## Registry")
    except ValueError:
        raise ValueError("no '## Registry' heading") from None
    section: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        section.append(line)
    table_start = next((i for i, line in enumerate(section) if line.startswith("|")), None)
    if table_start is None:
        raise ValueError("no table under '## Registry'")
    table: list[str] = []
    for line in section[table_start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    if len(table) < 2 or tuple(_cells(table[0])) != HEADER:
        raise ValueError(f"the header row must be | {' | '.join(HEADER)} |")
    if not all(set(cell) <= set(":-") and cell for cell in _cells(table[1])):
        raise ValueError("the second row must be the delimiter row")
    return [_row(line) for line in table[2:]]


def file_rows(document: dict[str, Any]) -> list[Row]:
    """The entries of an ``error-codes.json`` document, in file order."""
    return [
        Row(entry["code"], entry["retryable"], entry["http"], entry["grpc"], entry["meaning"])
        for entry in document["codes"]
    ]


def enum_rows(codes: list[ErrorCode]) -> list[Row]:
    """The registry rows that ``ErrorCode`` members carry, in member order."""
    rows: list[Row] = []
    for code in codes:
        entry = code.entry
        rows.append(Row(code.value, entry.retryable, entry.http, entry.grpc, entry.meaning))
    return rows


def _table() -> list[Row]:
    return table_rows(ERRORS_MD.read_text(encoding="utf-8"))


def _file() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(CODES_JSON.read_text(encoding="utf-8"))
    return document


def test_table_matches_registry_file() -> None:
    """The spec's table lists the registry file's entries, in file order, cell for cell."""
    assert file_rows(_file()) == _table()


def test_enum_matches_table() -> None:
    """ErrorCode has one member per table row, in table order, each with the row's entry."""
    table = _table()
    assert [row.code for row in table] == [code.value for code in ErrorCode]
    assert table == enum_rows(list(ErrorCode))


def test_enum_matches_registry_file() -> None:
    """ErrorCode members and ``registry()`` follow the registry file, entry for entry."""
    rows = file_rows(_file())
    assert rows == enum_rows(list(ErrorCode))
    assert [row.code for row in rows] == list(registry())


def _flip_retryable(markdown: str) -> str:
    return markdown.replace("| `NO_RESPONDERS` | yes |", "| `NO_RESPONDERS` | no |", 1)


def _change_meaning(markdown: str) -> str:
    return markdown.replace("a bug to report.", "a bug.", 1)


def _swap_rows(markdown: str) -> str:
    lines = markdown.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| `INVALID_ENVELOPE`"))
    lines[first], lines[first + 1] = lines[first + 1], lines[first]
    return "\n".join(lines)


def _drop_row(markdown: str) -> str:
    return "\n".join(line for line in markdown.splitlines() if "| `DEAD_LETTERED` |" not in line)


@pytest.mark.parametrize("mutate", [_flip_retryable, _change_meaning, _swap_rows, _drop_row])
def test_changed_table_detected(mutate: Any) -> None:
    """A table edited alone no longer matches the registry file or the enum."""
    text = ERRORS_MD.read_text(encoding="utf-8")
    changed = table_rows(mutate(text))
    assert changed != file_rows(_file())
    assert changed != enum_rows(list(ErrorCode))


def test_changed_file_detected() -> None:
    """A registry file edited alone no longer matches the table."""
    document = copy.deepcopy(_file())
    document["codes"][0]["http"] = 422
    assert file_rows(document) != _table()


def test_changed_enum_detected() -> None:
    """An enum that loses or reorders a member no longer matches the table."""
    members = list(ErrorCode)
    assert enum_rows(members[1:]) != _table()
    assert enum_rows([members[1], members[0], *members[2:]]) != _table()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("| INVALID_ENVELOPE | no | 400 | INVALID_ARGUMENT | x |", "backticks"),
        ("| `INVALID_ENVELOPE` | false | 400 | INVALID_ARGUMENT | x |", "yes or no"),
        ("| `INVALID_ENVELOPE` | no | 4xx | INVALID_ARGUMENT | x |", "status number"),
        ("| `INVALID_ENVELOPE` | no | 400 | INVALID_ARGUMENT |", "cells"),
    ],
)
def test_malformed_row_rejected(line: str, reason: str) -> None:
    """The table reader refuses a malformed row instead of guessing."""
    markdown = f"## Registry\n\n| {' | '.join(HEADER)} |\n|---|---|---|---|---|\n{line}\n"
    with pytest.raises(ValueError, match=reason):
        table_rows(markdown)


def test_wrong_header_rejected() -> None:
    """The table must have exactly the columns Code, Retryable, HTTP, gRPC, Meaning."""
    swapped = "| Code | HTTP | Retryable | gRPC | Meaning |"
    markdown = f"## Registry\n\n{swapped}\n|---|---|---|---|---|\n"
    with pytest.raises(ValueError, match="header row"):
        table_rows(markdown)
