"""The asyncio client (:class:`AsyncClient`) and its hold handles (:class:`AsyncHandle`)."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Generator,
    Optional,
    Type,
    Union,
)

from ._driver import Driver, Settings
from ._errors import InvalidArgument, Locked, LockLost, NotFound
from ._lost import LostCallback, LostReason, LostState
from ._util import (
    DEFAULT_ADDR,
    Seconds,
    default_owner,
    env,
    millis_up,
    new_request_id,
    optional_millis,
    seconds,
    validate_label,
    validate_name,
    validate_request_id,
)

try:  # Python 3.8+: typing.Literal
    from typing import Literal

    Mode = Literal["exclusive", "shared"]
except ImportError:  # pragma: no cover
    Mode = str  # type: ignore[misc]

log = logging.getLogger("lockserver_client")


class _Keep:
    """The default of ``renew(ttl=...)``: renew for the hold's current TTL."""

    def __repr__(self) -> str:
        return "KEEP_TTL"


#: ``renew()``'s default: the hold's current TTL again.
KEEP_TTL: Any = _Keep()

#: Lost reasons the server told us: it no longer has the hold, so a release need not ask.
_SERVER_SAID_GONE = (
    LostReason.EXPIRED,
    LostReason.SESSION,
    LostReason.ADMIN,
    LostReason.UNDELIVERABLE,
)


