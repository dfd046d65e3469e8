"""Typed errors, one per server error code, with "not acquired" and "outcome unknown" apart."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from ._lost import LostReason

__all__ = [
    "LockError",
    "NotAcquired",
    "Locked",
    "LockTimeout",
    "LockLost",
    "InvalidName",
    "InvalidArgument",
    "AuthError",
    "Unauthorized",
    "Forbidden",
    "ConnectionLost",
    "ServerError",
    "Conflict",
    "Cancelled",
    "NotFound",
    "StaleToken",
    "SeedHTTPError",
]


class LockError(Exception):
    """Base class of every error this package raises.

    ``code`` is the server's stable error code (``"locked"``, ``"timeout"``, ``"conflict"``,
    ...) when the server answered with one, else ``None``. ``outcome_unknown`` is true when the
    request may or may not have taken effect (see :class:`ConnectionLost`).
    """

    code: Optional[str] = None

    def __init__(self, message: str = "", *, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def outcome_unknown(self) -> bool:
        """Whether the request may or may not have taken effect on the server."""
        return False


class NotAcquired(LockError):
    """The server certainly did not grant the request (base of :class:`Locked` and
    :class:`LockTimeout`)."""


class Locked(NotAcquired):
    """A try (``wait=0``) found the name held. Nothing was acquired."""

    code = "locked"


class LockTimeout(NotAcquired):
    """The whole wait passed without a grant. Nothing was acquired.

    ``wait`` is the wait the caller asked for, in seconds.
    """

    code = "timeout"

    def __init__(self, message: str = "", *, wait: Optional[float] = None) -> None:
        super().__init__(message)
        self.wait = wait


class LockLost(LockError):
    """The hold is gone: expired, force-released by an administrator, its session ended, or
    the client's local lease deadline passed. ``reason`` is a :class:`LostReason`."""

    def __init__(self, reason: LostReason, message: str = "") -> None:
        super().__init__(message or f"the hold is lost ({reason.value})")
        self.reason = reason


class InvalidName(LockError, ValueError):
    """The name is not 1–255 bytes of UTF-8 without control characters (checked before
    anything is sent)."""

    code = "invalid_argument"


class InvalidArgument(LockError, ValueError):
    """A bad argument: permits outside ``1..limit``, a negative wait, a bad address, ..."""

    code = "invalid_argument"


class AuthError(LockError):
    """The server refused the credential (:class:`Unauthorized`) or the right
    (:class:`Forbidden`)."""


class Unauthorized(AuthError):
    """Missing or wrong secret (HTTP 401, code ``unauthorized``)."""

    code = "unauthorized"


class Forbidden(AuthError):
    """A valid credential without the right (HTTP 403, code ``forbidden``)."""

    code = "forbidden"


class ConnectionLost(LockError, ConnectionError):
    """The server could not be reached, the connection broke, or no answer came in time:
    **the outcome is unknown**. Never read it as "not acquired": the client gives back
    whatever the request may have created (by its ``request_id``, a ``cancel``, or by its
    session ending), but it cannot prove a grant it never saw."""

    @property
    def outcome_unknown(self) -> bool:
        """Always true: the request may or may not have taken effect."""
        return True


class ServerError(LockError):
    """The server refused for another reason; ``code`` says which (``conflict``,
    ``cancelled``, ``not_found``, ``limit_exceeded``, ``not_leader``, ``unavailable``,
    ``internal``)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code, code=code)

    @property
    def outcome_unknown(self) -> bool:
        """True for ``internal`` and ``unavailable``: the server failed part-way or could not
        serve, and a retry with the same ``request_id`` is the way to learn what happened."""
        return self.code in ("internal", "unavailable")


class Conflict(ServerError):
    """A kind or limit mismatch on a live name, or a re-entrant acquire by a session that
    already holds or waits on the name (locks are not re-entrant)."""

    def __init__(self, message: str = "") -> None:
        super().__init__("conflict", message)


class Cancelled(ServerError):
    """The waiting request was cancelled by the server (an administrator force-released the
    name, or the request's session ended)."""

    def __init__(self, message: str = "") -> None:
        super().__init__("cancelled", message)


class NotFound(ServerError):
    """No live hold or session with that id."""

    def __init__(self, message: str = "") -> None:
        super().__init__("not_found", message)


class StaleToken(LockError):
    """A fencing token lower than one a :class:`~lockserver_client.Fence` already admitted:
    the holder that sent it has lost its lock to a newer one."""

    def __init__(self, token: int, highest: int) -> None:
        super().__init__(f"fencing token {token} is stale: {highest} was already seen")
        self.token = token
        self.highest = highest


class SeedHTTPError(LockError, OSError):
    """A non-2xx answer on the original API (:class:`~lockserver_client.LockserverClient`).

    Shaped like the ``requests.HTTPError`` the original client raised: ``response.status_code``
    and ``response.text``. When ``requests`` is installed the error raised is also an instance
    of ``requests.HTTPError``, so ``except requests.HTTPError`` in existing code keeps working.
    """

    def __init__(self, status_code: int, text: str, url: str) -> None:
        LockError.__init__(self, f"{status_code} error for url {url}: {text}")
        self.response = SeedResponse(status_code, text, url)
        self.request = None

    @property
    def status_code(self) -> int:
        """The HTTP status (also ``response.status_code``)."""
        return self.response.status_code


class SeedResponse:
    """The part of a ``requests.Response`` that code written for the original client reads."""

    def __init__(self, status_code: int, text: str, url: str) -> None:
        self.status_code = status_code
        self.text = text
        self.url = url
        self.ok = 200 <= status_code < 300
        self.reason = text

    def __repr__(self) -> str:
        return f"<SeedResponse [{self.status_code}]>"


def error_from_detail(
    detail: Optional[Mapping[str, Any]], wait: Optional[float] = 0.0
) -> LockError:
    """The exception for a server error body ``{"code", "message"}``.

    ``wait`` is what an acquire asked to wait (seconds; ``None``: no deadline). A re-sent
    acquire may answer ``locked`` where the first try would have said ``timeout`` (its wait
    ran out while the client was reconnecting): when the caller asked to wait, that is a
    timeout.
    """
    if not detail:
        return ServerError("internal", "a reply with neither a result nor an error")
    code = str(detail.get("code", "internal"))
    message = str(detail.get("message", ""))
    if code == "locked":
        if wait == 0:
            return Locked(message)
        return LockTimeout(f"not acquired within the wait: {message}", wait=wait)
    if code == "timeout":
        return LockTimeout(message, wait=wait)
    if code == "unauthorized":
        return Unauthorized(message)
    if code == "forbidden":
        return Forbidden(message)
    if code == "invalid_argument":
        return InvalidArgument(message)
    if code == "conflict":
        return Conflict(message)
    if code == "cancelled":
        return Cancelled(message)
    if code == "not_found":
        return NotFound(message)
    return ServerError(code, message)
