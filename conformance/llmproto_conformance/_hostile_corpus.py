"""The hostile-input corpus: malformed bodies and the outcome each must get from a service.

Theory of operation
-------------------
:func:`hostile_corpus` builds, in code and deterministically, a list of :class:`HostileInput`
from a few seeds and systematic mutations of them: broken JSON texts in the style of
JSONTestSuite's ``n_`` cases (written for this project) placed alone, in ``data`` and in a
member's value; invalid UTF-8 and lone surrogates; non-finite and out-of-range numbers; every
envelope member missing, of the wrong JSON type or breaking its pattern; repeated names; deep
nesting; oversize bodies; messages of other kinds at a request address; and, for a subset, the
same bodies without a transport-level reply address. Each input names the outcome the spec
prescribes (ENV-036 to ENV-039, RR-005): an error reply with a registry code, the pointer and
the requirement the rejection must name, or ``"dropped"`` (not answered, but counted).

A separate category, ``signatures``, holds well-formed signatures that a verifying receiver
refuses at its step of spec/security.md's verification order (signed here with the published
test key, independently of the reference implementation); it is built when asked for, or by
default once the reference implementation verifies signatures. :func:`valid_bodies` are valid
requests at the same limits, which a service must answer.

Every expectation is written from the spec, not read back from the reference decoder; the test
suite checks that the decoder agrees. Bodies that carry a reply address in ``reply_to`` hold
:data:`REPLY_PLACEHOLDER`, which a driver replaces with the address it listens on.
"""

from __future__ import annotations

import base64
import importlib.util
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

__all__ = (
    "DROPPED",
    "HOSTILE_TYPE",
    "REPLY_PLACEHOLDER",
    "SIGNATURE_KID",
    "HostileInput",
    "Raw",
    "ValidBody",
    "categories",
    "dumps",
    "hostile_corpus",
    "request_members",
    "signatures_available",
    "valid_bodies",
    "without_reply_to",
)

#: The ``type`` member of the corpus's requests (drivers route by their own served type).
HOSTILE_TYPE = "hostile.echo"
#: Stands for the driver's reply address in bodies; replaced before sending.
REPLY_PLACEHOLDER = "_INBOX.llmp-hostile-reply"
#: The expected outcome of an input that must not be answered.
DROPPED = "dropped"
SOURCE = "urn:llmp:hostile"
TIME = "2026-06-01T12:00:00.000Z"
INVALID = "INVALID_ENVELOPE"
LIMIT = 1_048_576  #: the default envelope size limit [ENV-006]
_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_SIG = {"alg": "EdDSA", "kid": "urn:llmp:hostile:key-1", "created": TIME,
        "expires": "2026-06-01T12:05:00.000Z", "nonce": "wLGVDaKmF6Xy7qfSN7GUrA",
        "value": "uixoyQt83rsUCqVe_qwyxEiPKEF8TvRHpbkgR6l1Xvp93bqoARhG6xWUmgz1FdQ"}  # fmt: skip
_ENC = {"alg": "A256GCM", "kid": "urn:llmp:hostile:cek-1", "iv": "CrMGgjA1Zhu426Ic"}
_ERROR = {"code": "INTERNAL", "message": "hostile", "retryable": False}


