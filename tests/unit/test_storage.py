"""The storage allow-list, canonical locations, and how many files a batch opens at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingester.batch import Batch, Pending, TableRef
from ingester.catalog import open_catalog
from ingester.commit import SnapshotCommitter
from ingester.errors import LocationRefused, UnreadableFile
from ingester.events import FileEvent
from ingester.settings import CatalogSettings
from ingester.storage import FileReader, canonical
from tests.support import write_parquet


def test_canonical_resolves_dots_and_keeps_s3_keys() -> None:
    assert canonical("/a/b/../c.parquet") == "file:///a/c.parquet"
    assert canonical("file:///a/./c.parquet") == "file:///a/c.parquet"
    assert canonical("s3://bkt/in/./x/../k.parquet") == "s3://bkt/in/k.parquet"
    assert canonical("s3a://bkt/k") == "s3://bkt/k"


@pytest.mark.parametrize("location", ["http://host/x.parquet", "file://evil.example/x.parquet", "/a/\x00b"])
def test_canonical_refuses_other_schemes_hosts_and_nul_bytes(location: str) -> None:
    with pytest.raises(LocationRefused):
        canonical(location)


def test_canonical_local_paths_are_those_of_path_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Links and dots are resolved the way pathlib resolves them; a loop is refused."""
    real = tmp_path / "real" / "d"
    real.mkdir(parents=True)
    (real / "f.parquet").write_bytes(b"x")
    (tmp_path / "link").symlink_to(real)
    (real / "alias.parquet").symlink_to(real / "f.parquet")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    monkeypatch.chdir(tmp_path)
    for path in ["link/f.parquet", f"{tmp_path}/link/../d/f.parquet", f"{tmp_path}/real/./d/alias.parquet",
                 f"{tmp_path}/link/missing.parquet", f"{tmp_path}/nowhere/../real/d/f.parquet", "real/d", f"{real} b.parquet"]:
        assert canonical(path) == Path(path).resolve().as_uri(), path
    with pytest.raises(LocationRefused, match="cannot be resolved"):
        canonical(f"{tmp_path}/loop/x.parquet")


def test_allow_list_admits_only_paths_under_a_prefix(tmp_path: Path) -> None:
    allowed, other = tmp_path / "staging", tmp_path / "staging-other"
    path = write_parquet(allowed, {"id": [1]})
    reader = FileReader([allowed.as_uri()])
    assert reader.check(str(path)) == path.resolve().as_uri()
    for outside in (str(write_parquet(other, {"id": [1]})), f"{allowed}/../staging-other/x.parquet", "s3://bkt/staging/x"):
        with pytest.raises(LocationRefused, match="outside the allowed prefixes"):
            reader.check(outside)


def test_a_symlink_out_of_the_prefix_is_refused(tmp_path: Path) -> None:
    secret = write_parquet(tmp_path / "secret", {"id": [1]})
    (tmp_path / "staging").mkdir()
    link = tmp_path / "staging" / "link.parquet"
    link.symlink_to(secret)
    with pytest.raises(LocationRefused):
        FileReader([(tmp_path / "staging").as_uri()]).open(FileEvent(table="t", location=str(link)))


def test_missing_and_non_parquet_files_are_unreadable_not_errors(tmp_path: Path) -> None:
    reader = FileReader([tmp_path.as_uri()])
    with pytest.raises(UnreadableFile, match="file not found"):
        reader.open(FileEvent(table="t", location=str(tmp_path / "missing.parquet")))
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(UnreadableFile, match="not a readable parquet file"):
        reader.open(FileEvent(table="t", location=str(tmp_path / "text.parquet")))


def test_read_concurrency_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FileReader([tmp_path.as_uri()], read_concurrency=0)


class CountingReader(FileReader):
    """Records how many footer reads run at once (each takes a while, as on S3)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self.running = self.peak = 0

    def footer(self, event: FileEvent, allowed: Any = None) -> Any:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(0.05)
            return super().footer(event, allowed)
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize(("concurrency", "remote", "peak"), [(1, True, 1), (3, True, 3), (3, False, 1)])
def test_a_batch_opens_read_concurrency_files_at_once_and_keeps_their_order(
    tmp_path: Path, concurrency: int, remote: bool, peak: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Remote files (here: local ones taken for remote) are opened ``read_concurrency`` at once,
    local ones one after another."""
    import ingester.storage

    if remote:
        monkeypatch.setattr(ingester.storage, "is_remote", lambda location: True)
    paths = [write_parquet(tmp_path / "in", {"id": pa.array([i], pa.int64())}) for i in range(10)]
    reader = CountingReader([tmp_path.as_uri()], read_concurrency=concurrency)
    committer = SnapshotCommitter(open_catalog(CatalogSettings(), tmp_path / "home"), reader)
    batch = Batch(TableRef("ns", "t"), tuple(Pending(FileEvent(table="t", location=str(p))) for p in paths))
    loaded = committer.read(batch)
    assert reader.peak == peak
    assert [f.item for f in loaded.files] == list(batch.items)
    committer.apply(loaded)
    table = committer.catalog.load_table(("ns", "t"))
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == list(range(10))
