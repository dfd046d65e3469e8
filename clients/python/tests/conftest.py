"""Test harness: starts the real ``lockserver`` binary on port 0 with a temporary data
directory, waits for its start-up line (never a fixed sleep), and talks to it over HTTP.

The binary is ``$LOCKSERVER_BIN``, else ``<repo>/target/release/lockserver``; a missing binary
fails the run (it is never skipped). ``async def`` tests run under ``asyncio.run`` with a
deadline, so the suite needs nothing beyond pytest.
"""

from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import lockserver_client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
BIN = os.environ.get("LOCKSERVER_BIN") or os.path.join(ROOT, "target", "release", "lockserver")
ADMIN = "python-admin-secret"
#: An async test that runs longer than this fails instead of hanging the suite.
ASYNC_TEST_DEADLINE = 45.0


def pytest_configure(config: Any) -> None:
    if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
        raise pytest.UsageError(
            f"no lockserver binary at {BIN}: build it (cargo build --release -p lockserver) "
            "or point LOCKSERVER_BIN at one"
        )
    expected = os.environ.get("LOCKSERVER_CLIENT_EXPECT_INSTALLED")
    if expected:
        # run-tests.sh tests the installed package, never the source tree.
        where = os.path.realpath(lockserver_client.__file__)
        if not where.startswith(os.path.realpath(expected) + os.sep):
            raise pytest.UsageError(f"lockserver_client was imported from {where}, not {expected}")


def pytest_pyfunc_call(pyfuncitem: Any) -> Optional[bool]:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**arguments), ASYNC_TEST_DEADLINE))
    return True


class Server:
    """One lockserver process. ``args`` are extra flags (``--secret``, ...)."""

    def __init__(self, *args: str, admin_secret: str = ADMIN) -> None:
        self.dir = tempfile.mkdtemp(prefix="lockserver-python-")
        self.admin_secret = admin_secret
        self.secret: Optional[str] = None
        if "--secret" in args:
            self.secret = args[args.index("--secret") + 1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSERVER_")}
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [
                    BIN,
                    "--port",
                    "0",
                    "--locker-port",
                    "0",
                    "--data-dir",
                    os.path.join(self.dir, "data"),
                    "--admin-secret",
                    admin_secret,
                    *args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=self.dir,
            )
        lines: queue.Queue[Optional[str]] = queue.Queue()

        def pump() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:  # keeps draining: the pipe never fills up
                lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise RuntimeError("lockserver did not start within 30 s") from None
            if line is None:
                raise RuntimeError(f"lockserver exited before it was ready:\n{self.stderr()}")
            if line.startswith("lockserver listening "):
                break
        self.startup_line = line
        self.addr = field(line, "http")
        self.host, port = self.addr.rsplit(":", 1)
        self.port = int(port)

    def stderr(self) -> str:
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        self.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ----- HTTP -----

    def request(
        self, method: str, path: str, body: Any = None, secret: Optional[str] = None
    ) -> Tuple[int, Any]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        headers = {}
        secret = secret if secret is not None else self.secret
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            connection.close()
        try:
            return response.status, json.loads(text) if text else None
        except ValueError:
            return response.status, text

    def view(self, name: str, kind: str = "locks") -> Dict[str, Any]:
        status, body = self.request("GET", f"/v1/{kind}/{encode(name)}")
        assert status == 200, (status, body)
        return body

    def holders(self, name: str, kind: str = "locks") -> List[Dict[str, Any]]:
        return self.view(name, kind)["holders"]

    def waiters(self, name: str, kind: str = "locks") -> int:
        return self.view(name, kind)["waiters"]

    def admin_release(self, hold_id: str) -> None:
        status, body = self.request(
            "DELETE", f"/v1/admin/holds/{hold_id}", secret=self.admin_secret
        )
        assert status == 204, (status, body)

    def until_waiters(self, name: str, count: int, kind: str = "locks", within: float = 10) -> None:
        until(lambda: self.waiters(name, kind) == count, within, f"{count} waiters on {name!r}")

    def until_holders(self, name: str, count: int, kind: str = "locks", within: float = 10) -> None:
        until(
            lambda: len(self.holders(name, kind)) == count, within, f"{count} holders of {name!r}"
        )


def field(line: str, key: str) -> str:
    for part in line.split():
        if part.startswith(key + "="):
            return part[len(key) + 1 :]
    raise AssertionError(f"no {key}= in {line!r}")


def encode(name: str) -> str:
    """One path segment: everything but the unreserved characters percent-encoded."""
    return urllib.parse.quote(name, safe="")


def until(condition: Callable[[], bool], within: float = 10, what: str = "the condition") -> None:
    """Polls ``condition`` (every 10 ms) until it holds, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        time.sleep(0.01)


async def until_async(
    condition: Callable[[], bool], within: float = 10, what: str = "the condition"
) -> None:
    """``until`` for async tests: the HTTP look-up runs in a thread so the loop keeps going."""
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        await asyncio.sleep(0.01)


@pytest.fixture(scope="session")
def server():
    """The suite's shared server (admin secret set, no client secret). Tests use names of
    their own (the ``name`` fixture), so they do not see each other's locks."""
    instance = Server()
    yield instance
    instance.stop()


@pytest.fixture
def name(request: Any) -> Callable[[str], str]:
    """``name("x")``: a lock name unique to this test."""
    base = request.node.name

    def make(suffix: str) -> str:
        return f"{base}/{suffix}"

    return make


class Proxy:
    """A TCP proxy whose connections can be cut (both sides see a reset, no close frame), to
    break a client's connection mid-session. Runs on the test's event loop."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.refusing = False
        #: While set, bytes are held back (both ways): a server that stops answering.
        self.paused = False
        self.links: List[asyncio.Transport] = []
        self.accepted = 0
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        return self

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.links += [writer.transport, up_writer.transport]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def cut(self) -> None:
        for transport in self.links:
            transport.abort()
        self.links = []

    async def stop(self) -> None:
        self.paused = False
        self.cut()
        if self._server is not None:
            self._server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                while self.paused:
                    await asyncio.sleep(0.005)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
