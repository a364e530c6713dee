"""The security vectors, judged by the reference and by an independent implementation.

Every vector of conformance/llmproto_conformance/vectors/security/ is run twice:

- through the reference (``llmproto_ref.decode`` and ``SecurityPolicy.check``), once per
  Ed25519 backend the machine has (libsodium, OpenSSL);
- through the small receiver written out below, which shares no code with the reference: the
  standard library's JSON parser and HMAC, its own RFC 8785 writer, PyNaCl and ``cryptography``
  for Ed25519 (both must agree), and libsodium's AES-256-GCM where the CPU offers it.

Both must produce each vector's expected outcome [SEC-017], and three canonicalizations of each
signed input (the reference's, the ``rfc8785`` package's and the one here) must equal the bytes
the vector says the signature covers [SEC-004].
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing
import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jsonschema import Draft202012Validator

import llmproto_ref._keys as keys_module
import llmproto_ref._signing as signing_module
from llmproto_ref import EnvelopeError, decode
from llmproto_ref._bearer import BearerPolicy
from llmproto_ref._canonical import canonicalize, signing_input
from llmproto_ref._ed25519 import Ed25519Backend, available_backends
from llmproto_ref._ids import parse_timestamp_ms
from llmproto_ref._keys import KeySet
from llmproto_ref._policy import SecurityPolicy
from llmproto_ref._schemas import schema_validator

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "conformance/llmproto_conformance/vectors/security"
SCHEMA = FOLDER / "schema/security-vector.schema.json"
SIGNING_ALGS = ("EdDSA", "HS256")
DEFAULT_TOKEN_ALGS = ("EdDSA", "ES256", "PS256", "RS256")
MAX_SAFE = 2**53 - 1


@dataclass(frozen=True)
class Case:
    """One vector with the file it came from."""

    file: str
    keys: dict[str, Any]
    item: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.item["id"])


def _files() -> list[Path]:
    return sorted(p for p in FOLDER.glob("*/*.json") if p.parent.name != "schema")


def _cases() -> list[Case]:
    cases = []
    for path in _files():
        document = json.loads(path.read_text(encoding="utf-8"))
        for item in document["vectors"]:
            cases.append(Case(path.relative_to(FOLDER).as_posix(), document["test_keys"], item))
    return cases


CASES = _cases()


def _raw(given: dict[str, Any]) -> bytes:
    """The body a vector's input stands for (vectors/security/README.md)."""
    if "text" in given:
        return str(given["text"]).encode("utf-8")
    return json.dumps(given["json"], ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _outcome(expect: dict[str, Any]) -> tuple[str, str]:
    return ("valid", "") if expect["valid"] else (expect["code"], expect["pointer"])


# -- the files ---------------------------------------------------------------------------------


def test_files_match_their_schema() -> None:
    """Every security vector file validates against security-vector.schema.json."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    problems = [
        f"{path.name}: {error.json_path}: {error.message}"
        for path in _files()
        for error in validator.iter_errors(json.loads(path.read_text(encoding="utf-8")))
    ]
    assert [] == problems
    assert len(CASES) >= 100


def test_the_files_carry_the_published_test_keys() -> None:
    """The keys are those of spec/security.md: RFC 8032's first three and two SHA-256 keys."""
    spec = (ROOT / "spec/security.md").read_text(encoding="utf-8")
    for case in CASES:
        for jwk in case.keys["keys"]:
            assert jwk["kid"] in spec
            if jwk["kty"] == "OKP":
                seed = base64.urlsafe_b64decode(jwk["d"] + "==").hex()
                assert seed in spec


# -- canonicalization --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", [c for c in CASES if "signing_input" in c.item], ids=lambda c: c.id
)
def test_three_canonicalizations_agree_with_the_vector(case: Case) -> None:
    """The reference, rfc8785 and the independent writer produce the signed bytes [SEC-004]."""
    members = _strict_loads(_raw(case.item["input"]))
    expected = case.item["signing_input"]["text"].encode("utf-8")
    unsigned = {**members, "sig": {k: v for k, v in members["sig"].items() if k != "value"}}
    assert expected == jcs(unsigned)
    assert expected == rfc8785.dumps(unsigned)
    assert expected == signing_input(
        decode(_raw(case.item["input"]), understood=frozenset({"enc"})).members
    )
    assert expected == canonicalize(unsigned)


