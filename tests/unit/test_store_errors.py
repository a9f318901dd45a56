"""Error classification at the store adapter: botocore's own exception types, built directly."""

import errno

import pytest
from botocore.exceptions import (ClientError, EndpointConnectionError, IncompleteReadError, NoCredentialsError,
                                 ReadTimeoutError)
from s3transfer.exceptions import RetriesExceededError

from tiering.store.errors import ErrorClass, StoreError, classify, store_call


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


@pytest.mark.parametrize("code,status", [("SlowDown", 503), ("InternalError", 500), ("", 500), ("Throttling", 400),
                                         ("RequestTimeout", 400), ("BadDigest", 400), ("Anything", 502)])
def test_transient_errors_are_retryable(code, status):
    assert classify(client_error(code, status), "put", "k").error_class is ErrorClass.RETRYABLE


@pytest.mark.parametrize("code,status,hint", [("AccessDenied", 403, "IAM policy"), ("NoSuchBucket", 404, "create the bucket"),
                                              ("InvalidAccessKeyId", 403, "credentials"), ("Weird", 403, "IAM policy"),
                                              ("InvalidArgument", 400, "refused")])
def test_refusals_are_fatal_with_a_hint(code, status, hint):
    error = classify(client_error(code, status), "put", "k")
    assert error.error_class is ErrorClass.FATAL and hint in error.hint and hint in str(error)


def test_network_credentials_and_not_found():
    assert classify(EndpointConnectionError(endpoint_url="http://x"), "put", "k").retryable
    assert classify(ReadTimeoutError(endpoint_url="http://x"), "get", "k").retryable
    assert classify(NoCredentialsError(), "put", "k").error_class is ErrorClass.FATAL
    assert classify(client_error("NoSuchKey", 404), "get", "k").error_class is ErrorClass.NOT_FOUND


@pytest.mark.parametrize("raised", [
    AttributeError("'StreamingChecksumBody' object has no attribute 'strip'"),   # botocore's own bug
    KeyError("Size"),                                                             # a listing entry without Size
    ValueError("Unknown string format: \x1b[31mnot a date"),                     # a garbage date
    RetriesExceededError(IncompleteReadError(actual_bytes=3, expected_bytes=10)),  # truncated bodies
])
def test_whatever_a_store_call_raises_leaves_it_as_a_retryable_store_error(raised):
    with pytest.raises(StoreError) as caught:
        with store_call("get", "some/key"):
            raise raised
    error = caught.value
    assert error.retryable and error.operation == "get" and error.key == "some/key"
    assert type(raised).__name__ in str(error) and "\x1b" not in str(error) and "\n" not in str(error)


def test_local_disk_errors_and_memory_errors_are_not_the_stores():
    with pytest.raises(OSError) as caught:
        with store_call("get", "k"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not isinstance(caught.value, StoreError)
    with pytest.raises(MemoryError):
        with store_call("get", "k"):
            raise MemoryError()
    assert classify(ConnectionResetError(errno.ECONNRESET, "reset"), "get", "k").reason == "network"