@dataclass(frozen=True, slots=True, kw_only=True)
class HostileInput:
    """One hostile message body and what a conforming service does with it.

    :param name: unique, ``category/seed/variant``.
    :param reply_address: whether it is sent with a transport-level reply address.
    :param expect: the registry code of the error reply, or :data:`DROPPED`.
    :param code: the registry code the service finds (what it records for a dropped input);
        ``None`` for a valid message of a kind it drops.
    :param requirement: the requirement ID the input exercises.
    :param pointer: the pointer the rejection must name; ``None`` when the body decodes.
    :param cites: the requirement IDs the rejection may name (the first is the expected one).
    :param correlation_id: the id the reply must carry as ``correlation_id``; ``None``: none.
    :param reply_type: the ``type`` the reply must carry.
    :param names_optional: the reply may name the request or not (a parser limit decides).
    :param reply_via_member: the only reply address is the body's ``reply_to`` member.
    """

    name: str
    category: str
    body: bytes
    reply_address: bool
    expect: str
    code: str | None
    requirement: str
    pointer: str | None = ""
    cites: tuple[str, ...] = ()
    correlation_id: str | None = None
    reply_type: str = "llmp.error"
    names_optional: bool = False
    reply_via_member: bool = False

    @property
    def answered(self) -> bool:
        """Whether a conforming service sends an error reply for this input."""
        return self.expect != DROPPED


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes written into a body as they are, in place of a JSON value."""

    text: bytes


_DROP = object()  #: in a change set: remove the member


def dumps(members: dict[str, Any]) -> bytes:
    """Compact JSON of ``members``, with every :class:`Raw` value spliced in verbatim."""
    raws: list[bytes] = []

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    body = orjson.dumps(mark(members))
    for index, text in enumerate(raws):
        body = body.replace(f'"@@raw{index}@@"'.encode(), text, 1)
    return body


def request_members(id_: str, **changes: Any) -> dict[str, Any]:
    """A valid request of the corpus, ``data`` last, with ``changes`` (``_DROP`` removes)."""
    members: dict[str, Any] = {"llmp": "1.0", "id": id_, "kind": "request", "type": HOSTILE_TYPE,
                               "source": SOURCE, "time": TIME, "reply_to": REPLY_PLACEHOLDER,
                               "data": {"n": 1}}  # fmt: skip
    for name, value in changes.items():
        if value is _DROP:
            members.pop(name, None)
        else:
            members[name] = value
    return members


class _Builder:
    """Collects inputs, numbering the request ids so that every reply can be attributed."""

    def __init__(self) -> None:
        self.items: list[HostileInput] = []
        self._names: set[str] = set()

    def next_id(self) -> str:
        return f"hostile-{len(self.items):04d}"

    def add(self, category: str, name: str, body: bytes, *, requirement: str,
            expect: str = INVALID, **fields: Any) -> None:  # fmt: skip
        full = f"{category}/{name}"
        if full in self._names:  # pragma: no cover - a corpus bug
            raise ValueError(f"duplicate hostile input name {full}")
        self._names.add(full)
        fields.setdefault("cites", (requirement,))
        fields.setdefault("code", None if expect == DROPPED else expect)
        self.items.append(HostileInput(name=full, category=category, body=body,
                                       reply_address=fields.pop("reply_address", True),
                                       expect=expect, requirement=requirement,
                                       **fields))  # fmt: skip

    def unreadable(self, category: str, name: str, body: bytes, requirement: str,
                   *also: str) -> None:  # fmt: skip
        """A body that is no strict JSON: rejected at ``""``, the reply names nothing."""
        self.add(category, name, body, requirement=requirement, cites=(requirement, *also))

    def mutation(self, name: str, requirement: str, pointer: str, code: str = INVALID,
                 cites: tuple[str, ...] = (), /, **changes: Any) -> None:  # fmt: skip
        """A request with ``changes``, rejected at ``pointer``; the reply names what it can.

        :param name: ``category/seed``.
        """
        rid = self.next_id()
        members = request_members(rid, **changes)
        category, _, name = name.partition("/")
        self.add(category, name, dumps(members), requirement=requirement, expect=code,
                 pointer=pointer, cites=cites or (requirement,),
                 correlation_id=_readable_id(members),
                 reply_type=_readable_type(members))  # fmt: skip


def _readable_id(members: dict[str, Any]) -> str | None:
    """The ``id`` if it is valid (ENV-011): a rejection names it as ``correlation_id``."""
    value = members.get("id")
    if not isinstance(value, str) or not 0 < len(value) <= 128 or not value.isascii():
        return None
    ok = value[0].isalnum() and all(c.isalnum() or c in "._~:-" for c in value)
    return value if ok else None


def _readable_type(members: dict[str, Any]) -> str:
    return HOSTILE_TYPE if members.get("type") == HOSTILE_TYPE else "llmp.error"


# -- JSON texts -------------------------------------------------------------------------------

#: Broken JSON texts, each with one defect, broken wherever it stands as a value [ENV-002].
SYNTAX = {
    "empty": b"", "whitespace-only": b" \t\r\n", "open-array": b"[", "close-array": b"]",
    "open-object": b"{", "close-object": b"}", "unclosed-array": b"[1,2,3",
    "unclosed-object": b'{"a":1', "unclosed-nested": b'{"a":[1,{"b":2}', "array-comma": b"[1,]",
    "object-comma": b'{"a":1,}', "leading-comma": b"[,1]", "double-comma": b"[1,,2]",
    "lone-comma-object": b"{,}", "missing-colon": b'{"a" 1}', "missing-value": b'{"a":}',
    "key-only": b'{"a"}', "double-colon": b'{"a"::1}', "unquoted-key": b"{a:1}",
    "single-quoted-key": b"{'a':1}", "single-quoted-string": b"['a']", "number-key": b"{1:1}",
    "missing-comma-array": b"[1 2]", "missing-comma-object": b'{"a":1 "b":2}',
    "extra-close-array": b"[1]]", "extra-close-object": b'{"a":1}}', "mismatched-close": b"[1}",
    "mismatched-nested": b'{"a":{"b":1]}', "leading-zero": b"[01]",
    "negative-leading-zero": b"[-01]",
    "plus-sign": b"[+1]", "bare-fraction": b"[.5]", "trailing-dot": b"[1.]",
    "dot-exponent": b"[1.e1]", "empty-exponent": b"[1e]", "signed-empty-exponent": b"[1e+]",
    "hex-number": b"[0x1F]", "lone-minus": b"[-]", "double-minus": b"[--1]",
    "underscore-digits": b"[1_000]", "octal-escape-number": b"[012]", "truncated-true": b"[tru]",
    "capital-true": b"[True]", "truncated-null": b"[nul]", "capital-null": b"[NULL]",
    "truncated-false": b"[fals]", "undefined": b"[undefined]", "raw-nul-in-string": b'["a\x00b"]',
    "raw-tab-in-string": b'["a\tb"]', "raw-newline-in-string": b'["a\nb"]',
    "raw-unit-separator": b'["\x1f"]', "bad-escape-a": b'["\\a"]', "hex-escape": b'["\\x41"]',
    "short-unicode-escape": b'["\\u12"]', "bad-unicode-digit": b'["\\u12G4"]',
    "unterminated-string": b'["abc', "escaped-final-quote": b'["\\"]', "lone-quote": b'"',
    "block-comment": b"/* c */ []", "line-comment": b"[1] // c", "hash-comment": b"# c\n[]",
    "trailing-garbage": b"[1]x", "two-values": b"[] []", "trailing-nul": b"[1]\x00",
    "vertical-tab-space": b"\x0b[]", "form-feed-space": b"\x0c[]", "nbsp-space": b"\xc2\xa0[]",
    "line-separator-space": b"\xe2\x80\xa8[]", "ideographic-space": b"\xe3\x80\x80[]",
}  # fmt: skip


def _json_texts(b: _Builder) -> None:
    for seed, text in SYNTAX.items():
        b.unreadable("json-syntax", f"{seed}/alone", text, "ENV-002")
        b.unreadable("json-syntax", f"{seed}/in-data", dumps(request_members(
            b.next_id(), data=Raw(text))), "ENV-002")  # fmt: skip
        b.unreadable("json-syntax", f"{seed}/in-source", dumps(request_members(
            b.next_id(), source=Raw(text))), "ENV-002")  # fmt: skip


#: Byte sequences that are not UTF-8 [ENV-005].
BAD_UTF8 = {
    "continuation-80": b"\x80", "continuation-bf": b"\xbf", "truncated-2": b"\xc3",
    "truncated-3": b"\xe2\x82", "truncated-4": b"\xf0\x9f\x98", "overlong-slash-2": b"\xc0\xaf",
    "overlong-slash-3": b"\xe0\x80\xaf", "overlong-slash-4": b"\xf0\x80\x80\xaf",
    "overlong-nul": b"\xc0\x80", "surrogate-d800": b"\xed\xa0\x80",
    "surrogate-dfff": b"\xed\xbf\xbf",
    "beyond-10ffff": b"\xf4\x90\x80\x80", "f5": b"\xf5\x80\x80\x80", "fe": b"\xfe", "ff": b"\xff",
    "latin1-e-acute": b"caf\xe9",
}  # fmt: skip
#: String escapes that denote a lone surrogate [ENV-005].
LONE_SURROGATES = {
    "high": b"\\ud800", "high-last": b"\\udbff", "low": b"\\udc00", "low-last": b"\\udfff",
    "high-then-letter": b"\\ud800\\u0041", "reversed-pair": b"\\udc00\\ud800",
    "two-highs": b"\\ud800\\ud800", "high-at-end": b"x\\ud83d",
}  # fmt: skip


def _encodings(b: _Builder) -> None:
    for seed, seq in BAD_UTF8.items():
        placements: dict[str, dict[str, Any]] = {
            "in-data-string": {"data": {"text": Raw(b'"ab' + seq + b'cd"')}},
            "in-data-name": {"data": {"k": Raw(b'{"' + seq + b'":1}')}},
            "in-source": {"source": Raw(b'"urn:' + seq + b'"')},
            "between-tokens": {"data": Raw(b"[1," + seq + b"2]")},
        }
        for where, change in placements.items():
            b.unreadable("utf8", f"{seed}/{where}",
                         dumps(request_members(b.next_id(), **change)), "ENV-005")  # fmt: skip
    for seed, escape in LONE_SURROGATES.items():
        for where, text in {"value": b'{"t":"' + escape + b'"}',
                            "name": b'{"' + escape + b'":1}'}.items():  # fmt: skip
            body = dumps(request_members(b.next_id(), data=Raw(text)))
            b.unreadable("utf8", f"lone-surrogate-{seed}/{where}", body, "ENV-005")
    envelope = dumps(request_members("hostile-bom"))
    chars = envelope.decode()
    boms = {
        "utf8-bom": (b"\xef\xbb\xbf" + envelope, "ENV-005"),
        "utf8-bom-then-space": (b"\xef\xbb\xbf \n" + envelope, "ENV-005"),
        "utf8-bom-twice": (b"\xef\xbb\xbf\xef\xbb\xbf" + envelope, "ENV-005"),
        "utf16le-bom": (b"\xff\xfe" + chars.encode("utf-16-le"), "ENV-005"),
        "utf16be-bom": (b"\xfe\xff" + chars.encode("utf-16-be"), "ENV-005"),
        "utf16le-plain": (chars.encode("utf-16-le"), "ENV-005"),
        "utf32le-bom": (b"\xff\xfe\x00\x00" + chars.encode("utf-32-le"), "ENV-005"),
        "latin1-body": (dumps(request_members("hostile-latin1", source="urn:é")).replace(
            "é".encode(), b"\xe9"), "ENV-005"),
    }  # fmt: skip
    for seed, (body, requirement) in boms.items():
        b.unreadable("utf8", f"encoding/{seed}", body, requirement, "ENV-002")


# -- numbers ----------------------------------------------------------------------------------

#: Numbers that overflow a double, and the non-finite literals [ENV-004].
OVERFLOW = {
    "1e400": b"1e400", "minus-1e400": b"-1e400", "1E309": b"1E309", "1.8e308": b"1.8e308",
    "exp-plus-999": b"1e+999", "fraction-e310": b"0.1e310", "digits-310": b"1" + b"0" * 309,
    "minus-digits-310": b"-" + b"9" * 310, "digits-1000": b"7" * 1000,
    "giant-exponent": b"1e99999999999", "decimal-e400": b"123.456e400",
}  # fmt: skip
NON_FINITE = {"NaN": b"NaN", "Infinity": b"Infinity", "minus-Infinity": b"-Infinity"}
#: Near misses of the non-finite literals: plain syntax errors, which ENV-004 may also name.
NON_FINITE_LOOKALIKES = {"minus-NaN": b"-NaN", "plus-Infinity": b"+Infinity", "nan": b"nan",
                         "inf": b"inf", "infinity": b"infinity"}  # fmt: skip
#: Integer members and what breaks them: out of the range (ENV-033) or no integer at all.
OUT_OF_RANGE = {"2^53": b"9007199254740992", "2^64": b"18446744073709551616", "minus-1": b"-1",
                "1e16": b"1e16", "1e300": b"1e300",
                "float-2^53": b"9007199254740992.0"}  # fmt: skip
NOT_INTEGER = {"fraction": b"1.5", "string": b'"1"', "true": b"true", "null": b"null",
               "array": b"[1]"}  # fmt: skip


def _numbers(b: _Builder) -> None:
    def positions(text: bytes) -> dict[str, dict[str, Any]]:
        return {"data": {"data": Raw(text)}, "data-array": {"data": Raw(b"[0," + text + b"]")},
                "data-deep": {"data": Raw(b'{"a":{"b":[' + text + b"]}}")},
                "timing": {"timing": {"call": Raw(text)}}}  # fmt: skip

    for seed, text in OVERFLOW.items() | NON_FINITE.items():
        for where, change in positions(text).items():
            b.unreadable("numbers", f"{seed}/{where}",
                         dumps(request_members(b.next_id(), **change)), "ENV-004")  # fmt: skip
    for seed, text in NON_FINITE_LOOKALIKES.items():
        b.unreadable(
            "numbers",
            f"{seed}/data",
            dumps(request_members(b.next_id(), data=Raw(text))),
            "ENV-002",
            "ENV-004",
        )
    for member in ("call", "sent", "received", "handled"):
        for seed, text in OUT_OF_RANGE.items():
            b.mutation(f"numbers/timing-{member}-{seed}", "ENV-033", f"/timing/{member}",
                       timing={member: Raw(text)})  # fmt: skip
        for seed, text in NOT_INTEGER.items():
            b.mutation(f"numbers/timing-{member}-{seed}", "ENV-030", f"/timing/{member}",
                       timing={member: Raw(text)})  # fmt: skip
    for seed, text in OUT_OF_RANGE.items():  # the value is judged before the kind forbids it
        b.mutation(f"numbers/seq-{seed}", "ENV-033", "/seq", seq=Raw(text))
        b.mutation(f"numbers/usage-{seed}", "ENV-033", "/usage/input_tokens",
                   usage={"input_tokens": Raw(text)})  # fmt: skip
        b.mutation(f"numbers/retry-after-{seed}", "ENV-033", "/error/retry_after_ms",
                   error={**_ERROR, "retry_after_ms": Raw(text)})  # fmt: skip


# -- envelope members -------------------------------------------------------------------------

#: String members and the requirement their value check cites (spec/envelope.md, step 9).
STRING_MEMBERS = {"id": "ENV-011", "type": "ENV-014", "source": "ENV-015", "time": "ENV-016",
                  "reply_to": "ENV-019", "deadline": "ENV-020", "idempotency_key": "ENV-021",
                  "content_type": "ENV-024", "dataschema": "ENV-025",
                  "data_base64": "ENV-027"}  # fmt: skip
#: Object and array members and their requirement.
BLOCK_MEMBERS = {"trace": "ENV-029", "timing": "ENV-030", "auth": "SEC-001", "sig": "SEC-002",
                 "enc": "SEC-003", "ext": "ENV-032", "critical": "ENV-031"}  # fmt: skip
_WRONG_FOR_STRING: dict[str, Any] = {
    "number": 1,
    "true": True,
    "null": None,
    "array": [],
    "object": {},
}
_WRONG_FOR_BLOCK: dict[str, Any] = {"number": 1, "string": "x", "null": None, "true": True}
BAD_TIMES = {
    "no-millis": "2026-06-01T12:00:00Z", "four-digits": "2026-06-01T12:00:00.0000Z",
    "lower-t": "2026-06-01t12:00:00.000Z", "lower-z": "2026-06-01T12:00:00.000z",
    "offset": "2026-06-01T12:00:00.000+00:00", "feb-29-2026": "2026-02-29T12:00:00.000Z",
    "apr-31": "2026-04-31T12:00:00.000Z", "hour-24": "2026-06-01T24:00:00.000Z",
    "minute-60": "2026-06-01T12:60:00.000Z", "leap-second": "2026-06-30T23:59:60.000Z",
    "month-13": "2026-13-01T12:00:00.000Z", "year-0": "0000-01-01T00:00:00.000Z",
    "space-separator": "2026-06-01 12:00:00.000Z", "short-fields": "2026-6-1T12:00:00.000Z",
    "trailing-newline": "2026-06-01T12:00:00.000Z\n", "empty": "",
    "epoch-number-text": "1780315200",
}  # fmt: skip
_VISIBLE_BAD = {"empty": "", "space": "a b", "513-chars": "x" * 513, "non-ascii": "é",
                "trailing-newline": "a\n", "tab": "\t", "delete": "a\x7f"}  # fmt: skip
BAD_STRINGS: dict[str, dict[str, str]] = {
    "id": {"empty": "", "leading-space": " x", "leading-hyphen": "-x", "inner-space": "x y",
           "129-chars": "x" * 129, "trailing-newline": "x\n", "non-ascii": "é", "slash": "x/y",
           "hash": "x#"},
    "type": {"empty": "", "empty-token": "a..b", "leading-dot": ".a", "trailing-dot": "a.",
             "space": "a b", "slash": "a/b", "star": "a.*", "gt": "a.>", "token-65": "a" * 65,
             "tokens-17": ".".join(["a"] * 17), "chars-259": ".".join(["a" * 64] * 4),
             "trailing-newline": "a\n", "non-ascii": "é"},
    "source": _VISIBLE_BAD,
    "reply_to": _VISIBLE_BAD,
    "time": BAD_TIMES,
    "deadline": BAD_TIMES,
    "idempotency_key": {"empty": "", "space": "a b", "257-chars": "k" * 257, "non-ascii": "é"},
    "content_type": {"no-slash": "json", "two-slashes": "a/b/c", "no-type": "/json",
                     "no-subtype": "application/", "leading-space": " text/plain",
                     "space-in-type": "text /plain", "non-ascii-parameter": "text/plain; a=é",
                     "256-chars": "a" * 127 + "/" + "b" * 120 + "; c=dddd"},
    "dataschema": {"empty": "", "space": "a b", "1025-chars": "x" * 1025},
    "data_base64": {"unpadded": "aGk", "newline": "aGk=\n", "one-char": "a", "dollar": "a$==",
                    "trailing-space": "aGk= ", "only-padding": "====", "padding-inside": "aG=k",
                    "base64url": "a-_b"},
}  # fmt: skip
BAD_VERSIONS = {"1": "1", "1-dot": "1.", "leading-zero-minor": "1.01", "three-parts": "1.0.0",
                "v-prefix": "v1.0", "minor-5-digits": "1.10000", "major-5-digits": "10000.0",
                "leading-space": " 1.0", "trailing-newline": "1.0\n", "comma": "1,0",
                "empty": "", "fullwidth-digit": "\uff11.0"}  # fmt: skip
OTHER_MAJORS = {"2.0": "2.0", "0.9": "0.9", "9999.0": "9999.0", "01.0": "01.0"}
UNKNOWN_MEMBERS = {"priority": "/priority", "Kind": "/Kind", "data-space": "/data ",
                   "empty-name": "/", "proto": "/__proto__", "constructor": "/constructor",
                   "extensions": "/extensions", "upper-llmp": "/LLMP", "camel-reply": "/replyTo",
                   "nul-name": "/nul\x00", "slash-name": "/a~1b", "tilde-name": "/~0x",
                   "non-ascii-name": "/é"}  # fmt: skip
FORBIDDEN_ON_REQUEST: dict[str, Any] = {
                        "correlation_id": "019e0000-0000-7000-8000-000000000001", "seq": 1,
                        "final": True, "finish_reason": "stop", "usage": {"input_tokens": 1},
                        "error": _ERROR}  # fmt: skip
BAD_KINDS = ("query", "REQUEST", "Request", "", "requests", "req", "request ")
#: Broken ``trace``, ``timing``, ``critical``, ``ext`` and ``usage`` blocks: (pointer, value).
BLOCKS: dict[str, tuple[str, dict[str, Any]]] = {
    "trace-empty": ("/trace/traceparent", {"trace": {}}),
    "trace-zero-trace-id": ("/trace/traceparent", {"trace": {
        "traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"}}),
    "trace-zero-parent-id": ("/trace/traceparent", {"trace": {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01"}}),
    "trace-upper-hex": ("/trace/traceparent", {"trace": {"traceparent": _TRACEPARENT.upper()}}),
    "trace-short": ("/trace/traceparent", {"trace": {"traceparent": _TRACEPARENT[:-1]}}),
    "trace-extra": ("/trace/baggage", {"trace": {"traceparent": _TRACEPARENT, "baggage": "x"}}),
    "tracestate-513": ("/trace/tracestate", {"trace": {"traceparent": _TRACEPARENT,
                                                       "tracestate": "s" * 513}}),
    "tracestate-non-ascii": ("/trace/tracestate", {"trace": {"traceparent": _TRACEPARENT,
                                                             "tracestate": "é"}}),
    "tracestate-number": ("/trace/tracestate", {"trace": {"traceparent": _TRACEPARENT,
                                                          "tracestate": 1}}),
    "timing-unknown": ("/timing/start", {"timing": {"start": 1}}),
    "timing-case": ("/timing/Call", {"timing": {"call": 1, "Call": 2}}),
    "critical-empty": ("/critical", {"critical": []}),
    "critical-17": ("/critical", {"critical": [f"acme.e{i}" for i in range(17)]}),
    "critical-repeated": ("/critical/1", {"critical": ["acme.a", "acme.a"], "ext": {"acme.a": 1}}),
    "critical-upper": ("/critical/0", {"critical": ["Acme"]}),
    "critical-item-number": ("/critical/0", {"critical": [1]}),
    "critical-65": ("/critical/0", {"critical": ["a" * 65]}),
    "critical-double-dot": ("/critical/0", {"critical": ["acme..a"]}),
    "ext-no-namespace": ("/ext/priority", {"ext": {"priority": 1}}),
    "ext-upper": ("/ext/Acme.x", {"ext": {"Acme.x": 1}}),
    "ext-trailing-dot": ("/ext/acme.", {"ext": {"acme.": 1}}),
    "ext-double-dot": ("/ext/acme..x", {"ext": {"acme..x": 1}}),
    "ext-trailing-hyphen": ("/ext/acme.x-", {"ext": {"acme.x-": 1}}),
    "ext-65": ("/ext/" + "a" * 30 + "." + "b" * 34, {"ext": {"a" * 30 + "." + "b" * 34: 1}}),
    "ext-33": ("/ext", {"ext": {f"acme.e{i}": i for i in range(33)}}),
    "ext-slash": ("/ext/acme~1x.y", {"ext": {"acme/x.y": 1}}),
    "usage-33": ("/usage", {"usage": {f"t{i}": 1 for i in range(33)}}),
    "usage-bad-name": ("/usage/Input", {"usage": {"Input": 1}}),
}  # fmt: skip
_REQ = {"trace-": "ENV-029", "tracestate": "ENV-029", "timing": "ENV-030", "critical": "ENV-031",
        "ext": "ENV-032", "usage": "ENV-023"}  # fmt: skip


def _sans_data(member: str) -> dict[str, Any]:
    """``data_base64`` is tried alone, so that ENV-026 is not broken too."""
    return {"data": _DROP} if member == "data_base64" else {}


def _members(b: _Builder) -> None:
    for member in ("llmp", "id", "kind", "type", "source", "time"):
        b.mutation(f"envelope/missing-{member}", "ENV-009", f"/{member}", **{member: _DROP})
    wrong: dict[str, dict[str, Any]] = {**dict.fromkeys(STRING_MEMBERS, _WRONG_FOR_STRING),
             **dict.fromkeys(BLOCK_MEMBERS, _WRONG_FOR_BLOCK),
             "llmp": _WRONG_FOR_STRING, "kind": _WRONG_FOR_STRING}  # fmt: skip
    for member, values in wrong.items():
        requirement = {**STRING_MEMBERS, **BLOCK_MEMBERS, "llmp": "ENV-010", "kind": "ENV-013"}[
            member
        ]
        for seed, value in values.items():
            b.mutation(f"envelope/{member}-{seed}", requirement, f"/{member}",
                       **{member: value}, **_sans_data(member))  # fmt: skip
    for member, bad in BAD_STRINGS.items():
        for seed, value in bad.items():
            b.mutation(f"envelope/{member}-{seed}", STRING_MEMBERS[member], f"/{member}",
                       **{member: value}, **_sans_data(member))  # fmt: skip
    for seed, version in BAD_VERSIONS.items():
        b.mutation(f"envelope/llmp-{seed}", "ENV-010", "/llmp", llmp=version)
    for seed, version in OTHER_MAJORS.items():
        b.mutation(f"envelope/llmp-major-{seed}", "ENV-010", "/llmp", "UNSUPPORTED_VERSION",
                   llmp=version)  # fmt: skip
    b.mutation("envelope/llmp-major-before-unknown", "ENV-039", "/llmp", "UNSUPPORTED_VERSION",
               ("ENV-010",), llmp="2.0", priority=5)  # fmt: skip
    b.mutation("envelope/llmp-major-before-missing", "ENV-039", "/llmp", "UNSUPPORTED_VERSION",
               ("ENV-010",), llmp="3.1", id=_DROP, source=_DROP)  # fmt: skip
    for position, kind in enumerate(BAD_KINDS):
        b.mutation(f"envelope/kind-{position}", "ENV-013", "/kind", kind=kind)
    for seed, pointer in UNKNOWN_MEMBERS.items():
        name = pointer[1:].replace("~1", "/").replace("~0", "~")
        b.mutation(f"envelope/unknown-{seed}", "ENV-008", pointer, **{name: 5})
    for member, value in FORBIDDEN_ON_REQUEST.items():
        b.mutation(f"envelope/forbidden-{member}", "ENV-034", f"/{member}", **{member: value})
    for seed, (pointer, changes) in BLOCKS.items():
        requirement = next(r for prefix, r in _REQ.items() if seed.startswith(prefix))
        b.mutation(f"envelope/{seed}", requirement, pointer, **changes)
    b.mutation("envelope/data-and-data-base64", "ENV-026", "/data_base64", data_base64="aGk=")
    b.mutation("envelope/critical-not-understood", "ENV-031", "/critical/0",
               "UNSUPPORTED_EXTENSION", critical=["acme.x"], ext={"acme.x": 1})  # fmt: skip
    b.mutation("envelope/critical-enc-absent", "ENV-031", "/critical/0", "UNSUPPORTED_EXTENSION",
               critical=["enc"])  # fmt: skip
    b.mutation("envelope/critical-second-of-two", "ENV-031", "/critical/0", "UNSUPPORTED_EXTENSION",
               critical=["acme.a", "acme.b"], ext={"acme.a": 1, "acme.b": 2})  # fmt: skip


def _security_shapes(b: _Builder) -> None:
    """Malformed ``auth``, ``sig`` and ``enc`` blocks [SEC-001, SEC-002, SEC-003]."""
    auth = {"scheme": "bearer", "token": "eyJhbGciOiJFZERTQSJ9.e30.c2ln"}
    auths = {"scheme-basic": ("/auth/scheme", {**auth, "scheme": "basic"}),
             "scheme-capital": ("/auth/scheme", {**auth, "scheme": "Bearer"}),
             "token-empty": ("/auth/token", {**auth, "token": ""}),
             "token-space": ("/auth/token", {**auth, "token": "a b"}),
             "token-16385": ("/auth/token", {**auth, "token": "t" * 16385}),
             "token-missing": ("/auth/token", {"scheme": "bearer"}),
             "scheme-missing": ("/auth/scheme", {"token": "t"}),
             "extra-member": ("/auth/expires", {**auth, "expires": 1}),
             "empty": ("/auth/scheme", {})}  # fmt: skip
    for seed, (pointer, value) in auths.items():
        b.mutation(f"security-shape/auth-{seed}", "SEC-001", pointer, auth=value)
    sigs: dict[str, tuple[str, dict[str, Any]]] = {
        f"missing-{m}": (f"/sig/{m}", {k: v for k, v in _SIG.items() if k != m}) for m in _SIG
    }
    bad: dict[str, dict[str, Any]] = {
           "alg": {"empty": "", "33-chars": "a" * 33, "space": "Ed DSA", "newline": "EdDSA\n"},
           "kid": {"empty": "", "space": "a b", "257-chars": "k" * 257},
           "created": {"apr-31": "2026-04-31T07:10:00.000Z", "no-millis": "2026-06-01T12:00:00Z"},
           "expires": {"lower-z": "2026-06-01T12:05:00.000z", "number": 1},
           "nonce": {"21-chars": "n" * 21, "129-chars": "n" * 129, "padded": "n" * 22 + "==",
                     "plus": "n" * 21 + "+"},
           "value": {"empty": "", "slash": "a/b", "padded": "aa==",
                     "1025-chars": "v" * 1025}}  # fmt: skip
    for member, values in bad.items():
        for seed, value in values.items():
            sigs[f"{member}-{seed}"] = (f"/sig/{member}", {**_SIG, member: value})
    sigs["extra-member"] = ("/sig/x5c", {**_SIG, "x5c": "x"})
    for seed, (pointer, value) in sigs.items():
        b.mutation(f"security-shape/sig-{seed}", "SEC-002", pointer, sig=value)
    sealed = {"data": _DROP, "data_base64": "aGk=", "critical": ["enc"]}
    encs = {"iv-15": ("/enc/iv", {**_ENC, "iv": "i" * 15}),
            "iv-17": ("/enc/iv", {**_ENC, "iv": "i" * 17}),
            "iv-plus": ("/enc/iv", {**_ENC, "iv": "i" * 15 + "+"}),
            "alg-empty": ("/enc/alg", {**_ENC, "alg": ""}),
            "kid-empty": ("/enc/kid", {**_ENC, "kid": ""}),
            "iv-missing": ("/enc/iv", {"alg": "A256GCM", "kid": "k"}),
            "extra-member": ("/enc/tag", {**_ENC, "tag": "t"})}  # fmt: skip
    for seed, (pointer, value) in encs.items():
        b.mutation(f"security-shape/enc-{seed}", "SEC-003", pointer, enc=value, **sealed)
    b.mutation("security-shape/enc-with-data", "SEC-003", "/data_base64", enc=_ENC,
               critical=["enc"])  # fmt: skip
    b.mutation("security-shape/enc-not-critical", "SEC-003", "/critical", enc=_ENC,
               data=_DROP, data_base64="aGk=", critical=["acme.x"])  # fmt: skip
    b.mutation("security-shape/enc-not-understood", "ENV-031", "/critical/0",
               "UNSUPPORTED_EXTENSION", enc=_ENC, **sealed)  # fmt: skip


# -- repeated names, depth, size --------------------------------------------------------------


def _duplicates(b: _Builder) -> None:
    """Member names repeated, compared after unescaping [ENV-003]."""
    cat = "duplicates"
    for name in ("llmp", "id", "kind", "type", "source", "time", "reply_to", "data"):
        rid = b.next_id()
        members = request_members(rid)
        key = f'"{name}":'.encode()
        body = dumps(members).replace(key, key + orjson.dumps(members[name]) + b"," + key, 1)
        b.add(cat, f"top-{name}-same-value", body, requirement="ENV-003", pointer=f"/{name}",
              correlation_id=rid, reply_type=HOSTILE_TYPE)  # fmt: skip
    for name, first in (("source", b'"urn:llmp:other"'), ("time", b'"2026-06-01T12:00:01.000Z"'),
                        ("data", b"null")):  # fmt: skip
        rid = b.next_id()
        key = f'"{name}":'.encode()
        body = dumps(request_members(rid)).replace(key, key + first + b"," + key, 1)
        b.add(cat, f"top-{name}-other-value", body, requirement="ENV-003", pointer=f"/{name}",
              correlation_id=rid, reply_type=HOSTILE_TYPE)  # fmt: skip
    rid = b.next_id()
    body = dumps(request_members(rid)).replace(
        b'"data":{"n":1}}', b'"data":{"n":1},"\\u0074ime":"' + TIME.encode() + b'"}'
    )
    b.add(
        cat,
        "top-time-escaped",
        body,
        requirement="ENV-003",
        pointer="/time",
        correlation_id=rid,
        reply_type=HOSTILE_TYPE,
    )
    nested = {
        "data-pair": ("/data/a", {"data": Raw(b'{"a":1,"a":2}')}),
        "data-apart": ("/data/a", {"data": Raw(b'{"a":1,"b":2,"a":3}')}),
        "data-deep": ("/data/x/y/0/z", {"data": Raw(b'{"x":{"y":[{"z":1,"z":1}]}}')}),
        "data-escaped": ("/data/a", {"data": Raw(b'{"a":1,"\\u0061":2}')}),
        "data-slash": ("/data/a~1b", {"data": Raw(b'{"a/b":1,"a/b":2}')}),
        "data-empty-name": ("/data/", {"data": Raw(b'{"":1,"":2}')}),
        "data-tilde": ("/data/~0", {"data": Raw(b'{"~":1,"~":2}')}),
        "data-in-arrays": ("/data/0/0/q", {"data": Raw(b'[[{"q":1,"q":2}]]')}),
        "data-colon-in-value": ("/data/a", {"data": Raw(b'{"a":"x:y","a":"z"}')}),
        "data-escaped-colon": ("/data/u:", {"data": Raw(b'{"u\\u003a":1,"u:":2}')}),
        "data-non-ascii": ("/data/\u00e9", {"data": Raw('{"é":1,"\\u00e9":2}'.encode())}),
        "trace": ("/trace/traceparent", {"trace": Raw(
            f'{{"traceparent":"{_TRACEPARENT}","traceparent":"{_TRACEPARENT}"}}'.encode())}),
        "timing": ("/timing/call", {"timing": Raw(b'{"call":1,"call":1}')}),
        "ext": ("/ext/acme.a", {"ext": Raw(b'{"acme.a":1,"acme.a":2}')}),
    }  # fmt: skip
    for seed, (pointer, changes) in nested.items():
        rid = b.next_id()
        body = dumps(request_members(rid, **changes))
        b.add(cat, seed, body, requirement="ENV-003", pointer=pointer, correlation_id=rid,
              reply_type=HOSTILE_TYPE)  # fmt: skip


def _depth(b: _Builder) -> None:
    """Nesting beyond 32, counting the envelope as depth 1 [ENV-007]."""
    for levels in (32, 33, 63, 99, 999, 1023, 1024, 5000, 100_000):
        rid = b.next_id()
        body = dumps(request_members(rid, data=Raw(b"[" * levels + b"]" * levels)))
        b.add("depth", f"arrays-{levels}", body, requirement="ENV-007", correlation_id=rid,
              reply_type=HOSTILE_TYPE, names_optional=levels >= 1000)  # fmt: skip
    for levels in (32, 100):
        rid = b.next_id()
        body = dumps(request_members(rid, data=Raw(b'{"a":' * levels + b"1" + b"}" * levels)))
        b.add("depth", f"objects-{levels}", body, requirement="ENV-007", correlation_id=rid,
              reply_type=HOSTILE_TYPE)  # fmt: skip
    rid = b.next_id()
    mixed = b'[{"a":' * 16 + b"[]" + b"}]" * 16
    b.add("depth", "mixed-33", dumps(request_members(rid, data=Raw(mixed))),
          requirement="ENV-007", correlation_id=rid, reply_type=HOSTILE_TYPE)  # fmt: skip
    rid = b.next_id()
    deep_ext = {"acme.deep": Raw(b"[" * 31 + b"]" * 31)}
    b.add("depth", "in-ext-value", dumps(request_members(rid, ext=deep_ext)),
          requirement="ENV-007", correlation_id=rid, reply_type=HOSTILE_TYPE)  # fmt: skip
    b.unreadable("depth", "top-level-array-33", b"[" * 33 + b"]" * 33, "ENV-007")
    b.unreadable("depth", "unclosed-100000", b"[" * 100_000, "ENV-002", "ENV-007")
    b.unreadable("depth", "unclosed-objects-50000", b'{"a":' * 50_000, "ENV-002", "ENV-007")
    b.unreadable("depth", "unclosed-in-data", dumps(request_members(
        b.next_id(), data=Raw(b"[" * 2000))), "ENV-002", "ENV-007")  # fmt: skip


_DEEP_40 = b"[" * 40 + b"]" * 40


def _padded(rid: str, size: int, **changes: Any) -> bytes:
    """A request exactly ``size`` bytes long, padded in a ``data`` string.

    It has no ``reply_to`` member, whose placeholder a driver would replace with an address of
    another length; the transport's reply address is the one it is answered at.
    """
    skeleton = dumps(request_members(rid, data="", reply_to=_DROP, **changes))
    pad = size - len(skeleton)
    return skeleton.replace(b'"data":""', b'"data":"' + b"x" * pad + b'"', 1)


def _sizes(b: _Builder) -> None:
    """Bodies over the size limit, checked before anything else [ENV-006, ENV-039]."""
    over = {
        "one-over": _padded("hostile-size", LIMIT + 1),
        "one-over-broken-json": _padded("hostile-size", LIMIT + 2)[:-1],
        "one-over-bad-utf8": _padded("hostile-size", LIMIT + 1).replace(b"xx", b"\xff\xff", 1),
        "one-over-too-deep": _padded("hostile-size", LIMIT + 1, ext={"acme.d": Raw(_DEEP_40)}),
        "memory-max-payload": _padded("hostile-size", LIMIT + 65_536),
        "two-mib": _padded("hostile-size", 2 * LIMIT),
        "eight-mib-of-brackets": b"[" * (8 * LIMIT),
    }  # fmt: skip
    for seed, body in over.items():
        b.add("size", seed, body, requirement="ENV-006", expect="PAYLOAD_TOO_LARGE")
    rid = b.next_id()
    b.add("size", "at-limit-unknown-member", _padded(rid, LIMIT, priority=1),
          requirement="ENV-008", pointer="/priority", correlation_id=rid,
          reply_type=HOSTILE_TYPE)  # fmt: skip
    b.unreadable("size", "at-limit-broken-json", _padded(b.next_id(), LIMIT + 1)[:-1], "ENV-002")
    for member in ("source", "type", "reply_to", "idempotency_key", "id"):
        b.mutation(f"size/long-{member}", STRING_MEMBERS[member], f"/{member}",
                   **{member: "y" * 100_000})  # fmt: skip
    b.mutation("size/long-data-base64", "ENV-027", "/data_base64",
               data=_DROP, data_base64="A" * 999_999)  # fmt: skip


# -- other kinds at a request address ---------------------------------------------------------


def _kind_members(rid: str, kind: str, **members: Any) -> dict[str, Any]:
    base = {"llmp": "1.0", "id": rid, "kind": kind, "type": HOSTILE_TYPE, "source": SOURCE,
            "time": TIME}  # fmt: skip
    return {**base, **members}


MISDIRECTED: dict[str, dict[str, Any]] = {
    "response": {"kind": "response", "correlation_id": "hostile-origin", "data": {"n": 1}},
    "chunk": {"kind": "chunk", "correlation_id": "hostile-origin", "seq": 0, "data": "x"},
    "final-chunk": {"kind": "chunk", "correlation_id": "hostile-origin", "seq": 1, "final": True},
    "event": {"kind": "event", "data": {"n": 1}},
    "cancel": {"kind": "cancel", "correlation_id": "hostile-origin"},
}  # fmt: skip
#: Error messages that do not decode: never answered, whatever they carry [ENV-036].
BAD_ERRORS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "missing-error": ("/error", "ENV-028", {}),
    "error-empty": ("/error/code", "ERR-001", {"error": {}}),
    "code-lower": ("/error/code", "ERR-001", {"error": {**_ERROR, "code": "internal"}}),
    "retryable-string": ("/error/retryable", "ERR-001", {"error": {**_ERROR, "retryable": "no"}}),
    "retryable-missing": ("/error/retryable", "ERR-001", {"error": {"code": "X", "message": ""}}),
    "details-object": ("/error/details", "ERR-005", {"error": {**_ERROR, "details": {}}}),
    "detail-untyped": ("/error/details/0/type", "ERR-005", {"error": {**_ERROR,
                                                                       "details": [{}]}}),
    "retry-after-negative": ("/error/retry_after_ms", "ENV-033", {"error": {
        **_ERROR, "retry_after_ms": -1}}),
    "message-4097": ("/error/message", "ERR-001", {"error": {**_ERROR, "message": "m" * 4097}}),
    "extra-member": ("/error/stack", "ERR-001", {"error": {**_ERROR, "stack": "x"}}),
    "with-reply-to": ("/reply_to", "ENV-034", {"error": _ERROR, "reply_to": REPLY_PLACEHOLDER}),
    "unknown-member": ("/priority", "ENV-008", {"error": _ERROR, "priority": 1}),
}  # fmt: skip
BAD_OTHER_KINDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "chunk-without-seq": ("/seq", "ENV-022", {"kind": "chunk", "correlation_id": "c"}),
    "response-uncorrelated": ("/correlation_id", "ENV-017", {"kind": "response"}),
    "cancel-with-data": ("/data", "ENV-034", {"kind": "cancel", "correlation_id": "c",
                                              "data": 1}),
    "event-with-reply-to": ("/reply_to", "ENV-034", {"kind": "event",
                                                     "reply_to": REPLY_PLACEHOLDER}),
    "response-bad-finish": ("/finish_reason", "ENV-023", {"kind": "response",
                                                          "correlation_id": "c",
                                                          "finish_reason": "Stop"}),
}  # fmt: skip


def _kinds(b: _Builder) -> None:
    """Other kinds sent to a request address: PROTOCOL_ERROR, or dropped if errors [RR-005]."""
    for seed, members in MISDIRECTED.items():
        rid = b.next_id()
        b.add("kinds", f"misdirected-{seed}", dumps(_kind_members(rid, **members)),
              requirement="RR-005", expect="PROTOCOL_ERROR", pointer=None, cites=(),
              correlation_id=rid, reply_type=HOSTILE_TYPE)  # fmt: skip
    b.add("kinds", "valid-error", dumps(_kind_members(b.next_id(), "error", error=_ERROR)),
          requirement="RR-005", expect=DROPPED, pointer=None, cites=())  # fmt: skip
    for seed, (pointer, requirement, members) in BAD_ERRORS.items():
        b.add("kinds", f"invalid-error-{seed}", dumps(_kind_members(b.next_id(), "error",
                                                                    **members)),
              requirement="ENV-036", expect=DROPPED, code=INVALID, pointer=pointer,
              cites=(requirement,))  # fmt: skip
    for seed, (pointer, requirement, members) in BAD_OTHER_KINDS.items():
        rid = b.next_id()
        b.add("kinds", seed, dumps(_kind_members(rid, **members)), requirement=requirement,
              pointer=pointer, correlation_id=rid, reply_type=HOSTILE_TYPE)  # fmt: skip


# -- bad signatures (enabled with the reference's signature verification) ---------------------

#: The test key a verifying target must trust: RFC 8032 TEST 1 (spec/security.md, Test keys).
SIGNATURE_KID = "urn:example:keys:gateway-7:2026-05"
_TEST_1 = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _signed(members: dict[str, Any]) -> dict[str, Any]:
    """``members`` signed with the test key over the RFC 8785 form without ``sig.value``."""
    import rfc8785
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    block = {k: v for k, v in _SIG.items() if k != "value"} | {"kid": SIGNATURE_KID}
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(_TEST_1))
    value = key.sign(rfc8785.dumps({**members, "sig": block}))
    return {**members, "sig": {**block, "value": _b64url(value)}}


def _with_sig(sig: dict[str, Any], **changes: Any) -> Callable[[str], dict[str, Any]]:
    return lambda rid: request_members(rid, sig={**sig, **changes})


def _bad_signatures(b: _Builder) -> None:
    """Well-formed ``sig`` blocks that a verifying receiver refuses (spec/security.md,
    Verification order, steps 5 to 7).

    Only a target that verifies signatures with :data:`SIGNATURE_KID` gets these right; a
    receiver that verifies none accepts them, as SEC-019 allows it to. Each fails before the
    time window is looked at (step 8), so the fixed ``created`` does not matter.
    """
    sig = {**_SIG, "kid": SIGNATURE_KID}
    proper = _signed(request_members("hostile-signed", reply_to=_DROP))["sig"]
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    last = alphabet.index(proper["value"][-1])  # its low 4 bits are padding, and zero
    loose = proper["value"][:-1] + alphabet[last ^ 1]  # the same bytes, written another way
    cases: dict[str, tuple[str, str, tuple[str, ...], Callable[[str], dict[str, Any]]]] = {
        **{f"alg-{alg}": ("SIGNATURE_INVALID", "/sig/alg", ("SEC-007", "SEC-012"),
                          _with_sig(sig, alg=alg)) for alg in ("none", "NONE", "None", "nOnE")},
        "alg-RS256": ("SIGNATURE_INVALID", "/sig/alg", ("SEC-012",),
                      lambda rid: request_members(rid, sig={**sig, "alg": "RS256"})),
        "kid-unknown": ("UNAUTHENTICATED", "/sig/kid", ("SEC-014",), lambda rid: request_members(
            rid, sig={**sig, "kid": "urn:llmp:hostile:no-such-key"})),
        "alg-not-the-keys": ("SIGNATURE_INVALID", "/sig/alg", ("SEC-013",), lambda rid:
                             request_members(rid, sig={**sig, "alg": "HS256", "value": "B" * 43})),
        "value-32-bytes": ("SIGNATURE_INVALID", "/sig/value", ("SEC-009", "SEC-016"),
                           lambda rid: request_members(rid, sig={**sig, "value": "A" * 43})),
        "value-not-canonical": ("SIGNATURE_INVALID", "/sig/value", ("SEC-009", "SEC-016"),
                                lambda rid: request_members("hostile-signed", reply_to=_DROP,
                                                            sig={**proper, "value": loose})),
        "value-garbage": ("SIGNATURE_INVALID", "/sig/value", ("SEC-016",),
                          lambda rid: request_members(rid, sig={**sig, "value": "A" * 86})),
        "data-changed-after-signing": ("SIGNATURE_INVALID", "/sig/value", ("SEC-016",),
                                       lambda rid: {**_signed(request_members(rid)), "data": 2}),
        "nonce-changed-after-signing": ("SIGNATURE_INVALID", "/sig/value", ("SEC-016",),
                                        lambda rid: request_members(rid, sig={
                                            **proper, "nonce": "A" * 22})),
        "signature-of-another-message": ("SIGNATURE_INVALID", "/sig/value", ("SEC-016",),
                                         lambda rid: request_members(rid, sig=proper)),
        "integer-beyond-i-json": ("SIGNATURE_INVALID", "/data/big", ("SEC-008",),
                                  lambda rid: request_members(rid, sig=sig, data={
                                      "big": 2**60})),
    }  # fmt: skip
    for seed, (code, pointer, cites, build) in cases.items():
        rid = b.next_id()
        members = build(rid)
        b.add("signatures", seed, dumps(members), requirement=cites[0], expect=code,
              pointer=pointer, cites=cites, correlation_id=members["id"],
              reply_type=HOSTILE_TYPE)  # fmt: skip


# -- without a transport reply address --------------------------------------------------------

_NO_REPLY_CATEGORIES = ("json-syntax", "utf8", "numbers", "envelope", "security-shape",
                        "duplicates", "depth")  # fmt: skip


def _no_reply(b: _Builder) -> None:
    """A third of the inputs again, without a reply address: dropped and counted [ENV-038].

    Every twelfth schema-level mutation keeps its valid ``reply_to`` member, the one reply
    address left, which ENV-036 names; misdirected kinds carry none and are dropped [RR-005];
    bodies over the size limit keep their bytes, since nothing in them may be read [ENV-006].
    """
    base = [i for i in b.items if i.category in _NO_REPLY_CATEGORIES and "reply_to" not in i.name]
    schema_level = [i for i in base if i.pointer and i.category in ("envelope", "numbers")]
    derived = [without_reply_to(item, name=f"no-reply/{item.name}", expect=DROPPED)
               for item in base[::3]]  # fmt: skip
    derived += [without_reply_to(item, name=f"no-reply/via-member/{item.name}",
                                 expect=item.expect, strip=False, via_member=True)
                for item in schema_level[::12]]  # fmt: skip
    derived += [without_reply_to(item, name=f"no-reply/{item.name}", expect=DROPPED,
                                 strip=item.category != "size")
                for item in b.items if item.name.startswith("kinds/misdirected-")
                or item.expect == "PAYLOAD_TOO_LARGE"]  # fmt: skip
    b.items.extend(derived)


def categories(items: Iterable[HostileInput]) -> dict[str, int]:
    """How many inputs each category holds, in first-seen order."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.category] = counts.get(item.category, 0) + 1
    return counts


