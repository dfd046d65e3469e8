"""Locks, semaphores, waits, request ids, TTL and renew, check, and the handles' context
managers, with the asyncio client and the blocking one, against the real server."""

from __future__ import annotations

import asyncio
import datetime
import gc
import threading
import time

import pytest

from conftest import until, until_async
from lockserver_client import (
    AsyncClient,
    Client,
    Conflict,
    InvalidArgument,
    InvalidName,
    Locked,
    LockLost,
    LockTimeout,
    LostReason,
    NotAcquired,
)

LATE = 3.0  # "not too late" is a loose bound on this shared 2-core machine


# ----- waits -----


async def test_a_try_raises_locked_and_try_acquire_returns_none(server, name):
    async with AsyncClient(server.addr) as a, AsyncClient(server.addr) as b:
        held = await a.acquire(name("n"), wait=0)
        with pytest.raises(Locked) as locked:
            await b.acquire(name("n"), wait=0)
        assert isinstance(locked.value, NotAcquired) and locked.value.code == "locked"
        assert not locked.value.outcome_unknown
        assert await b.try_acquire(name("n")) is None
        await held.release()
        again = await b.try_acquire(name("n"))
        assert again is not None and again.token > held.token
        await again.release()


async def test_a_timed_wait_raises_timeout_never_early(server, name):
    async with AsyncClient(server.addr) as a, AsyncClient(server.addr) as b:
        held = await a.acquire(name("n"))
        for wait, seconds in ((0.25, 0.25), (datetime.timedelta(milliseconds=150), 0.15)):
            started = time.monotonic()
            with pytest.raises(LockTimeout) as timeout:
                await b.acquire(name("n"), wait=wait)
            elapsed = time.monotonic() - started
            assert elapsed >= seconds, f"gave up after {elapsed:.3f} s of a {seconds} s wait"
            assert elapsed < seconds + LATE
            assert timeout.value.code == "timeout" and timeout.value.wait == seconds
        assert server.waiters(name("n")) == 0, "a timed-out waiter leaves the queue"
        await held.release()


async def test_wait_none_waits_without_a_deadline_until_the_release(server, name):
    async with AsyncClient(server.addr) as a, AsyncClient(server.addr) as b:
        held = await a.acquire(name("n"))
        waiter = asyncio.ensure_future(b.acquire(name("n"), wait=None))
        await until_async(lambda: server.waiters(name("n")) == 1)
        await asyncio.sleep(0.4)
        assert not waiter.done() and server.waiters(name("n")) == 1, "still waiting"
        await held.release()
        granted = await asyncio.wait_for(waiter, 5)
        assert granted.token > held.token
        await granted.release()


async def test_a_timed_wait_is_granted_when_the_lock_frees_within_it(server, name):
    async with AsyncClient(server.addr) as a, AsyncClient(server.addr) as b:
        held = await a.acquire(name("n"))
        waiter = asyncio.ensure_future(b.acquire(name("n"), wait=10))
        await until_async(lambda: server.waiters(name("n")) == 1)
        started = time.monotonic()
        await held.release()
        granted = await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - started < 1.0, "granted at the release, not at the deadline"
        await granted.release()


async def test_bad_waits_and_modes_are_invalid_arguments(server, name):
    async with AsyncClient(server.addr) as client:
        for wait in (-1, float("nan"), float("inf"), "5", True):
            with pytest.raises(InvalidArgument):
                await client.acquire(name("n"), wait=wait)
        with pytest.raises(InvalidArgument):
            await client.acquire(name("n"), mode="upgradable")  # type: ignore[arg-type]
        for request_id in ("r" * 65, "", "bad\ud800"):
            with pytest.raises(InvalidArgument):
                await client.acquire(name("n"), request_id=request_id)
        assert client.session_id is None, "refused before anything was sent"


def test_bad_client_settings_are_invalid_arguments(server):
    for settings in (
        {"owner": "two\nlines"},
        {"secret": "bad\ud800"},
        {"session_ttl": 1.0, "lease_margin": 0.5},
        {"drift": 0.5},
        {"connect_timeout": -1},
        {"addr": "http://x:1/prefix"},
        {"addr": "   "},
    ):
        addr = settings.pop("addr", server.addr)
        with pytest.raises(InvalidArgument):
            AsyncClient(addr, **settings)
    assert AsyncClient("db.internal").addr == "http://db.internal:8080"
    assert AsyncClient("http://[::1]:7000/").addr == "http://[::1]:7000"


def test_an_async_client_can_serve_one_event_loop_after_another(server, name):
    client = AsyncClient(server.addr)

    async def use() -> int:
        handle = await client.acquire(name("n"), wait=1)
        await handle.release()
        await client.close()
        return handle.token

    first = asyncio.run(use())
    second = asyncio.run(use())
    assert second > first


