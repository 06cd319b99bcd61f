"""The sender's token bucket delivers its configured rate (measured on wall time)."""

import threading
import time

import pytest

from opss.client.throttle import TokenBucket
from opss.errors import LinkModelError

CHUNK = 64 * 1024


def _send(bucket: TokenBucket, total: int, chunk: int = CHUNK) -> float:
    """Push ``total`` bytes through the bucket in chunks; return the measured bytes/s."""
    start = time.perf_counter()
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        bucket.consume(n)
        sent += n
    return sent / (time.perf_counter() - start)


@pytest.mark.timing
@pytest.mark.parametrize(("mbit", "megabytes"), [(4.0, 0.75), (20.0, 3.0)])
def test_token_bucket_delivers_its_rate_within_5_percent(mbit, megabytes):
    rate = mbit * 1e6 / 8
    measured = _send(TokenBucket(rate), int(megabytes * 1e6))
    assert abs(measured - rate) / rate < 0.05, f"expected {rate:.0f} B/s, measured {measured:.0f} B/s"


@pytest.mark.timing
def test_token_bucket_rate_is_shared_by_concurrent_senders():
    rate = 8e6 / 8  # 8 Mbit/s
    bucket = TokenBucket(rate)
    per_thread = 250_000
    start = time.perf_counter()
    threads = [threading.Thread(target=_send, args=(bucket, per_thread, 16 * 1024)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    measured = 3 * per_thread / (time.perf_counter() - start)
    assert abs(measured - rate) / rate < 0.05


def test_burst_is_credit_earned_while_idle_and_capped():
    # a fake clock: the bucket's arithmetic, without sleeping
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    b = TokenBucket(1000.0, burst=500.0, clock=lambda: now[0], sleep=sleep)
    assert b.consume(1000) == pytest.approx(1.0)  # starts empty: pays the full second
    now[0] += 10.0  # idle 10 s earns at most 500 bytes of credit
    assert b.consume(500) == 0.0
    assert b.consume(250) == pytest.approx(0.25)
    assert b.bytes_paid == 1750


@pytest.mark.parametrize(("rate", "burst"), [(0, 0), (-1, 0), (float("inf"), 0), (1.0, -1)])
def test_bad_rate_or_burst_is_a_clear_error(rate, burst):
    with pytest.raises(LinkModelError, match="expected"):
        TokenBucket(rate, burst)
