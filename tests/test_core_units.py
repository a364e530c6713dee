"""The sans-IO core on its own: correlation, reassembly, idempotency, deadlines, metrics, tables."""

from __future__ import annotations

from typing import Any

import pytest

from llmproto_ref import (
    Action,
    Claim,
    Correlator,
    Deadline,
    Envelope,
    ErrorCode,
    Exchange,
    ExchangeKind,
    IdempotencyStore,
    Input,
    Kind,
    Metrics,
    Pattern,
    RemoteProtocolError,
    State,
    StreamReassembler,
    new_id,
)
from llmproto_ref._exchange import TERMINAL_STATES, TRANSITIONS, render_tables
from llmproto_ref._idempotency import request_digest
from llmproto_ref._metrics import quantile

SOURCE = "llmp://tests/core"
NOW = 1_750_000_000_000


def _request(type_: str = "t.op", data: Any = None, **members: Any) -> Envelope:
    return Envelope.new(kind=Kind.REQUEST, type=type_, source=SOURCE, data=data, **members)


def _response(request_id: str) -> Envelope:
    return Envelope.new(
        kind=Kind.RESPONSE, type="t.op", source=SOURCE, correlation_id=request_id, data="ok"
    )


def _chunk(request_id: str, seq: int, *, final: bool = False) -> Envelope:
    return Envelope.new(
        kind=Kind.CHUNK,
        type="t.op",
        source=SOURCE,
        correlation_id=request_id,
        seq=seq,
        data=seq,
        final=True if final else None,
    )


def _error(request_id: str, seq: int | None = None) -> Envelope:
    return Envelope.new(
        kind=Kind.ERROR,
        type="t.op",
        source=SOURCE,
        correlation_id=request_id,
        seq=seq,
        error={"code": "INTERNAL", "message": "x", "retryable": False},
    )


# -- Correlator ----------------------------------------------------------------------------


def test_correlator_delivers_a_response_and_forgets_the_exchange() -> None:
    """A response completes its call and the exchange leaves the table [TERM-004]."""
    correlator = Correlator()
    request = _request()
    correlator.open(request, ExchangeKind.CALL, Deadline(NOW + 1000))
    assert (1, True) == (len(correlator), request.id in correlator)
    routed = correlator.route(_response(request.id))
    assert routed is not None
    assert [Action.DELIVER] == [action for action, _ in routed.steps]
    assert State.COMPLETED == routed.pending.exchange.state
    assert (0, False, None) == (
        len(correlator),
        request.id in correlator,
        correlator.get(request.id),
    )


def test_correlator_counts_late_and_unknown_replies_apart() -> None:
    """A reply after the terminal one is late; one for an id never sent is unknown [TERM-002]."""
    correlator = Correlator()
    request = _request()
    correlator.open(request, ExchangeKind.CALL, None)
    correlator.route(_response(request.id))
    assert correlator.route(_response(request.id)) is None
    assert correlator.route(_error(request.id)) is None
    assert correlator.route(_response(new_id())) is None
    assert (2, 1) == (correlator.late_dropped, correlator.unknown_dropped)


def test_correlator_reply_after_local_deadline_is_late() -> None:
    """After a local DEADLINE the exchange is expired and a reply counts as late, no leak."""
    correlator = Correlator()
    request = _request()
    correlator.open(request, ExchangeKind.CALL, Deadline(NOW + 10))
    assert [request.id] == correlator.expired(NOW + 10)
    assert [] == correlator.expired(NOW + 9)
    step = correlator.local(request.id, Input.DEADLINE)
    assert step is not None
    assert Action.EXPIRE == step[1]
    assert 0 == len(correlator)
    assert correlator.local(request.id, Input.CANCEL) is None
    assert correlator.route(_response(request.id)) is None
    assert (1, 0) == (correlator.late_dropped, correlator.unknown_dropped)


