#!/usr/bin/env python3
"""One entry point for a fresh machine with only Python 3.11+ and pip.

    python3 dev.py demo      # install into .venv, run the demo on the embedded default
    python3 dev.py test      # install into .venv (with test servers) and the Debian packages
                             # prometheus + tmux when missing, run the whole suite
    python3 dev.py bench     # run the benchmarks (on demand)

Extra arguments go to the command (``python3 dev.py test -m "not integration"``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed"
TEST_TOOLS = {"prometheus": "prometheus", "promtool": "prometheus", "tmux": "tmux"}
"""Commands the tests run -> the Debian package that ships them."""


def _python() -> Path:
    return VENV / "bin" / "python"


def ensure_installed() -> None:
    """Create ``.venv`` and install the project with test extras when pyproject changed."""
    if sys.version_info < (3, 11):
        sys.exit(f"ingester needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    if not _python().exists():
        print("creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    print("installing ingester and its dependencies into .venv (first run takes a minute) ...", flush=True)
    pip = [str(_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(digest)


def ensure_test_tools() -> None:
    """Install the Debian packages of missing test tools (root with apt-get; the tests that need
    a tool still missing afterwards fail and say so)."""
    missing = sorted({package for command, package in TEST_TOOLS.items() if shutil.which(command) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"warning: cannot install {' '.join(missing)} (needs root and apt-get); tests using them will fail", flush=True)
        return
    print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env)


def _parallel(rest: list[str]) -> list[str]:
    """One pytest worker per core (whole files to a worker, so a module's fixtures start once)
    unless the caller chose ``-n`` or ``-p no:xdist`` themselves. Each worker starts its own test
    servers on free ports; most tests wait on servers and subprocesses, so two cores do twice."""
    if any(arg == "-n" or arg.startswith(("-n", "--numprocesses")) or arg == "no:xdist" for arg in rest):
        return []
    return ["-n", str(max(2, os.cpu_count() or 1)), "--dist", "loadfile"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "bench"):
        print(__doc__)
        return 2
    ensure_installed()
    command, rest = argv[0], argv[1:]
    env = dict(os.environ, PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    if command == "demo":
        args = [str(VENV / "bin" / "ingester"), "demo", *rest]
    elif command == "test":
        ensure_test_tools()
        args = [str(_python()), "-m", "pytest", *_parallel(rest), *rest]
    else:
        args = [str(_python()), str(ROOT / "benchmarks" / "run.py"), *rest]
    return subprocess.run(args, cwd=ROOT if command != "demo" else Path.cwd(), env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
