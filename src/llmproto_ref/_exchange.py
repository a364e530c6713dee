"""Exchange state machines, as transition tables (spec/exchanges.md).

Theory of operation
-------------------
Every exchange (one request and everything that answers it) is a small state machine on each
side. Everything that decides a transition lives in the tables below, ``{(state, input):
(action, next_state)}``, one table per :class:`ExchangeKind`; the runtime only performs the
returned :class:`Action`. A pair missing from a table is a protocol violation: the exchange
ends in ``FAILED`` with :attr:`Action.PROTOCOL_ERROR` [TERM-003]. In a terminal state every
input is dropped and counted as late [TERM-002], so each exchange has exactly one terminal
outcome [TERM-001]. ``spec/exchanges.md`` carries these tables as rendered by
:func:`render_tables`, and a test fails when the two differ.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = (
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Action",
    "Exchange",
    "ExchangeKind",
    "Input",
    "State",
    "render_tables",
)


class ExchangeKind(enum.StrEnum):
    """Which side of which pattern an exchange is (spec/exchanges.md)."""

    CALL = "call"  #: requester awaiting one response
    STREAM = "stream"  #: requester awaiting chunks and a terminal message
    SERVE = "serve"  #: responder running a handler (plain or streaming)


class State(enum.StrEnum):
    """Exchange states; the last four are terminal (spec/exchanges.md)."""

    AWAITING = "awaiting"  #: requester: request sent, nothing back yet
    STREAMING = "streaming"  #: at least one chunk passed (either side)
    RECEIVED = "received"  #: responder: request accepted, handler not started
    RUNNING = "running"  #: responder: handler started
    COMPLETED = "completed"  #: terminal: response or final chunk
    FAILED = "failed"  #: terminal: error reply or protocol violation
    CANCELLED = "cancelled"  #: terminal: cancelled by the requester
    EXPIRED = "expired"  #: terminal: the deadline passed


class Input(enum.StrEnum):
    """What can happen to an exchange (spec/exchanges.md)."""

    RESPONSE = "response"  #: a response arrived
    CHUNK = "chunk"  #: a non-final chunk arrived
    FINAL_CHUNK = "final_chunk"  #: the final chunk arrived
    ERROR = "error"  #: an error reply arrived
    NO_RESPONDERS = "no_responders"  #: the transport found nobody serving the type
    CANCEL = "cancel"  #: requester: the application cancels; responder: a cancel arrived
    DEADLINE = "deadline"  #: the deadline passed
    START = "start"  #: responder: the handler starts
    YIELD = "yield"  #: responder: the handler produced a chunk
    RETURN = "return"  #: responder: the handler finished with a value
    RAISE = "raise"  #: responder: the handler failed


class Action(enum.StrEnum):
    """What the runtime does for a transition."""

    DELIVER = "deliver"  #: hand the message to the application
    FAIL = "fail"  #: end the call with the received or local error
    SEND_CANCEL = "send_cancel"  #: publish a cancel for the request
    EXPIRE = "expire"  #: end the call with DEADLINE_EXCEEDED
    RUN = "run"  #: start the handler
    SEND_CHUNK = "send_chunk"  #: send the produced chunk
    SEND_RESPONSE = "send_response"  #: send the response
    SEND_FINAL = "send_final"  #: send the final chunk
    SEND_ERROR = "send_error"  #: send an error reply for the handler's failure
    STOP_CANCELLED = "stop_cancelled"  #: stop the handler; send error CANCELLED
    STOP_EXPIRED = "stop_expired"  #: stop the handler; send error DEADLINE_EXCEEDED
    DROP = "drop"  #: ignore the input and count it as late
    PROTOCOL_ERROR = "protocol_error"  #: the pair is not in the table


#: States after which nothing more happens.
TERMINAL_STATES = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED, State.EXPIRED})

_A, _S, _I = Action, State, Input
_Table = dict[tuple[State, Input], tuple[Action, State]]

_REQUESTER_ENDINGS: _Table = {
    (_S.AWAITING, _I.ERROR): (_A.FAIL, _S.FAILED),
    (_S.AWAITING, _I.NO_RESPONDERS): (_A.FAIL, _S.FAILED),
    (_S.AWAITING, _I.CANCEL): (_A.SEND_CANCEL, _S.CANCELLED),
    (_S.AWAITING, _I.DEADLINE): (_A.EXPIRE, _S.EXPIRED),
}

_CALL: _Table = {
    (_S.AWAITING, _I.RESPONSE): (_A.DELIVER, _S.COMPLETED),
    **_REQUESTER_ENDINGS,
}

_STREAM: _Table = {
    (_S.AWAITING, _I.CHUNK): (_A.DELIVER, _S.STREAMING),
    (_S.AWAITING, _I.FINAL_CHUNK): (_A.DELIVER, _S.COMPLETED),
    (_S.AWAITING, _I.RESPONSE): (_A.DELIVER, _S.COMPLETED),
    **_REQUESTER_ENDINGS,
    (_S.STREAMING, _I.CHUNK): (_A.DELIVER, _S.STREAMING),
    (_S.STREAMING, _I.FINAL_CHUNK): (_A.DELIVER, _S.COMPLETED),
    (_S.STREAMING, _I.ERROR): (_A.FAIL, _S.FAILED),
    (_S.STREAMING, _I.CANCEL): (_A.SEND_CANCEL, _S.CANCELLED),
    (_S.STREAMING, _I.DEADLINE): (_A.EXPIRE, _S.EXPIRED),
}

_SERVE: _Table = {
    (_S.RECEIVED, _I.START): (_A.RUN, _S.RUNNING),
    (_S.RECEIVED, _I.CANCEL): (_A.STOP_CANCELLED, _S.CANCELLED),
    (_S.RECEIVED, _I.DEADLINE): (_A.STOP_EXPIRED, _S.EXPIRED),
    (_S.RUNNING, _I.YIELD): (_A.SEND_CHUNK, _S.STREAMING),
    (_S.RUNNING, _I.RETURN): (_A.SEND_RESPONSE, _S.COMPLETED),
    (_S.RUNNING, _I.RAISE): (_A.SEND_ERROR, _S.FAILED),
    (_S.RUNNING, _I.CANCEL): (_A.STOP_CANCELLED, _S.CANCELLED),
    (_S.RUNNING, _I.DEADLINE): (_A.STOP_EXPIRED, _S.EXPIRED),
    (_S.STREAMING, _I.YIELD): (_A.SEND_CHUNK, _S.STREAMING),
    (_S.STREAMING, _I.RETURN): (_A.SEND_FINAL, _S.COMPLETED),
    (_S.STREAMING, _I.RAISE): (_A.SEND_ERROR, _S.FAILED),
    (_S.STREAMING, _I.CANCEL): (_A.STOP_CANCELLED, _S.CANCELLED),
    (_S.STREAMING, _I.DEADLINE): (_A.STOP_EXPIRED, _S.EXPIRED),
}


def _with_terminal_drops(table: _Table) -> _Table:
    full = dict(table)
    for state in sorted(TERMINAL_STATES):
        for event in Input:
            full[(state, event)] = (Action.DROP, state)
    return full


#: Every exchange kind's table; terminal states drop every input [TERM-002].
TRANSITIONS: dict[ExchangeKind, _Table] = {
    ExchangeKind.CALL: _with_terminal_drops(_CALL),
    ExchangeKind.STREAM: _with_terminal_drops(_STREAM),
    ExchangeKind.SERVE: _with_terminal_drops(_SERVE),
}

_INITIAL = {
    ExchangeKind.CALL: State.AWAITING,
    ExchangeKind.STREAM: State.AWAITING,
    ExchangeKind.SERVE: State.RECEIVED,
}


@dataclass(slots=True)
class Exchange:
    """One side of one exchange: its kind and current state.

    :param kind: which table drives it.
    :param request_id: the request's ``id`` (the replies' ``correlation_id``).
    """

    kind: ExchangeKind
    request_id: str
    state: State = field(init=False)
    late: int = field(default=0, init=False)  #: inputs dropped after the terminal state

    def __post_init__(self) -> None:
        self.state = _INITIAL[self.kind]

    @property
    def terminal(self) -> bool:
        """Whether the exchange has its outcome."""
        return self.state in TERMINAL_STATES

    def handle(self, event: Input) -> Action:
        """Apply ``event``; return what the runtime must do.

        A pair missing from the table ends the exchange in ``FAILED`` and returns
        :attr:`Action.PROTOCOL_ERROR` [TERM-003].
        """
        step = TRANSITIONS[self.kind].get((self.state, event))
        if step is None:
            self.state = State.FAILED
            return Action.PROTOCOL_ERROR
        action, self.state = step
        if action is Action.DROP:
            self.late += 1
        return action


def render_tables() -> str:
    """The transition tables as the Markdown spec/exchanges.md embeds (terminal drops folded)."""
    lines: list[str] = []
    for kind, table in TRANSITIONS.items():
        lines += [f"#### `{kind}`", "", "| State | Input | Action | Next state |"]
        lines.append("|---|---|---|---|")
        for (state, event), (action, nxt) in table.items():
            if state in TERMINAL_STATES:
                continue
            lines.append(f"| `{state}` | `{event}` | `{action}` | `{nxt}` |")
        lines += [
            "",
            "Any other pair: `protocol_error`, next state `failed`. "
            "In a terminal state every input: `drop` (counted as late).",
            "",
        ]
    return "\n".join(lines)