async def test_names_are_checked_before_anything_is_sent(server, name):
    async with AsyncClient(server.addr) as client:
        for bad in ("", "bell\x07", "del\x7f", "c1\x85", "x" * 256, "é" * 128, "\ud800", 42):
            with pytest.raises(InvalidName):
                await client.acquire(bad, wait=0)  # type: ignore[arg-type]
        with pytest.raises(InvalidName):
            await client.check("", 1)
        assert client.session_id is None, "refused before anything was sent"
        for good in ("x" * 255, "é" * 127, "slash/percent%/é ?#&+", name("n")):
            handle = await client.acquire(good, wait=0)
            assert handle.name == good
            assert server.holders(good)[0]["hold_id"] == handle.hold_id
            await handle.release()


# ----- modes, semaphores, conflicts -----


async def test_shared_holds_coexist_and_exclude_an_exclusive_one(server, name):
    async with (
        AsyncClient(server.addr) as a,
        AsyncClient(server.addr) as b,
        AsyncClient(server.addr) as c,
    ):
        r1 = await a.acquire(name("rw"), mode="shared", wait=0)
        r2 = await b.acquire(name("rw"), mode="shared", wait=0)
        assert (r1.mode, r2.mode) == ("shared", "shared")
        with pytest.raises(Locked):
            await c.acquire(name("rw"), wait=0)
        writer = asyncio.ensure_future(c.acquire(name("rw"), wait=10))
        await until_async(lambda: server.waiters(name("rw")) == 1)
        # A queued writer holds back later readers (no barging).
        async with AsyncClient(server.addr) as d:
            assert await d.try_acquire(name("rw"), mode="shared") is None
        await r1.release()
        await r2.release()
        w = await asyncio.wait_for(writer, 5)
        assert w.mode == "exclusive" and w.token > max(r1.token, r2.token)
        await w.release()


async def test_a_semaphore_admits_up_to_its_limit_weighted_by_permits(server, name):
    async with (
        AsyncClient(server.addr) as a,
        AsyncClient(server.addr) as b,
        AsyncClient(server.addr) as c,
    ):
        two = await a.acquire_semaphore(name("sem"), 3, permits=2, wait=0)
        assert (two.kind, two.limit, two.permits, two.mode) == ("semaphore", 3, 2, None)
        assert await b.try_acquire_semaphore(name("sem"), 3, permits=2) is None
        one = await b.acquire_semaphore(name("sem"), 3, wait=0)
        with pytest.raises(Locked):
            await c.acquire_semaphore(name("sem"), 3, wait=0)
        view = server.view(name("sem"), "semaphores")
        assert view["kind"] == "semaphore" and len(view["holders"]) == 2
        # Client-side argument checks, before anything is sent.
        for limit, permits in ((3, 4), (3, 0), (0, 1)):
            with pytest.raises(InvalidArgument):
                await c.acquire_semaphore(name("sem"), limit, permits=permits, wait=0)
        # The server keeps one limit per name while it is in use.
        with pytest.raises(Conflict) as conflict:
            await c.acquire_semaphore(name("sem"), 5, wait=0)
        assert conflict.value.code == "conflict"
        with pytest.raises(Conflict):
            await c.acquire(name("sem"), wait=0)
        await two.release()
        async with c.semaphore(name("sem"), 3, permits=2, wait=1) as again:
            assert again.permits == 2
        await one.release()


async def test_locks_are_not_reentrant(server, name):
    async with AsyncClient(server.addr) as client:
        held = await client.acquire(name("n"))
        with pytest.raises(Conflict):
            await client.acquire(name("n"), wait=None)  # would otherwise wait on itself forever
        await held.release()


# ----- request ids, tokens, check -----


async def test_a_request_id_repeat_returns_the_same_hold(server, name):
    async with AsyncClient(server.addr) as client:
        first = await client.acquire(name("n"), request_id="job-17")
        again = await client.acquire(name("n"), request_id="job-17")
        assert (again.hold_id, again.token) == (first.hold_id, first.token)
        assert len(server.holders(name("n"))) == 1
        # Another request id is another request: not re-entrant.
        with pytest.raises(Conflict):
            await client.acquire(name("n"), request_id="job-18", wait=0)
        await first.release()
        assert server.holders(name("n")) == []


async def test_check_says_whether_a_token_is_current(server, name):
    async with AsyncClient(server.addr) as a, AsyncClient(server.addr) as b:
        held = await a.acquire(name("n"))
        assert await b.check(name("n"), held.token) is True
        assert await b.check(name("n"), held.token + 1000) is False
        assert await b.check(name("other"), held.token) is False
        await held.release()
        assert await b.check(name("n"), held.token) is False
        with pytest.raises(InvalidArgument):
            await b.check(name("n"), -1)


