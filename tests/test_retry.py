"""The backoff both remote clients share."""

import pytest

from entitynet.retry import Backoff, WaitTooLong


def test_exponential_with_equal_jitter_and_a_ceiling():
    backoff = Backoff(first=1.0, max_wait=10.0, seed=1)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        waits = [backoff.wait(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered


def test_retry_after_is_honoured_up_to_the_bound():
    backoff = Backoff(first=1.0, max_wait=30.0)
    assert backoff.wait(1, retry_after=7.0) == 7.0
    with pytest.raises(WaitTooLong, match="3600s"):
        backoff.wait(1, retry_after=3600.0)
