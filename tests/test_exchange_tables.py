"""The exchange state tables: spec/exchanges.md shows the code's tables, and the code obeys them.

``llmproto_ref._exchange.TRANSITIONS`` is the single source of the tables; spec/exchanges.md
embeds ``render_tables()`` between two marker lines. The first tests fail on any drift between
the two; the rest check :meth:`Exchange.handle` against the tables: every listed pair does what
its row says, every other pair fails the exchange as ``PROTOCOL_ERROR`` [TERM-003], terminal
states drop and count every input [TERM-002], and no input sequence yields more than one
terminal outcome [TERM-001].
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from llmproto_ref._exchange import (
    TERMINAL_STATES,
    TRANSITIONS,
    Action,
    Exchange,
    ExchangeKind,
    Input,
    State,
    render_tables,
)

SPEC = Path(__file__).resolve().parents[1] / "spec" / "exchanges.md"
BEGIN = "<!-- BEGIN GENERATED: exchange tables (llmproto_ref._exchange.render_tables) -->"
END = "<!-- END GENERATED -->"
REGENERATE = 'python -c "from llmproto_ref._exchange import render_tables; print(render_tables())"'
_ROW_NAME = re.compile(r"^\|\s*`([a-z_]+)`\s*\|")

KINDS = st.sampled_from(list(ExchangeKind))
STATES = st.sampled_from(list(State))
INPUTS = st.lists(st.sampled_from(list(Input)), max_size=40)


def _spec_lines() -> list[str]:
    return SPEC.read_text(encoding="utf-8").splitlines()


def _generated_block() -> str:
    """The text between the markers of spec/exchanges.md, without surrounding blank lines."""
    lines = _spec_lines()
    start, end = lines.index(BEGIN), lines.index(END)
    return "\n".join(lines[start + 1 : end]).strip("\n")


def _glossary_names() -> set[str]:
    """Names in the first column of the tables outside the generated block."""
    lines = _spec_lines()
    start, end = lines.index(BEGIN), lines.index(END)
    outside = lines[:start] + lines[end + 1 :]
    return {match.group(1) for line in outside if (match := _ROW_NAME.match(line))}


def _expected(kind: ExchangeKind, state: State, event: Input) -> tuple[Action, State]:
    """What the table says, or the protocol error that a missing pair means."""
    return TRANSITIONS[kind].get((state, event), (Action.PROTOCOL_ERROR, State.FAILED))


def test_markers_appear_once() -> None:
    """spec/exchanges.md has exactly one generated block, opened before it is closed."""
    lines = _spec_lines()
    assert (1, 1) == (lines.count(BEGIN), lines.count(END))
    assert lines.index(BEGIN) < lines.index(END)


def test_spec_tables_match_the_code() -> None:
    """The generated block of spec/exchanges.md is exactly what render_tables() prints."""
    expected = render_tables().strip("\n")
    assert expected == _generated_block(), (
        "spec/exchanges.md is out of date with llmproto_ref._exchange.TRANSITIONS; regenerate "
        f"the tables with\n    {REGENERATE}\nand paste the output between the lines\n"
        f"    {BEGIN}\n    {END}"
    )


def test_spec_names_every_state_input_and_action() -> None:
    """The glossary tables of spec/exchanges.md define every state, input and action."""
    names = {member.value for enum in (State, Input, Action) for member in enum}
    assert set() == names - _glossary_names()


def test_initial_states() -> None:
    """A requester's exchange starts awaiting, a responder's received, neither terminal."""
    starts = {kind: Exchange(kind, "r1").state for kind in ExchangeKind}
    expected = {
        ExchangeKind.CALL: State.AWAITING,
        ExchangeKind.STREAM: State.AWAITING,
        ExchangeKind.SERVE: State.RECEIVED,
    }
    assert expected == starts
    assert not any(Exchange(kind, "r1").terminal for kind in ExchangeKind)


def test_tables_never_list_the_fallback() -> None:
    """PROTOCOL_ERROR is only the answer to a missing pair, and DROP only a terminal state's."""
    for kind, table in TRANSITIONS.items():
        for (state, event), (action, _) in table.items():
            assert Action.PROTOCOL_ERROR != action, (kind, state, event)
            assert (action is Action.DROP) == (state in TERMINAL_STATES), (kind, state, event)


def test_every_pair_follows_the_table() -> None:
    """For every kind, state and input, handle() does what the table says, or fails the exchange."""
    for kind, state, event in itertools.product(ExchangeKind, State, Input):
        exchange = Exchange(kind, "r1")
        exchange.state = state
        action = exchange.handle(event)
        assert _expected(kind, state, event) == (action, exchange.state), (kind, state, event)


def test_terminal_states_drop_and_count() -> None:
    """In a terminal state every input is dropped, counted as late, and changes nothing."""
    for kind, state, event in itertools.product(ExchangeKind, sorted(TERMINAL_STATES), Input):
        exchange = Exchange(kind, "r1")
        exchange.state = state
        assert Action.DROP == exchange.handle(event)
        assert (state, 1) == (exchange.state, exchange.late)


@given(kind=KINDS, start=STATES, events=INPUTS)
def test_any_input_sequence_has_at_most_one_terminal_outcome(
    kind: ExchangeKind, start: State, events: list[Input]
) -> None:
    """From any state, any inputs reach at most one terminal state, which is never left."""
    exchange = Exchange(kind, "r1")
    exchange.state = start
    outcome: State | None = start if start in TERMINAL_STATES else None
    dropped = 0
    for event in events:
        before = exchange.state
        action = exchange.handle(event)
        assert _expected(kind, before, event) == (action, exchange.state)
        if outcome is not None:
            assert (Action.DROP, outcome) == (action, exchange.state)
            dropped += 1
        elif exchange.terminal:
            outcome = exchange.state
    assert dropped == exchange.late
    assert exchange.terminal == (outcome is not None)


@given(kind=KINDS, events=INPUTS)
def test_a_protocol_error_ends_the_exchange(kind: ExchangeKind, events: list[Input]) -> None:
    """From the initial state, the first input missing from the table ends the exchange failed."""
    exchange = Exchange(kind, "r1")
    for event in events:
        if exchange.terminal:
            break
        expected_error = (exchange.state, event) not in TRANSITIONS[kind]
        action = exchange.handle(event)
        assert expected_error == (action is Action.PROTOCOL_ERROR)
        if expected_error:
            assert State.FAILED == exchange.state
            assert exchange.terminal
