"""The published PyPI client `lockserver-client==0.1.3`, unchanged, against our server.

Run by scripts/test-all.sh with the package installed into .tools/python (PYTHONPATH) and the
server binary built; starts the real binary on port 0 and reads the bound address from its
ready file (no fixed sleeps).
"""

import os
import subprocess
import sys
import tempfile
import time
import unittest

import requests
from lockserver_client import LockserverClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("LOCKSERVER_BIN", os.path.join(ROOT, "target", "release", "lockserver"))
SECRET = "compat-python-secret"


class Server:
    def __init__(self, *args):
        self.dir = tempfile.TemporaryDirectory()
        ready = os.path.join(self.dir.name, "ready")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSERVER_")}
        self.process = subprocess.Popen(
            [BINARY, "--port", "0", "--locker-port", "0", "--ready-file", ready,
             "--data-dir", os.path.join(self.dir.name, "data"), *args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            if self.process.poll() is not None:
                raise RuntimeError("lockserver exited before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError("lockserver was not ready within 30 s")
            time.sleep(0.01)
        with open(ready) as f:
            self.addr = next(line[5:].strip() for line in f if line.startswith("http="))

    def stop(self):
        self.process.kill()
        self.process.wait()
        self.dir.cleanup()


class PublishedClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("--secret", SECRET)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def client(self, owner, secret=SECRET):
        return LockserverClient(addr=self.server.addr, owner=owner, secret=secret)

    def test_non_blocking_acquire_and_release(self):
        a, b = self.client("a"), self.client("b")
        self.assertTrue(a.acquire("nb", blocking=False))
        self.assertFalse(b.acquire("nb", blocking=False))
        self.assertFalse(a.acquire("nb", blocking=False), "not re-entrant, as the original")
        a.release("nb")
        self.assertTrue(b.acquire("nb", blocking=False))
        b.release("nb")

    def test_blocking_acquire_waits_for_the_expiry(self):
        a, b = self.client("a"), self.client("b")
        started = time.monotonic()
        self.assertTrue(a.acquire("exp", blocking=False, expire=1))
        self.assertTrue(b.acquire("exp"))  # polls every 200 ms until a's lock expires
        waited = time.monotonic() - started
        self.assertGreaterEqual(waited, 1.0, "never before the expiry")
        self.assertLess(waited, 3.0)
        b.release("exp")

    def test_release_by_a_wrong_owner_or_of_a_free_resource_raises(self):
        a, b = self.client("a"), self.client("b")
        self.assertTrue(a.acquire("owned", blocking=False))
        with self.assertRaises(requests.HTTPError) as wrong:
            b.release("owned")
        self.assertEqual(wrong.exception.response.status_code, 409)
        a.release("owned")
        with self.assertRaises(requests.HTTPError) as free:
            a.release("owned")
        self.assertEqual(free.exception.response.status_code, 409)

    def test_a_wrong_secret_raises(self):
        intruder = self.client("a", secret="wrong")
        with self.assertRaises(requests.HTTPError) as refused:
            intruder.acquire("secret", blocking=False)
        self.assertEqual(refused.exception.response.status_code, 401)
        with self.assertRaises(requests.HTTPError):
            intruder.release("secret")

    def test_environment_fallbacks(self):
        saved = dict(os.environ)
        try:
            os.environ.update(LOCKSERVER_ADDR=self.server.addr, LOCKSERVER_OWNER="env-owner",
                              LOCKSERVER_SECRET=SECRET)
            client = LockserverClient()
            self.assertTrue(client.acquire("env", blocking=False))
            holders = requests.get(f"http://{self.server.addr}/v1/locks/env",
                                   headers={"Authorization": f"Bearer {SECRET}"}).json()["holders"]
            self.assertEqual(holders[0]["owner"], "env-owner")
            client.release("env")
        finally:
            os.environ.clear()
            os.environ.update(saved)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
