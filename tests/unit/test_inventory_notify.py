"""The daemon's inventory of the log dirs (rescans only what changed) and sd_notify."""

from __future__ import annotations

import shutil
import socket
import time

from tiering.kafka.inventory import Inventory
from tiering.observability.sdnotify import Notifier
from tiering.simulate import SimulatedBroker


def test_full_scan_rescans_only_partition_dirs_whose_mtime_moved(tmp_path):
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=4096, seed=1)
    broker.create_topic("a", 2)
    broker.create_topic("b", 1)
    for p in range(2):
        broker.produce("a", p, 100)
    inventory = Inventory((tmp_path / "logs",))
    later = time.time() + 60            # as if the dirs were last changed a minute ago
    first = inventory.full_scan(later)
    assert {p.tp.topic for p in first.updated} == {"a", "b"} and len(first.updated) == 3
    assert inventory.full_scan(later).updated == ()           # nothing moved: nothing rescanned

    broker.produce("a", 1, 100)                               # rolls: files created in a-1 only
    second = inventory.full_scan(later)
    assert [(p.topic, p.partition) for p in second.updated] == [("a", 1)]
    assert len(second.updated[0].segments) > len(first.updated[1].segments)

    shutil.rmtree(broker.partition_dir("b", 0))
    third = inventory.full_scan(later)
    assert third.removed == (broker.partition_dir("b", 0),)
    assert broker.partition_dir("b", 0) not in inventory.partitions


def test_recently_changed_dirs_are_rescanned_even_with_the_same_mtime(tmp_path):
    """Timestamps are coarse: a dir changed within the last second is never trusted as cached."""
    broker = SimulatedBroker(tmp_path / "logs", seed=2)
    broker.create_topic("a", 1)
    inventory = Inventory((tmp_path / "logs",))
    inventory.full_scan(time.time())
    assert len(inventory.full_scan(time.time()).updated) == 1


def test_rescan_of_one_partition_and_of_one_that_is_gone(tmp_path):
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=4096, seed=3)
    broker.create_topic("a", 1)
    inventory = Inventory((tmp_path / "logs",))
    inventory.full_scan(time.time())
    broker.create_topic("new", 1)
    broker.produce("new", 0, 100)
    changes = inventory.rescan(broker.partition_dir("new", 0))
    assert [p.topic for p in changes.updated] == ["new"] and len(changes.updated[0].segments) > 1
    shutil.rmtree(broker.partition_dir("new", 0))
    assert inventory.rescan(broker.partition_dir("new", 0)).removed == (broker.partition_dir("new", 0),)
    assert inventory.rescan(tmp_path / "logs" / "replication-offset-checkpoint").updated == ()


def test_notifier_sends_datagrams_to_notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000"})
        assert notifier.enabled
        notifier.ready("watching 3 partitions")
        notifier.watchdog()
        notifier.stopping()
        sock.settimeout(2)
        received = [sock.recv(4096).decode() for _ in range(3)]
    assert received == ["READY=1\nSTATUS=watching 3 partitions", "WATCHDOG=1", "STOPPING=1"]


def test_notifier_without_systemd_does_nothing():
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready()   # no socket, no error