def signatures_available() -> bool:
    """Whether the reference implementation verifies signatures: ``llmproto_ref._signing``
    exists and :class:`~llmproto_ref.Service` takes a ``security`` policy."""
    if importlib.util.find_spec("llmproto_ref._signing") is None:
        return False
    import inspect

    from llmproto_ref import Service

    return "security" in inspect.signature(Service).parameters


def hostile_corpus(*, signatures: bool | None = None) -> list[HostileInput]:
    """Every hostile input, in a fixed order.

    :param signatures: include the bad-signature category; ``None``: when the reference
        implementation verifies signatures (see :func:`signatures_available`).
    """
    b = _Builder()
    steps: list[Callable[[_Builder], None]] = [
        _json_texts, _encodings, _numbers, _members, _security_shapes, _duplicates, _depth,
        _sizes, _kinds,
    ]  # fmt: skip
    if signatures_available() if signatures is None else signatures:
        steps.append(_bad_signatures)
    for step in steps:
        step(b)
    _no_reply(b)
    return b.items


def without_reply_to(
    item: HostileInput, *, name: str, expect: str, strip: bool = True, via_member: bool = False
) -> HostileInput:
    """``item`` sent without a transport reply address; ``strip`` removes ``reply_to`` too."""
    body = item.body
    if strip:
        body = body.replace(f'"reply_to":"{REPLY_PLACEHOLDER}",'.encode(), b"")
    return replace(item, name=name, category="no-reply", body=body, reply_address=False,
                   expect=expect, reply_via_member=via_member)  # fmt: skip


