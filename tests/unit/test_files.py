"""Reading and replacing the broker's files without following links or blocking on FIFOs, and
printing what comes from outside without terminal escapes."""

from __future__ import annotations

import os
import stat

import pytest

from tiering.cli.printable import escaped
from tiering.files import NotRegularFile, file_crc32c, read_regular, replace_file
from tiering.kafka.checkpoints import CheckpointError, parse_leader_epoch_checkpoint, parse_offset_checkpoint

SECRET = b"root:$6$secret-hash:20000:0:99999:7:::\nsecond line\n"


def test_replace_file_never_writes_through_a_link_planted_at_its_temporary_name(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(SECRET)
    os.chmod(target, 0o600)
    checkpoint = tmp_path / "dir" / "log-start-offset-checkpoint"
    checkpoint.parent.mkdir()
    checkpoint.write_text("0\n0\n")
    os.chmod(checkpoint, 0o640)
    (checkpoint.parent / "log-start-offset-checkpoint.tmp").symlink_to(target)
    replace_file(checkpoint, b"0\n1\nt 0 5\n")
    assert target.read_bytes() == SECRET and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert checkpoint.read_bytes() == b"0\n1\nt 0 5\n" and not checkpoint.is_symlink()
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o640          # the replaced file's mode, set on our fd
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["log-start-offset-checkpoint"]


def test_replace_file_refuses_a_target_that_is_a_link_and_a_directory_that_is_one(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(SECRET)
    (tmp_path / "leader-epoch-checkpoint").symlink_to(target)
    with pytest.raises(NotRegularFile, match="symbolic link"):
        replace_file(tmp_path / "leader-epoch-checkpoint", b"0\n0\n")
    assert target.read_bytes() == SECRET
    (tmp_path / "real").mkdir()
    (tmp_path / "orders-0").symlink_to(tmp_path / "real")
    with pytest.raises(NotADirectoryError, match="symbolic link"):
        replace_file(tmp_path / "orders-0" / "leader-epoch-checkpoint", b"0\n0\n")
    assert list((tmp_path / "real").iterdir()) == []


def test_replace_file_may_go_through_a_configured_directory_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "logs").symlink_to(tmp_path / "real")
    replace_file(tmp_path / "logs" / "log-start-offset-checkpoint", b"0\n0\n", follow_dir=True)
    assert (tmp_path / "real" / "log-start-offset-checkpoint").read_bytes() == b"0\n0\n"


@pytest.mark.timeout(20)
def test_reads_refuse_links_and_fifos_without_blocking_and_without_quoting(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    (tmp_path / "link").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo")
    for name, kind in (("link", "symbolic link"), ("fifo", "FIFO")):
        with pytest.raises(NotRegularFile) as refused:
            read_regular(tmp_path / name)
        assert kind in str(refused.value) and str(tmp_path / name) in str(refused.value)
        assert b"secret" not in str(refused.value).encode()
        with pytest.raises(NotRegularFile):
            file_crc32c(tmp_path / name)
    assert read_regular(secret) == SECRET
    assert file_crc32c(tmp_path / "missing") is None


@pytest.mark.parametrize("parse", [parse_offset_checkpoint, parse_leader_epoch_checkpoint])
def test_checkpoint_errors_never_quote_the_file(parse):
    for text in (SECRET.decode(), "0\n1\nroot:$6$secret-hash x y z\n", "0\nsecret-hash\n"):
        with pytest.raises(CheckpointError) as refused:
            parse(text)
        assert "secret" not in str(refused.value) and "root" not in str(refused.value)


def test_escaped_leaves_plain_keys_alone_and_escapes_everything_else():
    assert escaped("cluster-a/orders-x/0/00000000000000000000-ab.log") == "cluster-a/orders-x/0/00000000000000000000-ab.log"
    assert escaped("k\x1b]0;owned\x07\x1b[2J\n\u202e") == "k\\x1b]0;owned\\x07\\x1b[2J\\n\\u202e"
    assert escaped("a\\x1b") == "a\\\\x1b"                          # a literal backslash cannot forge an escape
    assert escaped("ünïcödé") == "ünïcödé"
