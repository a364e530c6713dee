"""The check catalogue: every check, registered where it is written.

Checks live in the ``_checks_*`` modules as plain async functions decorated with
:func:`check`; :func:`catalogue` imports those modules once and returns every check in a
stable order (profile, then id).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from collections.abc import Callable

import llmproto_conformance
from llmproto_conformance._model import Check, CheckFunction, Level, Profile

__all__ = ("catalogue", "check")

_REGISTRY: dict[str, Check] = {}
_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_REQUIREMENT = re.compile(r"^[A-Z]{2,5}-[0-9]{3}$")


def check(
    *,
    id: str,
    requirement: str,
    level: Level,
    profile: Profile,
    description: str,
    needs: frozenset[str] = frozenset(),
    adapter_only: bool = False,
    timeout_s: float = 10.0,
) -> Callable[[CheckFunction], CheckFunction]:
    """Register the decorated ``async def (ctx)`` as a check.

    :raises ValueError: for a malformed or repeated id, or a malformed requirement ID.
    """
    if _ID.search(id) is None or _REQUIREMENT.search(requirement) is None:
        raise ValueError(f"malformed check id {id!r} or requirement {requirement!r}")

    def register(function: CheckFunction) -> CheckFunction:
        if id in _REGISTRY:
            raise ValueError(f"check id {id!r} is registered twice")
        _REGISTRY[id] = Check(
            id=id, requirement=requirement, level=level, profile=profile,
            description=description, function=function, needs=needs,
            adapter_only=adapter_only, timeout_s=timeout_s,
        )  # fmt: skip
        return function

    return register


@functools.cache
def _load_check_modules() -> None:
    for info in pkgutil.iter_modules(llmproto_conformance.__path__):
        if info.name.startswith("_checks_"):
            importlib.import_module(f"llmproto_conformance.{info.name}")


def catalogue() -> list[Check]:
    """Every registered check, ordered by profile (as declared) and then id."""
    _load_check_modules()
    order = {p: i for i, p in enumerate(Profile)}
    return sorted(_REGISTRY.values(), key=lambda c: (order[c.profile], c.id))
