"""The lost-lock signal of one hold, shared by its async and sync handles."""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from typing import Callable, List, Optional

log = logging.getLogger("lockserver_client")


class LostReason(str, enum.Enum):
    """Why a hold was lost. The values equal the wire's ``reason`` strings (a ``str`` enum:
    ``reason == "admin"`` works)."""

    #: Its own TTL ran out on the server.
    EXPIRED = "expired"
    #: Its session ended (lease ran out, closed, or it could not be resumed after a drop).
    SESSION = "session"
    #: An administrator force-released it.
    ADMIN = "admin"
    #: The server could not deliver the grant and gave it back.
    UNDELIVERABLE = "undeliverable"
    #: The client's local lease deadline passed without a renewed lease: the server may free
    #: the hold at any moment after it, so the client stops trusting it first.
    LEASE_DEADLINE = "lease_deadline"

    @classmethod
    def from_wire(cls, value: object) -> LostReason:
        try:
            return cls(value)
        except ValueError:
            # A reason this client does not know yet: the hold is gone all the same.
            return cls.SESSION

    def __str__(self) -> str:
        return self.value


LostCallback = Callable[[LostReason], object]


class LostState:
    """The signal: turns lost once (the first reason wins), or ends quietly when released.

    Created and fired on the driver's event loop; read from any thread. The driver keeps only
    a weak reference to it (handles own it), so a forgotten handle can be collected and
    released even while a callback refers back to it.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self.reason: Optional[LostReason] = None
        self.ended = False
        # asyncio.Event binds the running loop at creation on Python 3.9: made on the loop.
        self.event = asyncio.Event()
        self.ended_event = asyncio.Event()
        self.thread_event = threading.Event()
        self.thread_ended = threading.Event()
        self._callbacks: List[LostCallback] = []

    def fire(self, reason: LostReason) -> None:
        """Marks the hold lost and runs the callbacks (on the driver's loop)."""
        with self._mutex:
            if self.reason is not None or self.ended:
                return
            self.reason = reason
            self.ended = True
            callbacks, self._callbacks = self._callbacks, []
        self.event.set()
        self.ended_event.set()
        self.thread_event.set()
        self.thread_ended.set()
        for callback in callbacks:
            _run_callback(callback, reason)

    def end(self) -> None:
        """The hold was released: no loss will be reported; waiters stop waiting."""
        with self._mutex:
            if self.ended:
                return
            self.ended = True
            self._callbacks = []
        self.ended_event.set()
        self.thread_ended.set()

    def add_callback(self, callback: LostCallback) -> None:
        with self._mutex:
            if self.reason is None:
                if not self.ended:
                    self._callbacks.append(callback)
                return
            reason = self.reason
        _run_callback(callback, reason)


def _run_callback(callback: LostCallback, reason: LostReason) -> None:
    try:
        callback(reason)
    except Exception:  # a user's callback must not break the session's driver
        log.exception("a lost-lock callback raised")
