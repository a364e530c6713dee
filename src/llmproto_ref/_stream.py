"""Stream reassembly on the requester's side (spec/streams.md).

Chunks carry ``seq`` 0, 1, 2, ...; the terminal chunk carries the next number and
``final: true``. Brokers keep one publisher's order on one subject, so reordering is rare, but
redelivery and reconnects can duplicate or lose a chunk. The reassembler hands chunks on in
``seq`` order, drops and counts duplicates [STR-004], holds early chunks inside a bounded
window, and reports a gap it cannot close as ``STREAM_INTERRUPTED`` [STR-005].
"""

from __future__ import annotations

from llmproto_ref._envelope import Envelope, Kind
from llmproto_ref._errors import RemoteProtocolError
from llmproto_ref._registry import ErrorCode

__all__ = ("StreamReassembler",)


class StreamReassembler:
    """Puts one stream's chunks back in order.

    :param window: most chunks held while waiting for a missing one.
    """

    __slots__ = ("_held", "duplicates", "next_seq", "reordered", "window")

    def __init__(self, *, window: int = 256) -> None:
        self.window = window
        self.next_seq = 0  #: the ``seq`` expected next
        self.duplicates = 0  #: chunks dropped because their ``seq`` was already seen
        self.reordered = 0  #: chunks that arrived early and were held
        self._held: dict[int, Envelope] = {}

    @property
    def has_gap(self) -> bool:
        """Whether chunks are held waiting for a missing earlier one."""
        return bool(self._held)

    def push(self, envelope: Envelope) -> list[Envelope]:
        """Accept one reply of the stream; return what can be delivered now, in order.

        An ``error`` ends the stream at once: the chunks that are already contiguous come
        first, then the error. A ``response`` (a handler that answered in one piece) is
        delivered as it is.

        :raises RemoteProtocolError: ``STREAM_INTERRUPTED`` when a gap exceeds the window.
        """
        if envelope.kind is not Kind.CHUNK:
            return [envelope]
        seq = int(envelope.members["seq"])  # validated: every chunk has one
        if seq < self.next_seq or seq in self._held:
            self.duplicates += 1
            return []
        if seq - self.next_seq >= self.window:
            raise RemoteProtocolError(
                ErrorCode.STREAM_INTERRUPTED,
                f"chunk {seq} arrived while chunk {self.next_seq} is still missing",
            )
        if seq != self.next_seq:
            self.reordered += 1
            self._held[seq] = envelope
            return []
        ready = [envelope]
        self.next_seq += 1
        while self.next_seq in self._held:
            ready.append(self._held.pop(self.next_seq))
            self.next_seq += 1
        return ready

    def interrupted(self) -> RemoteProtocolError:
        """The error that ends a stream whose terminal message never came (deadline, loss)."""
        missing = f"; chunk {self.next_seq} never arrived" if self._held else ""
        return RemoteProtocolError(
            ErrorCode.STREAM_INTERRUPTED,
            f"stream ended after {self.next_seq} chunks without its terminal message{missing}",
        )