# -- the reference -----------------------------------------------------------------------------


def _reference_policy(case: Case) -> SecurityPolicy:
    receiver = case.item["receiver"]
    every = KeySet.from_jwk_set(case.keys)
    chosen = receiver.get("keys", [k.kid for k in every if k.alg in SIGNING_ALGS])
    now = parse_timestamp_ms(receiver["now"])
    bearer = None
    if "bearer" in receiver:
        b = receiver["bearer"]
        bearer = BearerPolicy(
            audience=b["audience"],
            issuers=frozenset(b["issuers"]),
            keys=_subset(every, b["keys"]),
            algorithms=frozenset(b.get("algorithms", DEFAULT_TOKEN_ALGS)),
            required=b.get("required", True),
            scopes={t: frozenset(s) for t, s in b.get("scopes", {}).items()},
        )
    decrypting = receiver.get("decryption_keys")
    return SecurityPolicy(
        keys=_subset(every, chosen),
        require_signature=receiver.get("require_signature", False),
        algorithms=frozenset(receiver.get("algorithms", SIGNING_ALGS)),
        clock_skew_ms=receiver.get("clock_skew_ms", 60_000),
        max_lifetime_ms=receiver.get("max_lifetime_ms", 300_000),
        nonce_cache_size=receiver.get("nonce_cache_size", 100_000),
        principals={p: frozenset(s) for p, s in receiver.get("principals", {}).items()},
        decryption_keys=_subset(every, decrypting) if decrypting else None,
        bearer=bearer,
        clock=lambda: now,
    )


def _subset(every: KeySet, kids: list[str]) -> KeySet:
    return KeySet(key.public_key() for key in every if key.kid in kids)


def run_reference(case: Case) -> tuple[str, str, Any]:
    """The reference's outcome: ("valid", "", view) or (code, pointer, None)."""
    policy = _reference_policy(case)
    receiver = case.item["receiver"]
    for given in case.item.get("earlier", []):
        raw = _raw(given)
        policy.check(decode(raw, understood=policy.understood), len(raw))
    raw = _raw(case.item["input"])
    try:
        envelope = decode(raw, understood=policy.understood)
        verified = policy.check(
            envelope,
            len(raw),
            principal=receiver.get("principal"),
            redelivery=receiver.get("redelivery", False),
        )
    except EnvelopeError as exc:
        return str(exc.code), exc.pointer, None
    return "valid", "", verified.envelope


@pytest.fixture(params=[b.name for b in available_backends()])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Ed25519Backend:
    """Each Ed25519 backend in turn, as the one signing and verifying use."""
    chosen = next(b for b in available_backends() if b.name == request.param)
    monkeypatch.setattr(signing_module, "BACKEND", chosen)
    monkeypatch.setattr(keys_module, "BACKEND", chosen)
    return chosen


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_reference_produces_the_expected_outcome(case: Case, backend: Ed25519Backend) -> None:
    """decode + SecurityPolicy.check give each vector's code and pointer [SEC-017]."""
    code, pointer, view = run_reference(case)
    assert _outcome(case.item["expect"]) == (code, pointer), case.item["description"]
    expect = case.item["expect"]
    if view is not None:
        assert not view.has("auth")  # the application never sees a token to pass on [SEC-032]
        if "data" in expect:
            assert expect["data"] == view.data
        if "data_base64" in expect:
            assert expect["data_base64"] == view.data_base64


# -- the independent receiver ------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_an_independent_receiver_produces_the_expected_outcome(case: Case) -> None:
    """The receiver below, sharing no code with the reference, agrees with every vector."""
    receiver = Independent(case)
    for given in case.item.get("earlier", []):
        assert ("valid", "") == receiver.receive(_raw(given), last=False)[:2]
    code, pointer, data = receiver.receive(_raw(case.item["input"]), last=True)
    assert _outcome(case.item["expect"]) == (code, pointer), case.item["description"]
    for name in ("data", "data_base64"):
        if name in case.item["expect"]:
            assert case.item["expect"][name] == data


