"""Lockserver's official Python client.

- :class:`Client` (blocking, thread-safe) and :class:`AsyncClient` (asyncio): locks
  (exclusive and shared), semaphores, try / timed / unbounded waits, fencing tokens, lost-lock
  notification, over one streaming session that keeps itself alive and resumes after a drop.
- :class:`Fence`: the resource-side rule for fencing tokens.
- :class:`LockserverClient`: the original Lockserver client's API, unchanged.

>>> from lockserver_client import Client
>>> client = Client("127.0.0.1:8080")
>>> with client.lock("invoices", wait=5) as lock:
...     print("holding", lock.name, "with fencing token", lock.token)

Layout: ``_async`` (AsyncClient, AsyncHandle), ``_sync`` (Client, Handle: the async client on
a background thread), ``_driver`` (the streaming session: ids, replies, keepalive, lease
deadline, reconnect and resume), ``_lost`` (the lost signal), ``_fence``, ``_errors``,
``_seed`` (the original API), ``_util`` (names, durations, addresses).
"""

from ._async import KEEP_TTL, AsyncAcquisition, AsyncClient, AsyncHandle
from ._errors import (
    AuthError,
    Cancelled,
    Conflict,
    ConnectionLost,
    Forbidden,
    InvalidArgument,
    InvalidName,
    Locked,
    LockError,
    LockLost,
    LockTimeout,
    NotAcquired,
    NotFound,
    SeedHTTPError,
    ServerError,
    StaleToken,
    Unauthorized,
)
from ._fence import Fence
from ._lost import LostReason
from ._seed import LockserverClient
from ._sync import Acquisition, Client, Handle
from ._util import validate_name

__version__ = "0.2.0"

__all__ = [
    "Acquisition",
    "AsyncAcquisition",
    "AsyncClient",
    "AsyncHandle",
    "AuthError",
    "Cancelled",
    "Client",
    "Conflict",
    "ConnectionLost",
    "Fence",
    "Forbidden",
    "Handle",
    "InvalidArgument",
    "InvalidName",
    "KEEP_TTL",
    "LockError",
    "LockLost",
    "LockTimeout",
    "Locked",
    "LockserverClient",
    "LostReason",
    "NotAcquired",
    "NotFound",
    "SeedHTTPError",
    "ServerError",
    "StaleToken",
    "Unauthorized",
    "validate_name",
    "__version__",
]
