"""llmproto conformance kit: language-neutral vectors and the tools that run them.

The public API lives in the underscore modules and is re-exported here.
"""

from __future__ import annotations

from llmproto_conformance._vectors import Vector, VectorResult, judge, load_vectors, vector_dir

__all__ = (
    "Vector",
    "VectorResult",
    "judge",
    "load_vectors",
    "vector_dir",
)
