"""Helpers of the bucket-source tests: parquet objects in a SeaweedFS bucket, S3-format
notifications naming them, settings of a daemon that routes them, running it, its dead letters."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import anyio
import pyarrow as pa
import pyarrow.parquet as pq

from ingester.engine import EngineStats
from ingester.settings import Settings
from ingester.wiring import build_engine
from tests.support import rest_catalog_settings

_ids = itertools.count(1)


@dataclass(frozen=True)
class PutObject:
    bucket: str
    key: str
    size: int
    etag: str
    ids: tuple[int, ...]


def parquet_bytes(ids: tuple[int, ...], pad: int = 0) -> bytes:
    out = io.BytesIO()
    table = pa.table({"id": pa.array(ids, pa.int64()), "note": [f"row {i}" + "x" * pad for i in ids]})
    pq.write_table(table, out)
    return out.getvalue()


def put_parquet(s3: Any, bucket: str, key: str, rows: int = 3) -> PutObject:
    ids = tuple(next(_ids) for _ in range(rows))
    body = parquet_bytes(ids)
    reply = s3.put_object(Bucket=bucket, Key=key, Body=body)
    return PutObject(bucket, key, len(body), reply["ETag"].strip('"'), ids)


def s3_event(*objects: PutObject, name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """An AWS S3 notification of ``objects`` (keys URL-encoded the way S3 does: ``+`` for spaces)."""
    return {"Records": [
        {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventName": name,
         "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": o.bucket, "arn": f"arn:aws:s3:::{o.bucket}"},
                "object": {"key": quote_plus(o.key, safe="/"), "size": o.size, "eTag": o.etag, "sequencer": "0055AED6DCD90281E5"}}}
        for o in objects
    ]}


def object_settings(seaweed: Any, home: Path, bucket: str, namespace: str, **source: Any) -> Settings:
    """A daemon on ``seaweed``'s catalog routing ``in/{table}/...`` objects of ``bucket``."""
    return Settings(
        home=home, catalog=rest_catalog_settings(seaweed),
        source=source, routing={"namespace": namespace},
        objects={"routes": [{"pattern": "in/{table}/**"}], "buckets": [bucket]},
        storage={"allowed_prefixes": [f"s3://{bucket}/"]},
        window={"max_batch_age_s": 0.5}, maintenance={"enabled": False},
    )


def dead_letters(home: Path) -> list[dict[str, Any]]:
    path = home / "deadletter" / "deadletters.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_once(settings: Settings) -> EngineStats:
    """The daemon in-process until its queue is read and everything is committed."""
    async def main() -> EngineStats:
        engine = build_engine(settings)
        try:
            return await engine.run(exit_when_idle=True)
        finally:
            await engine.source.aclose()
    return anyio.run(main)
