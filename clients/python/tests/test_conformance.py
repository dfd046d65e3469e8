"""The shared client conformance scenarios (``conformance/scenarios.json`` at the repository
root), run with the asyncio client exactly as the Rust runner
(``crates/lockserver/tests/conformance.rs``) runs them: one test per scenario, fresh clients
(one streaming session per ``client`` label), names prefixed per scenario."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from typing import Any, Dict, List, Optional

import pytest

from conftest import ROOT, Server, until_async
from lockserver_client import (
    AsyncClient,
    AsyncHandle,
    Conflict,
    InvalidArgument,
    InvalidName,
    Locked,
    LockLost,
    LockTimeout,
    LostReason,
)

SCENARIOS_PATH = os.path.join(ROOT, "conformance", "scenarios.json")
with open(SCENARIOS_PATH, encoding="utf-8") as scenarios_file:
    FILE = json.load(scenarios_file)
SCENARIOS: List[Dict[str, Any]] = FILE["scenarios"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


@pytest.fixture(scope="module")
def conformance_server():
    instance = Server(admin_secret=FILE["admin_secret"])
    yield instance
    instance.stop()


def test_the_scenario_file_has_its_scenarios():
    assert FILE["version"] == 1
    assert len(SCENARIOS) >= 10


class Run:
    """One scenario's state: its clients, saved holds and tokens, started acquires."""

    def __init__(self, server: Server, prefix: str) -> None:
        self.server = server
        self.prefix = prefix
        self.clients: Dict[str, AsyncClient] = {}
        self.holds: Dict[str, AsyncHandle] = {}
        self.tokens: Dict[str, int] = {}
        self.started: Dict[str, asyncio.Task[AsyncHandle]] = {}
        self.cancelled: List[asyncio.Task[AsyncHandle]] = []

    def client(self, step: Dict[str, Any]) -> AsyncClient:
        label = step["client"]
        if label not in self.clients:
            self.clients[label] = AsyncClient(self.server.addr)
        return self.clients[label]

    def name(self, step: Dict[str, Any]) -> str:
        if "raw_name" in step:
            return step["raw_name"]
        if "raw_name_repeat" in step:
            unit, count = step["raw_name_repeat"]
            return unit * count
        return self.prefix + step["name"]

    async def acquire(self, step: Dict[str, Any]) -> AsyncHandle:
        client = self.client(step)
        name = self.name(step)
        wait_ms = step["wait_ms"]
        wait: Optional[float] = None if wait_ms is None else wait_ms / 1000
        kind = step["kind"]
        if kind == "lock":
            return await client.acquire(name, wait=wait)
        if kind == "read":
            return await client.acquire(name, wait=wait, mode="shared")
        if kind == "write":
            return await client.acquire(name, wait=wait, mode="exclusive")
        if kind == "semaphore":
            return await client.acquire_semaphore(
                name, step["limit"], permits=step.get("permits", 1), wait=wait
            )
        raise AssertionError(f"unknown kind {kind!r}")

    def judge(self, step: Dict[str, Any], outcome: Any) -> None:
        """Checks an acquire's outcome against ``expect`` (and saves the hold)."""
        if isinstance(outcome, AsyncHandle):
            got = "granted"
        elif isinstance(outcome, Locked):
            got = "locked"
        elif isinstance(outcome, LockTimeout):
            got = "timeout"
        elif isinstance(outcome, InvalidName):
            got = "invalid_name"
        elif isinstance(outcome, InvalidArgument):
            got = "invalid_argument"
        elif isinstance(outcome, Conflict):
            got = "conflict"
        else:
            got = "another error"
        assert got == step["expect"], f"step {step}: {outcome!r}"
        if not isinstance(outcome, AsyncHandle):
            return
        if "token_above" in step:
            assert outcome.token > self.tokens[step["token_above"]], f"step {step}: token"
        if "save" in step:
            self.tokens[step["save"]] = outcome.token
            self.holds[step["save"]] = outcome

    async def step(self, step: Dict[str, Any]) -> None:
        do = step["do"]
        if do == "acquire":
            started = time.monotonic()
            outcome = await _outcome(self.acquire(step))
            elapsed = time.monotonic() - started
            if "min_elapsed_ms" in step:
                least = step["min_elapsed_ms"] / 1000
                assert elapsed >= least, f"early ({elapsed:.3f} s): {step}"
                assert elapsed < least + 5
            self.judge(step, outcome)
        elif do == "try_acquire":
            assert step["kind"] == "lock", "try_acquire scenarios use locks"
            got = await self.client(step).try_acquire(self.name(step))
            assert ("granted" if got is not None else "none") == step["expect"], step
        elif do == "start_acquire":
            self.started[step["as"]] = asyncio.ensure_future(self.acquire(step))
        elif do == "await":
            task = self.started.pop(step["as"])
            outcome = await _outcome(asyncio.wait_for(task, 10))
            assert not isinstance(outcome, asyncio.TimeoutError), f"still waiting: {step}"
            self.judge(step, outcome)
        elif do == "cancel":
            task = self.started.pop(step["as"])
            task.cancel()
            self.cancelled.append(task)
        elif do == "release":
            handle = self.holds.pop(step["hold"])
            if step["expect"] == "ok":
                await handle.release()
            elif step["expect"] == "lost":
                with pytest.raises(LockLost):
                    await handle.release()
            else:
                raise AssertionError(f"unknown release outcome {step['expect']!r}")
        elif do == "drop":
            handle = self.holds.pop(step["hold"])
            del handle  # the last reference: the client releases it in the background
        elif do == "check":
            token = self.tokens[step["token_of"]]
            valid = await self.client(step).check(self.name(step), token)
            assert ("valid" if valid else "invalid") == step["expect"], step
        elif do == "close":
            await self.client(step).close()
        elif do == "expect_waiters":
            kind = "semaphores" if step["kind"] == "semaphore" else "locks"
            name, count = self.name(step), step["count"]
            await until_async(
                lambda: self.server.waiters(name, kind) == count,
                10,
                f"{count} waiters on {name!r}",
            )
        elif do == "expect_lost":
            handle = self.holds[step["hold"]]
            reason = await asyncio.wait_for(handle.wait_lost(), 10)
            assert reason == LostReason(step["reason"]), step
        elif do == "admin_release_hold":
            hold_id = self.holds[step["hold"]].hold_id
            await asyncio.to_thread(self.server.admin_release, hold_id)
        else:
            raise AssertionError(f"unknown step {do!r}: the runner needs to learn it")

    async def finish(self) -> None:
        """Ends what the scenario left: tasks first, then the clients' sessions."""
        leftover = list(self.started.values())
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, *self.cancelled, return_exceptions=True)
        for client in self.clients.values():
            await client.close()


async def _outcome(awaitable: Any) -> Any:
    try:
        return await awaitable
    except Exception as error:  # the outcome is judged, not raised
        return error


@pytest.mark.parametrize(
    "index",
    range(len(SCENARIOS)),
    ids=[f"{i:02d}-{_slug(s['name'])}" for i, s in enumerate(SCENARIOS)],
)
async def test_conformance_scenario(conformance_server, index):
    scenario = SCENARIOS[index]
    run = Run(conformance_server, f"conformance-{index}-")
    try:
        for step in scenario["steps"]:
            await run.step(step)
        assert not run.started, "a started acquire was never awaited"
    finally:
        await run.finish()
