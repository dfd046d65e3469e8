"""The original Lockserver client's API (PyPI ``lockserver-client`` 0.1.3), kept so existing
code runs unchanged: :class:`LockserverClient` over ``POST /acquire`` and ``POST /release``
(identity = owner).

Better than the original: a blocking acquire waits on the server (the ``wait_ms`` extension
of ``/acquire``, re-issued until granted) instead of polling every 200 ms, so it is granted the
moment the lock is free, in FIFO order; every request has a timeout; there is no default
secret (the original sent ``changeme``); and the default owner is unique to the process, so
two processes never share an identity by accident. It needs only the standard library.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from typing import Any, Dict, Optional, Tuple, Type

from ._errors import ConnectionLost, InvalidArgument, SeedHTTPError
from ._util import DEFAULT_ADDR, env, parse_addr, process_owner, seconds

#: One server-side wait of a blocking acquire (it is re-issued until granted); well under the
#: server's longest allowed wait (5 minutes by default).
WAIT_CHUNK_MS = 30_000


class LockserverClient:
    """A client of the original API: locks identified by ``(resource, owner)``.

    ``addr`` (``LOCKSERVER_ADDR``, default ``127.0.0.1:8080``), ``owner``
    (``LOCKSERVER_OWNER``, default: unique to this process) and ``secret``
    (``LOCKSERVER_SECRET``, default: none) as the original client took them. ``timeout`` is how
    long any one request may take beyond its server-side wait, in seconds.

    >>> client = LockserverClient()
    >>> if client.acquire("ledger", blocking=False, expire=30):
    ...     try:
    ...         ...  # critical section
    ...     finally:
    ...         client.release("ledger")

    Locks taken here are ordinary Lockserver holds: they show in ``GET /v1/locks/{name}`` and
    conflict with native holds. Use the native API (:class:`Client`) for sessions, lost-lock
    notification and the other primitives.
    """

    def __init__(
        self,
        addr: Optional[str] = None,
        owner: Optional[str] = None,
        secret: Optional[str] = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.addr: str = addr or env("LOCKSERVER_ADDR") or DEFAULT_ADDR
        self.owner: str = owner or env("LOCKSERVER_OWNER") or process_owner()
        self.secret: Optional[str] = secret or env("LOCKSERVER_SECRET")
        self.base_url: str = parse_addr(self.addr)[0]
        self.timeout: float = seconds(timeout, "timeout")
        #: The fencing token of this client's last grant (``X-Lockserver-Token``).
        self.last_token: Optional[int] = None

    def acquire(self, resource: str, blocking: bool = True, expire: Optional[int] = None) -> bool:
        """Acquires ``resource`` for this owner. ``blocking`` waits (on the server) until it
        is granted; otherwise answers ``False`` at once if it is held (by anyone, this owner
        too: locks are not re-entrant). ``expire``: seconds after which the server frees the
        lock (``None``: never). Raises :class:`SeedHTTPError` on any other status and
        :class:`ConnectionLost` when the server cannot be reached (outcome unknown)."""
        body: Dict[str, Any] = {"resource": resource, "owner": self.owner}
        if expire is not None:
            body["expire"] = expire
        if blocking:
            body["wait_ms"] = WAIT_CHUNK_MS
        backoff = 0.05
        while True:
            started = time.monotonic()
            status, text, token = self._post(
                "/acquire", body, WAIT_CHUNK_MS / 1000 if blocking else 0
            )
            if status == 200:
                self.last_token = int(token) if token and token.isdigit() else None
                return True
            if status != 409:
                raise _seed_error(status, text, self.base_url + "/acquire")
            if not blocking:
                return False
            if time.monotonic() - started < WAIT_CHUNK_MS / 2000:
                # Refused well before the wait ran out: not a wait that ended but a refusal
                # (this owner holds it already, or an admin cancelled the wait). Ask again,
                # gently, as the original's 200 ms polling would have.
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            else:
                backoff = 0.05

    def release(self, resource: str) -> None:
        """Releases ``resource`` held by this owner. Raises :class:`SeedHTTPError` on a
        non-2xx answer (409 when another owner holds it or nobody does)."""
        body = {"resource": resource, "owner": self.owner}
        status, text, _ = self._post("/release", body, 0)
        if not 200 <= status < 300:
            raise _seed_error(status, text, self.base_url + "/release")

    def _post(
        self, route: str, body: Dict[str, Any], wait: float
    ) -> Tuple[int, str, Optional[str]]:
        url = urllib.parse.urlsplit(self.base_url)
        connection_class = (
            http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        )
        if not url.hostname:
            raise InvalidArgument(f"bad server address {self.addr!r}")
        connection = connection_class(url.hostname, url.port, timeout=wait + self.timeout)
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers["X-LOCKSERVER-SECRET"] = self.secret
        try:
            connection.request("POST", route, body=json.dumps(body), headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            return response.status, text, response.getheader("x-lockserver-token")
        except (OSError, http.client.HTTPException) as err:
            raise ConnectionLost(
                f"POST {self.base_url}{route} failed ({err}); the outcome is unknown"
            ) from err
        finally:
            connection.close()

    def __repr__(self) -> str:
        return f"LockserverClient(addr={self.addr!r}, owner={self.owner!r})"


_error_class: Optional[Type[SeedHTTPError]] = None


def _seed_error(status: int, text: str, url: str) -> SeedHTTPError:
    """The error for a non-2xx answer; also a ``requests.HTTPError`` when requests is
    installed, as the original client's was."""
    global _error_class
    if _error_class is None:
        try:
            import requests  # noqa: F401  (only to match the original's exception type)

            class CompatHTTPError(SeedHTTPError, requests.HTTPError):  # type: ignore[misc]
                pass

            CompatHTTPError.__name__ = CompatHTTPError.__qualname__ = "SeedHTTPError"
            _error_class = CompatHTTPError
        except ImportError:
            _error_class = SeedHTTPError
    return _error_class(status, text, url)
