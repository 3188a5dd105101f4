"""The REST side of ``multi_commit``: ``POST /v1/{prefix}/transactions/commit`` on the catalog's
own session. Imported only for a REST catalog (``multi_commit._is_rest``): a process on the
SQL catalog never loads pyiceberg's REST client and requests.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.rest import _RETRY_ARGS, AUTHORIZATION_HEADER, BEARER_PREFIX, TOKEN, Endpoint, HttpMethod, RestCatalog
from pyiceberg.catalog.rest.response import _handle_non_200_response
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.table import Table
from requests import HTTPError, PreparedRequest
from requests.auth import AuthBase
from tenacity import retry

from ingester.iceberg_layer.multi_commit import TableChange, crash, delete_old_metadata

TRANSACTIONS_PATH = "/v1/{prefix}/transactions/commit"
UNSUPPORTED_STATUS = frozenset({404, 405, 406, 501})


def table_token(table: Table) -> str | None:
    """A table's own token (``config.token`` of loadTable's response), as pyiceberg reads it."""
    return table.config.get(TOKEN)


def supports_transactions(catalog: Catalog) -> bool:
    """Whether the REST ``catalog`` commits several tables at once: advertised in the server's
    ``endpoints``; else (servers that list none, as SeaweedFS) an empty transaction is
    posted: 2xx says yes, 404/405/406/501 no."""
    assert isinstance(catalog, RestCatalog)
    if Endpoint(http_method=HttpMethod.POST, path=TRANSACTIONS_PATH) in catalog._supported_endpoints:
        return True
    response = catalog._session.post(catalog.url("transactions/commit"), data=b'{"table-changes":[]}',
                                     headers={"Content-Type": "application/json"})
    if response.ok:
        return True
    if response.status_code in UNSUPPORTED_STATUS:
        return False
    try:
        response.raise_for_status()
    except HTTPError as exc:
        _handle_non_200_response(exc, {})
    return False


class _Bearer(AuthBase):
    """A table's own token as the request's bearer. Passed as the request's ``auth`` it replaces
    the session's auth manager, which would otherwise overwrite the header (so pyiceberg 0.12's
    ``commit_table`` sends the session's token even where it sets the table's)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        request.headers[AUTHORIZATION_HEADER] = f"{BEARER_PREFIX} {self._token}"
        return request

    def __repr__(self) -> str:
        return "_Bearer(***)"


def commit(catalog: Catalog, changes: Sequence[TableChange], table_token: str | None = None) -> None:
    """``table_token``: the one per-table token (``config.token`` of loadTable) every table
    carries, sent as the bearer the way pyiceberg's ``commit_table`` sends it; None: the
    session's own auth."""
    assert isinstance(catalog, RestCatalog)
    body = ('{"table-changes":[' + ",".join(c.request().model_dump_json() for c in changes) + "]}").encode()
    crash("staged")

    @retry(**_RETRY_ARGS)  # type: ignore[call-overload, misc]  # pyiceberg's: an expired token is refreshed once
    def post(rest: RestCatalog) -> None:
        response = rest._session.post(rest.url("transactions/commit"), data=body, headers={"Content-Type": "application/json"},
                                      auth=_Bearer(table_token) if table_token else None)
        try:
            response.raise_for_status()
        except HTTPError as exc:
            _handle_non_200_response(exc, {409: CommitFailedException, 500: CommitStateUnknownException,
                                           502: CommitStateUnknownException, 504: CommitStateUnknownException})

    post(catalog)
    crash("committed")
    for change in changes:  # the endpoint answers 204 without metadata: read each table back
        base = change.table.metadata
        change.table.refresh()
        delete_old_metadata(catalog, change.table, base)