# -- valid bodies at the limits ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValidBody:
    """A valid request at a limit, sent among the hostile ones: it must be answered.

    :param make: ``(type, reply_to) -> body``; the body's ``type`` is the served one.
    :param data: what the echo handler must return for it.
    """

    name: str
    requirement: str
    make: Callable[[str, str], bytes]
    data: Any


def _valid(rid: str, **changes: Any) -> Callable[[str, str], bytes]:
    return lambda type_, address: dumps(
        request_members(rid, type=type_, reply_to=address, **changes)
    )


def _at_limit(type_: str, address: str) -> bytes:
    skeleton = dumps(request_members("hostile-valid-size", type=type_, reply_to=address,
                                     data=_DROP, data_base64=""))  # fmt: skip
    pad = (LIMIT - len(skeleton)) // 4 * 4
    body = skeleton.replace(b'"data_base64":""', b'"data_base64":"' + b"A" * pad + b'"')
    return body + b" " * (LIMIT - len(body))  # trailing whitespace is insignificant [ENV-002]


_EDGE_NUMBERS = b"[1.7976931348623157e308,-1.7976931348623157e308,5e-324,1e-400," \
                b"123456789012345678901234567890,-0.0,0]"  # fmt: skip
_ESCAPED = b'{"\\u00e9":"\\ud83d\\ude00","a\\u0000b":"\\u2028","c\\u003a":"\\/"}'