def test_correlator_cancel_asks_to_send_a_cancel() -> None:
    """A local cancel on an open call returns SEND_CANCEL and ends the exchange."""
    correlator = Correlator()
    request = _request()
    correlator.open(request, ExchangeKind.STREAM, None)
    step = correlator.local(request.id, Input.CANCEL)
    assert step is not None
    assert (Action.SEND_CANCEL, State.CANCELLED) == (step[1], step[0].exchange.state)
    assert 0 == len(correlator)


def test_correlator_non_reply_kinds_on_an_inbox_are_unknown() -> None:
    """Requests, events and cancels arriving on an inbox are dropped as unknown."""
    correlator = Correlator()
    request = _request()
    correlator.open(request, ExchangeKind.CALL, None)
    cancel = Envelope.new(kind=Kind.CANCEL, type="t.op", source=SOURCE, correlation_id=request.id)
    assert correlator.route(cancel) is None
    assert correlator.route(_request()) is None
    assert (2, 1) == (correlator.unknown_dropped, len(correlator))


def test_correlator_remembers_a_bounded_number_of_ended_ids() -> None:
    """Only the most recent ended ids are told apart as late; older ones become unknown."""
    correlator = Correlator(recent=2)
    requests = [_request() for _ in range(3)]
    for request in requests:
        correlator.open(request, ExchangeKind.CALL, None)
        correlator.route(_response(request.id))
    for request in requests:
        correlator.route(_response(request.id))
    assert (2, 1) == (correlator.late_dropped, correlator.unknown_dropped)


def test_correlator_stream_stops_at_the_terminal_message() -> None:
    """Chunks are delivered, the final completes, and anything after is late."""
    correlator = Correlator()
    request = _request()
    correlator.open(request, ExchangeKind.STREAM, None)
    steps = []
    for envelope in (
        _chunk(request.id, 0),
        _chunk(request.id, 1),
        _chunk(request.id, 2, final=True),
        _chunk(request.id, 3),
    ):
        routed = correlator.route(envelope)
        steps.append(None if routed is None else [a for a, _ in routed.steps])
    assert [[Action.DELIVER]] * 3 + [None] == steps
    assert (1, 0) == (correlator.late_dropped, len(correlator))


# -- StreamReassembler -----------------------------------------------------------------------


def test_reassembler_in_order_passes_through() -> None:
    """Chunks in seq order are handed on one by one."""
    rid = new_id()
    reassembler = StreamReassembler()
    out = [[c.seq for c in reassembler.push(_chunk(rid, n))] for n in range(3)]
    assert [[0], [1], [2]] == out
    assert (3, 0, 0, False) == (
        reassembler.next_seq,
        reassembler.duplicates,
        reassembler.reordered,
        reassembler.has_gap,
    )


def test_reassembler_drops_and_counts_duplicates() -> None:
    """A seq seen already, delivered or held, is dropped and counted [STR-004]."""
    rid = new_id()
    reassembler = StreamReassembler()
    reassembler.push(_chunk(rid, 0))
    reassembler.push(_chunk(rid, 2))
    assert [] == reassembler.push(_chunk(rid, 0))
    assert [] == reassembler.push(_chunk(rid, 2))
    assert 2 == reassembler.duplicates


def test_reassembler_holds_early_chunks_and_releases_them_in_order() -> None:
    """Early chunks wait for the missing one, then come out in seq order."""
    rid = new_id()
    reassembler = StreamReassembler()
    assert [] == reassembler.push(_chunk(rid, 2))
    assert [] == reassembler.push(_chunk(rid, 1))
    assert reassembler.has_gap
    assert [0, 1, 2] == [c.seq for c in reassembler.push(_chunk(rid, 0))]
    assert (2, False, 3) == (reassembler.reordered, reassembler.has_gap, reassembler.next_seq)


