"""Receiver limits (spec/envelope.md section Limits)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("DEFAULT_LIMITS", "Limits")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What a receiver accepts before it looks at members.

    :param max_envelope_bytes: largest encoded envelope, checked before parsing [ENV-006].
    :param max_depth: deepest nesting of objects and arrays; the envelope is depth 1 [ENV-007].
    """

    max_envelope_bytes: int = 1_048_576
    max_depth: int = 32

    def __post_init__(self) -> None:
        if self.max_envelope_bytes < 1024:
            raise ValueError("max_envelope_bytes below 1024 cannot hold an envelope")
        if not 4 <= self.max_depth <= 1000:
            raise ValueError("max_depth must lie in 4..1000")


DEFAULT_LIMITS = Limits()
