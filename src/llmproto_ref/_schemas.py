"""The normative JSON Schemas as ``jsonschema`` validators (off the hot path).

``jsonschema`` costs about 350 µs per envelope, so the codec never calls it; this module is for
tests (the oracle the fast path is judged against), tools and opt-in strict checking.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from llmproto_ref._resources import load_schema

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = ("SCHEMA_FILES", "schema_validator")

#: The schema files, by the short name used in ``schema_validator``.
SCHEMA_FILES = {
    "common": "common.schema.json",
    "envelope": "envelope.schema.json",
    "error": "error.schema.json",
    "auth": "auth.schema.json",
    "sig": "sig.schema.json",
    "enc": "enc.schema.json",
    "error-codes": "error-codes.schema.json",
}


@functools.cache
def schema_validator(name: str = "envelope") -> Validator:
    """A draft 2020-12 validator for schema ``name``, with ``date-time`` asserted.

    :param name: a key of :data:`SCHEMA_FILES`.
    :raises KeyError: for an unknown name.
    """
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    documents: list[Any] = [load_schema(f) for f in SCHEMA_FILES.values()]
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in documents
    )
    validator: Validator = Draft202012Validator(
        load_schema(SCHEMA_FILES[name]),
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    return validator