async def test_handles_expose_the_grant(server, name):
    async with AsyncClient(server.addr, owner="worker-7") as client:
        handle = await client.acquire(name("n"))
        shown = server.holders(name("n"))[0]
        assert handle.hold_id == shown["hold_id"] and handle.token == shown["token"]
        assert (handle.name, handle.kind, handle.mode, handle.owner) == (
            name("n"),
            "lock",
            "exclusive",
            "worker-7",
        )
        assert shown["session"] == client.session_id
        assert handle.expires_in is None, "the session covers its holds"
        assert not handle.is_lost and handle.lost_reason is None and not handle.lost.is_set()
        await handle.release()
        assert handle.released
        await handle.release()  # a second release does nothing
        assert await handle.wait_lost() is None, "released, never lost"


# ----- TTL and renew -----


async def test_a_hold_with_its_own_ttl_is_lost_when_it_expires_never_early(server, name):
    async with AsyncClient(server.addr) as client:
        started = time.monotonic()
        handle = await client.acquire(name("n"), ttl=0.3)
        assert handle.expires_in == 0.3
        reasons = []
        handle.on_lost(reasons.append)
        reason = await asyncio.wait_for(handle.wait_lost(), 5)
        elapsed = time.monotonic() - started
        assert reason == LostReason.EXPIRED == "expired" and reasons == [LostReason.EXPIRED]
        assert elapsed >= 0.3, f"expired after {elapsed:.3f} s of a 0.3 s TTL"
        assert elapsed < 0.3 + LATE
        assert handle.is_lost and handle.lost.is_set()
        assert server.holders(name("n")) == []
        with pytest.raises(LockLost) as lost:
            await handle.release()
        assert lost.value.reason == LostReason.EXPIRED


async def test_renew_extends_sets_and_removes_a_holds_ttl(server, name):
    async with AsyncClient(server.addr) as client:
        handle = await client.acquire(name("n"), ttl=0.4)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # renewed well inside its TTL for 2.5 TTLs
            await handle.renew()
            assert 0.3 < handle.expires_in <= 0.4
            await asyncio.sleep(0.1)
        assert not handle.is_lost and len(server.holders(name("n"))) == 1
        await handle.renew(5)
        assert 4.9 < handle.expires_in <= 5.0
        await handle.renew(None)
        assert handle.expires_in is None
        assert server.holders(name("n"))[0]["expires_in_ms"] is None
        await handle.release()
        with pytest.raises(InvalidArgument):
            await handle.renew()


async def test_renewing_a_lost_hold_raises_lock_lost(server, name):
    async with AsyncClient(server.addr) as client:
        handle = await client.acquire(name("n"))
        server.admin_release(handle.hold_id)
        assert await asyncio.wait_for(handle.wait_lost(), 5) == LostReason.ADMIN
        with pytest.raises(LockLost) as lost:
            await handle.renew(1)
        assert lost.value.reason == LostReason.ADMIN


# ----- context managers, dropping -----


async def test_async_context_manager_holds_for_the_block_and_releases_on_exit(server, name):
    async with AsyncClient(server.addr) as client:
        async with client.lock(name("ctx"), wait=5) as lock:
            assert server.holders(name("ctx"))[0]["hold_id"] == lock.hold_id
            assert lock.token > 0 and lock.name == name("ctx") and not lock.is_lost
        assert server.holders(name("ctx")) == []
        with pytest.raises(ZeroDivisionError):
            async with client.lock(name("ctx"), wait=5) as lock:
                raise ZeroDivisionError(lock.hold_id)
        assert server.holders(name("ctx")) == [], "released when the block raised"
        handle = await client.lock(name("ctx"), wait=0)  # awaitable too
        async with handle:
            assert len(server.holders(name("ctx"))) == 1
        assert server.holders(name("ctx")) == []


async def test_a_block_that_ran_while_its_lock_was_lost_raises_lock_lost_at_exit(server, name):
    async with AsyncClient(server.addr) as client:
        with pytest.raises(LockLost) as lost:
            async with client.lock(name("ctx")) as lock:
                server.admin_release(lock.hold_id)
                await asyncio.wait_for(lock.wait_lost(), 5)
        assert lost.value.reason == LostReason.ADMIN


async def test_dropping_a_handle_releases_its_hold(server, name):
    async with AsyncClient(server.addr) as a, AsyncClient(server.addr) as b:
        handle = await a.acquire(name("n"))
        waiter = asyncio.ensure_future(b.acquire(name("n"), wait=5))
        await until_async(lambda: server.waiters(name("n")) == 1)
        # A callback referring back to its handle makes a cycle: the client must not keep the
        # handle alive through it (it holds the lost signal weakly), so the cycle is collected.
        handle.on_lost(handle.__repr__)
        del handle
        gc.collect()
        granted = await asyncio.wait_for(waiter, 5)
        await granted.release()


