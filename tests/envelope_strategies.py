"""Hypothesis strategies for llmproto envelopes: valid ones, and near misses of them.

Theory of operation
-------------------
``hypothesis-jsonschema`` ignores parts of draft 2020-12, so these strategies are written by hand
from ``schemas/*.json`` and the per-kind presence table of spec/envelope.md. Every value strategy
produces only schema-valid values and nothing is filtered: a length boundary is built by padding a
short random head, a date is drawn from the calendar, a trace id that came out all zeros gets a
``1``. That keeps generation fast enough for thousands of cases per run.

:func:`mutations` takes one valid envelope and changes one thing in it: a member dropped, added
or given another JSON type, a string bent (off-by-one length, a bad character, a trailing
newline), a number pushed out of range, an impossible date, another kind or version, a nested
block broken, a cross-member rule undone. Some mutants stay valid (an optional member dropped);
the oracle only asks that the fast path and the schema agree on each one.
"""

from __future__ import annotations

import base64
import calendar
import string
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, SearchStrategy

__all__ = (
    "KINDS",
    "KIND_SPECIFIC",
    "MEMBER_VALUES",
    "PRESENCE",
    "REQUIRED",
    "UINT53_MAX",
    "mutations",
    "near_misses",
    "valid_envelopes",
)

#: The largest integer a member may hold (I-JSON) [ENV-033].
UINT53_MAX = 2**53 - 1

#: The six kinds [ENV-013].
KINDS = ("request", "response", "error", "event", "chunk", "cancel")

#: Members whose presence depends on the kind; all others are optional everywhere.
KIND_SPECIFIC = (
    "correlation_id",
    "reply_to",
    "deadline",
    "idempotency_key",
    "seq",
    "final",
    "finish_reason",
    "usage",
    "content_type",
    "dataschema",
    "data",
    "data_base64",
    "error",
)

#: Members every envelope carries [ENV-009].
REQUIRED = ("llmp", "id", "kind", "type", "source", "time")

_PAYLOAD = {"content_type": "O", "dataschema": "O", "data": "O", "data_base64": "O"}

#: kind -> its kind-specific members, ``R`` required or ``O`` optional; a member of
#: :data:`KIND_SPECIFIC` missing here is forbidden for the kind [ENV-034]. Written out from the
#: spec's table rather than read from the schema, so the schema is checked against it too.
PRESENCE: dict[str, dict[str, str]] = {
    "request": {"reply_to": "O", "deadline": "O", "idempotency_key": "O", **_PAYLOAD},
    "response": {"correlation_id": "R", "finish_reason": "O", "usage": "O", **_PAYLOAD},
    "error": {"correlation_id": "O", "seq": "O", "error": "R"},
    "event": {"deadline": "O", **_PAYLOAD},
    "chunk": {
        "correlation_id": "R",
        "seq": "R",
        "final": "O",
        "finish_reason": "O",
        "usage": "O",
        **_PAYLOAD,
    },
    "cancel": {"correlation_id": "R"},
}

DIGITS = string.digits
LOWER = string.ascii_lowercase
UPPER = string.ascii_uppercase
ALNUM = string.ascii_letters + DIGITS
VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))  # [!-~]
PRINTABLE = " " + VISIBLE  # [ -~]
ID_CHARS = ALNUM + "._~:-"
TOKEN_CHARS = LOWER + DIGITS + "_"
TYPE_CHARS = ALNUM + "_-"  # type tokens, sig/enc alg, base64url
CODE_CHARS = UPPER + DIGITS + "_"
MEDIA_CHARS = ALNUM + "!#$&^_.+-"
LOWER_ALNUM = LOWER + DIGITS
HEX = "0123456789abcdef"


def _concat(head: str, tail: str) -> str:
    return head + tail


def _padded(alphabet: str, size: int) -> SearchStrategy[str]:
    """Strings of exactly ``size`` characters: a short random head, then one repeated character."""
    return st.builds(
        lambda head, fill: (head + fill * size)[:size],
        st.text(alphabet, max_size=min(size, 8)),
        st.sampled_from(alphabet),
    )


def _sized(alphabet: str, low: int, high: int, first: str = "") -> SearchStrategy[str]:
    """Strings of ``low..high`` characters, mostly short and often exactly ``high`` long.

    :param first: the characters allowed first, when they differ from ``alphabet``.
    """
    if first:
        return st.builds(_concat, st.sampled_from(first), _sized(alphabet, low - 1, high - 1))
    short = st.text(alphabet, min_size=low, max_size=min(high, low + 12))
    if high <= low + 12:
        return short
    return st.one_of(short, _padded(alphabet, high))


VERSIONS = st.one_of(st.just("1.0"), st.integers(0, 9999).map("1.{}".format))
IDENTIFIERS = _sized(ID_CHARS, 1, 128, first=ALNUM)
VISIBLE_ASCII = _sized(VISIBLE, 1, 512)
TOKENS = _sized(TOKEN_CHARS, 1, 64, first=LOWER)

TYPE_NAMES = st.one_of(
    st.lists(st.text(TYPE_CHARS, min_size=1, max_size=8), min_size=1, max_size=16).map(".".join),
    _padded(TYPE_CHARS, 64),
    # 255 characters, the longest allowed: 64 + 1 + 64 + 1 + 64 + 1 + 60
    st.tuples(*[_padded(TYPE_CHARS, n) for n in (64, 64, 64, 60)]).map(".".join),
    st.lists(st.sampled_from(TYPE_CHARS), min_size=16, max_size=16).map(".".join),
)


