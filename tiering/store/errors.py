"""Store errors, classified once at the adapter: retryable, fatal, or not found.

Retryable: the store or the network had a bad moment (5xx, SlowDown/throttling, timeouts,
resets, a checksum mismatch in transit). Fatal: retrying cannot help and an operator must
act (credentials, permissions, bucket); these carry a hint. The secret key never appears:
botocore does not put credentials in its messages, and we only quote codes and messages.
"""

from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from typing import Iterator

from botocore.exceptions import (BotoCoreError, ClientError, ConnectionClosedError, ConnectTimeoutError,
                                 EndpointConnectionError, NoCredentialsError, PartialCredentialsError,
                                 ReadTimeoutError, ResponseStreamingError)

from tiering.errors import TieringError
from tiering.files import LOCAL_DISK_ERRNOS as _LOCAL_DISK_ERRNOS


class ErrorClass(Enum):
    RETRYABLE = "retryable"
    FATAL = "fatal"
    NOT_FOUND = "not_found"


_FATAL_HINTS = {
    "AccessDenied": "check the IAM policy: tiering needs s3:PutObject, GetObject, DeleteObject, "
                    "ListBucket, ListBucketMultipartUploads and AbortMultipartUpload on the bucket",
    "AllAccessDisabled": "access to the bucket is disabled; check the bucket's owner and policy",
    "InvalidAccessKeyId": "the access key id is not known to the store; check the AWS credentials",
    "SignatureDoesNotMatch": "the secret key does not match the access key id; check the AWS credentials",
    "NoSuchBucket": "create the bucket or fix store.bucket",
    "InvalidBucketName": "fix store.bucket",
    "PermanentRedirect": "the bucket is in another region; set store.region (or store.endpoint_url)",
    "AuthorizationHeaderMalformed": "the region does not match the bucket's; set store.region",
    "InvalidStorageClass": "the store does not offer this store.storage_class",
    "ExpiredToken": "the session token expired; refresh the AWS credentials",
}
_RETRYABLE_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "BadDigest", "XAmzContentSHA256Mismatch", "RequestLimitExceeded",
    "OperationAborted",
}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}


_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"}
_CHECKSUM_CODES = {"BadDigest", "XAmzContentSHA256Mismatch"}


class StoreError(TieringError):
    def __init__(self, error_class: ErrorClass, operation: str, key: str, detail: str, hint: str = "",
                 reason: str = "other"):
        self.error_class = error_class
        # A small fixed vocabulary (throttled, server_error, network, timeout, checksum, other)
        # for metric labels; the detail stays in the message.
        self.reason = reason
        self.operation = operation
        self.key = key
        self.detail = detail
        self.hint = hint
        text = f"{operation} {key}: {detail}"
        super().__init__(f"{text}; {hint}" if hint else text)

    @property
    def retryable(self) -> bool:
        return self.error_class is ErrorClass.RETRYABLE


def classify(exc: BaseException, operation: str, key: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        detail = f"{code or status}: {error.get('Message') or 'no message'}"
        if code in _NOT_FOUND_CODES and code != "NoSuchBucket":
            return StoreError(ErrorClass.NOT_FOUND, operation, key, detail)
        if code in _FATAL_HINTS or status == 403:
            return StoreError(ErrorClass.FATAL, operation, key, detail,
                              _FATAL_HINTS.get(code, _FATAL_HINTS["AccessDenied"]))
        # Redpanda's lesson: 500, 503 and empty-body errors are the store asking us to slow down.
        if code in _RETRYABLE_CODES or status >= 500 or status == 429 or not code:
            reason = ("throttled" if code in _THROTTLE_CODES or status in (429, 503) else
                      "checksum" if code in _CHECKSUM_CODES else
                      "timeout" if code == "RequestTimeout" else
                      "server_error" if status >= 500 or code in ("InternalError", "ServiceUnavailable") else "other")
            return StoreError(ErrorClass.RETRYABLE, operation, key, detail, reason=reason)
        return StoreError(ErrorClass.FATAL, operation, key, detail, "the store refused the request")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StoreError(ErrorClass.FATAL, operation, key, str(exc),
                          "provide credentials through the standard AWS chain (AWS_ACCESS_KEY_ID/"
                          "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role)")
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError, TimeoutError)):
        return StoreError(ErrorClass.RETRYABLE, operation, key, f"{type(exc).__name__}: {exc}", reason="timeout")
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ResponseStreamingError, ConnectionError)):
        return StoreError(ErrorClass.RETRYABLE, operation, key, f"{type(exc).__name__}: {exc}", reason="network")
    if isinstance(exc, BotoCoreError):
        return StoreError(ErrorClass.RETRYABLE, operation, key, f"{type(exc).__name__}: {exc}")
    # Anything else raised inside a store call comes from what the store answered (a listing
    # entry without Size, a HEAD without Last-Modified, a garbage date) or from the client
    # libraries' own handling of it (botocore's AttributeError on an error status with checksum
    # headers, s3transfer's RetriesExceededError after truncated bodies). Another attempt may
    # get a sane answer, and no store answer may crash the process: retryable.
    return StoreError(ErrorClass.RETRYABLE, operation, key,
                      f"unexpected answer ({type(exc).__name__} in the S3 client: {_printable(str(exc))})")


class ObjectTooLarge(StoreError):
    """An object bigger than its reader allows (a manifest of 600 MiB is not one we wrote);
    refused from its Content-Length, before its body is read. Retrying cannot help."""

    def __init__(self, operation: str, key: str, size: int, limit: int):
        self.size = size
        self.limit = limit
        super().__init__(ErrorClass.FATAL, operation, key,
                         f"object is {size if size >= 0 else 'more than ' + str(limit)} bytes, over the "
                         f"{limit} this read allows", "it is not what tiering wrote there; inspect or remove it")


@contextmanager
def store_call(operation: str, key: str) -> Iterator[None]:
    """Wraps every client call of the adapter: whatever it raises leaves as a classified
    StoreError (the one place that does so). MemoryError and errors of the local disk (an
    s3transfer download writing our file) are not the store's and pass unchanged."""
    try:
        yield
    except StoreError:
        raise
    except MemoryError:
        raise
    except OSError as exc:
        if exc.errno in _LOCAL_DISK_ERRNOS and not isinstance(exc, ConnectionError):
            raise
        raise classify(exc, operation, key) from None
    except Exception as exc:
        raise classify(exc, operation, key) from None


def _printable(text: str, limit: int = 200) -> str:
    """The store's words quoted safely: one line, no terminal escapes, bounded."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."