def test_reassembler_gap_beyond_the_window_is_interrupted() -> None:
    """A chunk a whole window ahead of the missing one raises STREAM_INTERRUPTED [STR-005]."""
    rid = new_id()
    reassembler = StreamReassembler(window=4)
    assert [] == reassembler.push(_chunk(rid, 3))  # inside the window
    with pytest.raises(RemoteProtocolError) as caught:
        reassembler.push(_chunk(rid, 4))
    assert ErrorCode.STREAM_INTERRUPTED == caught.value.code


def test_reassembler_interrupted_names_the_missing_chunk() -> None:
    """interrupted() is STREAM_INTERRUPTED and says which chunk never came."""
    rid = new_id()
    reassembler = StreamReassembler()
    reassembler.push(_chunk(rid, 0))
    assert "never arrived" not in reassembler.interrupted().message
    reassembler.push(_chunk(rid, 2))
    error = reassembler.interrupted()
    assert ErrorCode.STREAM_INTERRUPTED == error.code
    assert "chunk 1 never arrived" in error.message


def test_reassembler_passes_errors_and_responses_at_once() -> None:
    """An error or a response is delivered as it is, even while a gap is open."""
    rid = new_id()
    reassembler = StreamReassembler()
    reassembler.push(_chunk(rid, 1))
    error = _error(rid, seq=2)
    assert [error] == reassembler.push(error)
    response = _response(rid)
    assert [response] == reassembler.push(response)


# -- IdempotencyStore ------------------------------------------------------------------------


def test_idempotency_claim_walk_new_running_done() -> None:
    """NEW, then RUNNING while it runs, then DONE with the stored reply [IDEM-001, IDEM-002]."""
    store = IdempotencyStore()
    assert (Claim.NEW, None) == store.claim(SOURCE, "k", "d1", NOW)
    assert (Claim.RUNNING, None) == store.claim(SOURCE, "k", "d1", NOW + 1)
    store.finish(SOURCE, "k", {"kind": "response", "data": 1}, NOW + 2)
    assert (Claim.DONE, {"kind": "response", "data": 1}) == store.claim(SOURCE, "k", "d1", NOW + 3)
    assert 1 == store.executions[(SOURCE, "k")]


def test_idempotency_conflict_on_other_content() -> None:
    """The same key with another digest is CONFLICT, running or done [IDEM-003]."""
    store = IdempotencyStore()
    store.claim(SOURCE, "k", "d1", NOW)
    assert (Claim.CONFLICT, None) == store.claim(SOURCE, "k", "d2", NOW)
    store.finish(SOURCE, "k", {"kind": "response"}, NOW)
    assert (Claim.CONFLICT, None) == store.claim(SOURCE, "k", "d2", NOW)


def test_idempotency_keys_are_per_source() -> None:
    """The same key from two sources is two entries."""
    store = IdempotencyStore()
    assert Claim.NEW == store.claim("llmp://a", "k", "d", NOW)[0]
    assert Claim.NEW == store.claim("llmp://b", "k", "d", NOW)[0]
    assert 2 == len(store)


def test_idempotency_lru_bound() -> None:
    """Past max_entries the least recently used key goes first [IDEM-004]."""
    store = IdempotencyStore(max_entries=2)
    store.claim(SOURCE, "a", "d", NOW)
    store.claim(SOURCE, "b", "d", NOW)
    store.claim(SOURCE, "a", "d", NOW)  # touches a
    store.claim(SOURCE, "c", "d", NOW)  # evicts b
    assert 2 == len(store)
    assert Claim.RUNNING == store.claim(SOURCE, "a", "d", NOW)[0]
    assert Claim.NEW == store.claim(SOURCE, "b", "d", NOW)[0]


def test_idempotency_ttl_expiry() -> None:
    """A key is forgotten ttl_ms after it was claimed or finished [IDEM-004]."""
    store = IdempotencyStore(ttl_ms=100)
    store.claim(SOURCE, "k", "d", NOW)
    store.finish(SOURCE, "k", {"kind": "response"}, NOW + 50)
    assert Claim.DONE == store.claim(SOURCE, "k", "d", NOW + 149)[0]
    assert Claim.NEW == store.claim(SOURCE, "k", "d", NOW + 150)[0]
    assert 2 == store.executions[(SOURCE, "k")]