class AsyncClient:
    """A Lockserver client for asyncio code: one streaming session (``GET /v1/session``).

    The session opens on first use, keeps itself alive (a ``ping`` every third of its TTL),
    resumes after a broken connection, and ends when :meth:`close` is called (or the client is
    used as ``async with AsyncClient() as client:``). While it lives, every hold it acquired is
    watched: a ``lost`` event from the server or the local lease deadline fires the hold's lost
    signal. If the process dies, the server frees its holds once the session's lease runs out.

    Arguments (all optional; the environment fills in what is not given):

    - ``addr``: ``host:port`` or ``http://host:port`` (``LOCKSERVER_ADDR``, default
      ``127.0.0.1:8080``).
    - ``secret``: the client secret, sent as ``Authorization: Bearer`` (``LOCKSERVER_SECRET``;
      no default).
    - ``owner``: the label the server shows for this client's holds (``LOCKSERVER_OWNER``,
      default ``program:pid@host``).
    - ``session_ttl``: the session's lease in seconds: how soon the server frees this client's
      holds after it dies (default: the server's, 2 s on a single node).
    - ``grace``: how long the session outlives a dropped connection, so a reconnect can resume
      it (default: the server's, 0: the lease alone).
    - ``connect_timeout``: seconds to open the connection and say hello (default 5).
    - ``request_timeout``: seconds to wait for any answer beyond an acquire's own wait
      (default 10); past it the call raises :class:`ConnectionLost` (outcome unknown) and
      the client withdraws the request. A wait without a deadline has no such limit.
    - ``lease_margin``: seconds to move the local lease deadline earlier still (default 0).
    - ``drift``: the bound on the clocks' rate difference taken off every lease (default 0.01).

    An ``AsyncClient`` belongs to the event loop it is first used on.

    >>> async def main():
    ...     async with AsyncClient("127.0.0.1:8080") as client:
    ...         async with client.lock("reports", wait=5) as lock:
    ...             print("writing with fencing token", lock.token)
    """

    def __init__(
        self,
        addr: Optional[str] = None,
        *,
        secret: Optional[str] = None,
        owner: Optional[str] = None,
        session_ttl: Optional[Seconds] = None,
        grace: Optional[Seconds] = None,
        connect_timeout: Seconds = 5.0,
        request_timeout: Seconds = 10.0,
        lease_margin: Seconds = 0.0,
        drift: float = 0.01,
    ) -> None:
        secret = secret or env("LOCKSERVER_SECRET")
        if secret is not None:
            validate_label(secret, "the secret")
        owner = validate_label(owner or env("LOCKSERVER_OWNER") or default_owner(), "owner")
        if not isinstance(drift, (int, float)) or not 0 <= drift < 0.5:
            raise InvalidArgument("drift must be in [0, 0.5)")
        session_ttl_ms = optional_millis(session_ttl, "session_ttl")
        grace_ms = optional_millis(grace, "grace")
        margin = seconds(lease_margin, "lease_margin")
        if session_ttl_ms is not None and margin * 2000 >= session_ttl_ms:
            raise InvalidArgument(
                f"lease_margin ({margin:g} s) must be under half the session ttl: the lease "
                "is renewed every third of the ttl"
            )
        self._settings = Settings(
            addr or env("LOCKSERVER_ADDR") or DEFAULT_ADDR,
            secret,
            owner,
            session_ttl_ms,
            grace_ms,
            seconds(connect_timeout, "connect_timeout"),
            seconds(request_timeout, "request_timeout"),
            margin,
            float(drift),
        )
        self._driver: Optional[Driver] = None

    # ----- properties -----

    @property
    def owner(self) -> str:
        """The owner label this client sends."""
        return self._settings.owner

    @property
    def addr(self) -> str:
        """The server's base URL (``http://host:port``)."""
        return self._settings.http_base

    @property
    def session_id(self) -> Optional[str]:
        """The current session's id (``None`` before the first request or after close)."""
        return self._driver.session_id if self._driver else None

    def _get_driver(self) -> Driver:
        loop = asyncio.get_running_loop()
        driver = self._driver
        if driver is None or (driver.loop is not loop and driver.loop.is_closed()):
            driver = Driver(self._settings, loop)
            self._driver = driver
        elif driver.loop is not loop:
            raise RuntimeError(
                "this AsyncClient belongs to the event loop it was first used on; make one "
                "client per loop (or use the thread-safe lockserver_client.Client)"
            )
        return driver

    # ----- acquiring -----

    async def acquire(
        self,
        name: str,
        *,
        wait: Optional[Seconds] = None,
        mode: Mode = "exclusive",
        ttl: Optional[Seconds] = None,
        lock_delay: Optional[Seconds] = None,
        request_id: Optional[str] = None,
    ) -> AsyncHandle:
        """Acquires the lock ``name`` (``mode``: ``"exclusive"`` or ``"shared"``).

        ``wait``: ``None`` (the default) waits without a deadline; ``0`` tries once and raises
        :class:`Locked` if the lock is held; a number of seconds waits up to that long, then
        raises :class:`LockTimeout` (never earlier). Waiters are served in FIFO order, on the
        server: no polling.

        ``ttl``: the hold's own TTL in seconds, besides the session's lease (renew it with
        :meth:`AsyncHandle.renew`). ``lock_delay``: after an involuntary end (TTL, session
        loss) nobody gets the name for this long. ``request_id``: the retry key (a random one
        by default; a repeat within 10 minutes on this session returns the same hold).

        Raises :class:`InvalidName` before sending anything if the name is bad, and
        :class:`ConnectionLost` when the outcome is unknown (the client withdraws whatever the
        request may have created).
        """
        if mode not in ("exclusive", "shared"):
            raise InvalidArgument(f"mode is 'exclusive' or 'shared', not {mode!r}")
        return await self._acquire(
            name, {"kind": "lock", "mode": mode}, wait, ttl, lock_delay, request_id
        )

    async def try_acquire(
        self,
        name: str,
        *,
        mode: Mode = "exclusive",
        ttl: Optional[Seconds] = None,
        lock_delay: Optional[Seconds] = None,
        request_id: Optional[str] = None,
    ) -> Optional[AsyncHandle]:
        """Takes the lock if it is free now; ``None`` if it is held."""
        try:
            return await self.acquire(
                name, wait=0, mode=mode, ttl=ttl, lock_delay=lock_delay, request_id=request_id
            )
        except Locked:
            return None

    async def acquire_semaphore(
        self,
        name: str,
        limit: int,
        *,
        permits: int = 1,
        wait: Optional[Seconds] = None,
        ttl: Optional[Seconds] = None,
        lock_delay: Optional[Seconds] = None,
        request_id: Optional[str] = None,
    ) -> AsyncHandle:
        """Takes ``permits`` of the semaphore ``name``'s ``limit`` permits (1 ≤ permits ≤
        limit), waiting as :meth:`acquire` does. Everyone using the name must agree on the
        limit (a mismatch while it is in use raises :class:`Conflict`)."""
        _check_permits(limit, permits)
        spec = {"kind": "semaphore", "limit": limit, "permits": permits}
        return await self._acquire(name, spec, wait, ttl, lock_delay, request_id)

    async def try_acquire_semaphore(
        self,
        name: str,
        limit: int,
        *,
        permits: int = 1,
        ttl: Optional[Seconds] = None,
        lock_delay: Optional[Seconds] = None,
        request_id: Optional[str] = None,
    ) -> Optional[AsyncHandle]:
        """Takes the permits if they are free now; ``None`` if not."""
        try:
            return await self.acquire_semaphore(
                name,
                limit,
                permits=permits,
                wait=0,
                ttl=ttl,
                lock_delay=lock_delay,
                request_id=request_id,
            )
        except Locked:
            return None

    def lock(
        self,
        name: str,
        *,
        wait: Optional[Seconds] = None,
        mode: Mode = "exclusive",
        ttl: Optional[Seconds] = None,
        lock_delay: Optional[Seconds] = None,
        request_id: Optional[str] = None,
    ) -> AsyncAcquisition:
        """The lock as an async context manager (``async with client.lock("db", wait=5) as
        lock:``): acquired on entry, released on exit. Awaiting it gives the handle."""
        return AsyncAcquisition(
            lambda: self.acquire(
                name, wait=wait, mode=mode, ttl=ttl, lock_delay=lock_delay, request_id=request_id
            )
        )

    def semaphore(
        self,
        name: str,
        limit: int,
        *,
        permits: int = 1,
        wait: Optional[Seconds] = None,
        ttl: Optional[Seconds] = None,
        lock_delay: Optional[Seconds] = None,
        request_id: Optional[str] = None,
    ) -> AsyncAcquisition:
        """Semaphore permits as an async context manager (see :meth:`lock`)."""
        return AsyncAcquisition(
            lambda: self.acquire_semaphore(
                name,
                limit,
                permits=permits,
                wait=wait,
                ttl=ttl,
                lock_delay=lock_delay,
                request_id=request_id,
            )
        )

    async def _acquire(
        self,
        name: str,
        spec: Dict[str, Any],
        wait: Optional[Seconds],
        ttl: Optional[Seconds],
        lock_delay: Optional[Seconds],
        request_id: Optional[str],
    ) -> AsyncHandle:
        name = validate_name(name)
        wait_s = None if wait is None else seconds(wait, "wait")
        request: Dict[str, Any] = {"op": "acquire", "name": name, **spec}
        request["wait_ms"] = None if wait_s is None else millis_up(wait_s)
        if ttl is not None:
            request["ttl_ms"] = millis_up(seconds(ttl, "ttl"))
        if lock_delay is not None:
            request["lock_delay_ms"] = millis_up(seconds(lock_delay, "lock_delay"))
        request["request_id"] = (
            new_request_id() if request_id is None else validate_request_id(request_id)
        )
        driver = self._get_driver()
        deadline = driver.loop.time() + wait_s if wait_s else None
        timeout = None if wait_s is None else wait_s + self._settings.request_timeout
        reply, lost = await driver.call(request, wait=wait_s, deadline=deadline, timeout=timeout)
        assert lost is not None
        return AsyncHandle(self, driver, reply["hold"], lost)

    # ----- the rest -----

    async def check(self, name: str, token: int) -> bool:
        """Whether ``token`` is the fencing token of a live hold of ``name`` (the server's
        CheckSequencer). It narrows the window before acting; a :class:`Fence` on the
        resource closes it."""
        name = validate_name(name)
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise InvalidArgument(f"a fencing token is an int >= 0, not {token!r}")
        driver = self._get_driver()
        reply, _ = await driver.call(
            {"op": "check", "name": name, "token": token},
            timeout=self._settings.request_timeout,
        )
        return reply.get("valid") is True

    async def close(self) -> None:
        """Ends the session now (a clean close: its holds are freed at once, with no
        lock-delay, and their lost signals fire with reason ``session``). The client opens a
        new session if it is used again."""
        driver = self._driver
        if driver is not None:
            if driver.loop.is_closed():
                self._driver = None
                return
            await driver.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient(addr={self.addr!r}, owner={self.owner!r})"