def valid_bodies() -> list[ValidBody]:
    """Valid requests at the limits the hostile inputs cross, in a fixed order."""
    deep = [[]]  # type: list[Any]
    for _ in range(29):
        deep = [deep]
    nested: Any = 1
    for _ in range(31):
        nested = {"a": nested}

    def spaced(type_: str, address: str) -> bytes:
        members = request_members("hostile-valid-spaced", type=type_, reply_to=address)
        return b" \t\r\n" + orjson.dumps(members, option=orjson.OPT_INDENT_2) + b"\n\t "

    names = b'{"a":1,"A":2,"a ":3,"\\u0061b":4,"ab ":5}'
    return [
        ValidBody("depth-32-arrays", "ENV-007", _valid("hostile-valid-d", data=deep), deep),
        ValidBody("depth-32-objects", "ENV-007", _valid("hostile-valid-o", data=nested), nested),
        ValidBody("size-at-limit", "ENV-006", _at_limit, None),
        ValidBody("edge-numbers", "ENV-004", _valid("hostile-valid-n", data=Raw(_EDGE_NUMBERS)),
                  orjson.loads(_EDGE_NUMBERS)),
        ValidBody("integers-2^53-1", "ENV-033",
                  _valid("hostile-valid-i", timing={"call": 2**53 - 1, "sent": 2**53 - 1}),
                  {"n": 1}),
        ValidBody("minor-version", "ENV-010", _valid("hostile-valid-v", llmp="1.9999"), {"n": 1}),
        ValidBody("unknown-extension", "ENV-041",
                  _valid("hostile-valid-e", ext={"acme.note": {"x": [1]}}), {"n": 1}),
        ValidBody("insignificant-whitespace", "ENV-002", spaced, {"n": 1}),
        ValidBody("escapes", "ENV-005", _valid("hostile-valid-u", data=Raw(_ESCAPED)),
                  orjson.loads(_ESCAPED)),
        ValidBody("longest-id-and-source", "ENV-011", _valid("h" * 128, source="s" * 512),
                  {"n": 1}),
        ValidBody("names-that-differ", "ENV-003", _valid("hostile-valid-a", data=Raw(names)),
                  orjson.loads(names)),
        ValidBody("null-data", "ENV-026", _valid("hostile-valid-z", data=None), None),
    ]  # fmt: skip