def _leap_year(k: int) -> int:
    """The ``k``-th multiple of four, moved off the centuries that are not leap years."""
    year = 4 * k
    return year + 4 if year % 100 == 0 and year % 400 != 0 else year


@st.composite
def _calendar_days(draw: DrawFn) -> tuple[int, int, int]:
    year = draw(st.integers(1, 9999))
    month = draw(st.integers(1, 12))
    return year, month, draw(st.integers(1, calendar.monthrange(year, month)[1]))


_DAYS = st.one_of(
    _calendar_days(),
    st.integers(1, 2499).map(lambda k: (_leap_year(k), 2, 29)),
    st.sampled_from([(1, 1, 1), (9999, 12, 31), (2000, 2, 29), (1970, 1, 1), (2026, 12, 31)]),
    # February of the years whose impossible dates the mutations use, so that a validator that
    # caches by month instead of by date is caught
    st.tuples(st.sampled_from((1900, 2023, 2024, 2026, 2100)), st.just(2), st.integers(1, 28)),
)
_CLOCKS = st.one_of(
    st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999)),
    st.sampled_from([(0, 0, 0, 0), (23, 59, 59, 999)]),
)


def _timestamp(day: tuple[int, int, int], clock: tuple[int, int, int, int]) -> str:
    (year, month, mday), (hour, minute, second, milli) = day, clock
    return f"{year:04d}-{month:02d}-{mday:02d}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"


#: RFC 3339 UTC timestamps of real calendar dates, Feb 29 of leap years included [ENV-016].
TIMESTAMPS = st.builds(_timestamp, _DAYS, _CLOCKS)

#: Integers in 0..2^53-1, some written as integral floats (3.0 is an integer to JSON Schema).
UINT53: SearchStrategy[int | float] = st.one_of(
    st.integers(0, UINT53_MAX),
    st.sampled_from((0, 1, UINT53_MAX, 0.0, -0.0, 3.0, float(UINT53_MAX))),
    st.integers(0, UINT53_MAX).map(float),
)

TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=16),
    st.sampled_from(
        [
            "",
            "\x00",
            "\U0001f600",
            "\u2028\u2029",
            "e\u0301",
            "\ufeff",
            "\u05de\u05d4",
            "\\u003a",
            ":",
            '"',
            "\\",
            "a:b",
        ]
    ),
)
JSON_SCALARS: SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-UINT53_MAX, UINT53_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
#: Any JSON value, nested at most four containers deep.
JSON_VALUES: SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


DATA: SearchStrategy[Any] = st.one_of(JSON_VALUES, st.integers(1, 16).map(_nested))
DATA_BASE64 = st.binary(max_size=48).map(lambda raw: base64.b64encode(raw).decode("ascii"))

_MEDIA_PART = st.builds(_concat, st.sampled_from(ALNUM), st.text(MEDIA_CHARS, max_size=12))
_MEDIA_LONGEST = st.builds(_concat, st.sampled_from(ALNUM), _padded(MEDIA_CHARS, 126))
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/llmp+json; charset=utf-8",
            "text/plain;charset=utf-8",
            "application/octet-stream",
            "image/png",
        ]
    ),
    st.builds(
        lambda kind, sub, params: f"{kind}/{sub}{params}",
        _MEDIA_PART,
        _MEDIA_PART,
        st.one_of(
            st.just(""),
            st.builds(
                lambda sp, rest: f"{sp};{rest}",
                st.text(" ", max_size=2),
                st.text(PRINTABLE, max_size=24),
            ),
        ),
    ),
    st.builds(lambda kind, sub: f"{kind}/{sub}", _MEDIA_LONGEST, _MEDIA_LONGEST),  # 255 chars
)

REGISTRY_CODES = (
    "INVALID_ENVELOPE",
    "UNSUPPORTED_VERSION",
    "UNSUPPORTED_EXTENSION",
    "RATE_LIMITED",
    "DEADLINE_EXCEEDED",
    "INTERNAL",
    "CONTEXT_LENGTH_EXCEEDED",
)
_DETAIL = st.builds(
    lambda type_, extra: {"type": type_, **extra},
    TYPE_NAMES,
    st.dictionaries(
        st.sampled_from(["pointer", "requirement", "field", "reason"]), JSON_VALUES, max_size=2
    ),
)
ERRORS = st.fixed_dictionaries(
    {
        "code": st.one_of(st.sampled_from(REGISTRY_CODES), _sized(CODE_CHARS, 1, 64, first=UPPER)),
        "message": st.one_of(
            TEXT, st.sampled_from(["a", "\u00e9", "\U0001f600", "\u2028"]).map(lambda c: c * 4096)
        ),
        "retryable": st.booleans(),
    },
    optional={
        "retry_after_ms": UINT53,
        "details": st.one_of(
            st.lists(_DETAIL, max_size=3), _DETAIL.map(lambda d: [dict(d) for _ in range(32)])
        ),
        "origin": VISIBLE_ASCII,
    },
)


def _nonzero(digits: str) -> str:
    return digits if digits.strip("0") else digits[:-1] + "1"


