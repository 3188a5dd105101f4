"""The arrow memory pool of a daemon: jemalloc, giving freed pages back after a short decay.

pyarrow's default pool (mimalloc) and glibc keep freed memory for reuse, so under a steady
rewrite a daemon holds much more than it uses. jemalloc with a ``DECAY_MS`` decay gives it
back. Arrow picks the pool of its C++ internals (parquet encoders, codecs) when it loads, from
``ARROW_DEFAULT_MEMORY_POOL``: ``prefer_jemalloc`` sets that before pyarrow loads, unless the
user chose a pool there; ``use_daemon_pool`` then sets the decay (and, if pyarrow was loaded
first, switches at least pyarrow's own default).
"""

from __future__ import annotations

import logging
import os
import sys

ENV = "ARROW_DEFAULT_MEMORY_POOL"
DECAY_MS = 300

log = logging.getLogger(__name__)


def prefer_jemalloc() -> None:
    """Call before pyarrow loads (``ingester run`` does): jemalloc for every arrow allocation."""
    if "pyarrow" not in sys.modules:
        os.environ.setdefault(ENV, "jemalloc")


def use_daemon_pool() -> str:
    """jemalloc as the default pool with a ``DECAY_MS`` decay, unless the user chose another
    pool or this pyarrow has no jemalloc; returns the backend in use."""
    import pyarrow as pa

    chosen = os.environ.get(ENV)
    if chosen and chosen != "jemalloc":
        return pa.default_memory_pool().backend_name
    try:
        pa.jemalloc_set_decay_ms(DECAY_MS)  # arenas made from now on take it
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool().backend_name
    if pa.default_memory_pool().backend_name != pool.backend_name:
        pa.set_memory_pool(pool)
    log.debug("arrow memory pool: jemalloc, decay %d ms", DECAY_MS)
    return pool.backend_name
