"""Hostile input: a generated corpus of malformed events, interleaved with good events for
three tables, through ONE engine run on the embedded catalog.

Every bad event lands in the dead letters with a reason that names its problem (and no
traceback), every good row lands exactly once, and no file outside the allowed prefixes is
ever opened: Python-level opens and links are recorded by an audit hook and the reader's
``pyarrow.memory_map`` is wrapped, for the duration of the run.
"""

from __future__ import annotations

import base64
import gzip
import io
import itertools
import json
import os
import random
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingester.catalog import open_catalog
from ingester.deadletter import FolderDeadLetters
from ingester.iceberg_layer.ledger import is_ledger, ledger_name
from ingester.settings import Settings
from ingester.sources.spool import SpoolQueue, SpoolSource
from ingester.wiring import build_engine

TABLES = ("orders", "users", "clicks")
S3_ALLOWED = "s3://landing/in/"
MB = 1024 * 1024
HEAD_FILES = 20  # files per window; the first window of each table is its head
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"]*", line \d+')


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile event and the text its dead letter's reason must contain."""

    category: str
    payload: bytes
    reason: str


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def rows_of(ids: list[int], **extra: pa.Array) -> pa.Table:
    """The tables' schema: id bigint, v text, amount double (plus extra columns)."""
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "v": pa.array([f"v{i}" for i in ids], pa.string()),
        "amount": pa.array([i * 0.5 for i in ids], pa.float64()),
        **extra,
    })


def envelope(**fields: Any) -> bytes:
    return json.dumps({"v": 1, **fields}, separators=(",", ":")).encode()


