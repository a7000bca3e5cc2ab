"""The media executor: bounded, drops the oldest, keeps each stream in order,
and runs different streams at the same time."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from gateway.metrics import MEDIA_QUEUE_DROPS
from mediacodecs.executor import JobDropped, MediaExecutor, usable_cores

WAIT = 5.0  # seconds; only reached when something is broken


def _drops() -> float:
    return float(MEDIA_QUEUE_DROPS._value.get())


def test_sized_to_the_usable_cores_by_default() -> None:
    with MediaExecutor() as executor:
        assert executor.workers == usable_cores() >= 1
        assert executor.per_key == 4
        assert executor.max_queued is None  # bounded per stream, not globally


def test_a_stream_over_its_bound_drops_its_own_oldest_job_not_others() -> None:
    release = threading.Event()
    dropped: list[str] = []
    with MediaExecutor(1, per_key=2) as executor:
        blocker = executor.submit(lambda: release.wait(WAIT), key="blocker")
        quiet = executor.submit(lambda: "quiet", key="quiet")
        busy = [
            executor.submit(lambda n=n: n, key="busy", on_drop=lambda n=n: dropped.append(n))  # type: ignore[misc]
            for n in ("a", "b", "c")
        ]
        assert executor.queued == 3  # quiet + two of busy
        release.set()
        assert blocker.result(WAIT)
        assert quiet.result(WAIT) == "quiet"
        assert [job.result(WAIT) for job in busy[1:]] == ["b", "c"]
        with pytest.raises(JobDropped):
            busy[0].result(WAIT)
    assert dropped == ["a"]
    assert executor.dropped == 1


def test_bounds_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        MediaExecutor(1, per_key=0)


def test_results_and_errors_reach_the_future() -> None:
    with MediaExecutor(1) as executor:
        assert executor.submit(lambda: 42).result(WAIT) == 42
        failing = executor.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(WAIT)


def test_a_full_queue_drops_the_oldest_waiting_job() -> None:
    release = threading.Event()
    dropped: list[str] = []
    before = _drops()
    with MediaExecutor(1, max_queued=2) as executor:
        blocker = executor.submit(lambda: release.wait(WAIT))
        jobs: list[Future[str]] = [
            executor.submit(lambda n=n: n, on_drop=lambda n=n: dropped.append(n))  # type: ignore[misc]
            for n in ("a", "b", "c", "d")
        ]
        assert executor.queued == 2
        release.set()
        assert blocker.result(WAIT)
        assert [j.result(WAIT) for j in jobs[2:]] == ["c", "d"]
        for job in jobs[:2]:
            with pytest.raises(JobDropped):
                job.result(WAIT)
    assert dropped == ["a", "b"]
    assert executor.dropped == 2
    assert _drops() - before == 2


def test_jobs_of_one_key_run_in_order_one_at_a_time() -> None:
    order: list[int] = []
    running = 0
    most = 0
    lock = threading.Lock()

    def job(n: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002)
        with lock:
            running -= 1
            order.append(n)

    with MediaExecutor(2, per_key=50) as executor:
        futures = [executor.submit(lambda n=n: job(n), key="stream") for n in range(20)]  # type: ignore[misc]
        for future in futures:
            future.result(WAIT)
    assert order == list(range(20))
    assert most == 1


def test_different_keys_run_at_the_same_time() -> None:
    both_inside = threading.Barrier(2, timeout=WAIT)
    with MediaExecutor(2) as executor:
        first = executor.submit(both_inside.wait, key="a")
        second = executor.submit(both_inside.wait, key="b")
        # Each job waits for the other: this only finishes if they overlap.
        assert {first.result(WAIT), second.result(WAIT)} == {0, 1}


def test_a_busy_key_does_not_block_other_streams() -> None:
    release = threading.Event()
    with MediaExecutor(2) as executor:
        executor.submit(lambda: release.wait(WAIT), key="slow")
        queued_behind = executor.submit(lambda: "slow again", key="slow")
        other = executor.submit(lambda: "other", key="fast")
        assert other.result(WAIT) == "other"
        assert not queued_behind.done()
        release.set()
        assert queued_behind.result(WAIT) == "slow again"


def test_shutdown_cancels_waiting_jobs_and_refuses_new_ones() -> None:
    release = threading.Event()
    executor = MediaExecutor(1)
    executor.submit(lambda: release.wait(WAIT))
    waiting = executor.submit(lambda: "never")
    release.set()
    executor.shutdown()
    assert waiting.cancelled() or waiting.result(WAIT) == "never"
    with pytest.raises(RuntimeError):
        executor.submit(lambda: None)


async def test_run_awaits_the_result() -> None:
    with MediaExecutor(1) as executor:
        assert await executor.run(lambda: "done") == "done"
