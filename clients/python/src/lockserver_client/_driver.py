"""The streaming session: one WebSocket connection (``GET /v1/session``) that is the client's
session, run by one asyncio task (the *driver*) on the client's event loop.

Callers hand the driver requests without ids; it numbers them, writes them and matches the
replies (which may come out of order). It also keeps the session alive (``ping`` every third
of the TTL), keeps the local lease deadline (send time of the last answered ping + ``lease_ms``
− (round trip + ``lease_ms`` × drift) − margin) and fires every hold's lost signal when it
passes, turns pushed ``lost`` events into lost signals, and reconnects after a drop:
``hello{session_id}`` resumes the session, and every request without an answer yet is sent
again under a new id (acquires keep their ``request_id``, so a repeat returns the same hold or
rejoins the same place in the queue). A request can then be answered under its old id (from
the server's replay buffer) or its new one: the first success counts, and an error counts
only from the newest id.

Everything here runs on the driver's loop; the only entry from other threads is
:meth:`Driver.release_later_threadsafe` (a handle collected on another thread).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import weakref
from typing import Any, Dict, List, Optional, Tuple, Union

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ._errors import ConnectionLost, LockError, error_from_detail
from ._lost import LostReason, LostState
from ._util import millis_up, parse_addr

log = logging.getLogger("lockserver_client")

MIN_BACKOFF = 0.05
MAX_BACKOFF = 1.0
#: Close codes of the server (API.md): the session is over / it was resumed elsewhere.
SESSION_ENDED = 4000
RESUMED_ELSEWHERE = 4001

# websockets >= 15 routes through a system-configured proxy unless told not to; a lock
# service on the local network must not silently go through one.
_CONNECT_KWARGS: Dict[str, Any] = {}
if "proxy" in inspect.signature(ws_connect.__init__).parameters:
    _CONNECT_KWARGS["proxy"] = None

Reply = Dict[str, Any]
Answer = Tuple[Reply, Optional[LostState]]


class Settings:
    """What the driver reads; the address changes when a ``not_leader`` hint says so."""

    def __init__(
        self,
        addr: str,
        secret: Optional[str],
        owner: str,
        session_ttl_ms: Optional[int],
        grace_ms: Optional[int],
        connect_timeout: float,
        request_timeout: float,
        lease_margin: float,
        drift: float,
    ) -> None:
        self.http_base, self.ws_url = parse_addr(addr)
        self.secret = secret
        self.owner = owner
        self.session_ttl_ms = session_ttl_ms
        self.grace_ms = grace_ms
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.lease_margin = lease_margin
        self.drift = drift
        self.max_redirects = 3

    def follow_leader(self, leader: str) -> None:
        try:
            self.http_base, self.ws_url = parse_addr(leader)
            log.debug("following the leader hint to %s", self.http_base)
        except LockError:
            log.warning("ignoring an unusable leader hint %r", leader)


class _Slot:
    """One request the driver has taken and not yet answered."""

    __slots__ = ("request", "op", "wait", "deadline", "future", "latest", "ids", "abandoned")

    def __init__(
        self,
        request: Reply,
        wait: Optional[float],
        deadline: Optional[float],
        future: Optional[asyncio.Future[Answer]],
    ) -> None:
        self.request = request
        self.op: str = request["op"]
        #: An acquire's wait in seconds (None: no deadline), for its error.
        self.wait = wait
        #: An acquire's wait deadline on the loop clock (re-sends wait only for what is left).
        self.deadline = deadline
        #: None for the driver's own requests (background releases, cancels).
        self.future = future
        #: The id it was last sent under (None: not sent on the current connection).
        self.latest: Optional[int] = None
        #: Every id it was sent under.
        self.ids: List[int] = []
        self.abandoned = False


class _Session:
    __slots__ = ("id", "ttl", "grace")

    def __init__(self, session_id: str, ttl: float, grace: float) -> None:
        self.id = session_id
        self.ttl = ttl
        self.grace = grace


class _Io(Exception):
    """The connection could not be made or broke: retry while the session may live."""


class _Leader(Exception):
    def __init__(self, leader: str) -> None:
        super().__init__(leader)
        self.leader = leader


class _Refused(Exception):
    """The server answered but will not have us (credential, arguments): no retry helps."""

    def __init__(self, error: LockError) -> None:
        super().__init__(str(error))
        self.error = error


class Driver:
    """The session's state and the task that runs its connection. Bound to one loop."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self._runner: Optional[asyncio.Task[None]] = None
        self._wake = asyncio.Event()
        # The open connection (hello answered), its write queue and helper tasks.
        self._ws: Any = None
        self._queue: Optional[asyncio.Queue[str]] = None
        self._tasks: List[asyncio.Task[None]] = []
        self._session: Optional[_Session] = None
        self._next_id = 1
        self._next_slot = 1
        self._slots: Dict[int, _Slot] = {}
        self._by_id: Dict[int, int] = {}
        # hold_id → its lost signal. Weak: the handles own the signal, so a forgotten handle
        # is collected (and released) even if a callback refers back to it.
        self._holds: Dict[str, weakref.ref[LostState]] = {}
        # Outstanding pings: id → send time.
        self._pings: Dict[int, float] = {}
        # The local lease deadline (already less the drift, round trip and margin), and the
        # latest the server could still hold the session (last keepalive sent + lease).
        self._deadline: Optional[float] = None
        self._deadline_timer: Optional[asyncio.TimerHandle] = None
        self._lease_end: Optional[float] = None
        self._dropped_at: Optional[float] = None
        self._next_attempt = 0.0
        self._backoff = MIN_BACKOFF

    # ----- the callers' side -----

    @property
    def session_id(self) -> Optional[str]:
        return self._session.id if self._session else None

    async def call(
        self,
        request: Reply,
        *,
        wait: Optional[float] = 0.0,
        deadline: Optional[float] = None,
        timeout: Optional[float] = None,
    ) -> Answer:
        """Sends one request and waits for its answer (``timeout``: at most that long, then
        :class:`ConnectionLost`). An acquire is withdrawn (``cancel``) if the caller is
        cancelled or gives up before the answer; a grant that comes anyway is given back."""
        slot, future = self._submit(request, wait, deadline)
        try:
            if timeout is None:
                return await asyncio.shield(future)
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            self._abandon(slot, future)
            raise ConnectionLost(
                f"no answer to {request['op']} within {timeout:g} s; the outcome is unknown"
            ) from None
        except asyncio.CancelledError:
            self._abandon(slot, future)
            raise

    def release_later(self, hold_id: str) -> None:
        """Releases a hold without waiting for the answer (a handle dropped unreleased)."""
        ref = self._holds.pop(hold_id, None)
        state = ref() if ref else None
        if state is not None:
            state.end()
        if self._session is not None:
            self._internal({"op": "release", "hold_id": hold_id})

    def release_later_threadsafe(self, hold_id: str) -> None:
        try:
            self.loop.call_soon_threadsafe(self.release_later, hold_id)
        except RuntimeError:
            pass  # the loop is closed: the session ended with it

    def forget(self, hold_id: str) -> None:
        """The hold was released by its handle: stop watching it."""
        ref = self._holds.pop(hold_id, None)
        state = ref() if ref else None
        if state is not None:
            state.end()

    async def close(self) -> None:
        """Ends the session at once (a clean close: its holds are freed without lock-delay)
        and waits for the server's close frame (briefly). The driver can be used again: the
        next request opens a new session."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await self._close_connection()
        self._fail_all(ConnectionLost("the client was closed"))

    async def _close_connection(self) -> None:
        """Closes the connection cleanly (the server ends the session at once) and marks the
        session over here."""
        ws = self._ws
        self._drop_connection()
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(1000, "client closed"), 2.0)
            except asyncio.CancelledError:
                _abort(ws)
                self._end_session(LostReason.SESSION)
                raise
            except Exception:  # the connection is gone already: nothing to end cleanly
                _abort(ws)
        self._end_session(LostReason.SESSION)

    def _submit(
        self, request: Reply, wait: Optional[float], deadline: Optional[float]
    ) -> Tuple[int, asyncio.Future[Answer]]:
        self._ensure_running()
        slot = self._next_slot
        self._next_slot += 1
        future: asyncio.Future[Answer] = self.loop.create_future()
        self._slots[slot] = _Slot(request, wait, deadline, future)
        if self._queue is not None:
            self._send_slot(slot)
        else:
            self._wake.set()
        return slot, future

    def _abandon(self, slot: int, future: asyncio.Future[Answer]) -> None:
        """The caller went away: withdraw its acquire, or give back a grant it missed."""
        if future.done():
            if not future.cancelled() and future.exception() is None:
                reply, lost = future.result()
                if lost is not None:
                    self.release_later(reply["hold"]["hold_id"])
            return
        future.cancel()
        entry = self._slots.get(slot)
        if entry is None:
            return
        entry.future = None
        if entry.op != "acquire":
            return  # its answer, when it comes, is dropped
        if entry.latest is not None:
            entry.abandoned = True
            self._internal({"op": "cancel", "target": entry.latest})
        elif not entry.ids:
            del self._slots[slot]  # never sent: nothing to withdraw
        else:
            # Sent on an earlier connection: re-sent on the next one, then cancelled.
            entry.abandoned = True

    def _internal(self, request: Reply) -> None:
        """A request of the driver's own (nobody waits for its answer)."""
        self._ensure_running()
        slot = self._next_slot
        self._next_slot += 1
        self._slots[slot] = _Slot(request, 0.0, None, None)
        if self._queue is not None:
            self._send_slot(slot)
        else:
            self._wake.set()

    def _take_id(self) -> int:
        request_id = self._next_id
        self._next_id += 1
        return request_id

    def _write(self, request: Reply) -> None:
        assert self._queue is not None
        self._queue.put_nowait(json.dumps(request, separators=(",", ":"), ensure_ascii=False))

    def _send_slot(self, slot: int) -> None:
        """Writes a slot's request under a fresh id."""
        entry = self._slots.get(slot)
        if entry is None or self._queue is None:
            return
        request_id = self._take_id()
        request = dict(entry.request)
        request["id"] = request_id
        if entry.op == "acquire" and entry.ids and entry.deadline is not None:
            # A re-send waits only for what is left of the caller's wait.
            request["wait_ms"] = millis_up(max(0.0, entry.deadline - self.loop.time()))
        if entry.op == "cancel":
            # A cancel follows its target to the target's newest id.
            target_slot = self._by_id.get(request["target"])
            target = self._slots.get(target_slot) if target_slot is not None else None
            if target is not None and target.latest is not None:
                request["target"] = target.latest
        entry.latest = request_id
        entry.ids.append(request_id)
        self._by_id[request_id] = slot
        self._write(request)
        if entry.abandoned and entry.op == "acquire":
            self._internal({"op": "cancel", "target": request_id})

    # ----- the connection -----

    def _ensure_running(self) -> None:
        if self._runner is None or self._runner.done():
            self._runner = self.loop.create_task(self._run())

    def _wants_connection(self) -> bool:
        return self._session is not None or bool(self._slots)

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                if self._runner is asyncio.current_task():
                    # Cancelled from outside, not by close(): the loop is shutting down
                    # (asyncio.run cancels every task at its end). End the session cleanly,
                    # as close() would, so its holds are freed now rather than at its lease.
                    self._runner = None
                    await self._close_connection()
                    self._fail_all(ConnectionLost("the client's event loop is shutting down"))
                raise
            except Exception as bug:  # never leave callers waiting on a dead task
                log.exception("the session's driver failed; reconnecting")
                ws = self._ws
                self._drop_connection()
                if ws is not None:
                    _abort(ws)
                self._session_over(f"the client's session driver failed: {bug!r}")
                self._fail_all(ConnectionLost(f"the client's session driver failed: {bug!r}"))
                self._next_attempt = self.loop.time() + MAX_BACKOFF

    async def _step(self) -> None:
        if self._ws is not None:
            await self._serve(self._ws)
            return
        if not self._wants_connection():
            self._wake.clear()
            await self._wake.wait()
            return
        delay = self._next_attempt - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
            return
        await self._connect()

    async def _serve(self, ws: Any) -> None:
        """Reads the connection's frames until it ends."""
        close = None
        try:
            while True:
                message = await ws.recv()
                if isinstance(message, str):
                    self._on_text(message)
        except ConnectionClosed as closed:
            close = closed.rcvd
        except (OSError, WebSocketException) as err:
            log.debug("the session's connection failed: %s", err)
        self._disconnected(ws, close.code if close else None, close.reason if close else "")

    async def _pinger(self, ttl: float) -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            if self._queue is None:
                return
            ping_id = self._take_id()
            self._pings[ping_id] = self.loop.time()
            self._write({"id": ping_id, "op": "ping"})

    async def _writer(self, ws: Any, queue: asyncio.Queue[str]) -> None:
        try:
            while True:
                text = await queue.get()
                await ws.send(text)
        except ConnectionClosed:
            return  # the reader sees it too
        except (OSError, WebSocketException) as err:
            log.debug("cannot write to the session's connection: %s", err)
            _abort(ws)

    async def _connect(self) -> None:
        hops = 0
        while True:
            try:
                await self._try_connect()
                self._backoff = MIN_BACKOFF
                return
            except _Leader as hint:
                if hops < self.settings.max_redirects:
                    hops += 1
                    self.settings.follow_leader(hint.leader)
                    continue
                self._connect_failed(f"too many leader redirects (last: {hint.leader})")
                return
            except _Refused as refused:
                self._fail_all(refused.error)
                self._session = None
                self._next_attempt = self.loop.time() + self._backoff
                return
            except _Io as failure:
                log.debug("cannot connect the session: %s", failure)
                self._connect_failed(str(failure))
                return

    def _connect_failed(self, message: str) -> None:
        """After a failed attempt: keep trying while the session may still be resumed;
        otherwise give up on everything waiting."""
        now = self.loop.time()
        self._next_attempt = now + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        session = self._session
        if session is not None:
            ends = [end for end in (self._lease_end,) if end is not None]
            if self._dropped_at is not None:
                ends.append(self._dropped_at + session.grace)
            if ends and now < max(ends):
                # Requests whose wait is over cannot be helped by waiting for the reconnect.
                for slot, entry in list(self._slots.items()):
                    if (
                        entry.future is not None
                        and entry.deadline is not None
                        and entry.deadline <= now
                    ):
                        del self._slots[slot]
                        self._fail(entry, ConnectionLost(message))
                return
            self._session_over("the session could not be resumed in time")
        self._fail_all(ConnectionLost(message))

    async def _try_connect(self) -> None:
        settings = self.settings
        url = settings.ws_url
        headers = []
        if settings.secret is not None:
            headers.append(("Authorization", f"Bearer {settings.secret}"))
        timeout = settings.connect_timeout
        try:
            ws = await asyncio.wait_for(
                ws_connect(
                    url,
                    additional_headers=headers,
                    open_timeout=None,
                    close_timeout=2,
                    compression=None,
                    max_size=2**24,
                    **_CONNECT_KWARGS,
                ),
                timeout,
            )
        except InvalidStatus as refused:
            raise _http_refusal(refused.response.status_code, refused.response.body) from None
        except asyncio.TimeoutError:
            raise _Io(f"no connection to {url} within {timeout:g} s") from None
        except (OSError, WebSocketException, ValueError) as err:
            raise _Io(f"cannot connect to {url}: {err}") from None
        try:
            await self._hello(ws, timeout)
        except BaseException:
            _abort(ws)
            raise
        # Everything not answered yet goes (again) on this connection, in the order taken.
        self._ws = ws
        self._queue = asyncio.Queue()
        self._pings.clear()
        assert self._session is not None
        self._tasks = [
            self.loop.create_task(self._writer(ws, self._queue)),
            self.loop.create_task(self._pinger(self._session.ttl)),
        ]
        for slot in sorted(self._slots):
            self._send_slot(slot)

    async def _hello(self, ws: Any, timeout: float) -> None:
        """Says hello: resumes the session we have, or opens one."""
        settings = self.settings
        while True:
            resume = self._session.id if self._session else None
            hello_id = self._take_id()
            hello: Reply = {"id": hello_id, "op": "hello", "session_id": resume}
            if resume is None:
                if settings.session_ttl_ms is not None:
                    hello["ttl_ms"] = settings.session_ttl_ms
                hello["owner"] = settings.owner
            if settings.grace_ms is not None:
                hello["grace_ms"] = settings.grace_ms
            sent = self.loop.time()
            try:
                await ws.send(json.dumps(hello, separators=(",", ":"), ensure_ascii=False))
                reply = await asyncio.wait_for(_reply_to(ws, hello_id), timeout)
            except asyncio.TimeoutError:
                raise _Io(f"no answer to hello within {timeout:g} s") from None
            except ConnectionClosed as closed:
                reason = closed.rcvd.reason if closed.rcvd else "no close frame"
                raise _Io(f"the server closed the connection: {reason}") from None
            except (OSError, WebSocketException) as err:
                raise _Io(f"the connection failed: {err}") from None
            if reply.get("ok") is True:
                session_id = reply.get("session_id")
                ttl_ms = reply.get("ttl_ms")
                if not isinstance(session_id, str) or not isinstance(ttl_ms, int):
                    raise _Io("the hello reply has no session")
                grace_ms = reply.get("grace_ms") or 0
                self._session = _Session(session_id, ttl_ms / 1000, grace_ms / 1000)
                self._extend_lease(sent, reply.get("lease_ms"))
                self._dropped_at = None
                return
            detail = reply.get("error") or {}
            code = detail.get("code")
            if code == "not_found" and resume is not None:
                # It ended while we were away: everything of it is gone. Open a new one.
                self._session_over("the session ended while disconnected")
                continue
            if code == "not_leader":
                if detail.get("leader"):
                    raise _Leader(str(detail["leader"]))
                raise _Io(f"not the leader: {detail.get('message', '')}")
            if code in ("unavailable", "internal", "limit_exceeded"):
                raise _Io(f"{code}: {detail.get('message', '')}")
            raise _Refused(error_from_detail(detail))

    def _drop_connection(self) -> None:
        self._ws = None
        self._queue = None
        self._pings.clear()
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        for entry in self._slots.values():
            entry.latest = None

    def _disconnected(self, ws: Any, code: Optional[int], reason: str) -> None:
        """The connection is gone; ``code`` is the server's close code, if it sent one."""
        if self._ws is not ws:
            return
        self._drop_connection()
        now = self.loop.time()
        self._dropped_at = now
        self._next_attempt = now
        if code == SESSION_ENDED:
            self._session_over(reason or "the session ended")
        elif code == RESUMED_ELSEWHERE:
            self._session_over("the session was resumed on another connection")
        elif code is not None:
            log.debug("the server closed the session's connection: %s %s", code, reason)

    # ----- frames from the server -----

    def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            log.warning("unreadable frame from the server: %.200s", text)
            return
        if not isinstance(message, dict):
            return
        if "event" in message:
            if message.get("event") == "lost":
                ref = self._holds.pop(str(message.get("hold_id")), None)
                state = ref() if ref else None
                if state is not None:
                    state.fire(LostReason.from_wire(message.get("reason")))
            return
        request_id = message.get("id")
        if not isinstance(request_id, int):
            log.warning("the server could not read a request: %s", message.get("error"))
            return
        ok = message.get("ok") is True
        if request_id in self._pings:
            sent = self._pings.pop(request_id)
            if ok:
                self._extend_lease(sent, message.get("lease_ms"))
            elif (message.get("error") or {}).get("code") == "not_found":
                self._session_over("the session has ended")
            return
        slot = self._by_id.get(request_id)
        entry = self._slots.get(slot) if slot is not None else None
        if slot is None or entry is None:
            return
        if not ok and entry.latest != request_id:
            return  # an error under an older id: the newest one decides
        del self._slots[slot]
        for old in entry.ids:
            self._by_id.pop(old, None)
        detail = message.get("error") or {}
        if not ok and detail.get("code") == "not_leader" and detail.get("leader"):
            # Reconnect to the leader; the request is sent again there.
            self.settings.follow_leader(str(detail["leader"]))
            entry.latest = None
            self._slots[slot] = entry
            ws = self._ws
            self._disconnected(ws, None, "")
            _abort(ws)
            return
        self._answer(entry, message, ok)

    def _answer(self, entry: _Slot, message: Reply, ok: bool) -> None:
        """Hands a reply to its caller (or, for an abandoned acquire, gives back its grant)."""
        future = entry.future
        hold = message.get("hold") if ok and entry.op == "acquire" else None
        if isinstance(hold, dict):
            hold_id = str(hold.get("hold_id"))
            if entry.abandoned or future is None or future.done():
                self._internal({"op": "release", "hold_id": hold_id})
                return
            ref = self._holds.get(hold_id)
            state = ref() if ref else None
            if state is None:  # a request_id repeat of a live hold shares its signal
                state = LostState()
                self._holds[hold_id] = weakref.ref(state)
            if self._deadline is not None and self.loop.time() >= self._deadline:
                state.fire(LostReason.LEASE_DEADLINE)
            future.set_result((message, state))
            return
        if future is None or future.done():
            return
        error = message.get("error") or {}
        resent = len(entry.ids) > 1
        if not ok and entry.op == "release" and resent and error.get("code") == "not_found":
            # A re-sent release whose first answer was lost with the connection: the hold is
            # gone either way, which is what the release asked for.
            ok = True
        if ok:
            future.set_result((message, None))
        else:
            future.set_exception(error_from_detail(error, entry.wait))

    # ----- the lease -----

    def _extend_lease(self, sent: float, lease_ms: object) -> None:
        """A committed keepalive sent at ``sent`` gave ``lease_ms``: move the local deadline."""
        if not isinstance(lease_ms, int):
            return
        lease = lease_ms / 1000
        round_trip = max(0.0, self.loop.time() - sent)
        safety = round_trip + lease * self.settings.drift + self.settings.lease_margin
        deadline = sent + max(0.0, lease - safety)
        if self._deadline is None or deadline > self._deadline:
            self._deadline = deadline
            self._schedule_deadline()
        end = sent + lease
        if self._lease_end is None or end > self._lease_end:
            self._lease_end = end

    def _schedule_deadline(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        if self._deadline is not None:
            self._deadline_timer = self.loop.call_at(self._deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_timer = None
        if self._deadline is None:
            return
        if self.loop.time() < self._deadline:
            self._schedule_deadline()
            return
        if self._holds:
            log.warning("lease deadline passed without a renewed lease; holds are lost")
        self._fire_all(LostReason.LEASE_DEADLINE)

    def _fire_all(self, reason: LostReason) -> None:
        holds, self._holds = self._holds, {}
        for ref in holds.values():
            state = ref()
            if state is not None:
                state.fire(reason)

    # ----- endings -----

    def _end_session(self, reason: LostReason) -> None:
        self._session = None
        self._deadline = None
        self._schedule_deadline()
        self._lease_end = None
        self._fire_all(reason)

    def _session_over(self, why: str) -> None:
        """The session has ended: every hold is lost, every request sent on it fails with
        :class:`ConnectionLost` (nothing it created survives) and the driver's own requests
        for it are moot. Unsent requests of the caller wait for a new session."""
        self._end_session(LostReason.SESSION)
        for slot, entry in list(self._slots.items()):
            if entry.future is None:
                del self._slots[slot]
                for request_id in entry.ids:
                    self._by_id.pop(request_id, None)
                continue
            if entry.op == "release":
                # Ending the session released it.
                del self._slots[slot]
                for request_id in entry.ids:
                    self._by_id.pop(request_id, None)
                if not entry.future.done():
                    entry.future.set_result(({"ok": True}, None))
                continue
            if entry.ids:
                del self._slots[slot]
                self._fail(entry, ConnectionLost(why))

    def _fail(self, entry: _Slot, error: LockError) -> None:
        for request_id in entry.ids:
            self._by_id.pop(request_id, None)
        if entry.future is not None and not entry.future.done():
            entry.future.set_exception(error)

    def _fail_all(self, error: LockError) -> None:
        slots, self._slots = self._slots, {}
        self._by_id.clear()
        for entry in slots.values():
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(error)


async def _reply_to(ws: Any, request_id: int) -> Reply:
    """Reads frames until the reply ``request_id`` comes (nothing else comes before a hello's
    reply)."""
    while True:
        message = await ws.recv()
        if not isinstance(message, str):
            continue
        try:
            reply = json.loads(message)
        except ValueError:
            continue
        if isinstance(reply, dict) and reply.get("id") == request_id:
            return reply


def _http_refusal(status: int, body: Optional[Union[bytes, bytearray]]) -> Exception:
    """The upgrade was answered with an HTTP error."""
    try:
        detail = json.loads(body or b"")["error"]
        code = detail["code"]
    except (ValueError, KeyError, TypeError):
        text = (body or b"").decode("utf-8", "replace")[:200]
        return _Io(f"the server answered HTTP {status} to the session upgrade: {text}")
    if code == "not_leader":
        if detail.get("leader"):
            return _Leader(str(detail["leader"]))
        return _Io(f"not the leader: {detail.get('message', '')}")
    if code in ("unavailable", "internal", "limit_exceeded"):
        return _Io(f"{code}: {detail.get('message', '')}")
    return _Refused(error_from_detail(detail))


def _abort(ws: Any) -> None:
    """Drops a connection at once (no close handshake)."""
    transport = getattr(ws, "transport", None)
    if transport is not None:
        transport.abort()