def test_idempotency_forget_lets_a_retry_run() -> None:
    """forget() after a retryable failure makes the next claim NEW [IDEM-005]."""
    store = IdempotencyStore()
    store.claim(SOURCE, "k", "d", NOW)
    store.forget(SOURCE, "k")
    store.forget(SOURCE, "never-claimed")
    assert Claim.NEW == store.claim(SOURCE, "k", "d", NOW)[0]
    assert 2 == store.executions[(SOURCE, "k")]


@pytest.mark.parametrize(("max_entries", "ttl_ms"), [(0, 1), (1, 0)])
def test_idempotency_rejects_non_positive_bounds(max_entries: int, ttl_ms: int) -> None:
    """Both bounds must be positive."""
    with pytest.raises(ValueError, match="positive"):
        IdempotencyStore(max_entries=max_entries, ttl_ms=ttl_ms)


def test_request_digest_is_type_and_payload_key_order_ignored() -> None:
    """Same type and payload digest alike whatever the key order or id; other content differs."""
    one = _request(data={"a": 1, "b": [1, 2]})
    two = _request(data={"b": [1, 2], "a": 1})
    assert request_digest(one) == request_digest(two)
    assert request_digest(one) != request_digest(_request(data={"a": 2, "b": [1, 2]}))
    assert request_digest(one) != request_digest(_request("t.other", data=one.data))
    binary = Envelope.new(kind=Kind.REQUEST, type="t.op", source=SOURCE, data_base64="AAEC")
    assert request_digest(binary) != request_digest(
        Envelope.new(kind=Kind.REQUEST, type="t.op", source=SOURCE, data_base64="AAED")
    )


# -- Deadline --------------------------------------------------------------------------------


def test_deadline_arithmetic() -> None:
    """after, remaining_ms (never negative) and expired (at the instant itself)."""
    deadline = Deadline.after(NOW, 1.5)
    assert NOW + 1500 == deadline.at_ms
    later = [NOW, NOW + 1499, NOW + 1500, NOW + 10**9]
    assert [1500, 1, 0, 0] == [deadline.remaining_ms(now) for now in later]
    assert (False, True, True) == (
        deadline.expired(NOW + 1499),
        deadline.expired(NOW + 1500),
        deadline.expired(NOW + 1501),
    )
    assert NOW == Deadline.after(NOW, -5).at_ms


def test_deadline_timestamp_round_trip() -> None:
    """A deadline survives the envelope's timestamp form at millisecond precision."""
    deadline = Deadline(1_700_000_000_123)
    assert "2023-11-14T22:13:20.123Z" == deadline.to_timestamp()
    assert deadline == Deadline.from_timestamp(deadline.to_timestamp())


def test_deadline_earliest_shortens_never_extends() -> None:
    """earliest() keeps the earlier deadline, and itself when there is no other [DL-002]."""
    early, late = Deadline(NOW), Deadline(NOW + 1)
    assert (early, early, early, late) == (
        early.earliest(late),
        late.earliest(early),
        early.earliest(None),
        late.earliest(None),
    )
    assert early < late


# -- Metrics ---------------------------------------------------------------------------------


def test_quantile_nearest_rank() -> None:
    """quantile() picks the nearest rank and is None without samples."""
    samples = [float(n) for n in range(1, 102)]
    assert (None, 1.0, 51.0, 100.0, 101.0) == (
        quantile([], 0.5),
        quantile(samples, 0.0),
        quantile(samples, 0.5),
        quantile(samples, 0.99),
        quantile(samples, 1.0),
    )
    assert 7.0 == quantile([7.0], 0.99)