async def test_cancelling_a_waiting_acquire_withdraws_the_waiter(server, name):
    async with AsyncClient(server.addr) as a, AsyncClient(server.addr) as b:
        held = await a.acquire(name("n"))
        waiter = asyncio.ensure_future(b.acquire(name("n"), wait=None))
        await until_async(lambda: server.waiters(name("n")) == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await until_async(lambda: server.waiters(name("n")) == 0, what="the waiter withdrawn")
        await held.release()
        # Nothing was granted to the cancelled request behind our back.
        await asyncio.sleep(0.1)
        assert server.holders(name("n")) == []
        # The session is fine afterwards.
        again = await b.acquire(name("n"), wait=0)
        await again.release()


async def test_asyncio_wait_for_around_an_acquire_withdraws_it(server, name):
    async with AsyncClient(server.addr) as a, AsyncClient(server.addr) as b:
        held = await a.acquire(name("n"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.acquire(name("n")), 0.2)
        await until_async(lambda: server.waiters(name("n")) == 0, what="the waiter withdrawn")
        await held.release()


# ----- the blocking client -----


def test_sync_client_context_manager_and_try(server, name):
    with Client(server.addr) as client:
        with client.lock(name("ctx"), wait=5) as lock:
            assert server.holders(name("ctx"))[0]["hold_id"] == lock.hold_id
            assert isinstance(lock.token, int) and lock.name == name("ctx")
            assert not lock.is_lost and lock.lost_reason is None
            other = Client(server.addr)
            assert other.try_acquire(name("ctx")) is None
            with pytest.raises(Locked):
                other.acquire(name("ctx"), wait=0)
            started = time.monotonic()
            with pytest.raises(LockTimeout):
                other.acquire(name("ctx"), wait=0.2)
            assert time.monotonic() - started >= 0.2
            other.close()
        assert server.holders(name("ctx")) == []
        with pytest.raises(KeyError):
            with client.lock(name("ctx")):
                raise KeyError("boom")
        assert server.holders(name("ctx")) == []
        with client.semaphore(name("sem"), 2, permits=2) as permits:
            assert permits.permits == 2
            with Client(server.addr) as other:
                assert other.try_acquire_semaphore(name("sem"), 2) is None
        shared = client.acquire(name("rw"), mode="shared")
        assert client.check(name("rw"), shared.token)
        shared.release()


def test_sync_client_shared_by_threads_keeps_mutual_exclusion(server, name):
    client = Client(server.addr)
    inside = []
    overlaps = []
    counter = {"n": 0}

    # Locks are not re-entrant per session: threads contending for one name each have a
    # client (a session) of their own.
    clients = [Client(server.addr) for _ in range(4)]

    def work(own: Client) -> None:
        for _ in range(10):
            with own.lock(name("counter"), wait=10):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                value = counter["n"]
                time.sleep(0.001)
                counter["n"] = value + 1
                inside.pop()

    threads = [threading.Thread(target=work, args=(own,)) for own in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert counter["n"] == 40 and overlaps == []
    # One client used from several threads at once, on different names.
    results = []

    def use_shared(index: int) -> None:
        with client.lock(name(f"t{index}"), wait=5) as lock:
            results.append(lock.token)

    threads = [threading.Thread(target=use_shared, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(set(results)) == 6
    for own in clients + [client]:
        own.close()


def test_sync_lost_signal_event_and_callback(server, name):
    with Client(server.addr) as client:
        handle = client.acquire(name("n"))
        seen = []
        fired = threading.Event()
        handle.on_lost(lambda reason: (seen.append(reason), fired.set()))
        assert handle.wait_lost(0.05) is None and not handle.lost.is_set()
        server.admin_release(handle.hold_id)
        assert handle.lost.wait(5) and fired.wait(5)
        assert seen == [LostReason.ADMIN] and handle.lost_reason == LostReason.ADMIN
        assert handle.wait_lost(1) == LostReason.ADMIN
        late = []
        handle.on_lost(late.append)  # registered after the loss: called at once
        assert late == [LostReason.ADMIN]
        with pytest.raises(LockLost):
            handle.release()
        assert server.holders(name("n")) == []


def test_sync_handle_dropped_is_released(server, name):
    with Client(server.addr) as client:
        handle = client.acquire(name("n"))
        assert len(server.holders(name("n"))) == 1
        del handle
        until(lambda: server.holders(name("n")) == [], 5, "the dropped handle released")