class AsyncAcquisition:
    """What :meth:`AsyncClient.lock` and :meth:`AsyncClient.semaphore` return: an async
    context manager that holds the lock for its block, or an awaitable giving the handle."""

    def __init__(self, start: Callable[[], Awaitable[AsyncHandle]]) -> None:
        self._start = start
        self._handle: Optional[AsyncHandle] = None

    def __await__(self) -> Generator[Any, None, AsyncHandle]:
        return self._start().__await__()

    async def __aenter__(self) -> AsyncHandle:
        self._handle = await self._start()
        return self._handle

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            await handle.__aexit__(exc_type, exc, tb)


class AsyncHandle:
    """One hold: a lock (exclusive or shared) or semaphore permits.

    Keep it for as long as you use the resource; send :attr:`token` with every write to it,
    and stop when the hold is lost (:attr:`is_lost`, :attr:`lost`, :meth:`on_lost`,
    :meth:`wait_lost`). :meth:`release` gives it back; so does leaving its ``async with``
    block, and so does dropping the handle (in the background, when it is collected).
    """

    def __init__(
        self, client: AsyncClient, driver: Driver, hold: Dict[str, Any], lost: LostState
    ) -> None:
        self._client = client  # keeps the client (and its session) alive while held
        self._driver = driver
        self._hold = dict(hold)
        self._lost = lost
        self._released = False

    # ----- what was granted -----

    @property
    def name(self) -> str:
        """The lock's or semaphore's name."""
        return str(self._hold["name"])

    @property
    def hold_id(self) -> str:
        """The hold's id (what a release and the admin routes use)."""
        return str(self._hold["hold_id"])

    @property
    def token(self) -> int:
        """The grant's fencing token: strictly increasing per name and overall, across
        releases, expiry and restarts. Pass it to the protected resource (see :class:`Fence`)."""
        return int(self._hold["token"])

    @property
    def kind(self) -> str:
        """``"lock"`` or ``"semaphore"``."""
        return str(self._hold.get("kind", "lock"))

    @property
    def mode(self) -> Optional[str]:
        """``"exclusive"`` or ``"shared"`` for a lock; ``None`` for a semaphore."""
        return self._hold.get("mode")

    @property
    def permits(self) -> int:
        """How many permits the hold takes (1 for a lock)."""
        return int(self._hold.get("permits") or 1)

    @property
    def limit(self) -> Optional[int]:
        """The semaphore's limit; ``None`` for a lock."""
        return self._hold.get("limit")

    @property
    def owner(self) -> str:
        """The owner label the server shows for the hold."""
        return str(self._hold.get("owner", ""))

    @property
    def expires_in(self) -> Optional[float]:
        """Seconds the hold's own TTL had left at the grant or the last renew (``None``: no
        TTL of its own; the session covers it)."""
        ms = self._hold.get("expires_in_ms")
        return None if ms is None else ms / 1000

    @property
    def hold(self) -> Dict[str, Any]:
        """The hold as the server last described it (a copy)."""
        return dict(self._hold)

    # ----- the lost signal -----

    @property
    def is_lost(self) -> bool:
        """Whether the hold has been lost."""
        return self._lost.reason is not None

    @property
    def lost_reason(self) -> Optional[LostReason]:
        """Why the hold was lost (``None`` while it is not)."""
        return self._lost.reason

    @property
    def lost(self) -> asyncio.Event:
        """An :class:`asyncio.Event` set when the hold is lost."""
        return self._lost.event

    def on_lost(self, callback: LostCallback) -> None:
        """Calls ``callback(reason)`` once when the hold is lost (at once if it already is).
        It runs on the client's event loop: keep it short and never block in it."""
        self._lost.add_callback(callback)

    async def wait_lost(self) -> Optional[LostReason]:
        """Waits until the hold is lost and returns why; returns ``None`` once the hold was
        released without a loss (so a watcher never hangs on a finished hold)."""
        await self._lost.ended_event.wait()
        return self._lost.reason

    # ----- release, renew -----

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called (or the context exited)."""
        return self._released

    async def release(self) -> None:
        """Releases the hold and waits for the server to confirm. Releasing a hold that was
        lost raises :class:`LockLost`; a second release does nothing."""
        if self._released:
            return
        self._released = True
        self._check_loop()
        reason = self._lost.reason
        if reason in _SERVER_SAID_GONE:
            self._driver.forget(self.hold_id)
            raise LockLost(reason)
        try:
            await self._driver.call(
                {"op": "release", "hold_id": self.hold_id},
                timeout=self._client._settings.request_timeout,
            )
        except NotFound:
            raise LockLost(self._lost.reason or LostReason.EXPIRED) from None
        finally:
            self._driver.forget(self.hold_id)

    async def renew(self, ttl: Union[Seconds, None, _Keep] = KEEP_TTL) -> None:
        """Renews the hold's own TTL: for its current TTL again (no argument), for ``ttl``
        seconds, or ``ttl=None`` to remove its expiry. Raises :class:`LockLost` if the hold is
        already gone."""
        if self._released:
            raise InvalidArgument("the hold was released")
        self._check_loop()
        request: Dict[str, Any] = {"op": "renew", "hold_id": self.hold_id}
        if ttl is None:
            request["ttl_ms"] = None
        elif not isinstance(ttl, _Keep):
            request["ttl_ms"] = millis_up(seconds(ttl, "ttl"))
        try:
            reply, _ = await self._driver.call(
                request, timeout=self._client._settings.request_timeout
            )
        except NotFound:
            raise LockLost(self._lost.reason or LostReason.EXPIRED) from None
        hold = reply.get("hold")
        if isinstance(hold, dict):
            self._hold = dict(hold)

    def _check_loop(self) -> None:
        if asyncio.get_running_loop() is self._driver.loop:
            return
        if self._driver.loop.is_closed():
            # Its client was closed (and its loop with it): the session, and the hold, ended.
            raise LockLost(self._lost.reason or LostReason.SESSION)
        raise RuntimeError("a handle is used on the event loop its client runs on")

    def release_in_background(self) -> None:
        """Releases the hold without waiting for the answer (safe from any thread)."""
        if self._released:
            return
        self._released = True
        self._driver.release_later_threadsafe(self.hold_id)

    async def __aenter__(self) -> AsyncHandle:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is None:
            # A lost hold raises LockLost here: the block ran without the lock at some point.
            await self.release()
            return
        if isinstance(exc, asyncio.CancelledError):
            # Awaiting inside a cancelled task could be cancelled again: let it go in the
            # background instead.
            self.release_in_background()
            return
        try:
            await self.release()
        except Exception as err:  # the block's own exception is the one to propagate
            log.debug("release after a failed block: %s", err)

    def __del__(self) -> None:
        try:
            if not self._released:
                self._released = True
                self._driver.release_later_threadsafe(self.hold_id)
        except Exception:  # interpreter shutdown: the session ends with the process
            pass

    def __repr__(self) -> str:
        state = f"lost={self._lost.reason.value}" if self._lost.reason else "held"
        if self._released:
            state = "released"
        return (
            f"<AsyncHandle {self.kind} {self.name!r} token={self.token} "
            f"hold_id={self.hold_id} {state}>"
        )


def _check_permits(limit: object, permits: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument(f"a semaphore's limit is an int >= 1, not {limit!r}")
    if isinstance(permits, bool) or not isinstance(permits, int) or not 1 <= permits <= limit:
        raise InvalidArgument(f"permits must be 1 to {limit}, not {permits!r}")
