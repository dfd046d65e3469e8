"""The RDLM client `rdlm-py` 0.2.0 (package `rdlmpy`), unchanged, against our server.

Run by scripts/test-all.sh with `rdlmpy` (fetched from PyPI, its sdist unpacked: it does not
build as published) and `requests` on PYTHONPATH.
"""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_lockserver_client import Server  # noqa: E402

from rdlmpy import (RDLMClient, RDLMContextManager, RDLMLockDeletedException,  # noqa: E402
                    RDLMLockWaitExceededException)

ADMIN = "rdlm-admin:secret"  # a colon in the password is fine


class PublishedRdlmClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("--admin-secret", ADMIN)
        host, port = cls.server.addr.rsplit(":", 1)
        cls.host, cls.port = host, int(port)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def client(self, **kwargs):
        return RDLMClient(server=self.host, port=self.port, **kwargs)

    def test_acquire_get_release(self):
        client = self.client(default_title="worker one")
        url = client.lock_acquire("res1", lifetime=30, wait=5)
        self.assertTrue(url.startswith(f"http://{self.host}:{self.port}/locks/res1/"), url)
        lock = client.lock_get(url)
        self.assertTrue(lock.active)
        self.assertEqual((lock.title, lock.lifetime, lock.wait), ("worker one", 30, 5))
        self.assertEqual(len(lock.uid), 32)
        self.assertLess(lock.active_since, lock.active_expires)
        self.assertTrue(client.lock_release(url))
        self.assertFalse(client.lock_release(url), "gone: 404")
        self.assertIsNone(client.lock_get(url))

    def test_wait_runs_out_with_408_never_early(self):
        client = self.client()
        url = client.lock_acquire("res2", lifetime=30, wait=1)
        started = time.monotonic()
        with self.assertRaises(RDLMLockWaitExceededException):
            client.lock_acquire("res2", lifetime=30, wait=1)
        waited = time.monotonic() - started
        self.assertGreaterEqual(waited, 1.0)
        self.assertLess(waited, 2.5)
        with self.assertRaises(RDLMLockWaitExceededException):
            client.lock_acquire("res2", lifetime=30, wait=0)  # at once: millisecond timers
        client.lock_release(url)

    def test_admin_lists_and_deletes_with_basic_auth(self):
        client = self.client()
        url = client.lock_acquire("res3", lifetime=30, wait=1)
        self.assertIn("res3", client.resource_get_all("anyone", ADMIN))
        locks = client.resource_get_all_locks("res3", "anyone", ADMIN)
        self.assertEqual([lock.uid for lock in locks], [url.rsplit("/", 1)[1]])
        # A waiter, deleted by the admin, hears 409.
        outcome = {}

        def wait_for_it():
            try:
                self.client().lock_acquire("res3", lifetime=30, wait=20)
                outcome["result"] = "granted"
            except RDLMLockDeletedException:
                outcome["result"] = "deleted"

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        deadline = time.monotonic() + 10
        while len(client.resource_get_all_locks("res3", "anyone", ADMIN)) < 2:
            self.assertLess(time.monotonic(), deadline, "the waiter never queued")
            time.sleep(0.01)
        active, waiting = client.resource_get_all_locks("res3", "anyone", ADMIN)
        self.assertTrue(active.active)
        self.assertFalse(waiting.active)
        self.assertTrue(client.resource_delete("res3", "anyone", ADMIN))
        waiter.join(10)
        self.assertEqual(outcome.get("result"), "deleted")
        self.assertFalse(client.resource_delete("res3", "anyone", ADMIN), "nothing left: 404")
        self.assertIsNone(client.lock_get(url))
        # Wrong password: the listing fails.
        with self.assertRaises(Exception):
            client.resource_get_all("anyone", "wrong")
        client.lock_acquire("res4", lifetime=30, wait=1)
        self.assertTrue(client.resource_delete_all("anyone", ADMIN))
        self.assertEqual(client.resource_get_all("anyone", ADMIN), [])

    def test_context_manager(self):
        with RDLMContextManager("res5", server=self.host, port=self.port, lifetime=30, wait=2):
            with self.assertRaises(RDLMLockWaitExceededException):
                self.client().lock_acquire("res5", lifetime=30, wait=0)
        url = self.client().lock_acquire("res5", lifetime=30, wait=0)  # released on exit
        self.client().lock_release(url)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
