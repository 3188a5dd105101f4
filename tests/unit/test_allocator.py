"""The daemon's arrow pool: jemalloc unless the user chose one (each case in a fresh process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import sys
from ingester.allocator import prefer_jemalloc, use_daemon_pool
if sys.argv[1] == "late":
    import pyarrow
prefer_jemalloc()
import pyarrow as pa
loaded = pa.default_memory_pool().backend_name
print(loaded, use_daemon_pool(), pa.default_memory_pool().backend_name)
"""


def run(when: str, pool: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if pool:
        env["ARROW_DEFAULT_MEMORY_POOL"] = pool
    out = subprocess.run([sys.executable, "-c", SCRIPT, when], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.fixture(autouse=True)
def _jemalloc_built_in() -> None:
    import pyarrow as pa

    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:  # pragma: no cover - every Linux wheel has it
        pytest.fail("this pyarrow has no jemalloc: the daemon keeps the default pool")


def test_a_daemon_loads_arrow_with_jemalloc() -> None:
    assert run("early", None) == ["jemalloc", "jemalloc", "jemalloc"]


def test_arrow_loaded_first_still_gets_jemalloc_as_its_default() -> None:
    assert run("late", None) == ["mimalloc", "jemalloc", "jemalloc"]


def test_a_pool_the_user_chose_is_kept() -> None:
    assert run("early", "system") == ["system", "system", "system"]