def test_metrics_efficiency_and_failures() -> None:
    """η = succeeded / sent, None before anything was sent; failures by code [MET-002]."""
    metrics = Metrics(seed=1)
    figures = metrics.figures(Pattern.REQUEST, "t.op")
    assert figures.efficiency is None
    for _ in range(4):
        metrics.sent(Pattern.REQUEST, "t.op")
    metrics.succeeded(Pattern.REQUEST, "t.op")
    metrics.succeeded(Pattern.REQUEST, "t.op")
    metrics.succeeded(Pattern.REQUEST, "t.op")
    metrics.failed(Pattern.REQUEST, "t.op", "DEADLINE_EXCEEDED")
    metrics.late(Pattern.REQUEST, "t.op", 2)
    after = metrics.figures(Pattern.REQUEST, "t.op")
    assert (0.75, {"DEADLINE_EXCEEDED": 1}, 2) == (
        after.efficiency,
        after.failed,
        after.late_dropped,
    )


def test_metrics_split_latency_from_timing_stamps() -> None:
    """The timing stamps give Ts, Tt and Tr in milliseconds [MET-001]."""
    metrics = Metrics(seed=1)
    timing = {"call": 1_000, "sent": 3_000, "received": 7_000, "handled": 15_000}
    metrics.succeeded(Pattern.REQUEST, "t.op", latency_ms=20.0, timing=timing)
    summary = metrics.snapshot()["request"]["t.op"]
    assert (
        {"p50": 20.0, "p99": 20.0},
        {"p50": 2.0, "p99": 2.0},
        {"p50": 4.0, "p99": 4.0},
        {"p50": 8.0, "p99": 8.0},
    ) == (summary["latency_ms"], summary["ts_ms"], summary["tt_ms"], summary["tr_ms"])


def test_metrics_partial_timing_fills_only_what_it_can() -> None:
    """Missing stamps leave the parts they define empty."""
    metrics = Metrics(seed=1)
    metrics.succeeded(Pattern.REQUEST, "t.op", timing={"call": 1_000, "sent": 2_000})
    summary = metrics.snapshot()["request"]["t.op"]
    assert ({"p50": 1.0, "p99": 1.0}, {"p50": None, "p99": None}, {"p50": None, "p99": None}) == (
        summary["ts_ms"],
        summary["tt_ms"],
        summary["tr_ms"],
    )


def test_metrics_snapshot_per_pattern_type_and_total() -> None:
    """snapshot() is {pattern: {type: summary, "*": total}}."""
    metrics = Metrics(seed=1)
    for type_, ok in (("t.a", True), ("t.a", False), ("t.b", True)):
        metrics.sent(Pattern.REQUEST, type_)
        if ok:
            metrics.succeeded(Pattern.REQUEST, type_, latency_ms=1.0)
        else:
            metrics.failed(Pattern.REQUEST, type_, "INTERNAL")
    metrics.sent(Pattern.EVENT, "e.x")
    snapshot = metrics.snapshot()
    assert {"request": {"t.a", "t.b", "*"}, "event": {"e.x", "*"}} == {
        pattern: set(types) for pattern, types in snapshot.items()
    }
    total = snapshot["request"]["*"]
    assert (3, 2, {"INTERNAL": 1}, 2 / 3) == (
        total["sent"],
        total["succeeded"],
        total["failed"],
        total["efficiency"],
    )
    assert (0.5, None) == (
        snapshot["request"]["t.a"]["efficiency"],
        snapshot["event"]["e.x"]["latency_ms"]["p50"],
    )


def test_metrics_reservoir_is_bounded() -> None:
    """Latency samples are kept in a bounded reservoir however many arrive."""
    metrics = Metrics(seed=3)
    for n in range(5000):
        metrics.succeeded(Pattern.QUEUE, "t.op", latency_ms=float(n))
    reservoir = metrics.figures(Pattern.QUEUE, "t.op").latency_ms
    assert (5000, 2048) == (reservoir.seen, len(reservoir.samples))
    assert 5000 == metrics.figures(Pattern.QUEUE, "t.op").succeeded


