"""Checks and conversions shared by the clients: names, durations, addresses, owners."""

from __future__ import annotations

import datetime
import math
import os
import secrets
import socket
import sys
import unicodedata
from typing import Optional, Tuple, Union

from ._errors import InvalidArgument, InvalidName

#: Where the clients look when neither an address nor ``LOCKSERVER_ADDR`` is given.
DEFAULT_ADDR = "127.0.0.1:8080"

Seconds = Union[int, float, datetime.timedelta]

MAX_NAME_BYTES = 255
MAX_REQUEST_ID_BYTES = 64


def validate_name(name: object) -> str:
    """Checks a name as the server does (1–255 bytes of UTF-8, no control characters), so a
    bad name fails before any request with :class:`InvalidName`."""
    if not isinstance(name, str):
        raise InvalidName(f"a name is a str, not {type(name).__name__}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidName("a name must be valid UTF-8 (it has a lone surrogate)") from None
    if size == 0 or size > MAX_NAME_BYTES:
        raise InvalidName(f"a name is 1 to {MAX_NAME_BYTES} bytes of UTF-8, this one is {size}")
    for char in name:
        if unicodedata.category(char) == "Cc":
            raise InvalidName(f"a name has no control characters (found {char!r})")
    return name


def validate_request_id(request_id: object) -> str:
    if not isinstance(request_id, str) or not request_id:
        raise InvalidArgument("request_id is a non-empty str")
    if len(utf8(request_id, "request_id")) > MAX_REQUEST_ID_BYTES:
        raise InvalidArgument(f"request_id is at most {MAX_REQUEST_ID_BYTES} bytes")
    return request_id


def validate_label(value: object, what: str) -> str:
    """An owner label or a secret: a str that is valid UTF-8 without control characters."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} is a non-empty str")
    utf8(value, what)
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise InvalidArgument(f"{what} has control characters")
    return value


def utf8(value: str, what: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} must be valid UTF-8 (it has a lone surrogate)") from None


def new_request_id() -> str:
    """128 random bits, as hex: unique enough that a retry can only meet its own request."""
    return secrets.token_hex(16)


def seconds(value: object, what: str) -> float:
    """A non-negative, finite duration in seconds (int, float or timedelta)."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{what} is a number of seconds, not {type(value).__name__}")
    result = float(value)
    if math.isnan(result) or math.isinf(result) or result < 0:
        raise InvalidArgument(f"{what} must be a finite number of seconds >= 0, not {value!r}")
    return result


def millis_up(value: float) -> int:
    """Whole milliseconds for the wire, rounding up so a wait or TTL is never shorter than
    asked (0.3 s is 300 ms: rounded to the microsecond first, against float noise)."""
    micros = round(value * 1_000_000)
    return -(-micros // 1000)


def optional_millis(value: Optional[object], what: str) -> Optional[int]:
    if value is None:
        return None
    return millis_up(seconds(value, what))


def parse_addr(addr: str) -> Tuple[str, str]:
    """``host:port``, ``http://host:port`` (or ``https://``, ``ws://``, ``wss://``) →
    ``(http base URL, ws URL of /v1/session)``. A missing port is 8080."""
    if not isinstance(addr, str) or not addr.strip():
        raise InvalidArgument("the server address is empty")
    text = addr.strip()
    secure = False
    for scheme, is_secure in (
        ("https://", True),
        ("wss://", True),
        ("http://", False),
        ("ws://", False),
    ):
        if text.startswith(scheme):
            text = text[len(scheme) :]
            secure = is_secure
            break
    text = text.rstrip("/")
    if not text or "/" in text or any(c.isspace() for c in text):
        raise InvalidArgument(
            f"bad server address {addr!r}: expected host:port or http://host:port"
        )
    if not _has_port(text):
        text = f"{text}:8080"
    http = f"{'https' if secure else 'http'}://{text}"
    ws = f"{'wss' if secure else 'ws'}://{text}/v1/session"
    return http, ws


def _has_port(host: str) -> bool:
    head, sep, port = host.rpartition(":")
    if not sep or not port.isdigit():
        return False
    # "[::1]:8080" has a port; "::1" and "[::1]" do not.
    return ":" not in head or head.endswith("]")


def env(key: str) -> Optional[str]:
    value = os.environ.get(key)
    return value if value else None


def default_owner() -> str:
    """``program:pid@host``: enough to find the process behind a hold in the admin listing."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return f"{program or 'python'}:{os.getpid()}@{socket.gethostname()}"


_process_owner: Optional[Tuple[int, str]] = None


def process_owner() -> str:
    """The original API's default owner: one per process (a fork gets its own), never shared
    with another process, so two processes never take each other's locks by accident."""
    global _process_owner
    pid = os.getpid()
    if _process_owner is None or _process_owner[0] != pid:
        _process_owner = (pid, f"owner-{socket.gethostname()}-{pid}-{secrets.token_hex(4)}")
    return _process_owner[1]