class Rejected(Exception):  # noqa: N818 - an outcome, not an error of this test
    """A rejection with its code and pointer."""

    def __init__(self, code: str, pointer: str) -> None:
        super().__init__(f"{code} at {pointer}")
        self.code = code
        self.pointer = pointer


@dataclass
class Independent:
    """A receiver written from spec/security.md alone."""

    case: Case
    seen: dict[tuple[str, str], int] = field(default_factory=dict)
    floor: int = -1

    def __post_init__(self) -> None:
        self.jwks = {k["kid"]: k for k in self.case.keys["keys"]}
        self.settings = self.case.item["receiver"]
        self.now = _ms(self.settings["now"])
        self.skew = self.settings.get("clock_skew_ms", 60_000)

    def receive(self, raw: bytes, *, last: bool) -> tuple[str, str, Any]:
        try:
            return ("valid", "", self._receive(raw, last))
        except Rejected as exc:
            return (exc.code, exc.pointer, None)

    def _receive(self, raw: bytes, last: bool) -> Any:
        members = _strict_loads(raw)
        assert schema_validator("envelope").is_valid(members), "vectors are schema-valid"
        understood = {"enc"} if self.settings.get("decryption_keys") else set()
        for index, name in enumerate(members.get("critical", [])):
            if name not in understood:
                raise Rejected("UNSUPPORTED_EXTENSION", f"/critical/{index}")
        jwk = self._signature(members, last)
        self._principal(members, jwk, last)
        self._token(members)
        return self._plaintext(members)

    def _signature(self, members: dict[str, Any], last: bool) -> dict[str, Any] | None:
        sig = members.get("sig")
        if sig is None:
            if self.settings.get("require_signature", False):
                raise Rejected("UNAUTHENTICATED", "/sig")
            return None
        alg, kid = sig["alg"], sig["kid"]
        if alg.lower() == "none" or alg not in self.settings.get("algorithms", SIGNING_ALGS):
            raise Rejected("SIGNATURE_INVALID", "/sig/alg")
        default = [k for k, j in self.jwks.items() if j.get("alg") in SIGNING_ALGS]
        if kid not in self.settings.get("keys", default):
            raise Rejected("UNAUTHENTICATED", "/sig/kid")
        jwk: dict[str, Any] = self.jwks[kid]
        if jwk.get("alg") != alg or (alg == "HS256" and members["kind"] == "event"):
            raise Rejected("SIGNATURE_INVALID", "/sig/alg")
        unsigned = {**members, "sig": {k: v for k, v in sig.items() if k != "value"}}
        try:
            message = jcs(unsigned)
        except NotIJson as exc:
            raise Rejected("SIGNATURE_INVALID", exc.pointer) from None
        value = _b64url(sig["value"])
        if value is None or not _verify(jwk, value, message):
            raise Rejected("SIGNATURE_INVALID", "/sig/value")
        created, expires = _ms(sig["created"]), _ms(sig["expires"])
        if created > self.now + self.skew:
            raise Rejected("REPLAY_REJECTED", "/sig/created")
        lifetime = expires - created
        if lifetime <= 0 or lifetime > self.settings.get("max_lifetime_ms", 300_000):
            raise Rejected("REPLAY_REJECTED", "/sig/expires")
        if self.now > expires + self.skew:
            raise Rejected("REPLAY_REJECTED", "/sig/expires")
        self._nonce(kid, sig["nonce"], expires + self.skew, last)
        return jwk

    def _nonce(self, kid: str, nonce: str, until: int, last: bool) -> None:
        pair = (kid, nonce)
        if pair in self.seen:
            if last and self.settings.get("redelivery", False):
                return
            raise Rejected("REPLAY_REJECTED", "/sig/nonce")
        if until <= self.floor:
            raise Rejected("REPLAY_REJECTED", "/sig/nonce")
        limit = self.settings.get("nonce_cache_size", 100_000)
        while len(self.seen) >= limit:
            oldest = min(self.seen, key=lambda p: self.seen[p])
            self.floor = max(self.floor, self.seen.pop(oldest))
        self.seen[pair] = until

    def _principal(self, members: dict[str, Any], jwk: dict[str, Any] | None, last: bool) -> None:
        source = members["source"]
        if jwk is not None and "llmp_sources" in jwk and source not in jwk["llmp_sources"]:
            raise Rejected("PERMISSION_DENIED", "/source")
        principal = self.settings.get("principal") if last else None
        if principal is not None:
            allowed = self.settings.get("principals", {}).get(principal, [principal])
            if source not in allowed:
                raise Rejected("PERMISSION_DENIED", "/source")

    def _token(self, members: dict[str, Any]) -> None:
        bearer = self.settings.get("bearer")
        if bearer is None or members["kind"] != "request":
            return
        needed = set(bearer.get("scopes", {}).get(members["type"], []))
        if "auth" not in members:
            if bearer.get("required", True) or needed:
                raise Rejected("UNAUTHENTICATED", "/auth")
            return
        claims = self._claims(bearer, members["auth"]["token"])
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise Rejected("UNAUTHENTICATED", "/auth/token")
        if not needed <= set(scope.split(" ")):
            raise Rejected("PERMISSION_DENIED", "/auth/token")

    def _claims(self, bearer: dict[str, Any], token: str) -> dict[str, Any]:
        bad = Rejected("UNAUTHENTICATED", "/auth/token")
        parts = token.split(".")
        if len(parts) != 3:
            raise bad
        raw_header, raw_body, signature = (_b64url(p) for p in parts)
        if raw_header is None or raw_body is None or signature is None:
            raise bad
        header, claims = json.loads(raw_header), json.loads(raw_body)
        alg = header.get("alg")
        if "crit" in header or not isinstance(alg, str) or alg.lower() == "none":
            raise bad
        if alg not in bearer.get("algorithms", DEFAULT_TOKEN_ALGS):
            raise bad
        kid = header.get("kid")
        if kid not in bearer["keys"] or self.jwks[kid].get("alg") != alg:
            raise bad
        if not _verify(self.jwks[kid], signature, f"{parts[0]}.{parts[1]}".encode()):
            raise bad
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience or []
        if claims.get("iss") not in bearer["issuers"] or bearer["audience"] not in audiences:
            raise bad
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not _number(exp) or self.now > exp * 1000 + self.skew:
            raise bad
        if not _number(nbf) or self.now < nbf * 1000 - self.skew:
            raise bad
        return dict(claims)

    def _plaintext(self, members: dict[str, Any]) -> Any:
        enc = members.get("enc")
        if enc is None:
            return members.get("data", members.get("data_base64"))
        if enc["alg"] != "A256GCM":
            raise Rejected("UNSUPPORTED_EXTENSION", "/enc/alg")
        jwk = self.jwks.get(enc["kid"])
        if (
            enc["kid"] not in self.settings["decryption_keys"]
            or jwk is None
            or jwk["alg"] != "A256GCM"
        ):
            raise Rejected("UNAUTHENTICATED", "/enc/kid")
        key = _b64url(jwk["k"])
        iv = _b64url(enc["iv"])
        assert key is not None
        assert iv is not None
        aad = jcs({k: v for k, v in members.items() if k not in ("data_base64", "sig")})
        plaintext = _aes_gcm_open(key, iv, base64.b64decode(members["data_base64"]), aad)
        if plaintext is None:
            raise Rejected("SIGNATURE_INVALID", "/data_base64")
        media = members.get("content_type", "application/json").split(";")[0].strip().lower()
        if media.endswith(("/json", "+json")):
            try:
                return _strict_loads(plaintext)
            except ValueError:
                raise Rejected("INVALID_ENVELOPE", "/data_base64") from None
        return base64.b64encode(plaintext).decode("ascii")


