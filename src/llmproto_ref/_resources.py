"""Where the packaged schemas live.

A wheel carries ``schemas/`` inside ``llmproto_ref`` (``importlib.resources`` finds it);
an editable install of the source tree reads the repository's top-level ``schemas/``.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from pathlib import Path
from typing import Any

__all__ = ("load_schema", "schema_dir")


@functools.cache
def schema_dir() -> Path:
    """The directory holding ``envelope.schema.json`` and its siblings."""
    packaged = importlib.resources.files("llmproto_ref").joinpath("schemas")
    if packaged.is_dir():
        return Path(str(packaged))
    source_tree = Path(__file__).resolve().parents[2] / "schemas"
    if source_tree.is_dir():
        return source_tree
    raise FileNotFoundError("llmproto schemas not found: reinstall the llmproto distribution")


@functools.cache
def _load(name: str) -> Any:
    return json.loads((schema_dir() / name).read_text(encoding="utf-8"))


def load_schema(name: str) -> Any:
    """The parsed JSON document ``name`` from the schema directory (cached, do not mutate)."""
    return _load(name)
