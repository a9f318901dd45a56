"""Error classification at the store adapter: botocore's own exception types, built directly."""

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from tiering.store.errors import ErrorClass, classify


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
    with pytest.raises(ValueError):
        classify(ValueError("a bug, not a store error"), "put", "k")
