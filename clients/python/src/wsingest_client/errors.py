"""Errors raised by the wsingest device client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union


class WsingestError(Exception):
    """Base class of every error this package raises."""


class AuthError(WsingestError):
    """The server refused this device: HTTP 401/403 at the handshake, or the
    session was closed with 1008 (token revoked or rotated, policy).

    The client stops for good: it does not reconnect, ``send`` and ``flush``
    raise this error. Unacked messages stay in the disk buffer (if any) for a
    process started later with a valid token.
    """

    def __init__(self, message: str, *, status: Optional[int] = None,
                 close_code: Optional[int] = None, reason: str = "") -> None:
        super().__init__(message)
        #: HTTP status of a refused handshake (401, 403), else None.
        self.status = status
        #: WebSocket close code (1008), else None.
        self.close_code = close_code
        #: The server's reason text (response body or close reason).
        self.reason = reason


class ClientClosed(WsingestError):
    """The client was closed; it sends nothing more."""


class BufferFull(WsingestError):
    """``send`` with ``block=False`` while the buffer holds ``buffer`` unacked
    messages. Nothing was taken: send it again later."""


class MessageTooLarge(WsingestError, ValueError):
    """The encoded message is larger than ``max_message_bytes`` (the server's
    ``server.max_message_bytes``, 1 MiB by default). Nothing was taken."""


@dataclass(frozen=True)
class Failure:
    """A message the server refused for good (a permanent nack, or close 1009
    for the largest unacked message). It will not be resent."""

    #: The message's sequence number (what ``send`` returned).
    seq: int
    #: The server's error code: ``invalid_field``, ``reserved_tag``,
    #: ``rejected_by_database``, ``too_large``, ...
    error: str
    #: The server's explanation.
    detail: str
    #: The message as it was sent (``str`` for JSON, ``bytes`` for CBOR).
    payload: Union[str, bytes] = field(repr=False, default="")


class DeliveryFailed(WsingestError):
    """Raised by ``flush`` when messages were refused for good since the last
    ``flush`` and no ``on_failure`` callback was given. ``failures`` lists
    them, each with the server's reason."""

    def __init__(self, failures: list[Failure]) -> None:
        reasons = ", ".join(f"seq {f.seq}: {f.error} ({f.detail})" for f in failures[:5])
        more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} message(s) refused by the server: {reasons}{more}")
        self.failures = failures
