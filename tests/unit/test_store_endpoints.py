"""The trimmed endpoint table resolves every service the process calls exactly as botocore's
whole one does, and the S3 client keeps only the trimmed table."""

from __future__ import annotations

import gc
import re

import botocore.session
import pytest
from botocore.regions import EndpointResolver

from tiering.config import StoreConfig
from tiering.store.endpoints import SERVICES, keep_only_needed_endpoints
from tiering.store.s3 import make_client

REGIONS = ("us-east-1", "eu-west-1", "aws-global", "cn-north-1", "us-gov-west-1", "us-iso-east-1",
           "eu-isoe-west-1", "xx-made-up-1")
# What a presigned URL says that does not depend on the clock: host, path, credential scope
# (date aside), signature version and the signed headers.
_VOLATILE = re.compile(r"(X-Amz-Date=|X-Amz-Signature=|Expires=|Signature=)[^&]*|/\d{8}/")


@pytest.fixture(autouse=True)
def fixed_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


def described(client, service: str) -> tuple:
    if service == "s3":
        url = client.generate_presigned_url("get_object", Params={"Bucket": "bucket", "Key": "key"})
    elif service == "sts":
        url = client.generate_presigned_url("get_caller_identity")
    else:
        url = None
    return (client.meta.endpoint_url, client.meta.region_name, client.meta.partition,
            client.meta.config.signature_version, None if url is None else _VOLATILE.sub(r"\1", url))


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_kept_resolves_as_with_the_whole_table(service):
    trimmed_session = botocore.session.Session()
    keep_only_needed_endpoints(trimmed_session)
    whole_session = botocore.session.Session()
    for region in REGIONS:
        trimmed = trimmed_session.create_client(service, region_name=region)
        whole = whole_session.create_client(service, region_name=region)
        assert described(trimmed, service) == described(whole, service), (service, region)


def test_the_table_keeps_only_those_services_and_every_partition():
    whole = botocore.session.Session().get_component("data_loader").load_data("endpoints")
    session = botocore.session.Session()
    keep_only_needed_endpoints(session)
    trimmed = session.get_component("data_loader").load_data("endpoints")
    assert [p["partition"] for p in trimmed["partitions"]] == [p["partition"] for p in whole["partitions"]]
    for cut, full in zip(trimmed["partitions"], whole["partitions"]):
        assert set(cut["services"]) == set(full["services"]) & SERVICES
        assert {k: v for k, v in cut.items() if k != "services"} == {k: v for k, v in full.items() if k != "services"}
        assert "s3" in cut["services"] and all(cut["services"][s] == full["services"][s] for s in cut["services"])


def held_endpoint_tables(root) -> list[dict]:
    """The endpoint tables reachable from `root` (what stays resident while it lives)."""
    seen, queue, found = {id(root)}, [root], []
    while queue:
        obj = queue.pop()
        if isinstance(obj, EndpointResolver):
            found.append(obj._endpoint_data)
            continue
        for child in gc.get_referents(obj):
            if id(child) not in seen and not isinstance(child, type):
                seen.add(id(child))
                queue.append(child)
    return found


def test_the_s3_client_holds_only_the_trimmed_table():
    client = make_client(StoreConfig("bucket", region="eu-west-1"))
    tables = held_endpoint_tables(client)
    assert tables, "botocore no longer keeps an endpoint table reachable from the client"
    for table in tables:
        for partition in table["partitions"]:
            assert set(partition["services"]) <= SERVICES
    assert client.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
