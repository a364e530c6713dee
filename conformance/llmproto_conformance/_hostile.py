"""Hostile input over the wire: the corpus published raw to a running reference service.

Theory of operation
-------------------
:func:`run_hostile` opens two transports from the factory it is given: one for a reference
:class:`~llmproto_ref.Service` that serves one per-run type with an echo handler, and one for
the driver, which publishes each :class:`HostileInput` raw with ``send_request`` and holds a
:class:`~llmproto_ref.Client` for valid traffic. Inputs go one at a time, each with a fresh
inbox of its own as its reply address, so whatever arrives on an inbox belongs to that input
and to no other. For each input the driver waits until the service's counters
(``ServiceStats.rejected`` and ``dropped``) move, which says the service has judged it; checks
that the right one moved by one; for a rejection checks the record the service kept (code,
pointer, requirement [ENV-038]); and, when a reply is due, waits for it and checks its code,
``retryable``, ``llmp.pointer`` detail, ``correlation_id`` and ``type`` [ENV-036, RR-005].
An inbox stays open while the next ``window`` inputs run, so a second or a stray reply is still
caught. Every ``valid_every`` inputs a valid request goes out through the client in the
background, and a few valid bodies at the limits go out raw on the same path as the hostile
ones; each must be answered with its own data [ENV-037]. A last valid request is the barrier
before the remaining inboxes are drained, and the totals are compared at the end.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from llmproto_conformance._hostile_corpus import (
    DROPPED,
    REPLY_PLACEHOLDER,
    HostileInput,
    ValidBody,
    hostile_corpus,
    valid_bodies,
)
from llmproto_ref import (
    Client,
    Delivery,
    EnvelopeError,
    ErrorCode,
    ExchangeError,
    Kind,
    Request,
    Service,
    Transport,
    TransportError,
    decode,
)

__all__ = ("HostileReport", "HostileResult", "run_hostile")

_PLACEHOLDER = REPLY_PLACEHOLDER.encode()


@dataclass(frozen=True, slots=True)
class HostileResult:
    """What became of one input: ``answered``, ``dropped``, ``refused`` (by the transport,
    over its ``max_payload`` [TRN-024]), ``skipped`` (the transport cannot send it), or
    ``failed``; ``detail`` says why it failed or was skipped."""

    name: str
    outcome: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        """Whether the input got what the spec prescribes (a skip is not a pass)."""
        return self.outcome in ("answered", "dropped", "refused")


@dataclass(slots=True)
class HostileReport:
    """The outcome of one :func:`run_hostile` run."""

    transport: str
    results: list[HostileResult] = field(default_factory=list)
    valid_sent: int = 0  #: valid requests sent, by the client and raw
    valid_answered: int = 0  #: of those, answered correctly
    problems: list[str] = field(default_factory=list)  #: run-wide failures
    notes: list[str] = field(default_factory=list)  #: what could not be tried, and why
    counters: dict[str, int] = field(default_factory=dict)  #: the service's stats at the end
    elapsed_s: float = 0.0

    @property
    def failures(self) -> list[HostileResult]:
        """The inputs that did not get what the spec prescribes."""
        return [r for r in self.results if r.outcome == "failed"]

    @property
    def ok(self) -> bool:
        """No input failed, nothing run-wide failed, and every valid request was answered."""
        return not self.failures and not self.problems and self.valid_sent == self.valid_answered

    def summary(self, limit: int = 20) -> str:
        """A few lines for a person: the counts, then the first ``limit`` failures."""
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        shown = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        lines = [
            f"hostile input on {self.transport}: {len(self.results)} inputs ({shown}); "
            f"{self.valid_answered} of {self.valid_sent} valid requests answered; "
            f"{self.elapsed_s:.1f} s",
            *(f"problem: {p}" for p in self.problems),
            *(f"note: {n}" for n in self.notes),
            *(f"failed {r.name}: {r.detail}" for r in self.failures[:limit]),
        ]
        if len(self.failures) > limit:
            lines.append(f"... and {len(self.failures) - limit} more failures")
        return "\n".join(lines)


@dataclass(slots=True)
class _Record:
    """What one input (or valid body) got so far; problems added later still fail it."""

    outcome: str
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Open:
    """An inbox the driver still listens on, and the record its input keeps."""

    record: _Record
    subscription: Any
    receive: MemoryObjectReceiveStream[Delivery]


class _Run:
    """The state of one run: both ends, the open inboxes, the records so far."""

    def __init__(
        self, report: HostileReport, *, served: str, timeout_s: float, window: int
    ) -> None:
        self.report = report
        self.served = served
        self.timeout_s = timeout_s
        self.window = window
        self.open: deque[_Open] = deque()
        self.records: dict[str, _Record] = {}  #: of the hostile inputs, in order
        self.valid_records: dict[str, _Record] = {}  #: of the valid bodies sent raw
        self.calls = 0  #: echo handler runs
        self.moved = [0, 0]  #: counter moves attributed to inputs: rejected, dropped
        self.service: Service
        self.transport: Transport
        self.pumps: anyio.abc.TaskGroup

    def echo(self, request: Request) -> Any:
        self.calls += 1
        return request.data

    def counts(self) -> tuple[int, int]:
        return self.service.stats.rejected, self.service.stats.dropped

    async def open_inbox(self, record: _Record) -> tuple[str, _Open]:
        inbox = await self.transport.open_inbox()
        address = inbox.address
        if any(c in address for c in '"\\') or not address.isprintable():
            raise TransportError(ErrorCode.INTERNAL, f"inbox address {address!r} is not JSON-safe")
        send, receive = anyio.create_memory_object_stream[Delivery](math.inf)
        self.pumps.start_soon(_pump, inbox.subscription, send)
        return address, _Open(record=record, subscription=inbox.subscription, receive=receive)

    async def retire(self, entry: _Open) -> None:
        """Close an inbox; anything still on it fails its input (a second or stray reply)."""
        extra = _drain(entry.receive)
        if extra:
            entry.record.problems.append(
                f"{len(extra)} more message(s) arrived: {_brief(extra[0])}"
            )
        with anyio.CancelScope(shield=True):
            await entry.subscription.aclose()
        entry.receive.close()

    async def park(self, entry: _Open) -> None:
        """Keep the inbox open for the next ``window`` inputs."""
        self.open.append(entry)
        while len(self.open) > self.window:
            await self.retire(self.open.popleft())

    async def wait_moved(self, before: tuple[int, int], entry: _Open | None) -> bool:
        """Until the counters move or a message arrives; ``False`` at the timeout."""
        until = anyio.current_time() + self.timeout_s
        spins = 0
        while self.counts() == before:
            if entry is not None and entry.receive.statistics().current_buffer_used:
                return True
            if anyio.current_time() > until:
                return False
            spins += 1
            await anyio.sleep(0 if spins < 200 else 0.0005)
        return True

    async def next_reply(self, entry: _Open) -> Delivery | None:
        with anyio.move_on_after(self.timeout_s):
            return await entry.receive.receive()
        return None

    async def hostile(self, item: HostileInput, index: int) -> None:
        """Send one input and judge what the service did with it."""
        record = self.records[item.name] = _Record("answered" if item.answered else "dropped")
        entry: _Open | None = None
        address = ""
        if item.reply_address or item.reply_via_member:
            address, entry = await self.open_inbox(record)
        body = item.body.replace(_PLACEHOLDER, address.encode()) if address else item.body
        native = address if item.reply_address else ""
        before, last = self.counts(), _last(self.service)
        over = len(body) > self.transport.capabilities.max_payload
        try:
            await self.transport.send_request(
                self.served, body, reply_to=native, message_id=f"{self.served}-{index}"
            )
        except TransportError as exc:
            if over and exc.code is ErrorCode.PAYLOAD_TOO_LARGE:
                record.outcome = "refused"
            elif not native and exc.code is ErrorCode.INVALID_PARAMS:
                record.outcome = "skipped"
                record.problems.append(f"the transport sends no request without a reply "
                                       f"address: {exc.message}")  # fmt: skip
            else:
                record.problems.append(f"send_request raised {exc.code}: {exc.message}")
            if entry is not None:
                await self.retire(entry)
            return
        if over:
            record.problems.append("the transport carried a body over its max_payload [TRN-024]")
        await self._judge(item, record, entry, before, last)
        if entry is not None:
            await self.park(entry)

    async def _judge(
        self,
        item: HostileInput,
        record: _Record,
        entry: _Open | None,
        before: tuple[int, int],
        last: tuple[str, str, str] | None,
    ) -> None:
        problems = record.problems
        if not await self.wait_moved(before, entry):
            problems.append(f"the service neither answered nor counted it in {self.timeout_s} s")
        now = self.counts()
        moved = (now[0] - before[0], now[1] - before[1])
        self.moved = [self.moved[0] + moved[0], self.moved[1] + moved[1]]
        want = (0, 1) if item.expect == DROPPED else (1, 0)
        if moved != want:
            problems.append(f"counters rejected/dropped moved by {moved}, expected {want}")
        if item.pointer is not None:
            problems.extend(_judge_record(item, _last(self.service), last))
        if item.answered and moved[0]:
            reply = await self.next_reply(entry) if entry is not None else None
            if reply is None:
                problems.append(f"no error reply within {self.timeout_s} s")
            else:
                problems.extend(_judge_reply(item, reply))

    async def valid_raw(self, valid: ValidBody, index: int) -> None:
        """Send a valid body at a limit on the hostile path; it must be answered [ENV-037]."""
        record = self.valid_records[valid.name] = _Record("answered")
        address, entry = await self.open_inbox(record)
        body = valid.make(self.served, address)
        if len(body) > self.transport.capabilities.max_payload:
            await self.retire(entry)
            record.outcome = "skipped"
            record.problems.append("over the transport's max_payload")
            return
        self.report.valid_sent += 1
        before = self.counts()
        try:
            await self.transport.send_request(
                self.served, body, reply_to=address, message_id=f"{self.served}-valid-{index}"
            )
            reply = await self.next_reply(entry)
        except TransportError as exc:
            record.problems.append(f"send_request raised {exc.code}: {exc.message}")
            reply = None
        problem = _judge_valid(valid, reply) if reply is not None else "no reply"
        if self.counts() != before:
            problem = problem or "the service counted a valid request as rejected or dropped"
        if problem:
            record.problems.append(problem)
        elif not record.problems:
            self.report.valid_answered += 1
        await self.park(entry)

    async def valid_call(self, client: Client, index: int) -> None:
        """One valid request through the client, in the background."""
        data = {"valid": index, "text": "h\u00e9llo w\u00f6rld \U0001f600", "list": [1, 2.5, None]}
        self.report.valid_sent += 1
        try:
            reply = await client.request(self.served, data, timeout=self.timeout_s)
        except ExchangeError as exc:
            self.report.problems.append(f"valid request {index} failed: {exc.code} {exc.message}")
            return
        if reply.data != data:
            self.report.problems.append(f"valid request {index} came back as {reply.data!r}")
            return
        self.report.valid_answered += 1


async def run_hostile(
    transport_factory: Callable[[], Transport],
    *,
    inputs: Sequence[HostileInput] | None = None,
    prefix: str | None = None,
    valid_every: int = 8,
    timeout_s: float = 5.0,
    window: int = 16,
    service_options: Mapping[str, Any] | None = None,
    service_factory: Callable[[], Transport] | None = None,
) -> HostileReport:
    """Publish every input raw to a reference service on a transport, and judge each outcome.

    :param transport_factory: makes a transport that is not yet entered (called twice: the
        service and the driver each get their own), e.g. ``lambda: open_transport(url)``.
    :param inputs: the inputs to send; by default :func:`hostile_corpus`, without signatures.
    :param prefix: unique in the broker: names the service (``<prefix>-hostile``) and the type
        it serves (``<prefix>.hostile.echo``); random by default.
    :param valid_every: a valid request through the client after this many inputs (0: none).
    :param timeout_s: how long one input, reply or valid request may take.
    :param window: how many recent inboxes stay open to catch a late or second reply.
    :param service_options: further keyword arguments for the :class:`~llmproto_ref.Service`.
    :param service_factory: the service's transport, if not one from ``transport_factory``
        (a faulty one, to show that the run notices a fault).
    """
    items = list(hostile_corpus(signatures=False) if inputs is None else inputs)
    prefix = prefix or f"h{secrets.token_hex(4)}"
    started = time.monotonic()
    service_transport = (service_factory or transport_factory)()
    async with service_transport as service_end, transport_factory() as driver_end:
        report = HostileReport(transport=driver_end.name)
        run = _Run(report, served=f"{prefix}.hostile.echo", timeout_s=timeout_s, window=window)
        run.transport = driver_end
        service = Service(service_end, name=f"{prefix}-hostile", source="llmp://hostile-target",
                          **dict(service_options or {}))  # fmt: skip
        service.handler(run.served)(run.echo)
        run.service = service
        client = Client(driver_end, source="urn:llmp:hostile:driver", timeout=timeout_s)
        async with service, client, anyio.create_task_group() as pumps:
            run.pumps = pumps
            await _drive(run, client, items, valid_every)
            pumps.cancel_scope.cancel()
        report.counters = dataclasses.asdict(service.stats)
        _final_checks(run, client)
    report.results = [
        HostileResult(name, _final_outcome(record), "; ".join(record.problems))
        for name, record in run.records.items()
    ]
    report.elapsed_s = time.monotonic() - started
    return report


async def _drive(run: _Run, client: Client, items: list[HostileInput], valid_every: int) -> None:
    valid = valid_bodies()
    spacing = max(1, len(items) // (len(valid) + 1))
    start = run.counts()
    async with anyio.create_task_group() as background:
        for index, item in enumerate(items):
            if valid_every and index % valid_every == 0:
                background.start_soon(run.valid_call, client, index)
            if index % spacing == spacing - 1 and valid:
                await run.valid_raw(valid.pop(0), index)
            await run.hostile(item, index)
        for index, rest in enumerate(valid):
            await run.valid_raw(rest, len(items) + index)
    await run.valid_call(client, len(items))  # the barrier: everything before it was taken
    await anyio.sleep(min(0.2, run.timeout_s))
    while run.open:
        await run.retire(run.open.popleft())
    end = run.counts()
    if (end[0] - start[0], end[1] - start[1]) != tuple(run.moved):
        run.report.problems.append(
            f"the counters moved by {(end[0] - start[0], end[1] - start[1])} in all, "
            f"by {tuple(run.moved)} for the inputs: something else was rejected or dropped"
        )


def _final_checks(run: _Run, client: Client) -> None:
    report, stats = run.report, run.service.stats
    for name, record in run.valid_records.items():
        if record.problems:
            found = report.notes if record.outcome == "skipped" else report.problems
            found.append(f"valid body {name}: {'; '.join(record.problems)}")
    if run.calls != report.valid_sent:
        report.problems.append(
            f"the handler ran {run.calls} times for {report.valid_sent} valid requests: "
            "a rejected message reached it [ENV-037]"
        )
    for name in ("handler_errors", "intake_failures", "reply_failures"):
        if getattr(stats, name):
            report.problems.append(f"the service counted {getattr(stats, name)} {name}")
    if client.malformed_replies:
        report.problems.append(f"the client got {client.malformed_replies} malformed replies")


async def _pump(subscription: Any, send: MemoryObjectSendStream[Delivery]) -> None:
    with send:
        async for delivery in subscription:
            send.send_nowait(delivery)


def _final_outcome(record: _Record) -> str:
    if record.outcome == "skipped" or not record.problems:
        return record.outcome
    return "failed"


def _drain(receive: MemoryObjectReceiveStream[Delivery]) -> list[Delivery]:
    taken: list[Delivery] = []
    while True:
        try:
            taken.append(receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return taken


def _brief(delivery: Delivery) -> str:
    if delivery.notice is not None:
        return f"a {delivery.notice} notice"
    return repr(delivery.body[:160])


def _last(service: Service) -> tuple[str, str, str] | None:
    return service.rejections[-1] if service.rejections else None


def _judge_record(
    item: HostileInput, now: tuple[str, str, str] | None, before: tuple[str, str, str] | None
) -> list[str]:
    """The rejection the service recorded: code, pointer and requirement [ENV-038]."""
    if now is None or now is before:
        return ["the service recorded no rejection [ENV-038]"]
    code, pointer, requirement = now
    if code != item.code or pointer != item.pointer or requirement not in item.cites:
        return [f"recorded {now}, expected ({item.code}, {item.pointer!r}, one of {item.cites})"]
    return []


def _judge_reply(item: HostileInput, delivery: Delivery) -> list[str]:
    """The error reply: code, retryable, the pointer detail, what it names [ENV-036]."""
    if delivery.notice is not None:
        return [f"the inbox got a {delivery.notice} notice instead of a reply"]
    try:
        reply = decode(delivery.body)
    except EnvelopeError as exc:
        return [f"the error reply does not decode: {exc}"]
    if reply.kind is not Kind.ERROR:
        return [f"a {reply.kind} came back instead of an error"]
    error = reply.error or {}
    found: list[str] = []
    if error.get("code") != item.expect:
        found.append(f"code {error.get('code')}, expected {item.expect}: {error.get('message')}")
    if error.get("retryable") is not False:
        found.append(f"retryable is {error.get('retryable')!r}")
    details = [d for d in error.get("details") or () if isinstance(d, Mapping)]
    if item.pointer is not None:
        pointer = next((d for d in details if d.get("type") == "llmp.pointer"), None)
        if pointer is None:
            found.append("no llmp.pointer detail")
        elif pointer.get("pointer") != item.pointer or pointer.get("requirement") not in item.cites:
            found.append(f"llmp.pointer {pointer.get('pointer')!r} {pointer.get('requirement')}, "
                         f"expected {item.pointer!r} {item.cites[0]}")  # fmt: skip
    if item.expect == "UNSUPPORTED_VERSION" and not any(
        d.get("type") == "llmp.versions" for d in details
    ):
        found.append("no llmp.versions detail [VER-003]")
    names = (reply.correlation_id, reply.type)
    wanted = {(item.correlation_id, item.reply_type)}
    if item.names_optional:
        wanted.add((None, "llmp.error"))
    if names not in wanted:
        found.append(f"the reply names {names}, expected {sorted(wanted, key=str)}")
    return found


def _judge_valid(valid: ValidBody, delivery: Delivery) -> str:
    if delivery.notice is not None:
        return f"a {delivery.notice} notice"
    try:
        reply = decode(delivery.body)
    except EnvelopeError as exc:
        return f"the reply does not decode: {exc}"
    if reply.kind is not Kind.RESPONSE:
        return f"{reply.kind} {(reply.error or {}).get('code', '')}: {reply.error}"
    if reply.data != valid.data:
        return f"the response carries {reply.data!r}, expected {valid.data!r}"
    return ""
