"""qastream.policy.backoff: the retry schedule as a table."""

import pytest

from qastream.errors import ErrorClass
from qastream.policy.backoff import RetryPolicy, retry_delay

DEFAULT = RetryPolicy()


@pytest.mark.parametrize("overload_retries, delay", [(0, 2.0), (1, 4.0), (2, 8.0), (3, None), (10, None)])
def test_overload_schedule(overload_retries, delay):
    assert retry_delay(DEFAULT, ErrorClass.OVERLOAD, overload_retries, 0) == delay


def test_overload_ignores_quota_count_and_retry_after():
    assert retry_delay(DEFAULT, ErrorClass.OVERLOAD, 1, 99, retry_after=60.0) == 4.0


def test_custom_overload_schedule():
    policy = RetryPolicy(overload_delays=(0.5, 1.5))
    assert [retry_delay(policy, ErrorClass.OVERLOAD, n, 0) for n in range(3)] == [0.5, 1.5, None]


def test_empty_overload_schedule_gives_up_at_once():
    assert retry_delay(RetryPolicy(overload_delays=()), ErrorClass.OVERLOAD, 0, 0) is None


@pytest.mark.parametrize("quota_retries, retry_after, delay", [
    (0, None, 30.0),    # fixed delay without Retry-After
    (4, None, 30.0),
    (0, 7.0, 7.0),      # Retry-After honoured
    (0, 0.0, 0.0),      # even when it says "now"
    (0, 120.0, 120.0),  # and when it is longer than the fixed delay
    (5, None, None),    # quota_max retries made: give up
    (5, 7.0, None),
    (9, None, None),
])
def test_quota_schedule(quota_retries, retry_after, delay):
    assert retry_delay(DEFAULT, ErrorClass.QUOTA, 0, quota_retries, retry_after) == delay


def test_quota_ignores_overload_count():
    assert retry_delay(DEFAULT, ErrorClass.QUOTA, 99, 0) == 30.0


def test_quota_max_zero_never_retries():
    assert retry_delay(RetryPolicy(quota_max=0), ErrorClass.QUOTA, 0, 0, 1.0) is None


@pytest.mark.parametrize("error_class", [ErrorClass.PERMANENT, "", "unknown"])
def test_permanent_and_unknown_never_retry(error_class):
    assert retry_delay(DEFAULT, error_class, 0, 0, retry_after=1.0) is None
