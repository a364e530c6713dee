"""Requirement traceability: every spec requirement is cited by a test or a vector, or excluded.

The first tests judge the repository itself; the rest pin down the rules of the tool on small
trees written to a temporary directory (area ``TRC``, which the real spec does not use).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmproto_conformance._traceability import Level, Origin, read_requirements, trace

ROOT = Path(__file__).resolve().parents[1]


def test_every_requirement_is_cited_or_excluded() -> None:
    """Each ID the spec defines is named by a test, a vector or the kit, or excluded."""
    uncited = [_sentence(rid) for rid in trace(ROOT).uncited]
    advice = "cite each in a test or a vector, or exclude it in spec/traceability-exclusions.toml"
    assert [] == uncited, "\n".join([advice, *uncited])


def test_exclusions_name_requirements_the_spec_defines() -> None:
    """An exclusion for an ID the spec does not define is a mistake."""
    assert () == trace(ROOT).unknown_exclusions


def test_exclusions_are_not_stale() -> None:
    """An excluded requirement that is cited after all must leave the exclusions file."""
    assert () == trace(ROOT).stale_exclusions


def test_every_cited_id_is_defined() -> None:
    """Code, tests and vectors cite only IDs the spec defines."""
    undefined = [f"{c.id} in {c.file}:{c.line}" for c in trace(ROOT).undefined]
    assert [] == undefined, "\n".join(["not defined in spec/:", *undefined])


def test_the_spec_defines_requirements() -> None:
    """The reader finds the envelope requirements (guards against a reader finding nothing)."""
    requirements = read_requirements(ROOT)
    assert {"ENV-001", "ENV-003", "ENV-031"} <= set(requirements)


def _sentence(rid: str) -> str:
    requirement = read_requirements(ROOT)[rid]
    return f"{rid} ({requirement.file}:{requirement.line}): {requirement.sentence}"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "spec").mkdir(exist_ok=True)
    return root


SPEC = """\
# Example

The key words MUST, SHOULD and MAY are to be interpreted as in BCP 14.

A receiver MUST reject an envelope that is not strict JSON,
e.g. one with trailing content [TRC-001].
Senders SHOULD use time-sortable identifiers. [TRC-002]
This sentence only refers to [TRC-001] and defines nothing.

- A sender MAY add extension members [TRC-003].
- Unknown members are rejected, see [TRC-004].

| member | rule |
|---|---|
| id | MUST be unique [TRC-005] |

```
A receiver MUST do what a code block says [TRC-006].
```

The keyword `MUST` in code is quoted, not used [TRC-007].
A receiver MUST NOT crash and MAY log the input [TRC-008, TRC-009].
"""


def test_a_tagged_sentence_with_a_keyword_is_a_definition(tmp_path: Path) -> None:
    """Tags on keyword sentences, list items and table rows define; references do not."""
    root = _tree(tmp_path, {"spec/example.md": SPEC})
    found = read_requirements(root)
    assert ["TRC-001", "TRC-002", "TRC-003", "TRC-005", "TRC-008", "TRC-009"] == list(found)
    assert "spec/example.md" == found["TRC-001"].file
    assert 5 == found["TRC-001"].line
    assert found["TRC-001"].sentence.endswith("e.g. one with trailing content [TRC-001].")


def test_the_level_is_the_strongest_keyword(tmp_path: Path) -> None:
    """MUST beats SHOULD beats MAY, and MUST NOT counts as MUST."""
    root = _tree(tmp_path, {"spec/example.md": SPEC})
    levels = {rid: r.level for rid, r in read_requirements(root).items()}
    assert Level.MUST == levels["TRC-001"]
    assert Level.SHOULD == levels["TRC-002"]
    assert Level.MAY == levels["TRC-003"]
    assert Level.MUST == levels["TRC-008"]


def test_a_leading_tag_belongs_to_the_sentence_after_it(tmp_path: Path) -> None:
    """``[ID] Sentence.`` style tags the sentence that follows the tag."""
    text = "Intro without a keyword. [TRC-010] Receivers MUST do ten. Plain sentence.\n"
    root = _tree(tmp_path, {"spec/a.md": text})
    found = read_requirements(root)
    assert ["TRC-010"] == list(found)
    assert "[TRC-010] Receivers MUST do ten." == found["TRC-010"].sentence


def test_citations_are_counted_by_origin(tmp_path: Path) -> None:
    """Test files, vectors and kit modules count; the tool's own module does not."""
    vectors = {
        "vectors": [
            {"id": "a", "requirement": "TRC-001", "expect": {"requirement": "TRC-001"}},
            {"id": "b", "requirement": ["TRC-001", "TRC-002"]},
        ]
    }
    kit = "conformance/llmproto_conformance"
    root = _tree(
        tmp_path,
        {
            "spec/example.md": SPEC,
            "tests/test_one.py": "# TRC-001 and SHA-256\n",
            "tests/sub/test_two.py": "CASES = ['TRC-001', 'TRC-001']\n",
            f"{kit}/vectors/envelope/v.json": json.dumps(vectors),
            f"{kit}/checks.py": "REQUIREMENT = 'TRC-003'\n",
            f"{kit}/_traceability.py": "EXAMPLE = 'TRC-005'\n",
        },
    )
    rows = {row.requirement.id: row for row in trace(root).rows}
    assert (2, 2, 0) == (rows["TRC-001"].tests, rows["TRC-001"].vectors, rows["TRC-001"].kit)
    assert (0, 1, 0) == (rows["TRC-002"].tests, rows["TRC-002"].vectors, rows["TRC-002"].kit)
    assert (0, 0, 1) == (rows["TRC-003"].tests, rows["TRC-003"].vectors, rows["TRC-003"].kit)
    assert not rows["TRC-005"].cited