# -- Exchange tables -------------------------------------------------------------------------


def _walk(kind: ExchangeKind, inputs: list[Input]) -> list[tuple[Action, State]]:
    exchange = Exchange(kind, new_id())
    return [(exchange.handle(event), exchange.state) for event in inputs]


def test_call_table_walk() -> None:
    """A call completes on its response; everything afterwards is a counted drop."""
    exchange = Exchange(ExchangeKind.CALL, "r1")
    assert (State.AWAITING, False) == (exchange.state, exchange.terminal)
    assert [
        (Action.DELIVER, State.COMPLETED),
        (Action.DROP, State.COMPLETED),
        (Action.DROP, State.COMPLETED),
    ] == [
        (exchange.handle(event), exchange.state)
        for event in (Input.RESPONSE, Input.RESPONSE, Input.CANCEL)
    ]
    assert (True, 2) == (exchange.terminal, exchange.late)


def test_stream_table_walk() -> None:
    """A stream goes awaiting, streaming, completed on its final chunk."""
    assert [
        (Action.DELIVER, State.STREAMING),
        (Action.DELIVER, State.STREAMING),
        (Action.DELIVER, State.COMPLETED),
    ] == _walk(ExchangeKind.STREAM, [Input.CHUNK, Input.CHUNK, Input.FINAL_CHUNK])
    assert [(Action.DELIVER, State.STREAMING), (Action.SEND_CANCEL, State.CANCELLED)] == _walk(
        ExchangeKind.STREAM, [Input.CHUNK, Input.CANCEL]
    )


def test_serve_table_walk() -> None:
    """A responder runs, streams, and ends with the final chunk; or stops on cancel."""
    assert [
        (Action.RUN, State.RUNNING),
        (Action.SEND_CHUNK, State.STREAMING),
        (Action.SEND_FINAL, State.COMPLETED),
    ] == _walk(ExchangeKind.SERVE, [Input.START, Input.YIELD, Input.RETURN])
    assert [(Action.RUN, State.RUNNING), (Action.SEND_RESPONSE, State.COMPLETED)] == _walk(
        ExchangeKind.SERVE, [Input.START, Input.RETURN]
    )
    assert [(Action.RUN, State.RUNNING), (Action.STOP_EXPIRED, State.EXPIRED)] == _walk(
        ExchangeKind.SERVE, [Input.START, Input.DEADLINE]
    )


def test_missing_pair_is_a_protocol_error() -> None:
    """An input the table does not allow ends the exchange as failed [TERM-003]."""
    assert [(Action.PROTOCOL_ERROR, State.FAILED), (Action.DROP, State.FAILED)] == _walk(
        ExchangeKind.CALL, [Input.CHUNK, Input.RESPONSE]
    )
    assert [(Action.PROTOCOL_ERROR, State.FAILED)] == _walk(ExchangeKind.SERVE, [Input.RETURN])


def test_terminal_states_drop_everything() -> None:
    """In every table each terminal state maps every input to a drop [TERM-002]."""
    for table in TRANSITIONS.values():
        for state in TERMINAL_STATES:
            assert {(Action.DROP, state)} == {table[(state, event)] for event in Input}


def test_render_tables_lists_each_kind_without_terminal_rows() -> None:
    """render_tables() has one section per kind and folds the terminal drops."""
    text = render_tables()
    assert ["#### `call`", "#### `stream`", "#### `serve`"] == [
        line for line in text.splitlines() if line.startswith("####")
    ]
    assert "| `awaiting` | `response` | `deliver` | `completed` |" in text
    starts = tuple(f"| `{state}` |" for state in TERMINAL_STATES)
    assert [] == [line for line in text.splitlines() if line.startswith(starts)]
