"""SQS (aiobotocore): a queue of S3 event notifications as a ``Source``.

SQS has no offsets: each received message gets the next number of a local sequence in one
partition per queue (``sqs/<queue name>``), and ``commit`` deletes the messages below the
committed watermark by their receipt handles. A message not deleted within the visibility
timeout (a crash, a commit slower than the timeout) is delivered again: that is SQS's
redelivery, and the event ids of the objects it names keep them loaded once. Positions mean
nothing after a restart, so the source has no group (the committer keeps no offset markers).

Needs ``pip install ingester[sqs]`` (aiobotocore); credentials come from the AWS chain.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import anyio

from ingester.settings import SourceSettings
from ingester.sources.base import Message, Pausable, Position, RevokeCallback

log = logging.getLogger(__name__)
DELETE_BATCH = 10
"""Entries per DeleteMessageBatch (the SQS limit)."""
CONNECT_TIMEOUT_S = 10


class SqsSource(Pausable):
    """``Source`` over one SQS queue. The client is made on the first ``poll``, in the event loop
    that runs the engine; ``aclose`` closes it (messages not deleted stay in the queue)."""

    group: str | None = None

    def __init__(self, queue_url: str, *, endpoint_url: str | None = None, region: str | None = None,
                 wait_time_s: int = 1, visibility_timeout_s: int = 300, max_messages: int = 10) -> None:
        self.queue_url = queue_url
        self.partition = "sqs/" + queue_url.rstrip("/").rpartition("/")[2]
        self._client_options = {"endpoint_url": endpoint_url, "region_name": region}
        self._wait_s = wait_time_s
        self._visibility_s = visibility_timeout_s
        self._max = max_messages
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._next = 0
        self._receipts: dict[int, str] = {}
        """Local offset -> receipt handle of the messages received and not deleted yet."""
        self._deleted = 0

    @classmethod
    def from_settings(cls, settings: SourceSettings) -> SqsSource:
        assert settings.sqs_queue_url is not None  # the settings check it
        return cls(settings.sqs_queue_url, endpoint_url=settings.sqs_endpoint, region=settings.sqs_region,
                   wait_time_s=settings.sqs_wait_time_s, visibility_timeout_s=settings.sqs_visibility_timeout_s,
                   max_messages=settings.sqs_max_messages)

    async def _sqs(self) -> Any:
        if self._client is None:
            try:
                from aiobotocore.session import get_session
            except ImportError as exc:  # pragma: no cover - the extra is part of the test install
                raise ImportError("the SQS source needs aiobotocore: pip install 'ingester[sqs]'") from exc
            from aiobotocore.config import AioConfig

            options = {k: v for k, v in self._client_options.items() if v is not None}
            config = AioConfig(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=self._wait_s + CONNECT_TIMEOUT_S,
                               retries={"max_attempts": 2, "mode": "standard"})  # the engine's policy retries on
            self._client = await self._stack.enter_async_context(get_session().create_client("sqs", config=config, **options))
        return self._client

    async def _request(self, what: str, name: str, **kwargs: Any) -> Any:
        """One SQS call; network errors, throttling and 5xx become ``ConnectionError`` (transient)."""
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        client = await self._sqs()
        try:
            return await getattr(client, name)(QueueUrl=self.queue_url, **kwargs)
        except (BotoConnectionError, HTTPClientError) as exc:
            raise ConnectionError(f"SQS {what}: {exc}") from exc
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status >= 500 or "Throttl" in exc.response.get("Error", {}).get("Code", ""):
                raise ConnectionError(f"SQS {what}: {exc}") from exc
            raise

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """One ReceiveMessage (long-polling ``wait_time_s``); ``[]`` at once while paused."""
        if self._paused:
            await anyio.sleep(min(timeout_s, 0.05))
            return []
        reply = await self._request("receive", "receive_message", MaxNumberOfMessages=min(self._max, max_records),
                                    WaitTimeSeconds=self._wait_s, VisibilityTimeout=self._visibility_s,
                                    AttributeNames=["SentTimestamp"])  # MessageSystemAttributeNames is newer than our botocore floor
        out = []
        for m in reply.get("Messages", []):
            offset, self._next = self._next, self._next + 1
            self._receipts[offset] = m["ReceiptHandle"]
            out.append(Message(m.get("Body", "").encode(), Position(self.partition, offset), m.get("MessageId", "").encode(),
                               timestamp=_sent_s(m)))
        return out

    async def commit(self, offsets: Mapping[str, int]) -> None:
        """Delete the messages below ``offsets[partition]``. One that fails to delete is logged
        and comes again after the visibility timeout (its objects are already loaded)."""
        below = offsets.get(self.partition)
        if below is None or self._client is None:
            return
        done = sorted(o for o in self._receipts if o < below)
        for start in range(0, len(done), DELETE_BATCH):
            chunk = done[start:start + DELETE_BATCH]
            reply = await self._request("delete", "delete_message_batch", Entries=[
                {"Id": str(o), "ReceiptHandle": self._receipts[o]} for o in chunk
            ])
            for failed in reply.get("Failed", []):
                log.warning("SQS message %s not deleted (%s: %s): delivered again after the visibility timeout, "
                            "its objects load once", failed.get("Id"), failed.get("Code"), failed.get("Message"))
            for o in chunk:
                del self._receipts[o]
            self._deleted += len(chunk) - len(reply.get("Failed", []))

    def on_revoke(self, callback: RevokeCallback) -> None:
        """SQS never takes messages away but by the visibility timeout: nothing to call."""

    async def is_idle(self) -> bool:
        """True when the queue holds no visible message (SQS's approximate count)."""
        reply = await self._request("count", "get_queue_attributes", AttributeNames=["ApproximateNumberOfMessages"])
        return int(reply.get("Attributes", {}).get("ApproximateNumberOfMessages", "0")) == 0

    def statistics(self) -> dict[str, int]:
        return {"received": self._next, "deleted": self._deleted, "outstanding": len(self._receipts)}

    async def aclose(self) -> None:
        """Close the client. Idempotent."""
        self._client = None
        await self._stack.aclose()


def _sent_s(message: dict[str, Any]) -> float | None:
    """SQS's ``SentTimestamp`` (epoch ms) in Unix seconds, when the reply has it."""
    sent = message.get("Attributes", {}).get("SentTimestamp")
    return int(sent) / 1000 if sent is not None and str(sent).isdigit() else None
