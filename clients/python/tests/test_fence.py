"""The resource-side fencing rule: keep the highest token seen, refuse lower ones."""

from __future__ import annotations

import random
import threading

import pytest

from lockserver_client import Fence, InvalidArgument, StaleToken


def test_fence_admits_equal_and_higher_tokens_and_refuses_lower_ones():
    fence = Fence()
    assert fence.highest == 0
    fence.admit(7)
    fence.admit(7)  # the same holder writes again
    fence.admit(9)  # a newer holder
    with pytest.raises(StaleToken) as stale:
        fence.admit(8)  # the old holder woke up late
    assert (stale.value.token, stale.value.highest) == (8, 9)
    assert fence.highest == 9, "a refused token does not move the fence"
    assert fence.try_admit(9) is True
    assert fence.try_admit(3) is False


def test_fence_starts_from_a_stored_highest_token():
    fence = Fence(highest=100)
    assert not fence.try_admit(99)
    fence.admit(100)


def test_fence_refuses_what_is_not_a_token():
    fence = Fence()
    for bad in (-1, 1.5, "3", True, None):
        with pytest.raises(InvalidArgument):
            fence.admit(bad)  # type: ignore[arg-type]


def test_fence_shared_by_threads_ends_at_the_maximum_token():
    """Eight threads admit shuffled tokens through one fence: a racy read-compare-write would
    let a lower token overwrite a higher one."""
    fence = Fence()
    tokens = list(range(1, 20_001))
    random.Random(1).shuffle(tokens)
    chunks = [tokens[i::8] for i in range(8)]

    def worker(chunk):
        for token in chunk:
            fence.try_admit(token)

    threads = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fence.highest == 20_000
