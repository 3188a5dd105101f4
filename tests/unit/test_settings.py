from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingester.catalog import catalog_properties
from ingester.settings import Settings


def test_env_nesting_and_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "ingester.toml"
    cfg.write_text('[window]\nmax_batch_files = 7\n[catalog]\ntype = "rest"\nuri = "http://c"\n')
    monkeypatch.setenv("INGESTER_CONFIG", str(cfg))
    monkeypatch.setenv("INGESTER_WINDOW__MAX_BATCH_AGE_S", "2.5")
    s = Settings()
    assert s.window.max_batch_files == 7 and s.window.max_batch_age_s == 2.5 and s.catalog.uri == "http://c"


def test_rest_needs_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTER_CATALOG__TYPE", "rest")
    with pytest.raises(ValueError, match="catalog.uri is required"):
        Settings()


def test_secrets_never_in_repr_or_dump(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret, token, key = "s3cr3t-client", "tok-abc123", "AKIA-super-secret"
    monkeypatch.setenv("INGESTER_CATALOG__TYPE", "rest")
    monkeypatch.setenv("INGESTER_CATALOG__URI", "http://c")
    monkeypatch.setenv("INGESTER_CATALOG__CREDENTIAL", f"id:{secret}")
    monkeypatch.setenv("INGESTER_CATALOG__TOKEN", token)
    monkeypatch.setenv("INGESTER_CATALOG__S3_SECRET_ACCESS_KEY", key)
    s = Settings()
    for text in (repr(s), str(s), s.model_dump_json()):
        assert secret not in text and token not in text and key not in text
    props = catalog_properties(s.catalog, tmp_path)
    assert props["credential"] == f"id:{secret}" and props["token"] == token and props["s3.secret-access-key"] == key


def test_uri_passwords_and_secret_kafka_options_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    password, sasl = "pg-pa55word", "sasl-pa55"
    monkeypatch.setenv("INGESTER_CATALOG__URI", f"postgresql+psycopg2://ingest:{password}@db:5432/iceberg")
    monkeypatch.setenv("INGESTER_SOURCE__KAFKA_OPTIONS", json.dumps(
        {"sasl_plain_username": "svc", "sasl_plain_password": sasl, "security_protocol": "SASL_SSL"}))
    s = Settings()
    assert s.catalog.uri is not None and password in s.catalog.uri  # the value itself is intact
    assert s.source.kafka_options["sasl_plain_password"] == sasl
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump()), repr(s.catalog), repr(s.source)):
        assert password not in text and sasl not in text, text
    for text in (repr(s), s.model_dump_json(), repr(s.catalog)):
        assert "ingest:**********@db:5432/iceberg" in text, text
    for text in (repr(s), s.model_dump_json(), repr(s.source)):
        assert "SASL_SSL" in text and "svc" in text, text


def test_embedded_default_lives_under_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "h")
    props = catalog_properties(s.catalog, s.home_dir)
    assert props["type"] == "sql" and props["uri"] == f"sqlite:///{tmp_path / 'h' / 'catalog.db'}"
    assert s.spool_file == tmp_path / "h" / "queue.db" and s.allowed_prefixes == [(tmp_path / "h" / "staging").as_uri()]


def test_a_sort_order_term_is_checked() -> None:
    assert Settings(commit={"sort_orders": {"*": ["ts desc", "id", "v asc"]}}).commit.sort_orders["*"][0] == "ts desc"
    with pytest.raises(ValidationError, match="'ts sideways' is not 'column', 'column asc' or 'column desc'"):
        Settings(commit={"sort_orders": {"orders": ["ts sideways"]}})
