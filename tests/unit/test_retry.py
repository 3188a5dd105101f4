from __future__ import annotations

import anyio
import pytest
from aiokafka.errors import IllegalStateError, KafkaConnectionError, NodeNotReadyError
from pyiceberg.exceptions import CommitFailedException

from ingester.errors import UnreadableFile
from ingester.retry import RetryPolicy


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, s: float) -> None:
        self.waits.append(s)


def test_retries_transient_with_growing_capped_waits() -> None:
    sleep = FakeSleep()
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 5:
            raise CommitFailedException("conflict")
        return "ok"

    policy = RetryPolicy(max_retries=10, min_wait_s=1, backoff_base=2, max_wait_s=5, sleep=sleep)
    assert anyio.run(policy.run, flaky) == "ok"
    assert len(sleep.waits) == 4
    assert all(0.5 <= w <= 1 for w in sleep.waits[:1]) and all(w <= 5 for w in sleep.waits)
    assert 2.5 <= sleep.waits[3] <= 5


def test_terminal_errors_are_not_retried_and_attempts_are_bounded() -> None:
    sleep = FakeSleep()

    async def bad() -> None:
        raise UnreadableFile("x")

    with pytest.raises(UnreadableFile):
        anyio.run(RetryPolicy(sleep=sleep).run, bad)
    assert sleep.waits == []

    async def conflict() -> None:
        raise CommitFailedException("again")

    with pytest.raises(CommitFailedException):
        anyio.run(RetryPolicy(max_retries=3, sleep=sleep).run, conflict)
    assert len(sleep.waits) == 3


def test_unknown_errors_propagate_at_once() -> None:
    sleep = FakeSleep()

    async def bug() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        anyio.run(RetryPolicy(sleep=sleep).run, bug)
    assert sleep.waits == []


@pytest.mark.parametrize(
    "exc",
    [
        CommitFailedException("conflict"),
        OSError("AWS Error SLOW_DOWN during PutObject operation"),
        OSError("When reading: AWS Error NETWORK_CONNECTION during GetObject"),
        ConnectionError("reset"),
        TimeoutError(),
        KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]"),
        NodeNotReadyError("node 1 not ready"),
    ],
)
def test_transient_classification(exc: Exception) -> None:
    from ingester.errors import is_transient

    assert is_transient(exc)


def test_terminal_and_unknown_are_not_transient() -> None:
    from pyiceberg.exceptions import TooManyRequestsError, UnauthorizedError

    from ingester.errors import SchemaConflict, is_transient

    assert is_transient(TooManyRequestsError("slow down"))
    assert not is_transient(UnauthorizedError("bad token"))
    assert not is_transient(SchemaConflict("f", "c", "x"))
    assert not is_transient(OSError("No such file or directory"))
    assert not is_transient(IllegalStateError("partition not assigned"))
