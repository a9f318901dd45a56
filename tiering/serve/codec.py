"""Kafka wire framing and request/response coding, through kafka-python's `kafka.protocol`.

kafka-python 3.0's message classes are generated from Kafka's own JSON message definitions
and code every version, flexible (tagged-field) ones included; this module only adds what a
*server* needs on top: find the request class by API key, pick the header version the same
way Kafka does, refuse anything that does not decode to exactly the bytes received, and
build responses from plain nested dicts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Mapping

import kafka.protocol.admin  # noqa: F401  (imports register the message classes)
import kafka.protocol.consumer  # noqa: F401
import kafka.protocol.metadata  # noqa: F401
import kafka.protocol.producer  # noqa: F401
from kafka.protocol.api_message import ApiMessage

SIZE = struct.Struct(">i")
HEAD = struct.Struct(">hhi")   # api key, api version, correlation id: the same in every header version
API_VERSIONS_KEY = 18


class MalformedRequest(Exception):
    """A frame that is not a well-formed Kafka request: the connection is closed."""


class UnsupportedRequest(Exception):
    """A well-framed request for an API key or version this endpoint does not speak."""

    def __init__(self, api_key: int, api_version: int, correlation_id: int, why: str):
        super().__init__(why)
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id


def _message_classes() -> tuple[dict[int, type[ApiMessage]], dict[int, type[ApiMessage]]]:
    requests: dict[int, type[ApiMessage]] = {}
    responses: dict[int, type[ApiMessage]] = {}
    pending = list(ApiMessage.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if getattr(cls, "_class_version", None) is not None or getattr(cls, "_json", None) is None:
            continue
        (requests if cls.is_request() else responses)[cls.API_KEY] = cls
    return requests, responses


REQUESTS, RESPONSES = _message_classes()


def schema_versions(api_key: int) -> tuple[int, int]:
    """The (min, max) versions of Kafka's JSON definition kafka-python ships for this API."""
    lo, hi = REQUESTS[api_key].valid_versions
    return lo, hi


@dataclass(frozen=True)
class Request:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any          # the kafka-python request object (fields as attributes)
    frame: bytes       # the request as received, without the 4-byte size


def peek(frame: bytes) -> tuple[int, int, int]:
    if len(frame) < HEAD.size:
        raise MalformedRequest(f"a request of {len(frame)} bytes is shorter than a request header")
    return HEAD.unpack_from(frame)


def decode_request(frame: bytes, supported: Mapping[int, tuple[int, int]]) -> Request:
    """Decode one request (the frame without its size). Raises UnsupportedRequest for an API
    key or version outside `supported`, MalformedRequest for anything that does not decode to
    exactly `frame` again (trailing bytes, truncation, non-canonical encodings): a request we
    would answer must mean one thing only."""
    api_key, api_version, correlation_id = peek(frame)
    cls = REQUESTS.get(api_key)
    span = supported.get(api_key)
    if cls is None or span is None:
        raise UnsupportedRequest(api_key, api_version, correlation_id, f"unknown or unsupported API key {api_key}")
    if not span[0] <= api_version <= span[1]:
        raise UnsupportedRequest(api_key, api_version, correlation_id,
                                 f"{cls.name} version {api_version} outside {span[0]}-{span[1]}")
    try:
        body = cls.decode(frame, version=api_version, header=True)
        again = bytes(body.encode(version=api_version, header=True))
    except Exception as exc:  # the generated decoder raises many types on bad input
        raise MalformedRequest(f"{cls.name} v{api_version} does not decode: {type(exc).__name__}: {exc}") from None
    if again != frame:
        raise MalformedRequest(f"{cls.name} v{api_version}: {len(frame)} bytes received, "
                               f"{len(again)} bytes mean the same request (trailing or non-canonical bytes)")
    return Request(api_key, api_version, correlation_id, body.header.client_id, body, frame)


def build(container: Any, values: Mapping[str, Any]) -> Any:
    """A kafka-python data object from nested dicts/lists (keys are the schema's snake_case
    field names; nested structs and struct arrays are converted, absent fields default)."""
    fields = container._struct.fields
    kw: dict[str, Any] = {}
    for name, value in values.items():
        field = fields[name]
        if value is not None and field.is_struct_array():
            kw[name] = [build(field.data_class, v) for v in value]
        elif value is not None and field.is_struct():
            kw[name] = build(field.data_class, value)
        else:
            kw[name] = value
    return container(**kw)


def encode_response(api_key: int, api_version: int, correlation_id: int, values: Mapping[str, Any]) -> bytes:
    """The framed response (4-byte size, header, body) for the request's own version."""
    cls = RESPONSES[api_key]
    response = build(cls[api_version], values)
    response.with_header(correlation_id=correlation_id)
    # no version= here: kafka-python's encode() would set it on the (response) header too, which
    # has no such field; the versioned class already fixed the version.
    return bytes(response.encode(header=True, framed=True))


def decode_response(api_key: int, api_version: int, data: bytes) -> Any:
    """A response without its size (tests and the relay's fallback)."""
    return RESPONSES[api_key].decode(data, version=api_version, header=True)


def encode_request(body: Any, api_version: int, correlation_id: int, client_id: str = "tiering-test") -> bytes:
    """A framed request (tests; kafka-python's client does this for real clients)."""
    body.with_header(correlation_id=correlation_id, client_id=client_id)
    return bytes(body.encode(version=api_version, header=True, framed=True))
