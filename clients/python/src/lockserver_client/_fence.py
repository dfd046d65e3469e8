"""The resource-side rule for fencing tokens: keep the highest seen, refuse lower ones."""

from __future__ import annotations

import threading

from ._errors import InvalidArgument, StaleToken


class Fence:
    """Remembers the highest fencing token admitted and refuses any lower one.

    Put one in front of the resource a lock protects (one per resource: tokens rise across
    every name and every server restart). A holder that paused past its lease — GC, swap, a
    network partition — and wakes up after the lock passed on then cannot overwrite the newer
    holder's work. Equal tokens are admitted (one holder makes many writes). Thread-safe.

    >>> fence = Fence()
    >>> fence.admit(7)
    >>> fence.admit(7)   # the same holder again
    >>> fence.admit(9)   # a newer holder
    >>> fence.admit(7)   # the old holder woke up late
    Traceback (most recent call last):
    ...
    lockserver_client._errors.StaleToken: fencing token 7 is stale: 9 was already seen

    Store the highest token with the data when the resource is persistent, and start the
    fence from it (``Fence(highest=stored)``).
    """

    def __init__(self, highest: int = 0) -> None:
        self._mutex = threading.Lock()
        self._highest = _token(highest)

    def admit(self, token: int) -> None:
        """Admits ``token`` if it is at least the highest seen, and remembers it; raises
        :class:`~lockserver_client.StaleToken` otherwise."""
        token = _token(token)
        with self._mutex:
            if token < self._highest:
                raise StaleToken(token, self._highest)
            self._highest = token

    def try_admit(self, token: int) -> bool:
        """Like :meth:`admit`, answering ``False`` instead of raising."""
        try:
            self.admit(token)
        except StaleToken:
            return False
        return True

    @property
    def highest(self) -> int:
        """The highest token admitted so far (0 before any)."""
        with self._mutex:
            return self._highest

    def __repr__(self) -> str:
        return f"Fence(highest={self.highest})"


def _token(token: object) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise InvalidArgument(f"a fencing token is an int >= 0, not {token!r}")
    return token
