"""Async retry policy: exponential backoff with jitter, injectable sleep, one place for rules."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from ingester.errors import is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries=None`` retries transient errors until cancelled (daemon); terminal and
    unknown errors are raised at once. Waits are ``min_wait_s * base**attempt`` capped at
    ``max_wait_s``, with full jitter."""

    max_retries: int | None = 5
    backoff_base: float = 2.0
    min_wait_s: float = 0.2
    max_wait_s: float = 30.0
    is_retryable: Callable[[BaseException], bool] = is_transient
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def wait_s(self, attempt: int) -> float:
        cap = min(self.max_wait_s, self.min_wait_s * self.backoff_base**attempt)
        return cap / 2 + self.rng.uniform(0, cap / 2)

    async def run(
        self, fn: Callable[[], Awaitable[T]], *, what: str = "operation", on_retry: Callable[[BaseException], None] | None = None
    ) -> T:
        attempt = 0
        while True:
            try:
                return await fn()
            except Exception as exc:
                if not self.is_retryable(exc) or (self.max_retries is not None and attempt >= self.max_retries):
                    raise
                wait = self.wait_s(attempt)
                log.warning("%s failed (%s: %s); retry %d in %.1fs", what, type(exc).__name__, exc, attempt + 1, wait)
                if on_retry is not None:
                    on_retry(exc)
                attempt += 1
                await self.sleep(wait)