TRACEPARENTS = st.builds(
    lambda version, trace, parent, flags: f"{version}-{_nonzero(trace)}-{_nonzero(parent)}-{flags}",
    st.text(HEX, min_size=2, max_size=2),
    st.text(HEX, min_size=32, max_size=32),
    st.text(HEX, min_size=16, max_size=16),
    st.text(HEX, min_size=2, max_size=2),
)
TRACES = st.fixed_dictionaries(
    {"traceparent": TRACEPARENTS}, optional={"tracestate": _sized(PRINTABLE, 0, 512)}
)
TIMINGS = st.fixed_dictionaries(
    {}, optional=dict.fromkeys(("call", "sent", "received", "handled"), UINT53)
)
AUTHS = st.fixed_dictionaries({"scheme": st.just("bearer"), "token": _sized(VISIBLE, 1, 16384)})
SIGS = st.fixed_dictionaries(
    {
        "alg": st.one_of(st.sampled_from(["EdDSA", "HS256"]), _sized(TYPE_CHARS, 1, 32)),
        "kid": _sized(VISIBLE, 1, 256),
        "created": TIMESTAMPS,
        "expires": TIMESTAMPS,
        "nonce": _sized(TYPE_CHARS, 22, 128),
        "value": _sized(TYPE_CHARS, 1, 1024),
    }
)
ENCS = st.fixed_dictionaries(
    {
        "alg": st.one_of(st.just("A256GCM"), _sized(TYPE_CHARS, 1, 32)),
        "kid": _sized(VISIBLE, 1, 256),
        "iv": st.text(TYPE_CHARS, min_size=16, max_size=16),
    }
)
USAGES = st.one_of(
    st.dictionaries(TOKENS, UINT53, max_size=4),
    st.lists(UINT53, min_size=32, max_size=32).map(
        lambda counts: {f"n{i}": count for i, count in enumerate(counts)}
    ),
)

_EXT_WORD = st.lists(st.text(LOWER_ALNUM, min_size=1, max_size=6), min_size=1, max_size=2).map(
    "-".join
)
#: Namespaced extension names, at most 64 characters [ENV-032].
EXT_NAMES = st.one_of(
    st.lists(_EXT_WORD, min_size=2, max_size=3).map(".".join),
    st.builds(lambda a, b: f"{a}.{b}", _padded(LOWER_ALNUM, 31), _padded(LOWER_ALNUM, 32)),
)
EXTS = st.one_of(
    st.dictionaries(EXT_NAMES, JSON_VALUES, max_size=3),
    st.lists(JSON_SCALARS, min_size=32, max_size=32).map(
        lambda values: {f"x{i}.y": value for i, value in enumerate(values)}
    ),
)
CRITICAL_NAMES = st.one_of(
    st.builds(
        lambda head, tail: head + "".join(sep + word for sep, word in tail),
        st.text(LOWER_ALNUM, min_size=1, max_size=6),
        st.lists(
            st.tuples(st.sampled_from("._-"), st.text(LOWER_ALNUM, min_size=1, max_size=6)),
            max_size=3,
        ),
    ),
    _padded(LOWER_ALNUM, 64),
)
CRITICALS = st.one_of(
    st.lists(CRITICAL_NAMES, min_size=1, max_size=3, unique=True),
    st.lists(CRITICAL_NAMES, min_size=16, max_size=16, unique=True),
)

#: member -> a strategy of values valid for it wherever the member may appear.
MEMBER_VALUES: dict[str, SearchStrategy[Any]] = {
    "llmp": VERSIONS,
    "id": IDENTIFIERS,
    "kind": st.sampled_from(KINDS),
    "type": TYPE_NAMES,
    "source": VISIBLE_ASCII,
    "time": TIMESTAMPS,
    "correlation_id": IDENTIFIERS,
    "causation_id": IDENTIFIERS,
    "reply_to": VISIBLE_ASCII,
    "deadline": TIMESTAMPS,
    "idempotency_key": _sized(VISIBLE, 1, 256),
    "seq": UINT53,
    "final": st.booleans(),
    "finish_reason": st.one_of(st.sampled_from(["stop", "length"]), TOKENS),
    "usage": USAGES,
    "content_type": CONTENT_TYPES,
    "dataschema": _sized(VISIBLE, 1, 1024),
    "data": DATA,
    "data_base64": DATA_BASE64,
    "error": ERRORS,
    "trace": TRACES,
    "timing": TIMINGS,
    "auth": AUTHS,
    "sig": SIGS,
    "enc": ENCS,
    "critical": CRITICALS,
    "ext": EXTS,
}


@st.composite
def _critical_for(draw: DrawFn, ext_names: tuple[str, ...], encrypted: bool) -> list[str]:
    """A ``critical`` list naming some extensions, with ``enc`` in it when ``encrypted``."""
    names = st.one_of(st.sampled_from(ext_names), CRITICAL_NAMES) if ext_names else CRITICAL_NAMES
    size = draw(st.sampled_from((1, 2, 3, 16)))
    chosen: list[str] = draw(
        st.lists(names, min_size=size - encrypted, max_size=size - encrypted, unique=True)
    )
    if encrypted and "enc" not in chosen:
        chosen.insert(draw(st.integers(0, len(chosen))), "enc")
    return chosen


