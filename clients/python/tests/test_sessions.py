"""The streaming session: keepalive, lost notification, close, reconnect and resume, a killed
client, a killed server (the local lease deadline), credentials, unreachable servers and leader
hints."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest

import lockserver_client
from conftest import Proxy, Server, until, until_async
from lockserver_client import (
    AsyncClient,
    AuthError,
    Client,
    ConnectionLost,
    LockLost,
    LostReason,
    NotAcquired,
    Unauthorized,
)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def session_view(server: Server, session_id: str):
    return server.request("GET", f"/v1/sessions/{session_id}")


async def test_the_session_keeps_itself_alive_well_past_its_ttl(server, name):
    async with AsyncClient(server.addr, session_ttl=0.3, owner="keepalive") as client:
        handle = await client.acquire(name("n"))
        status, view = session_view(server, client.session_id)
        assert status == 200 and view["ttl_ms"] == 300
        await asyncio.sleep(1.2)  # four TTLs: only the client's pings keep it
        assert not handle.is_lost
        assert server.holders(name("n"))[0]["hold_id"] == handle.hold_id
        await handle.release()


async def test_an_admin_force_release_fires_the_lost_event_and_callbacks(server, name):
    async with AsyncClient(server.addr) as client:
        handle = await client.acquire(name("n"))
        calls = []
        handle.on_lost(calls.append)
        assert not handle.lost.is_set()
        server.admin_release(handle.hold_id)
        await asyncio.wait_for(handle.lost.wait(), 5)
        assert handle.is_lost and handle.lost_reason is LostReason.ADMIN
        assert calls == [LostReason.ADMIN]
        with pytest.raises(LockLost) as lost:
            await handle.release()
        assert lost.value.reason is LostReason.ADMIN
        # The session itself is fine.
        again = await client.acquire(name("n"), wait=0)
        await again.release()


async def test_close_ends_the_session_and_frees_its_holds_at_once(server, name):
    client = AsyncClient(server.addr)
    handle = await client.acquire(name("n"))
    first_session = client.session_id
    await client.close()
    assert handle.lost_reason is LostReason.SESSION
    await until_async(lambda: server.holders(name("n")) == [], 5)
    assert session_view(server, first_session)[0] == 404
    with pytest.raises(LockLost):
        await handle.release()
    # Used again, the client opens a new session.
    again = await client.acquire(name("n"), wait=0)
    assert client.session_id not in (None, first_session)
    await client.close()
    assert again.is_lost


def test_an_event_loop_that_ends_without_close_ends_the_session_cleanly(server, name):
    """``asyncio.run`` cancels the client's task at its end: the client closes the session
    then, so its holds are freed at once, not when the (long) lease runs out."""

    async def forgetful() -> str:
        client = AsyncClient(server.addr, session_ttl=30)
        handle = await client.acquire(name("n"))
        return handle.hold_id

    asyncio.run(forgetful())
    # The server commits the session's end just after it answers the close: allow for that,
    # far below the 30 s lease.
    until(lambda: server.holders(name("n")) == [], 2, "the holds freed at the loop's end")


async def test_a_broken_connection_resumes_the_session(server, name):
    proxy = await Proxy(server.host, server.port).start()
    try:
        async with (
            AsyncClient(proxy.addr, session_ttl=5) as client,
            AsyncClient(server.addr) as direct,
        ):
            held = await client.acquire(name("r"))
            session = client.session_id
            blocker = await direct.acquire(name("w"))
            waiter = asyncio.ensure_future(client.acquire(name("w"), wait=20))
            await until_async(lambda: server.waiters(name("w")) == 1)

            proxy.refusing = True
            proxy.cut()
            # While it is away, the waiter's turn comes, and the client asks something.
            await blocker.release()
            await until_async(lambda: len(server.holders(name("w"))) == 1)
            check = asyncio.ensure_future(client.check(name("r"), held.token))
            await asyncio.sleep(0.2)
            assert not check.done() and not waiter.done()
            proxy.refusing = False

            granted = await asyncio.wait_for(waiter, 10)
            assert await asyncio.wait_for(check, 10) is True
            shown = server.holders(name("w"))
            assert len(shown) == 1, f"one hold, not two: {shown}"
            assert shown[0]["hold_id"] == granted.hold_id
            # The hold from before the break survived it: same id, same session, never lost.
            assert client.session_id == session and proxy.accepted >= 2
            assert not held.is_lost
            assert server.holders(name("r"))[0]["hold_id"] == held.hold_id
            await held.release()
            await granted.release()
            assert server.holders(name("r")) == [] and server.holders(name("w")) == []
    finally:
        await proxy.stop()


async def test_a_session_that_ended_while_away_is_over_when_resumed(server, name):
    proxy = await Proxy(server.host, server.port).start()
    try:
        async with (
            AsyncClient(proxy.addr, session_ttl=5) as client,
            AsyncClient(server.addr) as direct,
        ):
            held = await client.acquire(name("r"))
            session = client.session_id
            blocker = await direct.acquire(name("w"))
            waiter = asyncio.ensure_future(client.acquire(name("w"), wait=None))
            await until_async(lambda: server.waiters(name("w")) == 1)
            proxy.refusing = True
            proxy.cut()
            status, _ = server.request("DELETE", f"/v1/sessions/{session}")
            assert status == 204
            proxy.refusing = False
            # The waiter's outcome is unknown to the client: never "not acquired".
            with pytest.raises(ConnectionLost) as lost:
                await asyncio.wait_for(waiter, 10)
            assert lost.value.outcome_unknown and not isinstance(lost.value, NotAcquired)
            assert held.lost_reason is LostReason.SESSION
            assert server.waiters(name("w")) == 0
            # A new session serves what comes next.
            await blocker.release()
            fresh = await client.acquire(name("w"), wait=5)
            assert client.session_id != session
            await fresh.release()
    finally:
        await proxy.stop()


async def test_a_server_that_stops_answering_cannot_stall_a_bounded_wait(server, name):
    proxy = await Proxy(server.host, server.port).start()
    try:
        async with (
            AsyncClient(proxy.addr, session_ttl=5, request_timeout=0.3) as client,
            AsyncClient(server.addr) as direct,
        ):
            blocker = await direct.acquire(name("n"))
            assert await client.check(name("n"), blocker.token)  # connected
            proxy.paused = True
            started = time.monotonic()
            with pytest.raises(ConnectionLost) as lost:
                await client.acquire(name("n"), wait=0.2)
            elapsed = time.monotonic() - started
            assert lost.value.outcome_unknown
            assert 0.5 <= elapsed < 0.5 + 3, f"gave up after {elapsed:.3f} s"
            proxy.paused = False
            await blocker.release()
            # The withdrawn acquire reaches the server late, with its cancel: it leaves no
            # hold and no waiter behind.
            await until_async(
                lambda: server.holders(name("n")) == [] and server.waiters(name("n")) == 0
            )
            await asyncio.sleep(0.3)
            assert server.holders(name("n")) == [] and server.waiters(name("n")) == 0
            again = await client.acquire(name("n"), wait=1)  # the session is fine
            await again.release()
    finally:
        await proxy.stop()


CHILD = """
import sys
from lockserver_client import Client
client = Client(sys.argv[1], session_ttl=1.0)
handle = client.acquire(sys.argv[2])
print(handle.hold_id, flush=True)
sys.stdin.read()  # hold it until killed
"""


def test_a_killed_client_process_loses_its_locks_after_the_session_ttl(server, name):
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(lockserver_client.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, server.addr, name("k")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    ) as child:
        try:
            assert child.stdout is not None
            hold_id = child.stdout.readline().decode().strip()
            assert server.holders(name("k"))[0]["hold_id"] == hold_id
        finally:
            child.kill()
        killed_at = time.monotonic()
        child.wait()
    assert len(server.holders(name("k"))) == 1, "held until the lease runs out"
    until(lambda: server.holders(name("k")) == [], 5, "the dead client's lock freed")
    assert time.monotonic() - killed_at < 1.0 + 2.0


async def test_a_killed_server_fires_the_lost_signal_at_the_local_deadline():
    victim = Server()
    try:
        # lease_margin absorbs this busy machine's timer lateness (its purpose: stop the work
        # before the server could free the hold).
        async with (
            AsyncClient(victim.addr, session_ttl=1.0, lease_margin=0.1) as a,
            AsyncClient(victim.addr) as b,
        ):
            handle = await a.acquire("k")
            blocker = await b.acquire("w")
            waiter = asyncio.ensure_future(a.acquire("w", wait=None))
            await until_async(lambda: victim.waiters("w") == 1)
            killed_at = time.monotonic()
            victim.kill()
            reason = await asyncio.wait_for(handle.wait_lost(), 5)
            fired_after = time.monotonic() - killed_at
            assert reason is LostReason.LEASE_DEADLINE
            # Before the server could have freed it (the lease counts from the last answered
            # ping's send, which was before the kill), and not at the drop itself (the last
            # ping was at most a third of the TTL before the kill).
            assert 0.4 < fired_after < 1.0, f"fired {fired_after:.3f} s after the kill"
            # The waiting acquire's outcome is unknown once the session cannot come back.
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(waiter, 10)
            del blocker
    finally:
        victim.stop()


@pytest.fixture(scope="module")
def secret_server():
    instance = Server("--secret", "s3cret")
    yield instance
    instance.stop()


async def test_credentials_are_checked_and_refusals_are_auth_errors(secret_server, monkeypatch):
    monkeypatch.delenv("LOCKSERVER_SECRET", raising=False)
    for secret in ("nope", None):
        async with AsyncClient(secret_server.addr, secret=secret) as wrong:
            with pytest.raises(Unauthorized) as refused:
                await wrong.acquire("a", wait=0)
            assert isinstance(refused.value, AuthError) and refused.value.code == "unauthorized"
            assert not refused.value.outcome_unknown
    async with AsyncClient(secret_server.addr, secret="s3cret") as right:
        handle = await right.acquire("a", wait=0)
        await handle.release()
    monkeypatch.setenv("LOCKSERVER_SECRET", "s3cret")
    monkeypatch.setenv("LOCKSERVER_ADDR", secret_server.addr)
    with Client() as from_env:
        from_env.acquire("a", wait=0).release()


async def test_an_unreachable_server_is_connection_lost_never_not_acquired():
    async with AsyncClient(f"127.0.0.1:{closed_port()}", connect_timeout=2) as nowhere:
        started = time.monotonic()
        with pytest.raises(ConnectionLost) as lost:
            await nowhere.acquire("a", wait=None)
        assert lost.value.outcome_unknown and not isinstance(lost.value, NotAcquired)
        assert time.monotonic() - started < 2
    # A server that accepts but never answers: the connect timeout applies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        addr = f"127.0.0.1:{silent.getsockname()[1]}"
        async with AsyncClient(addr, connect_timeout=0.3) as mute:
            started = time.monotonic()
            with pytest.raises(ConnectionLost):
                await mute.acquire("a", wait=0)
            assert 0.3 <= time.monotonic() - started < 5


def test_sync_client_connection_errors_are_connection_lost():
    with Client(f"127.0.0.1:{closed_port()}", connect_timeout=2) as nowhere:
        with pytest.raises(ConnectionLost):
            nowhere.acquire("a", wait=5)
        with pytest.raises(ConnectionLost):
            nowhere.check("a", 1)


async def test_leader_hints_are_followed(server, name):
    """A "follower" answers the session upgrade with ``not_leader`` naming the real server."""

    async def follower(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = (
            '{"error":{"code":"not_leader","message":"this node is a follower",'
            f'"leader":"http://{server.addr}"}}}}'
        ).encode()
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    fake = await asyncio.start_server(follower, "127.0.0.1", 0)
    port = fake.sockets[0].getsockname()[1]
    try:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            handle = await client.acquire(name("led"), wait=5)
            assert server.holders(name("led"))[0]["hold_id"] == handle.hold_id
            assert client.addr == f"http://{server.addr}"
            await handle.release()
    finally:
        fake.close()
