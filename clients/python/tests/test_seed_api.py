"""The original client's API (``LockserverClient``), which existing code uses unchanged:
``POST /acquire`` / ``POST /release``, identity = owner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

import lockserver_client._seed as seed_module
from conftest import Server
from lockserver_client import ConnectionLost, LockError, LockserverClient, SeedHTTPError


@pytest.fixture(scope="module")
def changeme_server():
    """A server whose secret is the original client's default, ``changeme``."""
    instance = Server("--secret", "changeme")
    yield instance
    instance.stop()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_seed_constructor_without_arguments_reads_the_environment(server, name, monkeypatch):
    monkeypatch.setenv("LOCKSERVER_ADDR", server.addr)
    monkeypatch.delenv("LOCKSERVER_OWNER", raising=False)
    monkeypatch.delenv("LOCKSERVER_SECRET", raising=False)
    client = LockserverClient()
    assert client.addr == server.addr and client.secret is None
    assert client.acquire(name("env"), blocking=False)
    assert server.holders(name("env"))[0]["owner"] == client.owner
    client.release(name("env"))

    monkeypatch.setenv("LOCKSERVER_OWNER", "env-owner")
    labelled = LockserverClient()
    assert labelled.owner == "env-owner"
    assert labelled.acquire(name("env"), blocking=False)
    assert server.holders(name("env"))[0]["owner"] == "env-owner"
    labelled.release(name("env"))


def test_seed_default_owner_is_unique_to_the_process(server, name):
    first, second = LockserverClient(server.addr), LockserverClient(server.addr)
    assert first.owner == second.owner, "one identity per process, as the original's default"
    assert str(os.getpid()) in first.owner and first.owner != "default_owner"
    # Another process gets another owner: it cannot release this process's lock.
    assert first.acquire(name("mine"), blocking=False)
    code = (
        "import sys; from lockserver_client import LockserverClient as C\n"
        "c = C(sys.argv[1])\n"
        "print(c.owner)\n"
        "try:\n    c.release(sys.argv[2])\nexcept Exception as e:\n"
        "    print(e.response.status_code)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, server.addr, name("mine")],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ),
    )
    assert other.returncode == 0, other.stderr
    other_owner, status = other.stdout.split()
    assert other_owner != first.owner and status == "409"
    first.release(name("mine"))


def test_seed_no_default_secret_is_sent(changeme_server, name, monkeypatch):
    """The original sent ``changeme`` when no secret was given; this client sends none."""
    monkeypatch.delenv("LOCKSERVER_SECRET", raising=False)
    anonymous = LockserverClient(changeme_server.addr, "a")
    with pytest.raises(SeedHTTPError) as refused:
        anonymous.acquire(name("s"), blocking=False)
    assert refused.value.response.status_code == 401
    explicit = LockserverClient(changeme_server.addr, "a", "changeme")
    assert explicit.acquire(name("s"), blocking=False)
    explicit.release(name("s"))


def test_seed_wrong_secret_raises_401_on_acquire_and_release(changeme_server, name):
    intruder = LockserverClient(changeme_server.addr, "a", "wrong")
    with pytest.raises(SeedHTTPError) as acquire:
        intruder.acquire(name("s"), blocking=False)
    assert acquire.value.response.status_code == 401
    with pytest.raises(SeedHTTPError) as release:
        intruder.release(name("s"))
    assert release.value.status_code == 401


def test_seed_non_blocking_acquire_returns_false_while_held_by_anyone(server, name):
    a, b = LockserverClient(server.addr, "a"), LockserverClient(server.addr, "b")
    assert a.acquire(name("nb"), blocking=False) is True
    assert b.acquire(name("nb"), blocking=False) is False
    assert a.acquire(name("nb"), blocking=False) is False, "not re-entrant, as the original"
    first_token = a.last_token
    a.release(name("nb"))
    assert b.acquire(name("nb"), blocking=False) is True
    assert b.last_token is not None and first_token is not None and b.last_token > first_token
    b.release(name("nb"))


def test_seed_blocking_acquire_waits_on_the_server_and_is_granted_at_the_release(server, name):
    a, b = LockserverClient(server.addr, "a"), LockserverClient(server.addr, "b")
    assert a.acquire(name("block"))
    outcome = {}

    def blocked() -> None:
        outcome["granted"] = b.acquire(name("block"))
        outcome["at"] = time.monotonic()

    thread = threading.Thread(target=blocked)
    thread.start()
    # Queued on the server: a polling client would show no waiter.
    server.until_waiters(name("block"), 1)
    released_at = time.monotonic()
    a.release(name("block"))
    thread.join(10)
    assert outcome.get("granted") is True
    assert outcome["at"] - released_at < 1.0, "granted at the release, not at a later poll"
    assert server.holders(name("block"))[0]["owner"] == "b"
    b.release(name("block"))


def test_seed_blocking_acquire_waits_for_the_expiry_never_early(server, name):
    a, b = LockserverClient(server.addr, "a"), LockserverClient(server.addr, "b")
    started = time.monotonic()
    assert a.acquire(name("exp"), blocking=False, expire=1)
    assert b.acquire(name("exp"))
    waited = time.monotonic() - started
    assert waited >= 1.0, f"granted {waited:.3f} s after a 1 s expiry"
    assert waited < 3.0
    b.release(name("exp"))


def test_seed_release_by_another_owner_or_of_a_free_resource_raises(server, name):
    a, b = LockserverClient(server.addr, "a"), LockserverClient(server.addr, "b")
    assert a.acquire(name("owned"), blocking=False)
    with pytest.raises(SeedHTTPError) as wrong:
        b.release(name("owned"))
    assert wrong.value.response.status_code == 409
    assert isinstance(wrong.value, OSError) and isinstance(wrong.value, LockError)
    a.release(name("owned"))
    with pytest.raises(SeedHTTPError) as free:
        a.release(name("owned"))
    assert free.value.response.status_code == 409
    assert "not found" in free.value.response.text


def test_seed_errors_are_requests_http_errors_when_requests_is_installed(server, name, monkeypatch):
    """Code written for the original catches ``requests.HTTPError``."""

    class HTTPError(OSError):  # requests' own is an IOError too
        def __init__(self, *args, **kwargs):
            self.response = kwargs.pop("response", None)
            self.request = kwargs.pop("request", None)
            super().__init__(*args, **kwargs)

    fake = types.ModuleType("requests")
    fake.HTTPError = HTTPError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "requests", fake)
    monkeypatch.setattr(seed_module, "_error_class", None)
    client = LockserverClient(server.addr, "a")
    with pytest.raises(HTTPError) as caught:
        client.release(name("free"))
    assert caught.value.response.status_code == 409
    assert isinstance(caught.value, SeedHTTPError)


def test_seed_unreachable_server_is_connection_lost_never_false(monkeypatch):
    client = LockserverClient(f"127.0.0.1:{closed_port()}", "a")
    for blocking in (False, True):
        with pytest.raises(ConnectionLost) as lost:
            client.acquire("x", blocking=blocking)
        assert lost.value.outcome_unknown
    with pytest.raises(ConnectionLost):
        client.release("x")


def test_seed_every_request_has_a_timeout():
    """A server that accepts but never answers: the call fails after its timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        client = LockserverClient(f"127.0.0.1:{silent.getsockname()[1]}", "a", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(ConnectionLost):
            client.acquire("x", blocking=False)
        assert 0.3 <= time.monotonic() - started < 5