@st.composite
def _envelope(draw: DrawFn, kind: str | None) -> dict[str, Any]:
    chosen = kind if kind is not None else draw(st.sampled_from(KINDS))
    table = PRESENCE[chosen]
    members: dict[str, Any] = {
        "llmp": draw(VERSIONS),
        "id": draw(IDENTIFIERS),
        "kind": chosen,
        "type": draw(TYPE_NAMES),
        "source": draw(VISIBLE_ASCII),
        "time": draw(TIMESTAMPS),
    }

    def maybe(name: str) -> None:
        if draw(st.booleans()):
            members[name] = draw(MEMBER_VALUES[name])

    for name in (
        "correlation_id",
        "reply_to",
        "deadline",
        "idempotency_key",
        "seq",
        "error",
        "content_type",
        "dataschema",
    ):
        if table.get(name) == "R":
            members[name] = draw(MEMBER_VALUES[name])
        elif table.get(name) == "O":
            maybe(name)
    if "final" in table:
        final = draw(st.sampled_from((None, False, True)))
        if final is not None:
            members["final"] = final
    if "finish_reason" in table and (chosen != "chunk" or members.get("final") is True):
        maybe("finish_reason")
        maybe("usage")
    for name in ("causation_id", "trace", "timing", "auth", "sig", "ext"):
        maybe(name)
    encrypted = "data_base64" in table and draw(st.booleans())
    if encrypted:
        members["enc"] = draw(ENCS)
        members["data_base64"] = draw(DATA_BASE64)
    elif "data" in table:
        payload = draw(st.sampled_from(("", "data", "data_base64")))
        if payload:
            members[payload] = draw(MEMBER_VALUES[payload])
    if encrypted or draw(st.booleans()):
        members["critical"] = draw(_critical_for(tuple(members.get("ext", ())), encrypted))
    order = draw(st.permutations(list(members)))
    return {name: members[name] for name in order}


def valid_envelopes(kind: str | None = None) -> SearchStrategy[dict[str, Any]]:
    """Envelopes valid per ``schemas/envelope.schema.json``, of ``kind`` or of any kind.

    Members come in a random order; ``critical`` names extensions that need not exist, so
    decode such an envelope with ``understood=frozenset(envelope["critical"])``.
    """
    return _envelope(kind)


# --- mutations ----------------------------------------------------------------------------------

Path = tuple[str | int, ...]
Mutation = Callable[[DrawFn, dict[str, Any]], dict[str, Any]]

BAD_CHARS = (
    " ",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\x7f",
    "\x80",
    "\u00e9",
    "\u2028",
    "\ufeff",
    "\u0663",
    "\uff11",
    "\U0001f600",
    "/",
    ".",
    "-",
    "_",
    "~",
    ":",
    "+",
    "=",
    ";",
    "A",
    "z",
    "0",
    '"',
    "\\",
)
UNKNOWN_NAMES = (
    "Id",
    "ID",
    "Kind",
    "kind ",
    " kind",
    "specversion",
    "datacontenttype",
    "data64",
    "extensions",
    "acme.priority",
    "x",
    "",
    "llmp\n",
    "correlationId",
    "Final",
    "errors",
    "~0",
    "a/b",
    "\u00e9",
    "\x00",
)
NESTED_NAMES = (
    "extra",
    "Type",
    "type ",
    "code\n",
    "x.y",
    "acme.priority",
    "bad name",
    "a",
    "input_tokens",
    "Input",
    "1x",
    "x" * 65,
    "",
    "call",
    "tracestate",
    "origin",
    "details",
    "nonce",
)
NESTED_VALUES: tuple[Any, ...] = (0, 7, UINT53_MAX, -1, "x", "", True, None, [], {})
RETYPES: tuple[Any, ...] = (None, True, False, 0, 1, -1, 1.5, "", "x", "1", [], ["x"], {}, {"a": 1})
BAD_NUMBERS = (
    -1,
    -1.0,
    -(2**53),
    2**53,
    2**53 + 1,
    2**64,
    0.5,
    1.5,
    -0.5,
    9007199254740992.0,
    1e300,
    True,
    False,
    UINT53_MAX,
    0,
    2.0,
    "1",
)
BAD_VERSIONS = (
    "2.0",
    "0.9",
    "1.01",
    "1.00",
    "1",
    "1.",
    ".0",
    "01.0",
    "1.0.0",
    "v1.0",
    "1.10000",
    "10000.0",
    "1.99999",
    " 1.0",
    "1.0 ",
    "1.0\n",
    "\n1.0",
    "1,0",
    "\uff11.0",
    "1.\u0660",
    "2.0\n",
    "9999.9999",
    "1.9999",
    "1.10",
    "3.1",
    "",
    "1.-1",
    "1.+1",
    "1.0e0",
    "1e0",
    1.0,
    1,
)
BAD_KINDS = (
    "Request",
    "REQUEST",
    "",
    "request\n",
    " request",
    "requests",
    "reply",
    "notification",
    "chunk\n",
    "Error",
)
BAD_EXT_NAMES = (
    "acme",
    "Acme.x",
    "acme..x",
    ".acme.x",
    "acme.x.",
    "acme-.x",
    "acme.x-",
    "acme_x.y",
    "a.b\n",
    "a" * 32 + "." + "b" * 32,
    "acme.\u00e9",
    "acme.-x",
    "a--b.c",
    "a-b.c-d",
    "1.2",
    "acme.priority",
)
BAD_CRITICAL_NAMES = (
    "Enc",
    "enc.",
    ".enc",
    "a..b",
    "a--b",
    "a b",
    "",
    "\u00e9",
    "a/b",
    "x" * 65,
    "x" * 64,
    "enc\n",
    "a_",
    "a_b",
    "a-b.c_d",
    "A",
)
BAD_TYPES = (
    "a." * 16 + "a",
    "a." * 15 + "a",
    "a" * 65,
    "a" * 64,
    ".".join(["a" * 64] * 3 + ["a" * 61]),
    ".".join(["a" * 64] * 3 + ["a" * 60]),
    "a..b",
    ".a",
    "a.",
    "",
    "a b",
    "a/b",
    "\u00e9",
    "a\n",
)
BAD_CONTENT_TYPES = (
    "a" * 127 + "/" + "b" * 127 + ";",
    "a" * 127 + "/" + "b" * 127,
    "a" * 128 + "/b",
    "application/json\n",
    "application/",
    "/json",
    "application json",
    "*/*",
    "application/json;charset=\u00fc",
    "application/json; charset=utf-8",
    "text/plain ;a",
    "a/b\t;x",
    "a/b;\n",
    "-a/b",
    "a/-b",
)
BAD_TRACEPARENTS = (
    "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
    "00-" + "1" * 32 + "-" + "0" * 16 + "-01",
    "00-" + "A" * 32 + "-" + "1" * 16 + "-01",
    "00-" + "1" * 31 + "-" + "1" * 16 + "-01",
    "00-" + "1" * 33 + "-" + "1" * 16 + "-01",
    "00-" + "1" * 32 + "-" + "1" * 15 + "-01",
    "00-" + "1" * 32 + "-" + "1" * 16 + "-1",
    "00" + "1" * 32 + "-" + "1" * 16 + "-01",
    "00-" + "1" * 32 + "-" + "1" * 16 + "-01\n",
    "ff-" + "1" * 32 + "-" + "1" * 16 + "-01",
    "00-" + "1" * 32 + "-" + "1" * 16 + "-01-00",
)

