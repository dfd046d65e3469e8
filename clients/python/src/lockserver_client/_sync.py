"""The blocking client (:class:`Client`): the asyncio client run on a background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import weakref
from types import TracebackType
from typing import Any, Callable, Coroutine, Dict, Optional, Type, TypeVar, Union

from ._async import KEEP_TTL, AsyncClient, AsyncHandle, Mode, _Keep
from ._lost import LostCallback, LostReason
from ._util import Seconds

log = logging.getLogger("lockserver_client")

T = TypeVar("T")


class _LoopThread:
    """A daemon thread running one event loop, started on first use and stopped by
    :meth:`stop` (a later use starts a new one). It owns the loop; the client's driver task
    runs on it, and so do the handles' lost callbacks."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._mutex:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=_run_loop, args=(loop, ready), name="lockserver-client", daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, function: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """Runs ``function(*args, **kwargs)`` on the loop and waits for its result. An
        interrupted wait (Ctrl-C) cancels it (a pending acquire is withdrawn)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "the blocking lockserver_client.Client cannot be called from its own callback "
                "thread (a lost callback): hand the work to another thread"
            )
        loop = self._ensure()
        future = asyncio.run_coroutine_threadsafe(function(*args, **kwargs), loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def call_soon(self, function: Callable[..., Any], *args: Any) -> None:
        with self._mutex:
            loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(function, *args)
            except RuntimeError:
                pass

    @property
    def running(self) -> bool:
        with self._mutex:
            return self._loop is not None

    def stop(self) -> None:
        with self._mutex:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(5)


def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
        # Stopped: end what is left (the driver's tasks) before closing the loop.
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def _shutdown(runner: _LoopThread, client: AsyncClient) -> None:
    """Ends the session cleanly (bounded) and stops the thread: at close, collection or exit."""
    if not runner.running:
        return
    try:
        loop = runner._ensure()
        future = asyncio.run_coroutine_threadsafe(client.close(), loop)
        future.result(timeout=3)
    except (concurrent.futures.TimeoutError, RuntimeError, Exception) as err:
        log.debug("closing the session at shutdown: %s", err)
    runner.stop()


class Client:
    """A blocking Lockserver client, safe to share between threads: one streaming session,
    run by an :class:`AsyncClient` on a background thread.

    Takes the same arguments as :class:`AsyncClient` (``addr``, ``secret``, ``owner``,
    ``session_ttl``, ``grace``, ``connect_timeout``, ``request_timeout``, ``lease_margin``,
    ``drift``); the environment (``LOCKSERVER_ADDR``, ``LOCKSERVER_SECRET``,
    ``LOCKSERVER_OWNER``) fills in what is not given.

    >>> client = Client("127.0.0.1:8080")
    >>> with client.lock("reports", wait=5) as lock:
    ...     write_report(fencing_token=lock.token)
    >>> client.close()

    The session ends at :meth:`close`, when the client is used as a context manager and its
    block ends, when the client is collected, or at interpreter exit.
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
        self._async = AsyncClient(
            addr,
            secret=secret,
            owner=owner,
            session_ttl=session_ttl,
            grace=grace,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            lease_margin=lease_margin,
            drift=drift,
        )
        self._runner = _LoopThread()
        self._finalizer = weakref.finalize(self, _shutdown, self._runner, self._async)

    @property
    def owner(self) -> str:
        """The owner label this client sends."""
        return self._async.owner

    @property
    def addr(self) -> str:
        """The server's base URL (``http://host:port``)."""
        return self._async.addr

    @property
    def session_id(self) -> Optional[str]:
        """The current session's id (``None`` before the first request or after close)."""
        return self._async.session_id

    def acquire(
        self,
        name: str,
        *,
        wait: Optional[Seconds] = None,
        mode: Mode = "exclusive",
        ttl: Optional[Seconds] = None,
        lock_delay: Optional[Seconds] = None,
        request_id: Optional[str] = None,
    ) -> Handle:
        """Acquires the lock ``name``; see :meth:`AsyncClient.acquire` for the arguments.
        ``wait=None`` waits without a deadline, ``wait=0`` tries once (:class:`Locked`),
        ``wait=5`` waits up to 5 s (:class:`LockTimeout`)."""
        inner = self._runner.run(
            self._async.acquire,
            name,
            wait=wait,
            mode=mode,
            ttl=ttl,
            lock_delay=lock_delay,
            request_id=request_id,
        )
        return Handle(self, inner)

    def try_acquire(
        self,
        name: str,
        *,
        mode: Mode = "exclusive",
        ttl: Optional[Seconds] = None,
        lock_delay: Optional[Seconds] = None,
        request_id: Optional[str] = None,
    ) -> Optional[Handle]:
        """Takes the lock if it is free now; ``None`` if it is held."""
        inner = self._runner.run(
            self._async.try_acquire,
            name,
            mode=mode,
            ttl=ttl,
            lock_delay=lock_delay,
            request_id=request_id,
        )
        return None if inner is None else Handle(self, inner)

    def acquire_semaphore(
        self,
        name: str,
        limit: int,
        *,
        permits: int = 1,
        wait: Optional[Seconds] = None,
        ttl: Optional[Seconds] = None,
        lock_delay: Optional[Seconds] = None,
        request_id: Optional[str] = None,
    ) -> Handle:
        """Takes ``permits`` of the semaphore ``name``'s ``limit``; see
        :meth:`AsyncClient.acquire_semaphore`."""
        inner = self._runner.run(
            self._async.acquire_semaphore,
            name,
            limit,
            permits=permits,
            wait=wait,
            ttl=ttl,
            lock_delay=lock_delay,
            request_id=request_id,
        )
        return Handle(self, inner)

    def try_acquire_semaphore(
        self,
        name: str,
        limit: int,
        *,
        permits: int = 1,
        ttl: Optional[Seconds] = None,
        lock_delay: Optional[Seconds] = None,
        request_id: Optional[str] = None,
    ) -> Optional[Handle]:
        """Takes the permits if they are free now; ``None`` if not."""
        inner = self._runner.run(
            self._async.try_acquire_semaphore,
            name,
            limit,
            permits=permits,
            ttl=ttl,
            lock_delay=lock_delay,
            request_id=request_id,
        )
        return None if inner is None else Handle(self, inner)

    def lock(
        self,
        name: str,
        *,
        wait: Optional[Seconds] = None,
        mode: Mode = "exclusive",
        ttl: Optional[Seconds] = None,
        lock_delay: Optional[Seconds] = None,
        request_id: Optional[str] = None,
    ) -> Acquisition:
        """The lock as a context manager (``with client.lock("db", wait=5) as lock:``):
        acquired on entry, released on exit."""
        return Acquisition(
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
    ) -> Acquisition:
        """Semaphore permits as a context manager (see :meth:`lock`)."""
        return Acquisition(
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

    def check(self, name: str, token: int) -> bool:
        """Whether ``token`` is the fencing token of a live hold of ``name``."""
        return self._runner.run(self._async.check, name, token)

    def close(self) -> None:
        """Ends the session now (its holds are freed at once and their lost signals fire) and
        stops the background thread. The client starts again if it is used again."""
        _shutdown(self._runner, self._async)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(addr={self.addr!r}, owner={self.owner!r})"


class Acquisition:
    """What :meth:`Client.lock` and :meth:`Client.semaphore` return: a context manager that
    holds the lock for its block."""

    def __init__(self, start: Callable[[], Handle]) -> None:
        self._start = start
        self._handle: Optional[Handle] = None

    def __enter__(self) -> Handle:
        self._handle = self._start()
        return self._handle

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.__exit__(exc_type, exc, tb)


class Handle:
    """One hold, for blocking code (see :class:`AsyncHandle`, which it wraps).

    Keep it for as long as you use the resource; send :attr:`token` with every write, and stop
    when the hold is lost (:attr:`is_lost`, :attr:`lost` — a :class:`threading.Event` —,
    :meth:`on_lost`, :meth:`wait_lost`). Released by :meth:`release`, by leaving its ``with``
    block, or in the background when it is collected.
    """

    def __init__(self, client: Client, inner: AsyncHandle) -> None:
        self._client = client
        self._inner = inner

    @property
    def name(self) -> str:
        """The lock's or semaphore's name."""
        return self._inner.name

    @property
    def hold_id(self) -> str:
        """The hold's id (what a release and the admin routes use)."""
        return self._inner.hold_id

    @property
    def token(self) -> int:
        """The grant's fencing token (see :attr:`AsyncHandle.token`)."""
        return self._inner.token

    @property
    def kind(self) -> str:
        """``"lock"`` or ``"semaphore"``."""
        return self._inner.kind

    @property
    def mode(self) -> Optional[str]:
        """``"exclusive"`` or ``"shared"`` for a lock; ``None`` for a semaphore."""
        return self._inner.mode

    @property
    def permits(self) -> int:
        """How many permits the hold takes (1 for a lock)."""
        return self._inner.permits

    @property
    def limit(self) -> Optional[int]:
        """The semaphore's limit; ``None`` for a lock."""
        return self._inner.limit

    @property
    def owner(self) -> str:
        """The owner label the server shows for the hold."""
        return self._inner.owner

    @property
    def expires_in(self) -> Optional[float]:
        """Seconds the hold's own TTL had left at the grant or the last renew
        (``None``: no TTL of its own)."""
        return self._inner.expires_in

    @property
    def hold(self) -> Dict[str, Any]:
        """The hold as the server last described it (a copy)."""
        return self._inner.hold

    @property
    def is_lost(self) -> bool:
        """Whether the hold has been lost."""
        return self._inner.is_lost

    @property
    def lost_reason(self) -> Optional[LostReason]:
        """Why the hold was lost (``None`` while it is not)."""
        return self._inner.lost_reason

    @property
    def lost(self) -> threading.Event:
        """A :class:`threading.Event` set when the hold is lost."""
        return self._inner._lost.thread_event

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called (or the block exited)."""
        return self._inner.released

    def on_lost(self, callback: LostCallback) -> None:
        """Calls ``callback(reason)`` once when the hold is lost (at once if it already is).
        It runs on the client's background thread: keep it short, and do not call the
        blocking client from it."""
        self._inner.on_lost(callback)

    def wait_lost(self, timeout: Optional[float] = None) -> Optional[LostReason]:
        """Blocks until the hold is lost (returns the reason), it is released (returns
        ``None``) or ``timeout`` seconds pass (returns ``None``)."""
        self._inner._lost.thread_ended.wait(timeout)
        return self._inner.lost_reason

    def release(self) -> None:
        """Releases the hold and waits for the server; raises :class:`LockLost` if it was
        lost. A second release does nothing."""
        self._client._runner.run(self._inner.release)

    def renew(self, ttl: Union[Seconds, None, _Keep] = KEEP_TTL) -> None:
        """Renews the hold's own TTL (see :meth:`AsyncHandle.renew`)."""
        self._client._runner.run(self._inner.renew, ttl)

    def __enter__(self) -> Handle:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is None:
            self.release()  # a lost hold raises LockLost: the block ran without the lock
            return
        try:
            self.release()
        except Exception as err:  # the block's own exception is the one to propagate
            log.debug("release after a failed block: %s", err)

    def __repr__(self) -> str:
        return repr(self._inner).replace("<AsyncHandle", "<Handle", 1)