def _verify(jwk: dict[str, Any], signature: bytes, message: bytes) -> bool:
    """Ed25519 by PyNaCl and by cryptography, which must agree; HMAC by the standard library."""
    key = _b64url(jwk["x"] if jwk["kty"] == "OKP" else jwk["k"])
    assert key is not None
    if jwk["kty"] == "oct":
        return len(signature) == 32 and hmac.compare_digest(
            hmac.new(key, message, hashlib.sha256).digest(), signature
        )
    if len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(key).verify(message, signature)
        by_sodium = True
    except nacl.exceptions.BadSignatureError:
        by_sodium = False
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        by_openssl = True
    except InvalidSignature:
        by_openssl = False
    assert by_sodium == by_openssl, "libsodium and OpenSSL disagree on an Ed25519 signature"
    return by_sodium


def _sodium_has_aes_gcm() -> bool:
    """libsodium offers AES-256-GCM only on CPUs with AES instructions: try it once."""
    key, iv = bytes(32), bytes(12)
    try:
        sealed = nacl.bindings.crypto_aead_aes256gcm_encrypt(b"probe", b"", iv, key)
        return bytes(nacl.bindings.crypto_aead_aes256gcm_decrypt(sealed, b"", iv, key)) == b"probe"
    except nacl.exceptions.CryptoError:  # pragma: no cover - CPUs without AES-NI
        return False