#: path signature ("#" for any array index) -> (first characters, other characters, minimum and
#: maximum length) of the length-bounded strings an envelope can hold.
LENGTHS: dict[tuple[str, ...], tuple[str, str, int, int]] = {
    ("id",): (ALNUM, ID_CHARS, 1, 128),
    ("correlation_id",): (ALNUM, ID_CHARS, 1, 128),
    ("causation_id",): (ALNUM, ID_CHARS, 1, 128),
    ("source",): (VISIBLE, VISIBLE, 1, 512),
    ("reply_to",): (VISIBLE, VISIBLE, 1, 512),
    ("idempotency_key",): (VISIBLE, VISIBLE, 1, 256),
    ("finish_reason",): (LOWER, TOKEN_CHARS, 1, 64),
    ("dataschema",): (VISIBLE, VISIBLE, 1, 1024),
    ("error", "code"): (UPPER, CODE_CHARS, 1, 64),
    ("error", "message"): ("\U0001f600", "\u00e9a", 0, 4096),
    ("error", "origin"): (VISIBLE, VISIBLE, 1, 512),
    ("trace", "tracestate"): (PRINTABLE, PRINTABLE, 0, 512),
    ("auth", "token"): (VISIBLE, VISIBLE, 1, 16384),
    ("sig", "alg"): (TYPE_CHARS, TYPE_CHARS, 1, 32),
    ("sig", "kid"): (VISIBLE, VISIBLE, 1, 256),
    ("sig", "nonce"): (TYPE_CHARS, TYPE_CHARS, 22, 128),
    ("sig", "value"): (TYPE_CHARS, TYPE_CHARS, 1, 1024),
    ("enc", "alg"): (TYPE_CHARS, TYPE_CHARS, 1, 32),
    ("enc", "kid"): (VISIBLE, VISIBLE, 1, 256),
    ("enc", "iv"): (TYPE_CHARS, TYPE_CHARS, 16, 16),
    ("critical", "#"): (LOWER_ALNUM, LOWER_ALNUM, 1, 64),
}
TIMESTAMP_PATHS = (("time",), ("deadline",), ("sig", "created"), ("sig", "expires"))


def _signature(path: Path) -> tuple[str, ...]:
    return tuple(step if isinstance(step, str) else "#" for step in path)


def _is_schema_node(path: Path) -> bool:
    """Whether the schema constrains the node at ``path``; ext values and detail extras are free."""
    sig = _signature(path)
    return not (sig[0] == "ext" and len(sig) > 2) and not (
        sig[:3] == ("error", "details", "#") and len(sig) > 3 and sig[3] != "type"
    )


def _nodes(doc: dict[str, Any]) -> list[tuple[Path, Any]]:
    """Every member and array item below the root, except inside ``data`` (opaque to the schema)."""
    found: list[tuple[Path, Any]] = []
    stack: list[tuple[Path, Any]] = [((name,), value) for name, value in doc.items()]
    while stack:
        path, value = stack.pop()
        found.append((path, value))
        if path[0] == "data":
            continue
        if isinstance(value, dict):
            stack.extend(((*path, name), member) for name, member in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, index), item) for index, item in enumerate(value))
    return found


def _pick(
    draw: DrawFn, doc: dict[str, Any], wanted: Callable[[Path, Any], bool]
) -> tuple[Path, Any] | None:
    """A schema-constrained node ``wanted`` accepts, its top-level member drawn first."""
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for path, value in _nodes(doc):
        if _is_schema_node(path) and wanted(path, value):
            groups.setdefault(str(path[0]), []).append((path, value))
    if not groups:
        return None
    group = groups[draw(st.sampled_from(sorted(groups)))]
    return group[draw(st.integers(0, len(group) - 1))]


