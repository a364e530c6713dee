"""The hot-path envelope validator: the envelope schema, written out by hand.

``schemas/envelope.schema.json`` is normative. This module must accept exactly what the schema
(with the ``date-time`` format asserted) accepts; ``tests/test_fast_path_oracle.py`` judges every
vector and thousands of generated envelopes with both. The patterns and the per-kind presence
rules are read from the schema files at import, so only the control flow is hand-written.

Checks run in a fixed order so that one problem always yields the same report: ``llmp`` first
(a different major version may have different members), then unknown members, required members,
each member's value in schema order, the per-kind rules, and the cross-member rules last.

Theory of operation
-------------------
Messages come in few *shapes* (their member names, in order): a peer writes the same members in
the same order every time. Once the ordered check has accepted a shape, the rules that depend
only on which members are present (unknown and required members, each kind's required and
forbidden members) are decided for it, and a *plan* keeps what is left: the kinds the shape
allows, and a yes/no test per member value with no pointer to compute (``_QUICK``). A message of
a known shape that passes its plan is valid; a message that fails it, or of a shape not seen
yet, takes the ordered check, which reports the problem as always. Each quick test accepts only
what its member's check accepts; ``tests/test_fast_path_oracle.py`` judges both paths with the
schema. Shapes with ``enc`` (whose rules depend on values) get no plan; the plans are bounded.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from typing import Any

from llmproto_ref._errors import EnvelopeError
from llmproto_ref._registry import ErrorCode
from llmproto_ref._resources import load_schema
from llmproto_ref._strictjson import escape_pointer

__all__ = ("KIND_RULES", "MEMBERS", "validate_member", "validate_members")

_INVALID = ErrorCode.INVALID_ENVELOPE
_UINT53_MAX = 9_007_199_254_740_991
LLMP_MAJOR_1_0 = "1.0"
_ANY_VERSION = re.compile(r"^[0-9]{1,4}\.[0-9]{1,4}$(?!\n)")

_COMMON: dict[str, Any] = load_schema("common.schema.json")["$defs"]
_ENVELOPE: dict[str, Any] = load_schema("envelope.schema.json")
_PROPS: dict[str, Any] = _ENVELOPE["properties"]


Matcher = Callable[[str], object]  #: a pattern's test: a match object, or ``None``

_ANCHORED = re.compile(r"\^(.*)\$\(\?!\\n\)", re.DOTALL)


def _pattern(schema: dict[str, Any]) -> Matcher:
    """The schema's ``pattern`` as a test of a whole string.

    The schemas anchor every pattern as ``^X$(?!\\n)``, which ``search`` matches exactly when
    ``X`` spans the whole string: that is ``fullmatch`` of ``X``, which skips the anchors' work.
    A pattern of another form, or with a top-level ``|``, keeps ``search``.
    """
    source: str = schema["pattern"]
    anchored = _ANCHORED.fullmatch(source)
    if anchored is None or _has_top_level_bar(anchored.group(1)):
        return re.compile(source).search
    return re.compile(f"(?:{anchored.group(1)})").fullmatch


def _has_top_level_bar(pattern: str) -> bool:
    depth, in_class, escaped = 0, False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
    return False


def _fail(pointer: str, message: str, requirement: str) -> EnvelopeError:
    return EnvelopeError(_INVALID, message, pointer=pointer, requirement=requirement)


Check = Callable[[Any, str], None]


def _string(
    pattern: Matcher,
    requirement: str,
    what: str,
    max_length: int = 0,
    *,
    remember: bool = False,
    quote: bool = True,
) -> Check:
    """A patterned string; with ``remember``, values already accepted skip the regex.

    ``type``, ``source`` and ``reply_to`` repeat from message to message, so a small set of
    accepted values saves the pattern match on most messages; the set is cleared when full.
    """
    accepted: set[str] = set()

    def check(value: Any, pointer: str) -> None:
        if remember and type(value) is str and value in accepted:
            return
        if type(value) is not str:
            raise _fail(pointer, f"{what} must be a string", requirement)
        if max_length and len(value) > max_length:
            raise _fail(pointer, f"{what} is longer than {max_length} characters", requirement)
        if pattern(value) is None:
            shown = f" {_show(value)}" if quote else ""  # credentials are never quoted [ERR-012]
            raise _fail(pointer, f"{what}{shown} is malformed", requirement)
        if remember:
            if len(accepted) >= 1024:
                accepted.clear()
            accepted.add(value)

    return check


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")


def _uint53(requirement: str, what: str) -> Check:
    def check(value: Any, pointer: str) -> None:
        if type(value) is int or (type(value) is float and value.is_integer()):
            ok = 0 <= value <= _UINT53_MAX
        else:
            raise _fail(pointer, f"{what} must be an integer", requirement)
        if not ok:
            raise _fail(pointer, f"{what} must lie in 0..2^53-1 (I-JSON)", "ENV-033")

    return check


def _boolean(requirement: str, what: str) -> Check:
    def check(value: Any, pointer: str) -> None:
        if type(value) is not bool:
            raise _fail(pointer, f"{what} must be true or false", requirement)

    return check


_TIMESTAMP = _pattern(_COMMON["timestamp"])
#: "YYYY-MM-DDTHH:MM:SS" prefixes of timestamps already accepted whole (pattern and calendar).
_ACCEPTED_SECONDS: set[str] = set()
#: Every ending the timestamp pattern allows after the seconds: ".000Z" to ".999Z".
_FRACTIONS = frozenset(f".{milli:03d}Z" for milli in range(1000))


def _timestamp(requirement: str, what: str) -> Check:
    """An RFC 3339 UTC time that is a real calendar date.

    The pattern is a run of independent fixed-width fields, so a value whose first 19
    characters began an accepted timestamp, and whose rest is one of the 1000 allowed
    endings, is valid without the regular expression; messages of one second share them.
    """

    def check(value: Any, pointer: str) -> None:
        if type(value) is str and value[:19] in _ACCEPTED_SECONDS and value[19:] in _FRACTIONS:
            return
        if type(value) is not str or _TIMESTAMP(value) is None:
            raise _fail(
                pointer,
                f"{what} must be an RFC 3339 UTC time like 2026-01-31T23:59:59.000Z",
                requirement,
            )
        year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
        if year == 0 or day > calendar.monthrange(year, month)[1]:
            raise _fail(pointer, f"{what} {value!r} is not a calendar date", requirement)
        if len(_ACCEPTED_SECONDS) >= 4096:
            _ACCEPTED_SECONDS.clear()
        _ACCEPTED_SECONDS.add(value[:19])

    return check


def _object(
    members: dict[str, Check], requirement: str, what: str, required: tuple[str, ...] = ()
) -> Check:
    def check(value: Any, pointer: str) -> None:
        if type(value) is not dict:
            raise _fail(pointer, f"{what} must be an object", requirement)
        for name in value:
            if name not in members:
                raise _fail(
                    f"{pointer}/{escape_pointer(name)}",
                    f"{what} has no member {name!r}",
                    requirement,
                )
        for name in required:
            if name not in value:
                raise _fail(
                    f"{pointer}/{name}", f"{what} lacks required member {name!r}", requirement
                )
        for name, member in value.items():
            members[name](member, f"{pointer}/{name}")

    return check


def _block(schema_name: str, requirement: str, what: str) -> Check:
    """A closed object whose members are all patterned strings, timestamps or enums."""
    schema: dict[str, Any] = load_schema(schema_name)
    members: dict[str, Check] = {}
    for name, sub in schema["properties"].items():
        if sub.get("$ref", "").endswith("/timestamp"):
            members[name] = _timestamp(requirement, f"{what}.{name}")
        elif "enum" in sub:
            members[name] = _enum(tuple(sub["enum"]), requirement, f"{what}.{name}")
        elif "pattern" in sub:
            members[name] = _string(_pattern(sub), requirement, f"{what}.{name}", quote=False)
        elif sub.get("type") == "boolean":
            members[name] = _boolean(requirement, f"{what}.{name}")
        else:  # pragma: no cover - a schema change this reader does not know
            raise RuntimeError(f"{schema_name}: cannot derive a check for {name}")
    return _object(members, requirement, what, tuple(schema["required"]))


def _enum(options: frozenset[str] | tuple[str, ...], requirement: str, what: str) -> Check:
    ordered = ", ".join(sorted(options))

    def check(value: Any, pointer: str) -> None:
        if type(value) is not str or value not in options:
            raise _fail(pointer, f"{what} must be one of {ordered}", requirement)

    return check


_IDENTIFIER = _pattern(_COMMON["identifier"])
_VISIBLE = _pattern(_COMMON["visible_ascii"])
_TOKEN = _pattern(_COMMON["token"])
_TYPE_NAME = _pattern(_COMMON["type_name"])
_TYPE_MAX = int(_COMMON["type_name"]["maxLength"])
_EXT_NAME = _pattern(_COMMON["extension_name"])
_EXT_MAX = int(_COMMON["extension_name"]["maxLength"])


def _check_version(value: Any, pointer: str) -> None:
    if type(value) is not str:
        raise _fail(pointer, 'llmp must be a version string like "1.0"', "ENV-010")
    if _VERSION(value) is None:
        if _ANY_VERSION.search(value) is not None and value.split(".")[0] != "1":
            raise EnvelopeError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {value} is not supported; this receiver implements 1.x",
                pointer=pointer,
                requirement="ENV-010",
            )
        raise _fail(pointer, f"llmp {_show(value)} is not a major.minor version", "ENV-010")


_VERSION = _pattern(_COMMON["version"])


def _check_usage(value: Any, pointer: str) -> None:
    if type(value) is not dict:
        raise _fail(pointer, "usage must be an object", "ENV-023")
    if len(value) > _PROPS["usage"]["maxProperties"]:
        raise _fail(pointer, "usage has more than 32 members", "ENV-023")
    count = _uint53("ENV-023", "usage count")
    for name, member in value.items():
        where = f"{pointer}/{escape_pointer(name)}"
        if _TOKEN(name) is None:
            raise _fail(where, f"usage member name {_show(name)} is malformed", "ENV-023")
        count(member, where)


def _check_critical(value: Any, pointer: str) -> None:
    spec = _PROPS["critical"]
    if type(value) is not list:
        raise _fail(pointer, "critical must be an array", "ENV-031")
    if not spec["minItems"] <= len(value) <= spec["maxItems"]:
        raise _fail(pointer, "critical must list 1 to 16 names", "ENV-031")
    item = _string(_pattern(spec["items"]), "ENV-031", "critical name", spec["items"]["maxLength"])
    seen: set[str] = set()
    for index, name in enumerate(value):
        item(name, f"{pointer}/{index}")
        if name in seen:
            raise _fail(f"{pointer}/{index}", f"critical lists {name!r} twice", "ENV-031")
        seen.add(name)


def _check_ext(value: Any, pointer: str) -> None:
    if type(value) is not dict:
        raise _fail(pointer, "ext must be an object", "ENV-032")
    if len(value) > _PROPS["ext"]["maxProperties"]:
        raise _fail(pointer, "ext has more than 32 members", "ENV-032")
    for name in value:
        if len(name) > _EXT_MAX or _EXT_NAME(name) is None:
            raise _fail(
                f"{pointer}/{escape_pointer(name)}",
                f"extension name {_show(name)} is not namespaced like 'acme.priority'",
                "ENV-032",
            )


def _check_details(value: Any, pointer: str) -> None:
    if type(value) is not list:
        raise _fail(pointer, "error.details must be an array", "ERR-005")
    if len(value) > 32:
        raise _fail(pointer, "error.details holds more than 32 objects", "ERR-005")
    for index, detail in enumerate(value):
        where = f"{pointer}/{index}"
        if type(detail) is not dict:
            raise _fail(where, "each error detail must be an object", "ERR-005")
        if "type" not in detail:
            raise _fail(f"{where}/type", "error detail lacks its 'type'", "ERR-005")
        _string(_TYPE_NAME, "ERR-005", "error detail type", _TYPE_MAX)(
            detail["type"], f"{where}/type"
        )


def _check_message(value: Any, pointer: str) -> None:
    if type(value) is not str:
        raise _fail(pointer, "error.message must be a string", "ERR-001")
    if len(value) > 4096:
        raise _fail(pointer, "error.message is longer than 4096 characters", "ERR-001")


_ERROR_SCHEMA: dict[str, Any] = load_schema("error.schema.json")
_check_error = _object(
    {
        "code": _string(_pattern(_ERROR_SCHEMA["properties"]["code"]), "ERR-001", "error.code"),
        "message": _check_message,
        "retryable": _boolean("ERR-001", "error.retryable"),
        "retry_after_ms": _uint53("ERR-004", "error.retry_after_ms"),
        "details": _check_details,
        "origin": _string(_VISIBLE, "ERR-001", "error.origin"),
    },
    "ERR-001",
    "error",
    tuple(_ERROR_SCHEMA["required"]),
)

_TRACE = _PROPS["trace"]["properties"]
_TRACE_MEMBERS = frozenset(_TRACE)
_TRACEPARENT = _pattern(_TRACE["traceparent"])
_check_trace_slowly = _object(
    {
        "traceparent": _string(_TRACEPARENT, "ENV-029", "traceparent"),
        "tracestate": _string(_pattern(_TRACE["tracestate"]), "ENV-029", "tracestate"),
    },
    "ENV-029",
    "trace",
    ("traceparent",),
)


_TRACESTATE = _pattern(_TRACE["tracestate"])


def _check_trace(value: Any, pointer: str) -> None:
    """The common, valid case without the generic object walk; anything else walks."""
    if type(value) is dict and 1 <= len(value) <= 2:
        parent = value.get("traceparent")
        state = value.get("tracestate", "")
        if (
            type(parent) is str
            and type(state) is str
            and (len(value) == 1 or "tracestate" in value)
            and _TRACEPARENT(parent) is not None
            and (not state or _TRACESTATE(state) is not None)
        ):
            return
    _check_trace_slowly(value, pointer)


_TIMING = _PROPS["timing"]["properties"]
_TIMING_NAMES = frozenset(_TIMING)
_check_timing_slowly = _object(
    {name: _uint53("ENV-030", f"timing.{name}") for name in _TIMING}, "ENV-030", "timing"
)


def _check_timing(value: Any, pointer: str) -> None:
    """Integer stamps without the generic object walk; anything else walks."""
    if type(value) is dict and value.keys() <= _TIMING_NAMES:
        for stamp in value.values():
            if type(stamp) is not int or not 0 <= stamp <= _UINT53_MAX:
                break
        else:
            return
    _check_timing_slowly(value, pointer)


#: Member name -> value check, in schema order.
MEMBERS: dict[str, Check] = {
    "llmp": _check_version,
    "id": _string(_IDENTIFIER, "ENV-011", "id"),
    "kind": _enum(frozenset(_PROPS["kind"]["enum"]), "ENV-013", "kind"),
    "type": _string(_TYPE_NAME, "ENV-014", "type", _TYPE_MAX, remember=True),
    "source": _string(_VISIBLE, "ENV-015", "source", remember=True),
    "time": _timestamp("ENV-016", "time"),
    "correlation_id": _string(_IDENTIFIER, "ENV-017", "correlation_id"),
    "causation_id": _string(_IDENTIFIER, "ENV-018", "causation_id"),
    "reply_to": _string(_VISIBLE, "ENV-019", "reply_to", remember=True),
    "deadline": _timestamp("ENV-020", "deadline"),
    "idempotency_key": _string(_pattern(_PROPS["idempotency_key"]), "ENV-021", "idempotency_key"),
    "seq": _uint53("ENV-022", "seq"),
    "final": _boolean("ENV-022", "final"),
    "finish_reason": _string(_TOKEN, "ENV-023", "finish_reason"),
    "usage": _check_usage,
    "content_type": _string(
        _pattern(_PROPS["content_type"]),
        "ENV-024",
        "content_type",
        _PROPS["content_type"]["maxLength"],
    ),
    "dataschema": _string(_pattern(_PROPS["dataschema"]), "ENV-025", "dataschema"),
    "data": lambda value, pointer: None,
    "data_base64": _string(_pattern(_PROPS["data_base64"]), "ENV-027", "data_base64"),
    "error": _check_error,
    "trace": _check_trace,
    "timing": _check_timing,
    "auth": _block("auth.schema.json", "SEC-001", "auth"),
    "sig": _block("sig.schema.json", "SEC-002", "sig"),
    "enc": _block("enc.schema.json", "SEC-003", "enc"),
    "critical": _check_critical,
    "ext": _check_ext,
}

if list(MEMBERS) != list(_PROPS):  # pragma: no cover - guarded by a test too
    raise ImportError("envelope.schema.json members changed; update _validate.MEMBERS")

_REQUIRED: tuple[str, ...] = tuple(_ENVELOPE["required"])
_REQUIRED_BY_KIND_ID = {"correlation_id": "ENV-017", "seq": "ENV-022", "error": "ENV-028"}


def _kind_rules() -> dict[str, tuple[tuple[str, ...], frozenset[str]]]:
    rules: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {}
    for branch in _ENVELOPE["allOf"]:
        kind = branch["if"]["properties"]["kind"]["const"]
        then = branch["then"]
        forbidden = frozenset(n for n, s in then.get("properties", {}).items() if s is False)
        rules[kind] = (tuple(then.get("required", ())), forbidden)
    return rules


#: kind -> (members it requires beyond the common ones, members it forbids); from the schema.
KIND_RULES = _kind_rules()


_KNOWN = frozenset(MEMBERS)
_REQUIRED_SET = frozenset(_REQUIRED)
_POINTERS = {name: f"/{name}" for name in MEMBERS}


def _checked_first(value: Any, pointer: str) -> None:
    """``llmp`` was checked before the loop (it decides which members exist)."""


#: MEMBERS as the member loop of validate_members runs them.
_LOOP_CHECKS: dict[str, Check] = {**MEMBERS, "llmp": _checked_first}


def validate_member(name: str, value: Any) -> None:
    """Check one member's value on its own, as :func:`validate_members` checks it.

    The runtime's builders check what the application gave them with this; the rules that
    relate members (per kind, ``data``/``data_base64``) remain theirs to keep.
    """
    MEMBERS[name](value, _POINTERS[name])


def validate_members(members: Any) -> None:
    """Raise :class:`EnvelopeError` for the first way ``members`` breaks the envelope schema.

    :param members: a parsed JSON value, normally the top-level object of a message.
    """
    if type(members) is dict:
        shape = tuple(members)
        plan = _PLANS.get(shape, _UNSEEN)
        if plan is not None and plan is not _UNSEEN and _follows(plan, members):
            return
        _validate_in_order(members)
        if plan is _UNSEEN:  # accepted: plan this shape for the next message like it
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[shape] = _plan(shape)
        return
    _validate_in_order(members)


def _validate_in_order(members: Any) -> None:
    """The ordered check that :func:`validate_members` reports with."""
    if type(members) is not dict:
        raise _fail("", "an envelope must be a JSON object", "ENV-001")
    version = members.get("llmp")
    if version != LLMP_MAJOR_1_0:
        if "llmp" not in members:
            raise _fail("/llmp", "envelope lacks required member 'llmp'", "ENV-009")
        _check_version(version, "/llmp")
    names = members.keys()
    if not names <= _KNOWN:
        unknown = next(n for n in members if n not in _KNOWN)
        raise _fail(
            f"/{escape_pointer(unknown)}", f"unknown envelope member {_show(unknown)}", "ENV-008"
        )
    if not _REQUIRED_SET <= names:
        missing = next(n for n in _REQUIRED if n not in members)
        raise _fail(f"/{missing}", f"envelope lacks required member {missing!r}", "ENV-009")
    pointers, checks = _POINTERS, _LOOP_CHECKS
    for name, value in members.items():
        checks[name](value, pointers[name])
    kind = members["kind"]
    required, forbidden = KIND_RULES[kind]
    for name in required:
        if name not in members:
            raise _fail(f"/{name}", f"a {kind} must carry {name!r}", _REQUIRED_BY_KIND_ID[name])
    if not forbidden.isdisjoint(names):
        extra = next(n for n in members if n in forbidden)
        raise _fail(f"/{extra}", f"{extra!r} is not allowed on a {kind}", "ENV-034")
    if kind == "chunk" and members.get("final") is not True:
        for name in ("finish_reason", "usage"):
            if name in members:
                raise _fail(f"/{name}", f"{name!r} belongs on the final chunk only", "ENV-023")
    if "data_base64" in members:
        if "data" in members:
            raise _fail("/data_base64", "data and data_base64 are mutually exclusive", "ENV-026")
    elif "enc" in members:
        raise _fail("/data_base64", "an encrypted envelope carries data_base64", "SEC-003")
    if "enc" in members and "enc" not in members.get("critical", ()):
        raise _fail("/critical", "an encrypted envelope lists 'enc' in critical", "SEC-003")


# -- plans: the quick path for shapes already accepted (see the module notes) ------------------

Quick = Callable[[Any], bool]


def _quietly(check: Check) -> Quick:
    """``check`` as a yes/no test (its error, if any, is left to the ordered check)."""

    def quick(value: Any) -> bool:
        try:
            check(value, "")
        except EnvelopeError:
            return False
        return True

    return quick


def _quick_identifier(value: Any) -> bool:
    return type(value) is str and _IDENTIFIER(value) is not None


def _quick_timestamp(check: Check) -> Quick:
    slowly = _quietly(check)

    def quick(value: Any) -> bool:
        if type(value) is str and value[:19] in _ACCEPTED_SECONDS and value[19:] in _FRACTIONS:
            return True
        return slowly(value)

    return quick


def _quick_timing(value: Any) -> bool:
    if type(value) is not dict or not value.keys() <= _TIMING_NAMES:
        return False
    for stamp in value.values():
        if type(stamp) is not int or not 0 <= stamp <= _UINT53_MAX:
            return False  # also an integral float: the ordered check decides
    return True


def _quick_seq(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _UINT53_MAX


def _quick_final(value: Any) -> bool:
    return type(value) is bool


#: member -> yes/no test of its value; ``llmp`` and ``kind`` are tested by the plan itself and
#: ``data`` may hold any JSON value.
_QUICK: dict[str, Quick] = {
    **{name: _quietly(check) for name, check in MEMBERS.items()},
    "id": _quick_identifier,
    "correlation_id": _quick_identifier,
    "causation_id": _quick_identifier,
    "time": _quick_timestamp(MEMBERS["time"]),
    "deadline": _quick_timestamp(MEMBERS["deadline"]),
    "seq": _quick_seq,
    "final": _quick_final,
    "timing": _quick_timing,
}
for _name in ("llmp", "kind", "data"):
    del _QUICK[_name]

_Plan = tuple[frozenset[str], bool, tuple[tuple[str, Quick], ...]]
_MAX_PLANS = 256
_PLANS: dict[tuple[str, ...], _Plan | None] = {}  #: shape -> its plan (None: never quick)
_UNSEEN: Any = object()


def _plan(shape: tuple[str, ...]) -> _Plan | None:
    """For an accepted shape: (kinds it allows, chunk finality rule applies, value tests)."""
    present = frozenset(shape)
    if (
        not present <= _KNOWN
        or not _REQUIRED_SET <= present
        or "enc" in present
        or {"data", "data_base64"} <= present
    ):
        return None
    kinds = frozenset(
        kind
        for kind, (required, forbidden) in KIND_RULES.items()
        if present.issuperset(required) and forbidden.isdisjoint(present)
    )
    if not kinds:  # pragma: no cover - an accepted shape allows the kind it had
        return None
    finality = "chunk" in kinds and ("finish_reason" in present or "usage" in present)
    return kinds, finality, tuple((name, _QUICK[name]) for name in shape if name in _QUICK)


def _follows(plan: _Plan, members: dict[str, Any]) -> bool:
    """Whether ``members``, of the plan's shape, is valid by the plan (else: not known)."""
    kinds, finality, tests = plan
    if members["llmp"] != LLMP_MAJOR_1_0:
        return False
    kind = members["kind"]
    if type(kind) is not str or kind not in kinds:
        return False
    if finality and kind == "chunk" and members.get("final") is not True:
        return False
    for name, quick in tests:  # noqa: SIM110 - all() over a generator is slower here
        if not quick(members[name]):
            return False
    return True