def test_uncited_unknown_and_stale_exclusions_are_reported(tmp_path: Path) -> None:
    """An uncited ID fails unless excluded; excluding an unknown or a cited ID fails too."""
    exclusions = '[exclusions]\n"TRC-003" = "runtime"\n"TRC-001" = "cited"\n"TRC-050" = "gone"\n'
    root = _tree(
        tmp_path,
        {
            "spec/example.md": SPEC,
            "spec/traceability-exclusions.toml": exclusions,
            "tests/test_one.py": "# TRC-001 TRC-002 TRC-005 TRC-008\n",
        },
    )
    report = trace(root)
    assert ("TRC-009",) == report.uncited
    assert ("TRC-050",) == report.unknown_exclusions
    assert ("TRC-001",) == report.stale_exclusions
    assert "runtime" == {r.requirement.id: r for r in report.rows}["TRC-003"].exclusion
    assert not report.ok


def test_a_cited_id_the_spec_does_not_define_is_reported(tmp_path: Path) -> None:
    """A citation of an undefined ID of a known area is listed, wherever it is."""
    root = _tree(
        tmp_path,
        {
            "spec/example.md": SPEC,
            "tests/test_one.py": "# TRC-001 TRC-002 TRC-003 TRC-005 TRC-008 TRC-009\n",
            "src/pkg/_codec.py": "\n\nREQUIREMENT = 'TRC-099'\n",
        },
    )
    report = trace(root)
    assert [("TRC-099", Origin.SOURCE, "src/pkg/_codec.py", 3)] == [
        (c.id, c.origin, c.file, c.line) for c in report.undefined
    ]
    assert not report.ok


def test_a_complete_tree_is_ok(tmp_path: Path) -> None:
    """Every ID cited or excluded, nothing stale: the report is ok and says so."""
    root = _tree(
        tmp_path,
        {
            "spec/example.md": SPEC,
            "spec/traceability-exclusions.toml": '[exclusions]\n"TRC-009" = "later issue"\n',
            "tests/test_one.py": "# TRC-001 TRC-002 TRC-003 TRC-005 TRC-008\n",
        },
    )
    report = trace(root)
    assert report.ok
    table = report.format_table()
    assert "TRC-009   MUST       0       0    0  excluded: later issue" in table.splitlines()
    assert "6 requirements: 5 cited, 1 excluded, 0 uncited" in table
    assert report.to_json()["ok"] is True


@pytest.mark.parametrize(
    "text",
    [
        '[exclusions]\n"TRC-001" = ""\n',
        '[exclusions]\n"not-an-id" = "reason"\n',
        '[exclusions]\n"TRC-001" = 3\n',
        "exclusions = 1\n",
        "[exclusions\n",
    ],
)
def test_a_malformed_exclusions_file_is_an_error(tmp_path: Path, text: str) -> None:
    """Empty reasons, bad IDs and broken TOML raise ValueError naming the file."""
    root = _tree(tmp_path, {"spec/example.md": SPEC, "spec/traceability-exclusions.toml": text})
    with pytest.raises(ValueError, match=r"traceability-exclusions\.toml"):
        trace(root)