def _get(doc: Any, path: Path) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _set(doc: Any, path: Path, value: Any) -> Any:
    """A copy of ``doc`` with the node at ``path`` replaced; containers on the way are copied."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy: Any = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[head] = _set(doc[head] if rest else None, rest, value)
    return copy


def _delete(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    container, last = _get(doc, path[:-1]), path[-1]
    if isinstance(container, dict):
        smaller: Any = {name: value for name, value in container.items() if name != last}
    else:
        smaller = [item for index, item in enumerate(container) if index != last]
    return _set(doc, path[:-1], smaller)  # type: ignore[no-any-return]


def _json_type(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int | float):
        return "integer" if float(value).is_integer() else "number"
    return type(value).__name__


def _drop_member(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(doc)))
    return {key: value for key, value in doc.items() if key != name}


def _drop_nested(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    found = _pick(draw, doc, lambda path, _: len(path) >= 2)
    return _drop_member(draw, doc) if found is None else _delete(doc, found[0])


def _add_unknown(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, draw(st.sampled_from(UNKNOWN_NAMES)): draw(st.sampled_from(NESTED_VALUES))}


def _add_nested(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """A member added to a nested object, or an item repeated in a nested array."""
    found = _pick(draw, doc, lambda _, value: isinstance(value, dict | list))
    if found is None:
        return _add_unknown(draw, doc)
    path, value = found
    if isinstance(value, list):
        extra = value[draw(st.integers(0, len(value) - 1))] if value else "x"
        return _set(doc, path, [*value, extra])  # type: ignore[no-any-return]
    name = draw(st.sampled_from(NESTED_NAMES))
    return _set(doc, path, {**value, name: draw(st.sampled_from(NESTED_VALUES))})  # type: ignore[no-any-return]


def _add_forbidden(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """A member the kind forbids, or one a cross-member rule forbids here, with a valid value."""
    table = PRESENCE.get(doc.get("kind"), {})  # type: ignore[arg-type]
    names = [name for name in KIND_SPECIFIC if name not in table and name not in doc]
    if doc.get("kind") == "chunk" and doc.get("final") is not True:
        names += [name for name in ("finish_reason", "usage") if name not in doc]
    if "data" in doc and "data_base64" not in doc:
        names.append("data_base64")
    if "data_base64" in doc and "data" not in doc:
        names.append("data")
    if "enc" not in doc:
        names.append("enc")
    name = draw(st.sampled_from(names))
    return {**doc, name: draw(MEMBER_VALUES[name])}


def _retype(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    path, value = _pick(draw, doc, lambda *_: True) or (("kind",), doc.get("kind"))
    others = [other for other in RETYPES if _json_type(other) != _json_type(value)]
    return _set(doc, path, draw(st.sampled_from(others)))  # type: ignore[no-any-return]


def _bend_string(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """A trailing newline, a bad character, one character more or less, another case."""
    found = _pick(draw, doc, lambda _, value: isinstance(value, str))
    if found is None:
        return _retype(draw, doc)
    path, value = found
    how = draw(
        st.sampled_from(
            (
                "newline",
                "newline",
                "cr",
                "leading",
                "insert",
                "replace",
                "empty",
                "upper",
                "lower",
                "longer",
                "shorter",
            )
        )
    )
    if how in ("insert", "replace"):
        at = draw(st.integers(0, max(len(value) - (how == "replace"), 0)))
        char = draw(st.sampled_from(BAD_CHARS))
        bent = value[:at] + char + value[at + (how == "replace") :]
    else:
        bent = {
            "newline": value + "\n",
            "cr": value + "\r",
            "leading": "\n" + value,
            "empty": "",
            "upper": value.upper(),
            "lower": value.lower(),
            "longer": value + (value[-1:] or "a"),
            "shorter": value[:-1],
        }[how]
    return _set(doc, path, bent)  # type: ignore[no-any-return]


def _off_by_one(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """A bounded string one character past its length limit (the valid tests cover the limit)."""
    bounded = [
        path
        for path, value in _nodes(doc)
        if isinstance(value, str) and _signature(path) in LENGTHS
    ]
    if not bounded:
        return _counts(draw, doc)
    path = bounded[draw(st.integers(0, len(bounded) - 1))]
    first, rest, low, high = LENGTHS[_signature(path)]
    size = draw(st.sampled_from([n for n in (low - 1, high + 1, high + 1) if n >= 0]))
    if size == 0:
        return _set(doc, path, "")  # type: ignore[no-any-return]
    head = draw(st.sampled_from(first))
    tail = draw(_padded(rest, size - 1)) if size > 1 else ""
    return _set(doc, path, head + tail)  # type: ignore[no-any-return]


def _count_breaks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """``doc`` with an array or object one past its item limit, or exactly at it."""
    enc = ["enc"] if "enc" in doc else []
    changes: list[tuple[Path, Any]] = [
        (("critical",), enc + [f"c{i}" for i in range(size - len(enc))]) for size in (16, 17)
    ]
    changes.append((("critical",), []))
    for size in (32, 33):
        if "usage" in doc:
            changes.append((("usage",), {f"n{i}": i for i in range(size)}))
        if "ext" in doc:
            changes.append((("ext",), {f"x{i}.y": i for i in range(size)}))
        if isinstance(doc.get("error"), dict):
            changes.append((("error", "details"), [{"type": "a"} for _ in range(size)]))
    return [_set(doc, path, value) for path, value in changes]


def _counts(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    return draw(st.sampled_from(_count_breaks(doc)))


def _bend_number(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """A number out of 0..2^53-1, not integral, or a boolean where an integer goes."""
    found = _pick(
        draw, doc, lambda _, value: isinstance(value, int | float) and not isinstance(value, bool)
    )
    if found is None:
        name = draw(st.sampled_from(("seq", "timing")))
        value = draw(st.sampled_from(BAD_NUMBERS))
        return {**doc, name: value if name == "seq" else {"sent": value}}
    return _set(doc, found[0], draw(st.sampled_from(BAD_NUMBERS)))  # type: ignore[no-any-return]


def _probe_timestamps(value: str) -> list[str]:
    """The impossible dates and times a valid timestamp ``value`` is turned into first."""
    year, tail, day = value[:4], value[10:], value[:11]
    return [
        f"{year}-02-30{tail}",
        f"{year}-06-31{tail}",
        f"{year}-13{value[7:]}",
        f"{value[:8]}00{tail}",
        f"0000{value[4:]}",
        f"2023-02-29{tail}",
        f"1900-02-29{tail}",
        f"2100-02-29{tail}",
        f"2026-02-30{tail}",
        f"{day}24:00:00.000Z",
        f"{day}23:59:60.000Z",
        value[:-2] + "Z",
        value[:-1] + "z",
    ]


def _bad_timestamps(value: str) -> list[str]:
    year, tail, day = value[:4], value[10:], value[:11]
    return [
        *_probe_timestamps(value),
        f"{year}-02-31{tail}",
        f"{year}-04-31{tail}",
        f"{year}-09-31{tail}",
        f"{year}-11-31{tail}",
        f"{year}-00{value[7:]}",
        f"{value[:8]}32{tail}",
        f"2000-02-29{tail}",
        f"2024-02-29{tail}",
        f"2026-02-28{tail}",
        f"{day}23:60:00.000Z",
        value[:-5] + "Z",
        value[:-1] + "0Z",
        value[:-1] + "+00:00",
        value[:-1] + "-00:00",
        value[:10] + "t" + value[11:],
        value[:10] + " " + value[11:],
        value[:-5] + ",000Z",
        value + "\n",
        "\uff12" + value[1:],
        "\u0662" + value[1:],
        "+" + value,
        "1" + value,
        value[1:],
        value.lower(),
    ]


def _bend_timestamp(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """An impossible date or time, or another spelling of one."""
    paths = [p for p in TIMESTAMP_PATHS if isinstance(_get_or_none(doc, p), str)]
    path = draw(st.sampled_from(paths or [("time",)]))
    current = _get_or_none(doc, path)
    fallback = "2026-02-28T12:00:00.000Z"
    base = current if isinstance(current, str) and len(current) == len(fallback) else fallback
    return _set(doc, path, draw(st.sampled_from(_bad_timestamps(base))))  # type: ignore[no-any-return]


def _get_or_none(doc: Any, path: Path) -> Any:
    for step in path:
        if not isinstance(doc, dict) or step not in doc:
            return None
        doc = doc[step]
    return doc


def _change_kind(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    others = [kind for kind in KINDS if kind != doc.get("kind")]
    return {**doc, "kind": draw(st.sampled_from(others + list(BAD_KINDS)))}


def _change_version(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "llmp": draw(st.sampled_from(BAD_VERSIONS))}


def _break_block(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """A targeted break of critical, ext, type names, content_type or traceparent."""
    target = draw(st.sampled_from(("critical", "ext", "type", "content_type", "traceparent")))
    if target == "critical":
        critical = list(doc.get("critical", ["acme.x"]))
        how = draw(st.sampled_from(("duplicate", "name", "item", "no_enc")))
        if how == "duplicate":
            critical.append(critical[0])
        elif how == "name":
            critical.insert(
                draw(st.integers(0, len(critical))), draw(st.sampled_from(BAD_CRITICAL_NAMES))
            )
        elif how == "item":
            critical.append(draw(st.sampled_from((1, None, True, ["enc"], {"enc": 1}))))
        else:
            critical = [name for name in critical if name != "enc"]
        return {**doc, "critical": critical}
    if target == "ext":
        ext = doc["ext"] if isinstance(doc.get("ext"), dict) else {}
        return {**doc, "ext": {**ext, draw(st.sampled_from(BAD_EXT_NAMES)): 1}}
    if target == "type":
        error = doc.get("error")
        details = error.get("details") if isinstance(error, dict) else None
        path: Path = ("type",)
        if isinstance(details, list) and details and draw(st.booleans()):
            path = ("error", "details", draw(st.integers(0, len(details) - 1)), "type")
        return _set(doc, path, draw(st.sampled_from(BAD_TYPES)))  # type: ignore[no-any-return]
    if target == "content_type":
        return {**doc, "content_type": draw(st.sampled_from(BAD_CONTENT_TYPES))}
    trace = doc["trace"] if isinstance(doc.get("trace"), dict) else {}
    return {**doc, "trace": {**trace, "traceparent": draw(st.sampled_from(BAD_TRACEPARENTS))}}


def _cross_rule_breaks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """``doc`` with data/data_base64 exclusivity, an enc rule or the final-chunk rule broken."""

    def without(name: str) -> dict[str, Any]:
        return {key: value for key, value in doc.items() if key != name}

    broken = [{**doc, "enc": {"alg": "A256GCM", "kid": "k1", "iv": "AAAAAAAAAAAAAAAA"}}]
    if "enc" in doc:
        broken += [
            without("data_base64"),
            without("critical"),
            {**doc, "data": None},
            {**doc, "critical": [name for name in doc.get("critical", []) if name != "enc"]},
        ]
    if "data_base64" in doc:
        broken.append({**doc, "data": {"a": 1}})
    if "data" in doc:
        broken.append({**doc, "data_base64": "AAAA"})
    if doc.get("kind") == "chunk":
        broken += [
            {**doc, "final": False},
            without("final"),
            {**doc, "final": True},
            {**doc, "finish_reason": "stop"},
            {**doc, "usage": {"output_tokens": 1}},
        ]
    return broken


def _undo_cross_rule(draw: DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    return draw(st.sampled_from(_cross_rule_breaks(doc)))


#: The mutations; the targeted ones are listed more than once so that each rule is hit often.
MUTATIONS: tuple[Mutation, ...] = (
    _drop_member,
    _drop_nested,
    _add_unknown,
    _add_nested,
    _retype,
    _counts,
    _change_kind,
    _change_version,
    _off_by_one,
    *(
        _add_forbidden,
        _bend_string,
        _off_by_one,
        _bend_number,
        _bend_timestamp,
        _break_block,
        _undo_cross_rule,
    )
    * 2,
)


@st.composite
def _mutant(draw: DrawFn, envelope: dict[str, Any]) -> dict[str, Any]:
    mutate = draw(st.sampled_from(MUTATIONS))
    return mutate(draw, envelope)


#: A valid value for each kind-specific member, to add where the kind forbids it.
SAMPLE_VALUES: dict[str, Any] = {
    "correlation_id": "req-1",
    "reply_to": "inbox.1",
    "deadline": "2026-01-31T23:59:59.000Z",
    "idempotency_key": "key-1",
    "seq": 0,
    "final": True,
    "finish_reason": "stop",
    "usage": {"output_tokens": 1},
    "content_type": "application/json",
    "dataschema": "urn:x",
    "data": {"a": 1},
    "data_base64": "AAAA",
    "error": {"code": "INTERNAL", "message": "m", "retryable": False},
}


def near_misses(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    """The systematic near misses of ``envelope``: each rule that can be broken in it, broken once.

    Required members dropped, forbidden ones added, each bounded string one past its limit, each
    timestamp made impossible, each number out of range, each string given a trailing newline,
    each nested block given an unknown member or robbed of a required one, the item limits, the
    cross-member rules, other kinds and versions.
    """
    doc = envelope
    kind = doc.get("kind")
    table = PRESENCE.get(kind, {}) if isinstance(kind, str) else {}
    out: list[dict[str, Any]] = []
    required = [name for name in REQUIRED if name in doc]
    required += [name for name, presence in table.items() if presence == "R" and name in doc]
    out += [{key: value for key, value in doc.items() if key != name} for name in required]
    forbidden = [name for name in KIND_SPECIFIC if name not in table and name not in doc]
    if kind == "chunk" and doc.get("final") is not True:
        forbidden += [name for name in ("finish_reason", "usage") if name not in doc]
    out += [{**doc, name: SAMPLE_VALUES[name]} for name in forbidden]
    out += _cross_rule_breaks(doc) + _count_breaks(doc)
    out += [{**doc, "llmp": version} for version in ("2.0", "1.01", "1.10000", "1.0\n", "1")]
    out += [{**doc, "kind": other} for other in (*KINDS, "Request") if other != kind]
    out += [{**doc, "type": name} for name in BAD_TYPES[:5]]
    out += [{**doc, "unknown": 1}, {**doc, "Kind": kind}]
    trace = doc["trace"] if isinstance(doc.get("trace"), dict) else {}
    out += [{**doc, "trace": {**trace, "traceparent": bad}} for bad in BAD_TRACEPARENTS[:3]]
    for path, value in _nodes(doc):
        if path[0] == "data" or not _is_schema_node(path):
            continue
        if isinstance(value, str):
            out.append(_set(doc, path, value + "\n"))
            if _signature(path) in LENGTHS:
                first, rest, low, high = LENGTHS[_signature(path)]
                out.append(_set(doc, path, first[0] + rest[-1] * high))
                if low > 0:
                    out.append(_set(doc, path, (first[0] + rest[-1] * low)[: low - 1]))
            if path in TIMESTAMP_PATHS and len(value) == 24:
                out += [_set(doc, path, bad) for bad in _probe_timestamps(value)]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out += [_set(doc, path, number) for number in (-1, 2**53, True, 1.5)]
        elif isinstance(value, dict) and path[0] != "ext":
            out += [_set(doc, path, {**value, name: 0}) for name in ("extra", "Bad Name")]
        if len(path) >= 2 and path[0] not in ("ext", "usage", "timing"):
            out.append(_delete(doc, path))
    if isinstance(doc.get("usage"), dict):
        out += [_set(doc, ("usage", name), 1) for name in ("Input", "1x", "a-b", "")]
    if isinstance(doc.get("ext"), dict):
        out += [_set(doc, ("ext", name), 1) for name in ("acme", "Acme.x", "a..b", "a.b-")]
    error = doc.get("error")
    if isinstance(error, dict) and isinstance(error.get("details"), list):
        details = error["details"]
        out += [
            _set(doc, ("error", "details"), [*details, item])
            for item in ("x", {}, {"type": 1}, {"type": "a..b"})
        ]
    if isinstance(doc.get("critical"), list) and doc["critical"]:
        critical = doc["critical"]
        out += [
            {**doc, "critical": [*critical, critical[0]]},
            {**doc, "critical": [*critical, "Enc"]},
        ]
    return out


def mutations(envelope: dict[str, Any]) -> SearchStrategy[dict[str, Any]]:
    """Near misses of ``envelope``, each with one thing changed; ``envelope`` is left as it is.

    Half are drawn from :func:`near_misses`, half made by a random mutation (random values,
    characters and places). Most are invalid, some stay valid; containers are shared with
    ``envelope`` except on the path to the change, so treat the results as read-only.
    """
    return st.one_of(st.sampled_from(near_misses(envelope)), _mutant(envelope))
