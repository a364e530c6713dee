"""Counters and the seed's figures: L = Ts + Tt + Tr and η = Nr / Nt (spec/metrics.md).

Ts (send time) runs from the application's call to the hand-over to the transport, Tt
(transport time) from the hand-over to the receiver taking the message, Tr (receive time) from
there until the handler finished; the stamps travel in the envelope's ``timing`` member
(``call``, ``sent``, ``received``, ``handled``, microseconds since the epoch) [MET-001]. Tt mixes
two clocks, so it is only as good as their synchronisation (exact on one machine).
η is the share of sent requests (or received events) that ended successfully [MET-002].
Samples are kept in bounded reservoirs, so memory does not grow with traffic. A full reservoir
draws how many samples to pass over before the next one it keeps (Li's Algorithm L), so most
samples cost a comparison, not a random number; what is kept is a uniform sample as before.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ("Figures", "Metrics", "Pattern", "quantile")


class Pattern(enum.StrEnum):
    """The interaction patterns metrics are kept for."""

    REQUEST = "request"  #: request-response (asynchronous client)
    SYNC = "sync"  #: synchronous call
    QUEUE = "queue"  #: asynchronous work queue
    EVENT = "event"  #: events (pub/sub)
    STREAM = "stream"  #: streamed responses


_RESERVOIR = 2048


def quantile(samples: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``samples``, or ``None`` when there are none."""
    if not samples:
        return None
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass(slots=True)
class _Reservoir:
    samples: list[float] = field(default_factory=list)
    seen: int = 0

    weight: float = 1.0  #: Algorithm L's running weight W
    keep_at: int = 1  #: the value of ``seen`` whose sample is kept next (each one until full)

    def add(self, value: float, rng: random.Random) -> None:
        """Count one sample; callers on the hot path inline this test and call :meth:`keep`."""
        self.seen += 1
        if self.seen >= self.keep_at:
            self.keep(value, rng)

    def keep(self, value: float, rng: random.Random) -> None:
        """Keep the sample just counted: append it, or replace a kept one at random."""
        if len(self.samples) < _RESERVOIR:
            self.samples.append(value)
            if len(self.samples) < _RESERVOIR:
                self.keep_at = self.seen + 1
                return
        else:
            self.samples[int(rng.random() * _RESERVOIR)] = value
        self._skip(rng)

    def _skip(self, rng: random.Random) -> None:
        self.weight *= math.exp(math.log(1.0 - rng.random()) / _RESERVOIR)
        gap = 0
        if self.weight < 1.0:
            gap = int(math.log(1.0 - rng.random()) / math.log1p(-self.weight))
        self.keep_at = self.seen + gap + 1


@dataclass(slots=True)
class Figures:
    """What is known about one (pattern, type)."""

    sent: int = 0  #: Nt: requests sent, or events received
    succeeded: int = 0  #: Nr: of those, completed successfully
    failed: dict[str, int] = field(default_factory=dict)  #: terminal errors by code
    late_dropped: int = 0  #: messages that arrived after their exchange ended
    latency_ms: _Reservoir = field(default_factory=_Reservoir)
    ts_ms: _Reservoir = field(default_factory=_Reservoir)
    tt_ms: _Reservoir = field(default_factory=_Reservoir)
    tr_ms: _Reservoir = field(default_factory=_Reservoir)

    @property
    def efficiency(self) -> float | None:
        """η = Nr / Nt, or ``None`` before anything was sent."""
        return self.succeeded / self.sent if self.sent else None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest: counts, η, and p50/p99 of L and its parts, in milliseconds."""

        def pct(r: _Reservoir) -> dict[str, float | None]:
            return {"p50": quantile(r.samples, 0.5), "p99": quantile(r.samples, 0.99)}

        return {
            "sent": self.sent,
            "succeeded": self.succeeded,
            "failed": dict(self.failed),
            "late_dropped": self.late_dropped,
            "efficiency": self.efficiency,
            "latency_ms": pct(self.latency_ms),
            "ts_ms": pct(self.ts_ms),
            "tt_ms": pct(self.tt_ms),
            "tr_ms": pct(self.tr_ms),
        }


class Metrics:
    """Per-pattern, per-type figures of one client or service."""

    def __init__(self, *, seed: int | None = None) -> None:
        self._figures: dict[tuple[Pattern, str], Figures] = {}
        self._rng = random.Random(seed)  # noqa: S311 - reservoir sampling, not security

    def figures(self, pattern: Pattern, type_: str) -> Figures:
        """The figures for ``(pattern, type_)``, created on first use."""
        key = (pattern, type_)
        found = self._figures.get(key)
        if found is None:
            found = self._figures[key] = Figures()
        return found

    def sent(self, pattern: Pattern, type_: str) -> None:
        """Count one request sent (or event received): Nt."""
        self.figures(pattern, type_).sent += 1

    def succeeded(
        self,
        pattern: Pattern,
        type_: str,
        *,
        latency_ms: float | None = None,
        timing: Mapping[str, float] | None = None,
    ) -> None:
        """Count one success (Nr) with its latency and, from ``timing`` stamps, its split."""
        fig = self.figures(pattern, type_)
        fig.succeeded += 1
        if latency_ms is not None:
            kept = fig.latency_ms
            kept.seen += 1
            if kept.seen >= kept.keep_at:  # _Reservoir.add, inline: most samples are passed over
                kept.keep(latency_ms, self._rng)
        if timing:
            self._split(fig, timing)

    def failed(self, pattern: Pattern, type_: str, code: str) -> None:
        """Count one terminal failure under its registry code."""
        fig = self.figures(pattern, type_)
        fig.failed[code] = fig.failed.get(code, 0) + 1

    def late(self, pattern: Pattern, type_: str, count: int = 1) -> None:
        """Count messages dropped because their exchange had ended."""
        self.figures(pattern, type_).late_dropped += count

    def _split(self, fig: Figures, timing: Mapping[str, float]) -> None:
        call, sent = timing.get("call"), timing.get("sent")
        received, handled = timing.get("received"), timing.get("handled")
        if call is not None and sent is not None:
            kept = fig.ts_ms
            kept.seen += 1
            if kept.seen >= kept.keep_at:
                kept.keep((sent - call) / 1000, self._rng)
        if sent is not None and received is not None:
            kept = fig.tt_ms
            kept.seen += 1
            if kept.seen >= kept.keep_at:
                kept.keep((received - sent) / 1000, self._rng)
        if received is not None and handled is not None:
            kept = fig.tr_ms
            kept.seen += 1
            if kept.seen >= kept.keep_at:
                kept.keep((handled - received) / 1000, self._rng)

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{pattern: {type: summary}}`` plus a ``"*"`` total per pattern."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        totals: dict[Pattern, Figures] = {}
        for (pattern, type_), fig in sorted(self._figures.items()):
            out.setdefault(pattern.value, {})[type_] = fig.summary()
            total = totals.setdefault(pattern, Figures())
            total.sent += fig.sent
            total.succeeded += fig.succeeded
            total.late_dropped += fig.late_dropped
            for code, n in fig.failed.items():
                total.failed[code] = total.failed.get(code, 0) + n
            for name in ("latency_ms", "ts_ms", "tt_ms", "tr_ms"):
                getattr(total, name).samples.extend(getattr(fig, name).samples)
        for pattern, total in totals.items():
            out[pattern.value]["*"] = total.summary()
        return out