_SODIUM_AES_GCM = _sodium_has_aes_gcm()


def _aes_gcm_open(key: bytes, iv: bytes, sealed: bytes, aad: bytes) -> bytes | None:
    if _SODIUM_AES_GCM:
        try:
            return bytes(nacl.bindings.crypto_aead_aes256gcm_decrypt(sealed, aad, iv, key))
        except nacl.exceptions.CryptoError:
            return None
    try:  # pragma: no cover - CPUs without AES-NI
        return AESGCM(key).decrypt(iv, sealed, aad)
    except InvalidTag:  # pragma: no cover
        return None


def _b64url(text: str) -> bytes | None:
    """Strict unpadded base64url: None unless ``text`` is the canonical encoding of its bytes."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        return None
    return raw


def _ms(timestamp: str) -> int:
    moment = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return round(moment.replace(tzinfo=datetime.UTC).timestamp() * 1000)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _strict_loads(raw: bytes) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, value in items:
            if name in result:
                raise ValueError(f"repeated member {name!r}")
            result[name] = value
        return result

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)


# -- an RFC 8785 writer of its own ----------------------------------------------------------


class NotIJson(Exception):  # noqa: N818 - named for the I-JSON rule it reports
    """A number RFC 8785 cannot write, at ``pointer``."""

    def __init__(self, pointer: str) -> None:
        super().__init__(pointer)
        self.pointer = pointer


def jcs(value: Any, pointer: str = "") -> bytes:
    """RFC 8785, written from the RFC: sorted UTF-16 names, ECMAScript numbers and escapes."""
    return _jcs(value, pointer).encode("utf-8")


def _jcs(value: Any, pointer: str) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        if abs(value) > MAX_SAFE:
            raise NotIJson(pointer)
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotIJson(pointer)
        return _ecmascript(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ",".join(_jcs(v, f"{pointer}/{i}") for i, v in enumerate(value)) + "]"
    names = sorted(value, key=lambda n: n.encode("utf-16-be"))
    escaped = (n.replace("~", "~0").replace("/", "~1") for n in names)
    return (
        "{"
        + ",".join(
            f"{_string(n)}:{_jcs(value[n], f'{pointer}/{e}')}"
            for n, e in zip(names, escaped, strict=True)
        )
        + "}"
    )


_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in _SHORT:
            out.append(_SHORT[char])
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _ecmascript(number: float) -> str:
    """Number::toString: the fewest digits that read back as ``number``, then ES layout.

    For each count of digits it tries the correctly rounded digits and their two neighbours,
    because at a power of two the nearest candidate may not read back while a neighbour does.
    """
    if number == 0:
        return "0"
    if number < 0:
        return "-" + _ecmascript(-number)
    exact = Fraction(number)
    for count in range(1, 18):
        mantissa, exponent = f"{number:.{count - 1}e}".split("e")
        first = int(mantissa.replace(".", ""))
        scale = int(exponent) - (count - 1)  # number ~ first x 10^scale
        fits = [
            d
            for d in (first - 1, first, first + 1)
            if len(str(d)) == count and float(f"{d}e{scale}") == number
        ]
        if fits:
            best = min(
                fits, key=lambda d: (abs(Fraction(d) * Fraction(10) ** scale - exact), d % 2)
            )
            digits, n = str(best).rstrip("0"), scale + count  # number = 0.digits x 10^n
            break
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{head}e{'+' if e >= 0 else '-'}{abs(e)}"
