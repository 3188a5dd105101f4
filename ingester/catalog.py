"""Catalog from settings: embedded SQLite (default) or REST with OAuth2, bearer or SigV4."""

from __future__ import annotations

from pathlib import Path

from pyiceberg.catalog import Catalog

from ingester.settings import CatalogSettings


def catalog_properties(cfg: CatalogSettings, home: Path) -> dict[str, str]:
    """pyiceberg properties for ``cfg``. The result holds secrets: never log it."""
    props: dict[str, str | None]
    if cfg.type == "sql":
        home.mkdir(parents=True, exist_ok=True)
        props = {
            "type": "sql",
            "uri": cfg.uri or f"sqlite:///{home / 'catalog.db'}",
            "warehouse": cfg.warehouse or (home / "warehouse").as_uri(),
            "init_catalog_tables": "true",
        }
    else:
        props = {
            "type": "rest",
            "uri": cfg.uri,
            "warehouse": cfg.warehouse,
            "credential": cfg.credential.get_secret_value() if cfg.credential else None,
            "oauth2-server-uri": cfg.oauth2_server_uri,
            "scope": cfg.scope,
            "token": cfg.token.get_secret_value() if cfg.token else None,
        }
        if cfg.sigv4_enabled:
            props.update(
                {
                    "rest.sigv4-enabled": "true",
                    "rest.signing-region": cfg.signing_region or cfg.s3_region or "us-east-1",
                    "rest.signing-name": cfg.signing_name,
                    "client.access-key-id": _secret(cfg.s3_access_key_id),
                    "client.secret-access-key": _secret(cfg.s3_secret_access_key),
                    "client.region": cfg.signing_region or cfg.s3_region,
                }
            )
    if cfg.s3_endpoint or cfg.s3_access_key_id or cfg.s3_secret_access_key or cfg.s3_region:
        props.update(
            {
                "s3.endpoint": cfg.s3_endpoint,
                "s3.access-key-id": _secret(cfg.s3_access_key_id),
                "s3.secret-access-key": _secret(cfg.s3_secret_access_key),
                "s3.region": cfg.s3_region or "us-east-1",
                "s3.path-style-access": "true" if cfg.s3_endpoint else None,
            }
        )
    props.update({k: v.get_secret_value() for k, v in cfg.properties.items()})
    return {k: v for k, v in props.items() if v is not None}


def _secret(value: object) -> str | None:
    return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]


SQL_INIT_ATTEMPTS = 3


def open_catalog(cfg: CatalogSettings, home: Path) -> Catalog:
    """Connect (REST: authenticate) to the configured catalog.

    Two processes creating a fresh SQLite catalog at once race on its tables; the loser
    fails with "already exists" and simply opens it again."""
    from sqlalchemy.exc import SQLAlchemyError

    from ingester.iceberg_layer.sql_catalog import load

    attempt = 1
    while True:
        try:
            return load(cfg.name, catalog_properties(cfg, home))
        except SQLAlchemyError as exc:
            if cfg.type != "sql" or "already exists" not in str(exc) or attempt == SQL_INIT_ATTEMPTS:
                raise
            attempt += 1
