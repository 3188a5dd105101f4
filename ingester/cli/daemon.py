"""The daemon's life (``ingester run``, the demo's engine step): the metrics endpoint, waiting for
the catalog, the engine, and SIGTERM/SIGINT honoured in every state within ``shutdown_timeout_s``.

A stop signal cancels whatever the daemon waits on: the catalog at startup, the broker's
connection or group join, a poll, a backoff sleep. The engine then drains, commits and acks
what it admitted; what is not committed in time stays unacked and is delivered again (the
snapshot markers keep it once). A share of the bound is kept for the last ack, leaving the
group and closing the dead-letter sink. Should a thread that cannot be cancelled hold the
process (a catalog call in flight), a watchdog ends it when the bound is over.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ingester.settings import Settings

if TYPE_CHECKING:
    from ingester.engine import Engine, EngineStats
    from ingester.metrics import Metrics

log = logging.getLogger("ingester")

CLOSE_SHARE = 1 / 3
"""Of the shutdown bound, kept for the last ack, leaving the group, closing sinks and exiting ..."""
MAX_CLOSE_RESERVE_S = 10.0
"""... but never more than this."""
WATCHDOG_EARLY_S = 0.5
"""The watchdog ends the process this much before the bound (at most a tenth of it): gone by then."""


def catch_signals_early() -> list[str]:
    """Until the event loop watches them, remember SIGTERM/SIGINT instead of dying (the returned
    list; ``Shutdown(early=...)`` acts on it once the loop runs)."""
    early: list[str] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: early.append(f"signal {signal.Signals(received).name}"))
    return early


class Shutdown:
    """What a stop signal does in each state of the daemon, within one bound.

    Before the engine exists (the catalog is waited for) ``startup`` is cancelled; once it is
    ``attach``ed, the engine is asked to stop within the bound less the close reserve. The first
    request starts a watchdog thread that calls ``exit_process(0)`` just before the bound is over;
    ``disarm`` stops it (for in-process use).
    """

    def __init__(self, timeout_s: float, *, early: list[str] | None = None,
                 exit_process: Callable[[int], None] = os._exit) -> None:
        self.timeout_s = timeout_s
        self.early = early if early is not None else []
        self.startup = anyio.CancelScope()
        self.stop_by: float | None = None
        self.engine: Engine | None = None
        self._exit = exit_process
        self._disarmed = threading.Event()

    @property
    def requested(self) -> bool:
        return self.stop_by is not None

    @property
    def close_reserve_s(self) -> float:
        return min(MAX_CLOSE_RESERVE_S, self.timeout_s * CLOSE_SHARE)

    def remaining_s(self) -> float:
        """Seconds left of the bound (infinite before a stop is requested)."""
        return math.inf if self.stop_by is None else max(0.0, self.stop_by - anyio.current_time())

    def request(self, reason: str) -> None:
        """Stop within the bound (from the event loop). A second request only logs."""
        if self.stop_by is not None:
            log.info("%s: already stopping, %.0f s left", reason, self.remaining_s())
            return
        self.stop_by = anyio.current_time() + self.timeout_s
        log.info("%s: stopping within %.0f s (cancel waits, drain, commit, ack)", reason, self.timeout_s)
        threading.Thread(target=self._watchdog, name="ingester-stop-watchdog", daemon=True).start()
        self.startup.cancel()
        if self.engine is not None:
            self._stop_engine(self.engine)

    def attach(self, engine: Engine) -> None:
        self.engine = engine
        if self.requested:
            self._stop_engine(engine)

    def disarm(self) -> None:
        self._disarmed.set()

    def _stop_engine(self, engine: Engine) -> None:
        engine.stop(max(0.0, self.remaining_s() - self.close_reserve_s))

    def _watchdog(self) -> None:
        if self._disarmed.wait(self.timeout_s - min(WATCHDOG_EARLY_S, self.timeout_s / 10)):
            return
        log.error("not stopped %.0f s after the stop signal (a call that cannot be cancelled is in flight): "
                  "exiting now; nothing uncommitted was acked, the queue delivers it again", self.timeout_s)
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._exit(0)


async def watch_signals(shutdown: Shutdown) -> None:
    """Turn SIGTERM/SIGINT (also those caught early) into ``shutdown.request`` until cancelled."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        for reason in shutdown.early:
            shutdown.request(reason)
        async for signum in signals:
            shutdown.request(f"signal {signal.Signals(signum).name}")


async def run_daemon(
    settings: Settings, exit_when_idle: bool, early: list[str] | None = None, *, metrics: Metrics | None = None,
    listing_rounds: int | None = None,
) -> EngineStats | None:
    """Serve metrics, connect (waiting for the catalog), run the engine until it ends or a stop
    signal (``early``: those ``catch_signals_early`` caught); ``None`` when stopped before the
    catalog was reached. Raises what the engine raises. ``metrics``: the engine's (default: new);
    ``listing_rounds``: a listing source stops after that many rounds (``backfill``: one)."""
    from ingester.metrics import Metrics, serve

    shutdown = Shutdown(settings.shutdown_timeout_s, early=early)
    metrics = metrics or Metrics()
    metrics.max_inflight_bytes.set(settings.window.max_inflight_bytes)
    server = None
    if settings.metrics.port:  # up while the catalog is waited for: alive, not ready
        server = serve(metrics, settings.metrics.host, settings.metrics.port,
                       lambda: shutdown.engine is None or shutdown.engine.heartbeat.alive(),
                       lambda: shutdown.engine is not None and shutdown.engine.ready)
    try:
        async with anyio.create_task_group() as signals:
            if threading.current_thread() is threading.main_thread():
                signals.start_soon(watch_signals, shutdown)
            try:
                stats = await _connect_and_run(settings, metrics, shutdown, exit_when_idle, listing_rounds)
            finally:
                signals.cancel_scope.cancel()
    finally:
        if server is not None:
            server.shutdown()
    return stats


async def _connect_and_run(
    settings: Settings, metrics: Metrics, shutdown: Shutdown, exit_when_idle: bool, listing_rounds: int | None
) -> EngineStats | None:
    from ingester.cli.progress import engine_progress
    from ingester.wiring import build_engine, retry_policy

    with shutdown.startup:  # a catalog that is down or throttling at startup is waited for, like one down later
        shutdown.attach(await retry_policy(settings).run(
            lambda: anyio.to_thread.run_sync(lambda: build_engine(settings, metrics=metrics, listing_rounds=listing_rounds),
                                          abandon_on_cancel=True),
            what="connect to the catalog", on_retry=lambda exc: metrics.retries.labels("connect to the catalog").inc(),
        ))
    engine = shutdown.engine
    if engine is None:
        log.info("stop: abandoned waiting for the catalog; nothing was consumed")
        return None
    try:
        with engine_progress(settings, engine, exit_when_idle):
            return await engine.run(exit_when_idle=exit_when_idle)
    finally:
        with anyio.move_on_after(shutdown.remaining_s()) as closing:
            await _close(engine)
        if closing.cancelled_caught:
            log.warning("stop: closing the source and the dead-letter sink did not finish in time: abandoned")


async def _close(engine: Engine) -> None:
    """Leave the group, flush and stop a Kafka dead-letter producer."""
    try:
        await engine.source.aclose()
    finally:
        await anyio.to_thread.run_sync(engine.deadletters.close, abandon_on_cancel=True)
