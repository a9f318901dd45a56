"""Finding 9: the store's secret can come from a file only the sidecar reads
(`store.credentials_file`, e.g. systemd's LoadCredential=), not from its environment, where the
broker's user reads it in /proc/<pid>/environ."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.faults import proxy as proxy_module
from tests.faults.proxy import FaultProxy
from tiering.simulate import SimulatedBroker

pytestmark = pytest.mark.integration

FILE_KEY_ID = "AKIAFROMTHEFILE00001"


def run_without_env_credentials(config) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return subprocess.run([sys.executable, "-m", "tiering", "run", "--config", str(config), "--once"],
                          capture_output=True, text=True, timeout=120, env={**env, "PYTHONUNBUFFERED": "1"})


def config_with(env, credentials_file, endpoint: str | None = None):
    path = env.write_config()
    text = path.read_text().replace('addressing_style = "path"',
                                    f'addressing_style = "path"\ncredentials_file = "{credentials_file}"')
    if endpoint is not None:
        text = text.replace(f'endpoint_url = "{env.endpoint}"', f'endpoint_url = "{endpoint}"')
    path.write_text(text)
    return path


def test_the_store_sees_the_key_from_the_credentials_file(env, s3, tmp_path, monkeypatch):
    seen: list[str] = []
    parse = proxy_module._parse_head

    def recording(head: bytes):
        method, path, headers = parse(head)
        seen.append(headers.get("authorization", ""))
        return method, path, headers

    monkeypatch.setattr(proxy_module, "_parse_head", recording)
    host, port = env.endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port))
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(f"[default]\naws_access_key_id = {FILE_KEY_ID}\n"
                           "aws_secret_access_key = file-secret-not-in-any-environment\n")
    credentials.chmod(0o600)
    broker = SimulatedBroker(env.log_dir, segment_bytes=8 * 1024, seed=9)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 300, value_size=100)
    try:
        result = run_without_env_credentials(config_with(env, credentials, proxy.endpoint))
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    assert seen, "no request went through the proxy"
    signed = [h for h in seen if h]
    assert signed and all(f"Credential={FILE_KEY_ID}/" in h for h in signed), sorted(set(signed))[:3]


@pytest.mark.parametrize("content,mode,expected", [
    ("this is not an ini file\n", 0o600, "not a valid AWS credentials file"),
    ("[other]\naws_access_key_id = X\naws_secret_access_key = Y\n", 0o600, "no aws_access_key_id in profile [default]"),
    ("[default]\naws_access_key_id = X\naws_secret_access_key = Y\n", 0o644, "readable by every user"),
    (None, 0o600, "cannot read (No such file or directory)"),
])
def test_a_bad_credentials_file_is_one_line_and_exit_2(env, s3, tmp_path, content, mode, expected):
    credentials = tmp_path / "aws-credentials"
    if content is not None:
        credentials.write_text(content)
        credentials.chmod(mode)
    SimulatedBroker(env.log_dir, seed=9).create_topic("orders", 1)
    # The environment's keys are valid for the server: they must not stand in for a bad file.
    result = subprocess.run([sys.executable, "-m", "tiering", "run", "--config", str(config_with(env, credentials)),
                             "--once"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{credentials}: store.credentials_file: {expected}" in lines[0], lines[0]
