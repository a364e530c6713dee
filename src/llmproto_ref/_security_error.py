"""The exception a receiver raises when a message fails a security check (spec/security.md).

A :class:`SecurityError` is an :class:`~llmproto_ref.EnvelopeError`: it carries the registry code
of the failed step (``UNAUTHENTICATED``, ``SIGNATURE_INVALID``, ``REPLAY_REJECTED``,
``PERMISSION_DENIED``, and a few envelope codes for the steps around them), the JSON Pointer of
the member at fault (``/sig/value``, ``/auth/token``) and the requirement ID the message breaks,
so a runtime answers it exactly as it answers a message that did not decode (ENV-036).
Its message names the problem and never quotes a token, a key or a signature value [ERR-012].
"""

from __future__ import annotations

from llmproto_ref._errors import EnvelopeError

__all__ = ("SecurityError",)


class SecurityError(EnvelopeError):
    """A received message failed a security check; ``code`` says which step (spec/security.md).

    :param code: the registry code of the step that failed.
    :param message: what was wrong, naming the member and the rule, never a secret.
    :param pointer: the member at fault, e.g. ``/sig/kid``.
    :param requirement: the requirement ID the message breaks, e.g. ``SEC-017``.
    """
