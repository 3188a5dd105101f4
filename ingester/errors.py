"""The two kinds of failure: terminal (set the input aside with a reason) and transient (retry).

Adapters translate library exceptions into these at the boundary (``is_transient``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class TerminalError(Exception):
    """Bad input: retrying cannot help. The event goes to the dead letters with this text."""


class LocationRefused(TerminalError):
    """The event names a location outside the allowed prefixes; it is never read."""


class UnreadableFile(TerminalError):
    """The file is missing, truncated or not parquet."""


class SchemaConflict(TerminalError):
    """A column of the file cannot be written to the table's column without loss."""

    def __init__(self, source: str, column: str, detail: str) -> None:
        super().__init__(f"{source}: column '{column}': {detail}")
        self.column = column


_TRANSIENT_IO_MARKERS = (
    " 500", " 502", " 503", " 504", " 429", "Timeout", "timed out", "Connection", "NETWORK_CONNECTION",
    "SLOW_DOWN", "SERVICE_UNAVAILABLE", "INTERNAL_FAILURE", "THROTTLING", "REQUEST_TIMEOUT", "curlCode",
)


# pyarrow's names (in its OSError texts) and S3's codes for refused credentials
_S3_AUTH_ERRORS = ("SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID", "ACCESS_DENIED",
                   "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied")


def describe_validation_error(exc: ValidationError) -> str:
    """Each wrong field and why, never the input values (a value may be a secret)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"field '{where}': {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


def is_auth_failure(exc: BaseException) -> bool:
    """True when the catalog or the S3 store refused our credentials: retrying cannot help."""
    from pyiceberg.exceptions import ForbiddenError, OAuthError, UnauthorizedError

    if isinstance(exc, (OAuthError, UnauthorizedError, ForbiddenError)):
        return True
    return isinstance(exc, OSError) and any(code in str(exc) for code in _S3_AUTH_ERRORS)


def is_transient(exc: BaseException) -> bool:
    """True for network, server-side, throttling and commit-conflict errors that a retry may fix."""
    if isinstance(exc, TerminalError) or is_auth_failure(exc):  # refused credentials stay refused
        return False
    from pyiceberg import exceptions as ice

    transient: tuple[type[BaseException], ...] = (
        ice.AuthorizationExpiredError,
        ice.CommitFailedException,
        ice.CommitStateUnknownException,
        ice.ServerError,
        ice.ServiceUnavailableError,
        ice.TooManyRequestsError,
        ConnectionError,
        TimeoutError,
    )
    try:
        import requests

        transient += (requests.ConnectionError, requests.Timeout)
    except ImportError:  # pragma: no cover - requests comes with pyiceberg
        pass
    try:
        from sqlalchemy.exc import OperationalError

        transient += (OperationalError,)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, transient):
        return True
    try:
        from aiokafka.errors import KafkaError

        if isinstance(exc, KafkaError) and exc.retriable:  # broker unreachable, coordinator moving...
            return True
    except ImportError:  # pragma: no cover - aiokafka comes with the package
        pass
    # pyarrow's S3 errors are OSError with the AWS error name / HTTP status in the text
    return isinstance(exc, OSError) and any(marker in str(exc) for marker in _TRANSIENT_IO_MARKERS)
