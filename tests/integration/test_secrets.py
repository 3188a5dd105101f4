"""Secrets never show. ``ingester`` runs as a user runs it (subprocesses, ``INGESTER_*`` env,
DEBUG logs) against the real REST catalog and S3 store (SeaweedFS) with OAuth2 client
credentials, a bearer token and S3 keys, and with wrong ones. Everything it prints, the dead
letters it writes, its metrics endpoint, exception texts and the reprs of settings are grepped
for the secret values: zero hits. Wrong credentials end with exit code 1 and a one-line
"authentication failed" error, no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingester.catalog import open_catalog
from ingester.errors import is_auth_failure
from ingester.events import FileEvent, encode_event
from ingester.settings import CatalogSettings, Settings
from ingester.sources.spool import SpoolQueue
from ingester.storage import FileReader
from ingester.testing.localstack import free_port
from ingester.wiring import s3_for
from tests.support import catalog_env, event_for, rest_catalog_settings, write_parquet

INGESTER = str(Path(sys.executable).parent / "ingester")
MASK = "**********"
FRAGMENT = 10  # characters of a secret's head or tail that count as a leak


def wrong(what: str) -> str:
    """A distinctive wrong secret."""
    return f"WRONG-{what}-{uuid.uuid4().hex}"


@dataclass
class Transcript:
    """Runs ``ingester`` in one home and keeps every byte it printed or wrote, for the grep."""

    home: Path
    env: dict[str, str]
    texts: dict[str, str] = field(default_factory=dict)

    def environ(self, **extra: str) -> dict[str, str]:
        outer = {k: v for k, v in os.environ.items() if not k.startswith("INGESTER_")}
        return {**outer, "INGESTER_HOME": str(self.home), "INGESTER_LOG_LEVEL": "DEBUG", **self.env, **extra}

    def keep(self, label: str, text: str) -> str:
        self.texts[f"{label} #{len(self.texts)}"] = text
        return text

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([INGESTER, *args], env=self.environ(), capture_output=True, text=True, timeout=300)
        self.keep(f"ingester {' '.join(args)}", done.stdout + done.stderr)
        assert done.returncode == code, f"ingester {args[0]}: exit {done.returncode}: {done.stderr[-3000:]}"
        return done

    def queue(self, *payloads: bytes) -> None:
        SpoolQueue(self.home / "queue.db").put_many(payloads)

    def queue_file(self, table: str, n: int) -> None:
        """A parquet file in the local staging folder and its event."""
        path = write_parquet(self.home / "staging", {"id": pa.array(range(n), pa.int64())})
        self.queue(event_for(path, table))

    def rows(self, table: str) -> int:
        """Rows of ``table`` as ``ingester tables --json`` shows them."""
        return {t["name"]: t["rows"] for t in json.loads(self.run("tables", "--json").stdout)}[table]

    def keep_dead_letters(self) -> str:
        path = self.home / "deadletter" / "deadletters.jsonl"
        return self.keep("dead letters", path.read_text() if path.exists() else "")

    def leaks(self, secrets: dict[str, str]) -> list[tuple[str, str]]:
        """(output, secret) for each secret seen whole, or its head or tail (reprs cut the middle)."""
        return [(label, name) for label, text in self.texts.items() for name, value in secrets.items()
                if any(part in text for part in {value, value[:FRAGMENT], value[-FRAGMENT:]})]


def metrics(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return str(resp.read().decode())


def sample(text: str, name: str, labels: dict[str, str]) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and labels.items() <= s.labels.items())


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_valid_credentials_never_show(seaweed: Any, tmp_path: Path) -> None:
    """The daemon with OAuth2 and S3 keys (S3 staging, dead letters, metrics), then a bearer token."""
    ns = f"sec{uuid.uuid4().hex[:8]}"
    token = seaweed.fetch_token()
    secrets = {"client secret / S3 secret key": seaweed.secret_key, "bearer token": token}
    staging = f"s3://warehouse/{ns}/staging"
    port = free_port()
    daemon = Transcript(tmp_path / "oauth2", {
        **catalog_env(rest_catalog_settings(seaweed, "oauth2")), "INGESTER_ROUTING__NAMESPACE": ns,
        "INGESTER_STORAGE__STAGING": staging, "INGESTER_WINDOW__MAX_BATCH_AGE_S": "1",
        "INGESTER_METRICS__PORT": str(port), "INGESTER_LOG_FORMAT": "json",
    })
    files = [str(write_parquet(tmp_path / "src", {"id": pa.array(range(i * 10, i * 10 + 10), pa.int64())}))
             for i in range(3)]
    assert "published 3 events" in daemon.run("publish", *files, "--table", "orders").stdout
    daemon.queue(b"{not json", encode_event(FileEvent("orders", location=f"{staging}/missing.parquet")),
                 encode_event(FileEvent("orders", location="file:///etc/passwd")))

    proc = subprocess.Popen([INGESTER, "run"], env=daemon.environ(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        def committed() -> bool:
            try:
                text = metrics(port)
            except OSError:
                return False
            return sample(text, "ingester_rows_total", {}) == 30 and sample(text, "ingester_dead_letters_total", {}) == 3

        wait_for(committed, "30 rows and 3 dead letters in the metrics")
        daemon.keep("/metrics", metrics(port))
        assert daemon.keep("/healthz", metrics(port, "/healthz")) == "ok\n"
        assert daemon.keep("/readyz", metrics(port, "/readyz")) == "ok\n"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    daemon.keep("ingester run (daemon)", out)
    assert proc.returncode == 0, out[-3000:]
    letters = daemon.keep_dead_letters()
    assert all(reason in letters for reason in ("not JSON", "missing.parquet: file not found", "outside the allowed"))
    assert daemon.rows(f"{ns}.orders") == 30
    shown = daemon.run("settings").stdout
    assert shown.count(MASK) >= 3  # credential, S3 key id, S3 secret key

    # a bearer token instead of client credentials
    bearer = Transcript(tmp_path / "bearer", {**catalog_env(rest_catalog_settings(seaweed, "token") | {"token": token}),
                                               "INGESTER_ROUTING__NAMESPACE": ns})
    bearer.queue_file("by_token", 7)
    bearer.run("run", "--exit-when-idle")
    assert bearer.rows(f"{ns}.by_token") == 7

    # reprs as the code prints them: settings, their dump, the catalog
    settings = Settings(home=tmp_path / "oauth2", catalog=rest_catalog_settings(seaweed, "oauth2")
                        | {"token": token, "properties": {"header.X-Api-Key": token}})
    for label, text in {"repr(settings)": repr(settings), "str(settings)": str(settings),
                        "settings dump": settings.model_dump_json(), "settings.catalog": repr(settings.catalog),
                        "str(dump)": str(settings.model_dump()),
                        "catalog": repr(open_catalog(settings.catalog, settings.home_dir))}.items():
        daemon.keep(label, text)
    leaks = daemon.leaks(secrets) + bearer.leaks(secrets)
    print(f"secret grep: {len(daemon.texts) + len(bearer.texts)} outputs, {len(leaks)} hits")
    assert leaks == []


@dataclass(frozen=True)
class WrongCredential:
    name: str
    catalog: Callable[[Any, str], dict[str, Any]]
    publish_fails: bool = False


WRONG = [
    WrongCredential("oauth2 client secret", lambda sw, bad: rest_catalog_settings(sw, "oauth2")
                    | {"credential": f"{sw.access_key}:{bad}"}),
    WrongCredential("bearer token", lambda sw, bad: rest_catalog_settings(sw, "token") | {"token": bad}),
    WrongCredential("S3 secret key", lambda sw, bad: rest_catalog_settings(sw, "oauth2")
                    | {"s3_secret_access_key": bad}, publish_fails=True),
]


@pytest.mark.parametrize("case", WRONG, ids=[w.name for w in WRONG])
def test_wrong_credentials_fail_clearly_without_the_secret(seaweed: Any, tmp_path: Path, case: WrongCredential) -> None:
    bad = wrong(case.name.split()[-1])
    ns = f"sec{uuid.uuid4().hex[:8]}"
    catalog = case.catalog(seaweed, bad)
    t = Transcript(tmp_path / "home", {**catalog_env(catalog), "INGESTER_ROUTING__NAMESPACE": ns,
                                       "INGESTER_COMMIT__MAX_RETRIES": "2", "INGESTER_COMMIT__RETRY_MIN_WAIT_S": "0.1"})
    t.queue_file("refused", 5)
    failures = [t.run("run", "--exit-when-idle", code=1).stderr]
    if case.publish_fails:  # the catalog takes the client credentials, S3 refuses the key
        src = write_parquet(tmp_path / "src", {"id": [1]})
        t.env["INGESTER_STORAGE__STAGING"] = f"s3://warehouse/{ns}/staging"
        failures.append(t.run("publish", str(src), "--table", "refused", code=1).stderr)
    else:
        failures.append(t.run("tables", "--json", code=1).stderr)
    for stderr in failures:
        assert "authentication failed" in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert t.keep_dead_letters() == ""  # refused credentials never turn events into dead letters
    assert SpoolQueue(t.home / "queue.db").depth() == 1  # nothing acked

    # the same failure in-process: its exception text and traceback
    cfg = CatalogSettings(**catalog)
    try:
        if case.publish_fails:
            staged = write_parquet(tmp_path / "staged", {"id": [1]})
            seaweed.s3_client().upload_file(str(staged), "warehouse", f"{ns}/in/one.parquet")
            FileReader([f"s3://warehouse/{ns}/in"], s3_for(Settings(catalog=cfg))).read(
                FileEvent("t", location=f"s3://warehouse/{ns}/in/one.parquet"))
        else:
            open_catalog(cfg, tmp_path / "home").list_namespaces()
    except Exception as exc:  # noqa: BLE001 - any failure is inspected below
        assert is_auth_failure(exc), repr(exc)
        t.keep("exception", f"{exc}\n{exc!r}\n{''.join(traceback.format_exception(exc))}")
    else:
        pytest.fail(f"wrong {case.name} was accepted")
    assert t.leaks({case.name: bad, "valid secret": seaweed.secret_key}) == []


def test_settings_errors_never_echo_values(tmp_path: Path) -> None:
    """A mistyped secret variable, or a REST catalog without its URI: the error names the
    setting, never a value."""
    token = wrong("token")
    t = Transcript(tmp_path / "home", {"INGESTER_CATALOG__CREDENTAIL": f"client:{token}"})
    assert "catalog.credentail" in t.run("settings", code=2).stderr
    t.env = {"INGESTER_CATALOG__TYPE": "rest", "INGESTER_CATALOG__TOKEN": token,
             "INGESTER_CATALOG__S3_SECRET_ACCESS_KEY": token}
    assert "catalog.uri is required" in t.run("run", "--exit-when-idle", code=2).stderr
    assert t.leaks({"token": token}) == []
