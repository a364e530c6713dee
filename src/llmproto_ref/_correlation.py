"""Requester-side correlation of replies to pending exchanges (spec/exchanges.md).

The :class:`Correlator` owns every exchange a client has open. A reply is routed by its
``correlation_id``; one for an exchange that already ended is dropped and counted as *late*,
one that matches nothing ever sent is dropped and counted as *unknown* [TERM-002]. An exchange
leaves the table as soon as it is terminal, so a timed-out request leaks nothing [TERM-004].
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from llmproto_ref._deadline import Deadline
from llmproto_ref._envelope import Envelope, Kind
from llmproto_ref._errors import RemoteProtocolError
from llmproto_ref._exchange import Action, Exchange, ExchangeKind, Input
from llmproto_ref._stream import StreamReassembler

__all__ = ("Correlator", "Pending", "Routed")

_INPUT_BY_KIND = {
    Kind.RESPONSE: Input.RESPONSE,
    Kind.ERROR: Input.ERROR,
}
_REPLY_KINDS = frozenset({Kind.RESPONSE, Kind.ERROR, Kind.CHUNK})


@dataclass(slots=True, kw_only=True)
class Pending:
    """One open exchange on the requester's side."""

    exchange: Exchange
    type: str
    deadline: Deadline | None
    reassembler: StreamReassembler | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Routed:
    """The result of routing one reply: per delivered envelope, its action."""

    pending: Pending
    steps: tuple[tuple[Action, Envelope], ...] = field(default=())
    error: RemoteProtocolError | None = None  #: the reply broke the exchange (e.g. a stream gap)


class Correlator:
    """Open exchanges by request id, with late and unknown replies counted.

    :param recent: how many ended request ids are remembered to tell late from unknown.
    """

    def __init__(self, *, recent: int = 4096) -> None:
        self._open: dict[str, Pending] = {}
        self._ended: OrderedDict[str, tuple[ExchangeKind, str]] = OrderedDict()
        self._recent = recent
        self.late_dropped = 0  #: replies for exchanges that had already ended
        self.unknown_dropped = 0  #: replies matching nothing this client sent

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._open

    def open(self, request: Envelope, kind: ExchangeKind, deadline: Deadline | None) -> Pending:
        """Register the exchange a just-sent request starts."""
        pending = Pending(
            exchange=Exchange(kind, request.id),
            type=request.type,
            deadline=deadline,
            reassembler=StreamReassembler() if kind is ExchangeKind.STREAM else None,
        )
        self._open[request.id] = pending
        return pending

    def get(self, request_id: str) -> Pending | None:
        """The open exchange for ``request_id``, if any."""
        return self._open.get(request_id)

    def route(self, reply: Envelope) -> Routed | None:
        """Feed one reply to its exchange; ``None`` when it was dropped (and counted)."""
        cid = reply.correlation_id
        pending = self._open.get(cid) if cid is not None else None
        if reply.kind not in _REPLY_KINDS:
            self.unknown_dropped += 1  # a request, event or cancel has no business on an inbox
            return None
        if pending is None:
            if cid is not None and cid in self._ended:
                self.late_dropped += 1
            else:
                self.unknown_dropped += 1
            return None
        exchange = pending.exchange
        if pending.reassembler is None:  # a call: one reply, one step
            kind = reply.kind
            if kind is Kind.CHUNK:
                action = exchange.handle(Input.FINAL_CHUNK if reply.final else Input.CHUNK)
            else:
                action = exchange.handle(_INPUT_BY_KIND[kind])
            if exchange.terminal:
                self._end(pending)
            return Routed(pending=pending, steps=((action, reply),))
        steps: list[tuple[Action, Envelope]] = []
        try:
            ready = pending.reassembler.push(reply)
        except RemoteProtocolError as exc:  # a gap the window cannot close [STR-005]
            pending.exchange.handle(Input.ERROR)
            self._end(pending)
            return Routed(pending=pending, error=exc)
        for envelope in ready:
            if envelope.kind is Kind.CHUNK:
                event = Input.FINAL_CHUNK if envelope.final else Input.CHUNK
            else:
                event = _INPUT_BY_KIND[envelope.kind]
            action = pending.exchange.handle(event)
            steps.append((action, envelope))
            if pending.exchange.terminal:
                break
        if pending.exchange.terminal:
            self._end(pending)
        return Routed(pending=pending, steps=tuple(steps))

    def local(self, request_id: str, event: Input) -> tuple[Pending, Action] | None:
        """Apply a local input (``CANCEL``, ``DEADLINE``, ``NO_RESPONDERS``) to an open exchange."""
        pending = self._open.get(request_id)
        if pending is None:
            return None
        action = pending.exchange.handle(event)
        if pending.exchange.terminal:
            self._end(pending)
        return pending, action

    def ended(self, request_id: str) -> tuple[ExchangeKind, str] | None:
        """Kind and type of a recently ended exchange (to attribute late messages)."""
        return self._ended.get(request_id)

    def expired(self, now_ms: int) -> list[str]:
        """Ids of open exchanges whose deadline has passed at ``now_ms``."""
        return [
            rid
            for rid, p in self._open.items()
            if p.deadline is not None and p.deadline.expired(now_ms)
        ]

    def _end(self, pending: Pending) -> None:
        rid = pending.exchange.request_id
        self._open.pop(rid, None)
        self._ended[rid] = (pending.exchange.kind, pending.type)
        if len(self._ended) > self._recent:
            self._ended.popitem(last=False)