@dataclass
class Corpus:
    """Files under ``staging`` (the allowed prefix) and ``outside`` (a honeypot), the good
    events with the ids they must land, and the hostile cases."""

    staging: Path
    outside: Path
    seed: int = 7
    good: list[bytes] = field(default_factory=list)
    head: dict[str, list[bytes]] = field(default_factory=lambda: {t: [] for t in TABLES})
    cases: list[Case] = field(default_factory=list)
    expected: dict[str, list[int]] = field(default_factory=lambda: {t: [] for t in TABLES})
    duplicates: int = 0
    benign: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _names: Iterator[int] = field(default_factory=lambda: itertools.count())

    # ------------------------------------------------------------- helpers
    def file(self, data: pa.Table | bytes, name: str | None = None, folder: Path | None = None) -> Path:
        path = (folder or self.staging) / (name or f"f{next(self._names)}.parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else parquet_bytes(data))
        return path

    def fresh_ids(self, n: int) -> list[int]:
        return [next(self._ids) for _ in range(n)]

    def bad(self, category: str, reason: str, payload: bytes) -> None:
        self.cases.append(Case(category, payload, reason))

    def bad_location(self, category: str, reason: str, location: str, table: str = "orders", **kw: Any) -> None:
        """A well-formed event naming ``location``; its event id maps the dead letter back."""
        self.bad(category, reason, envelope(table=table, location=location, event_id=f"bad-{len(self.cases)}", **kw))

    def bad_data(self, category: str, reason: str, data: bytes | str, table: str = "orders", **kw: Any) -> None:
        text = data if isinstance(data, str) else base64.b64encode(data).decode()
        self.bad(category, reason, envelope(table=table, data=text, event_id=f"bad-{len(self.cases)}", **kw))

    def good_event(self, table: str, data: pa.Table, *, inline: bool = False, name: str | None = None,
                   place: Callable[[Path], str] = str, **kw: Any) -> bytes:
        """A good event whose rows must land in ``table`` exactly once; ``place`` turns the
        written file into the event's location."""
        self.expected[table].extend(data.column("id").to_pylist() if "id" in data.column_names else [])
        if inline:
            return envelope(table=table, data=base64.b64encode(parquet_bytes(data)).decode(), rows=data.num_rows, **kw)
        return envelope(table=table, location=place(self.file(data, name)), rows=data.num_rows, **kw)

    def inner_link(self, path: Path) -> str:
        """A symlink inside the allowed folder to a file inside it."""
        link = path.with_name(f"link-{path.name}")
        link.symlink_to(path)
        return str(link)

    # -------------------------------------------------------------- corpus
    def build(self) -> list[bytes]:
        """Every payload to publish: first each table's head (exactly one window of files that
        fit the table as they are, so it commits zero-copy: the table is created from a good
        file, a corrupt one must be caught before it is registered), then good and hostile
        events shuffled together."""
        self.staging.mkdir(parents=True, exist_ok=True)
        self.outside.mkdir(parents=True, exist_ok=True)
        self._head()
        self._good_events()
        for build in (self._bad_json, self._wrong_types, self._huge_fields, self._bad_names,
                      self._outside_locations, self._schemes, self._truncated, self._corrupt,
                      self._not_parquet, self._conflicts, self._inline_garbage, self._bad_hints):
            build()
        payloads = [c.payload for c in self.cases]
        assert len(set(payloads)) == len(payloads), "every hostile payload is distinct"
        first = [p for t in TABLES for p in self.head[t]]
        rest = self.good + [p for p in payloads if p not in first]
        random.Random(self.seed).shuffle(rest)
        return first + rest

    def _head(self) -> None:
        (self.staging / "sub").mkdir()
        for table in TABLES:
            head = self.head[table]
            head.append(self.good_event(table, rows_of(self.fresh_ids(20))))
            # a partition hint on a column of its own file: ignored, the table is made from the first file
            hinted = rows_of(self.fresh_ids(5), p=pa.array(["x"] * 5, pa.string()))
            head.append(self.good_event(table, hinted, columns={"p": {"partition": True}}))
            # spaces and non-ASCII in the name; beside it a decoy named like its percent-encoded URI
            named = f"\u00fc b {table}.parquet"
            head.append(self.good_event(table, rows_of(self.fresh_ids(2)), name=named))
            self.file(rows_of(list(range(840_000, 840_003))), (self.staging / named).as_uri().rsplit("/", 1)[1])
            head.append(self.good_event(table, rows_of(self.fresh_ids(6)), place=Path.as_uri))
            head.append(self.good_event(table, rows_of(self.fresh_ids(4)),
                                        place=lambda p: f"{p.parent}/sub/../{p.name}"))
            head.append(self.good_event(table, rows_of(self.fresh_ids(3)), place=self.inner_link))
            while len(head) < HEAD_FILES - 1:
                head.append(self.good_event(table, rows_of(self.fresh_ids(20))))

    def _good_events(self) -> None:
        for table in TABLES:
            for _ in range(10):
                self.good.append(self.good_event(table, rows_of(self.fresh_ids(20))))
            self.good.append(self.good_event(table, rows_of(self.fresh_ids(7)), inline=True))
            # lossless casts and evolution
            ids = self.fresh_ids(5)
            narrow = pa.table({"id": pa.array(ids, pa.int32()), "v": pa.array([f"v{i}" for i in ids], pa.large_string())})
            self.good.append(self.good_event(table, narrow))
            self.good.append(self.good_event(table, rows_of(self.fresh_ids(5), coupon=pa.array(["c"] * 5))))
            # 10,000 column hints is the most the envelope takes
            hints = {f"c{i}": {"data_type": "text"} for i in range(10_000)}
            self.good.append(self.good_event(table, rows_of(self.fresh_ids(3)), columns=hints))
            # zero-row files: same schema, no columns at all, inline, a new column
            self.good.append(self.good_event(table, rows_of([])))
            self.good.append(self.good_event(table, pa.table({})))
            self.good.append(self.good_event(table, rows_of([]), inline=True))
            self.good.append(self.good_event(table, rows_of([], extra_empty=pa.array([], pa.string()))))
            self.benign += 4
            # duplicate events: the same event id twice commits once, and is no dead letter
            for n in range(3):
                payload = self.good_event(table, rows_of(self.fresh_ids(4)), event_id=f"dup-{table}-{n}")
                self.good += [payload, payload]
                self.duplicates += 1
                self.benign += 1

    def _bad_json(self) -> None:
        good = self.head["orders"][0]
        for cut in (1, 5, 10, 20, 40, len(good) // 2, len(good) - 1):
            self.bad("bad_json", "not JSON", good[:cut])
        for raw in (b"", b"{not json", b"{'table': 'orders'}", b"\xff\xfe\x00{", b"{}}",
                    b'{"table": "orders", "location": "x",}', b"[" * 100_000, b'{"a":' * 50_000,
                    b'{"table":"orders","location":"x","rows":1' + b"0" * 5000 + b"}", b"\x00" * 64):
            self.bad("bad_json", "not JSON", raw)
        self.bad("bad_json", "field 'table': Field required", b"\xef\xbb\xbf{}")  # a BOM is fine, {} is not
        for raw in (b"[]", b"null", b"42", b'"orders"', b"true", b'[{"table": "orders"}]'):
            self.bad("bad_json", "must be a JSON object", raw)

    def _wrong_types(self) -> None:
        loc = str(self.file(rows_of(self.fresh_ids(1))))
        wrong: dict[str, list[Any]] = {
            "v": ["two", 1.5, None, [1]],
            "table": [5, None, [], {}, True],
            "namespace": [5, [], {}, True],
            "location": [5, [], {}, ""],
            "data": [5, [], {}],
            "rows": ["many", -1, 1.5, [], {}],
            "bytes": ["big", -5, 2.5, []],
            "load_id": [5, [], {}],
            "event_id": [5, [], True],
            "write_disposition": ["upsert", 1, None, []],
            "primary_key": ["id", [1], {}, [None], ["id"] * 65],
            "merge_key": [5, [2], "k"],
            "columns": [[], "x", {"id": "bigint"}, {"id": 5}, {"id": []}],
        }
        for name, values in wrong.items():
            for value in values:
                body = {"table": "orders", "location": loc, name: value}
                if name == "data":
                    body.pop("location")
                self.bad("wrong_type", f"field '{name}", envelope(**body))  # 'primary_key.0' names the item
        for extra in ("evil", "__class__", "Table", "location "):
            self.bad("wrong_type", f"field '{extra}'", envelope(table="orders", location=loc, **{extra: 1}))
        self.bad("wrong_type", "unsupported envelope version", envelope(table="orders", location=loc, v=2))
        self.bad("wrong_type", "exactly one of", envelope(table="orders"))
        self.bad("wrong_type", "exactly one of", envelope(table="orders", location=loc, data="UEFSMQ=="))
        self.bad("wrong_type", "merge needs", envelope(table="orders", location=loc, write_disposition="merge"))

    def _huge_fields(self) -> None:
        loc = str(self.file(rows_of(self.fresh_ids(1))))
        for name in ("table", "namespace", "location", "event_id", "load_id"):
            self.bad("huge_field", f"field '{name}'", envelope(**{"table": "orders", "location": loc, name: "a" * (3 * MB)}))
        self.bad("huge_field", "field 'columns'",
                 envelope(table="orders", location=loc, columns={f"c{i}": {} for i in range(10_001)}))
        self.bad("huge_field", "field 'primary_key'",
                 envelope(table="orders", location=loc, primary_key=[f"k{i}" for i in range(1000)]))
        self.bad("huge_field", "over the 16777216 limit",
                 b'{"v":1,"table":"orders","location":"' + b"a" * (17 * MB) + b'"}')
        self.bad_data("huge_field", "not a readable parquet file", os.urandom(3 * MB))

    def _bad_names(self) -> None:
        loc = str(self.file(rows_of(self.fresh_ids(1))))
        names = ["../x", "a/b", "..", ".", "", "/", "orders\n", "\norders", "ord\u0435rs", "\uff4f\uff52\uff44",
                 "a" * 256, "a" * 10_000, "x y", "a.b", "a\\b", "%2e%2e", "\x00", "a\x00b", "-x", "\u00f8rders",
                 "orders;drop", "a\u200bb", "..%2f..%2fetc", "~root", "C:\\x", "\u2024\u2024"]
        for name in names:
            self.bad("bad_name", "field 'table'", envelope(table=name, location=loc))
            self.bad("bad_name", "field 'namespace'", envelope(table="orders", namespace=name, location=loc))

    def _outside_locations(self) -> None:
        secret = self.file(rows_of(list(range(900_000, 900_010))), "secret.parquet", self.outside)
        staging, outside = self.staging, self.outside
        out = "outside the allowed prefixes"
        for loc in (
            "file:///etc/passwd", "/etc/passwd", "file:/etc/passwd", "file:////etc/passwd",
            "file://localhost/etc/passwd", "/etc/shadow", "/proc/self/environ", "/dev/zero", "file:///dev/urandom",
            str(secret), secret.as_uri(), f"{staging}/../{outside.name}/secret.parquet",
            f"{staging}/sub/../../{outside.name}/secret.parquet",
            f"{staging.as_uri()}/%2e%2e/{outside.name}/secret.parquet",
            f"{staging}/{'../' * 30}etc/passwd", f"{staging}2/x.parquet", str(staging), f"{staging}/..",
            "../../../../etc/passwd", "etc/passwd", f"file://{staging}/../{outside.name}/secret.parquet",
            "s3://other-bucket/x.parquet", "s3://landing/inx/a.parquet", "s3://landing/in/../out/a.parquet",
            "s3://landing/in/%2e%2e/out/a.parquet", "s3a://landing/other/a.parquet", "S3://other/x.parquet",
            "s3://landing/in/../../etc/passwd", "s3:///x.parquet", "s3://landing",
        ):
            self.bad_location("outside", out, loc)
        for loc in ("file://host/share/x.parquet", "file://evil.example/etc/passwd", "file://127.0.0.1/etc/passwd"):
            self.bad_location("outside", "with a host is not allowed", loc)
        self.bad_location("outside", "NUL", f"{staging}/a\x00b.parquet")
        self.bad_location("outside", "NUL", f"{staging.as_uri()}/a%00b.parquet")
        self.bad_location("outside", "no S3 store is configured", f"{S3_ALLOWED}a.parquet")
        # symlinks inside the allowed folder pointing outside it
        links = {
            "to-secret.parquet": secret, "to-passwd.parquet": Path("/etc/passwd"),
            "rel.parquet": Path("..") / outside.name / "secret.parquet", "to-dev-zero.parquet": Path("/dev/zero"),
        }
        for name, target in links.items():
            (staging / name).symlink_to(target)
            self.bad_location("symlink", out, str(staging / name))
        (staging / "linkdir").symlink_to(outside, target_is_directory=True)
        self.bad_location("symlink", out, str(staging / "linkdir" / "secret.parquet"))
        (staging / "chain-b.parquet").symlink_to(secret)
        (staging / "chain-a.parquet").symlink_to(staging / "chain-b.parquet")
        self.bad_location("symlink", out, str(staging / "chain-a.parquet"))
        (staging / "loop-a.parquet").symlink_to(staging / "loop-b.parquet")
        (staging / "loop-b.parquet").symlink_to(staging / "loop-a.parquet")
        self.bad_location("symlink", "cannot be resolved", str(staging / "loop-a.parquet"))
        self.bad_location("symlink", "cannot be resolved", (staging / "loop-b.parquet").as_uri())
        # odd names inside the allowed folder: nothing there, nothing outside read
        for loc in (f"{staging}/\uff0e\uff0e/{outside.name}/secret.parquet", f"{staging}/%252e%252e/x.parquet",
                    f"{staging}/\u2024\u2024/secret.parquet", f"{staging}/missing.parquet"):
            self.bad_location("outside", "file not found", loc)
        self.bad_location("outside", "File name too long", f"{staging}/{'n' * 3000}.parquet")

    def _schemes(self) -> None:
        for loc in ("http://127.0.0.1:1/x.parquet", "https://example.com/x.parquet", "ftp://example.com/x.parquet",
                    "data:application/octet-stream;base64,UEFSMQ==", "gs://bucket/x.parquet", "hdfs://nn/x.parquet",
                    "abfs://c@a.dfs.core.windows.net/x.parquet", "jar:file:///x.jar!/x.parquet", "file+http://x/y",
                    "javascript:alert(1)", "smb://host/share/x.parquet", "C:\\Windows\\win.ini"):
            self.bad_location("scheme", "unsupported location scheme", loc)

    def _truncated(self) -> None:
        whole = parquet_bytes(rows_of(list(range(800_000, 800_050))))
        for cut in (0, 1, 4, 8, 100, len(whole) // 2, len(whole) - 12, len(whole) - 8, len(whole) - 4, len(whole) - 1):
            self.bad_location("truncated", "not a readable parquet file", str(self.file(whole[:cut])))
        self.bad_data("truncated", "not a readable parquet file", whole[: len(whole) // 3])

    def _corrupt(self) -> None:
        """Footer intact, data pages not: flipped bytes inside each column chunk."""
        for n, (column, spot) in enumerate(itertools.product(range(3), (0.1, 0.5, 0.9))):
            data = rows_of(list(range(810_000 + n * 200, 810_200 + n * 200)))
            raw = bytearray(parquet_bytes(data))
            chunk = pq.ParquetFile(pa.BufferReader(bytes(raw))).metadata.row_group(0).column(column)
            start = chunk.dictionary_page_offset or chunk.data_page_offset
            at = start + int(chunk.total_compressed_size * spot)
            raw[at:at + 24] = bytes(b ^ 0xA5 for b in raw[at:at + 24])
            pq.ParquetFile(pa.BufferReader(bytes(raw))).metadata  # the footer still reads
            with pytest.raises((OSError, pa.ArrowException)):
                pq.read_table(pa.BufferReader(bytes(raw)))
            table = TABLES[n % 3]
            if n < 3:  # one in each head, where its window commits zero-copy
                self.bad_location("corrupt", "cannot read", str(self.file(bytes(raw))), table=table)
                self.head[table].append(self.cases[-1].payload)
            elif n % 3 == 2:
                self.bad_data("corrupt", "cannot read", bytes(raw), table=table)
            else:
                self.bad_location("corrupt", "cannot read", str(self.file(bytes(raw))), table=table)

    def _not_parquet(self) -> None:
        good = parquet_bytes(rows_of([1]))
        for body in (b"id,v\n1,a\n", b'{"id": 1}', b"\x89PNG\r\n\x1a\n" + os.urandom(64), gzip.compress(good),
                     b"PAR1PAR1", b"PAR1" + b"\x00" * 100 + b"PAR1", b"PAR1" + b"\x00" * 8 + b"\xff\xff\xff\x7fPAR1",
                     Path(sys.executable).read_bytes()[:65536], os.urandom(4096), b"\x00" * 4096):
            self.bad_location("not_parquet", "not a readable parquet file", str(self.file(body)))
        folder = self.staging / "adir.parquet"
        folder.mkdir()
        self.bad_location("not_parquet", "is a directory", str(folder))
        fifo = self.staging / "pipe.parquet"
        os.mkfifo(fifo)
        self.bad_location("not_parquet", "not a regular file", str(fifo))

    def _conflicts(self) -> None:
        def conflict(reason: str, **columns: pa.Array) -> None:
            ids = pa.array(list(range(820_000 + len(self.cases), 820_000 + len(self.cases) + 3)), pa.int64())
            data = pa.table({"id": ids, **columns})
            self.bad_location("conflict", reason, str(self.file(data)), table=TABLES[len(self.cases) % 3])

        conflict("column 'id'", id=pa.array(["a", "b", "c"]))
        conflict("column 'id'", id=pa.array([1.5, 2.5, 3.5]))
        conflict("column 'id'", id=pa.array([1, 2, 3], pa.uint64()))
        conflict("column 'id'", id=pa.array([True, False, True]))
        conflict("column 'id'", id=pa.array([[1], [2], [3]]))
        conflict("column 'v'", v=pa.array([1, 2, 3], pa.int64()))
        conflict("column 'v'", v=pa.array([{"a": 1}] * 3))
        conflict("column 'amount'", amount=pa.array(["x"] * 3))
        conflict("column 'amount'", amount=pa.array([1, 2, 3], pa.decimal128(10, 2)))
        conflict("unsupported type", d=pa.array([1, 2, 3], pa.duration("s")))
        conflict("unsupported type", d=pa.array([1, 2, 3]).cast(pa.decimal256(60, 0)))

    def _inline_garbage(self) -> None:
        for text in ("!!!notbase64", "====", "QUJ", "QUJD\n", "-_-_", "UEFSMQ=", " UEFSMQ==", "\u00e9t\u00e9"):
            self.bad_data("inline", "not base64", text)
        for raw in (b"", b"ABC", b"PAR1", os.urandom(1000), b"PAR1" + os.urandom(200) + b"PAR1"):
            self.bad_data("inline", "not a readable parquet file", raw)

    def _bad_hints(self) -> None:
        hinted = self.file(rows_of(list(range(830_000, 830_005))))
        for table in ("orders", "fresh_hints"):
            for hint, reason in (({"id": {"partition": True, "x-partition-transform": "bogus"}}, "unknown partition transform"),
                                 ({"id": {"partition": True, "x-partition-transform": "bucket[0]"}}, "positive width"),
                                 ({"v": {"partition": True, "x-partition-transform": "day"}}, "does not apply"),
                                 ({"nope": {"partition": True}}, "partition column is not in the data")):
                self.bad_location("hints", reason, str(hinted), table=table, columns=hint)
        self.bad_location("hints", "column 'nope'", str(hinted), table="fresh_merge", write_disposition="merge",
                          primary_key=["nope"])


class OpenRecorder:
    """Paths opened (Python ``open``/``os.link``, ``pyarrow.memory_map``) while ``active``.

    An audit hook cannot be removed: one recorder serves the whole process, off by default.
    """

    def __init__(self) -> None:
        self.active = False
        self.paths: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.active and event in ("open", "os.link", "shutil.copyfile") and isinstance(args[0], (str, bytes, os.PathLike)):
            self.paths.append(os.fsdecode(args[0]))

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(path: Any, *args: Any, **kwargs: Any) -> Any:
            if self.active:
                self.paths.append(os.fsdecode(path))
            return fn(path, *args, **kwargs)

        return recorded


_RECORDER: list[OpenRecorder] = []


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenRecorder]:
    if not _RECORDER:
        _RECORDER.append(OpenRecorder())
    recorder = _RECORDER[0]
    recorder.paths = []
    monkeypatch.setattr(pa, "memory_map", recorder.wrap(pa.memory_map))
    yield recorder
    recorder.active = False


def _under(path: str, roots: list[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == root or root in real.parents for root in roots)


def test_hostile_corpus_is_dead_lettered_and_good_rows_land_exactly(tmp_path: Path, opened: OpenRecorder) -> None:
    home = (tmp_path / "home").resolve()
    staging = home / "staging"
    corpus = Corpus(staging, tmp_path.resolve() / "outside")
    payloads = corpus.build()
    ns = f"h{uuid.uuid4().hex[:8]}"
    settings = Settings(
        home=home, routing={"namespace": ns}, window={"max_batch_files": HEAD_FILES, "max_batch_age_s": 60},
        commit={"strict_casting": True, "max_retries": 0},
        storage={"allowed_prefixes": [staging.as_uri(), S3_ALLOWED]},
    )
    SpoolQueue(settings.spool_file).put_many(payloads)
    engine = build_engine(settings, source=SpoolSource(SpoolQueue(settings.spool_file)))
    opened.active = True
    try:
        stats = anyio.run(lambda: engine.run(exit_when_idle=True))
    finally:
        opened.active = False

    # nothing outside the allowed prefix was opened, except the engine's own state and Python's
    # modules (from folders that do not hold this test's files)
    own = [home / "deadletter", home / "warehouse", home / "catalog.db", home / "queue.db"]
    python = [root for root in {Path(os.path.realpath(p)) for p in (sys.prefix, sys.base_prefix, *sys.path) if p}
              if root not in tmp_path.resolve().parents]
    outside = [p for p in opened.paths if not _under(p, [staging, *own, *python])]
    assert outside == []
    data_opens = [p for p in opened.paths if _under(p, [staging])]
    assert data_opens and not [p for p in opened.paths if _under(p, [corpus.outside])]

    # every hostile case is one dead letter whose reason names the problem
    letters = FolderDeadLetters(settings.deadletter_folder).read()
    by_payload = {c.payload: c for c in corpus.cases}
    by_event_id = {json.loads(c.payload)["event_id"]: c for c in corpus.cases if b'"event_id":"bad-' in c.payload}
    matched: list[Case] = []
    unclear: list[tuple[str, str, str]] = []
    for letter in letters:
        reason, payload = letter.reason, letter.payload
        case = by_payload.get(payload) or by_event_id.get(json.loads(payload).get("event_id"))
        if case is None:
            unclear.append(("good event dead-lettered", "", reason[:300]))
            continue
        matched.append(case)
        if case.reason not in reason or TRACEBACK.search(reason) or len(reason) > 6000:
            unclear.append((case.category, case.reason, reason[:300]))
    assert unclear == []
    assert sorted(c.payload for c in matched) == sorted(c.payload for c in corpus.cases)
    assert stats.dead_letters == len(corpus.cases) == len(letters)

    # every good row landed exactly once; no honeypot row, no duplicate
    catalog = open_catalog(settings.catalog, settings.home_dir)
    good_rows = 0
    for table in TABLES:
        ids = catalog.load_table((ns, table)).scan(selected_fields=("id",)).to_arrow().column("id").to_pylist()
        assert sorted(ids) == sorted(corpus.expected[table]), table
        good_rows += len(ids)
    assert stats.rows == good_rows and stats.duplicates == corpus.duplicates
    tables = {t for _, t in catalog.list_tables(ns)}  # no honeypot table; each ledger once its lag is up
    assert {t for t in tables if not is_ledger(t)} == set(TABLES) and tables <= set(TABLES) | {ledger_name(t) for t in TABLES}
    assert SpoolQueue(settings.spool_file).depth() == 0

    categories = sorted({c.category for c in corpus.cases})
    print(f"hostile corpus: {len(corpus.cases) + corpus.benign} cases ({len(categories)} categories), "
          f"{len(letters)} rejected with reasons, {corpus.benign} benign (zero-row, duplicate) accepted, "
          f"{good_rows} good rows in {len(TABLES)} tables, {len(data_opens)} opens inside the allow-list, 0 outside")
