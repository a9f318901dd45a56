"""`tiering rollback`: bring a topic's (or every topic's) offloaded segments back to the
broker's log dirs. Without --confirm it is a dry run that prints the plan and changes nothing."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Callable, TextIO

from tiering.cli.main import add_config_argument
from tiering.cli.table import aligned
from tiering.clock import SystemClock
from tiering.config import Config, load_config
from tiering.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, TieringError, UsageError
from tiering.journal import Journal
from tiering.kafka.lock import probe_lock
from tiering.kafka.logdir import scan_log_dirs
from tiering.observability.logging import configure_logging
from tiering.rollback import confirm
from tiering.rollback.deletion import replica_log_start
from tiering.rollback.inputs import Selection, gather_plans, select_partitions
from tiering.rollback.plan import PartitionPlan
from tiering.rollback.progress import Progress, ProgressBar, ProgressEvents
from tiering.retention.admin import KafkaLogStarts
from tiering.rollback.replicas import (KafkaReplicaSource, KnownReplicas, ReplicaSource, known_replicas,
                                       procedure_lines, replicated, warning_line)
from tiering.rollback.run import DiskSpace, Rollback, RollbackReport, disk_space
from tiering.units import format_bytes, parse_size
from tiering.upload.ratelimit import RateLimiter
from tiering.wiring import open_store

DEFAULT_KEEP_FREE = "1GiB"


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("rollback", help="restore offloaded segments to local disk (dry run without --confirm)")
    add_config_argument(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--topic", help="the topic to roll back")
    target.add_argument("--all", action="store_true", help="every topic in the log dirs (per-broker rollback)")
    parser.add_argument("--partition", type=int, help="only this partition of --topic")
    parser.add_argument("--confirm", action="store_true", help="do it (without: print the plan, change nothing)")
    parser.add_argument("--delete-remote", action="store_true",
                        help="remove the store's copies once every restored file is verified and the running cluster "
                             "confirms the restored log start (run again after the broker is up)")
    parser.add_argument("--keep-free", default=DEFAULT_KEEP_FREE, metavar="SIZE",
                        help=f"refuse unless this much disk stays free after the restore (default {DEFAULT_KEEP_FREE})")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.partition is not None and args.topic is None:
        raise UsageError("--partition needs --topic")
    if args.partition is not None and args.partition < 0:
        raise UsageError(f"--partition {args.partition}: must be 0 or more")
    try:
        keep_free = parse_size(args.keep_free)
    except ValueError as exc:
        raise UsageError(f"--keep-free: {exc}") from None
    if keep_free < 0:
        raise UsageError("--keep-free: must be 0 or more")
    config = load_config(args.config)
    scan = scan_log_dirs(config.kafka.log_dirs)
    selection = Selection(args.topic, args.partition)
    partitions = select_partitions(scan, selection)
    topics = sorted({p.topic for p in partitions})
    clock = SystemClock()
    store = open_store(config, RateLimiter(config.read.rate_limit_bytes_per_second, clock.monotonic))
    command = " ".join(["tiering rollback", *(["--all"] if args.all else ["--topic", args.topic]),
                        *(["--partition", str(args.partition)] if args.partition is not None else [])])
    try:
        plans = gather_plans(store, scan, partitions, config.store.prefix, config.store.hash_prefix)
        replicas = _replicas(config, topics, clock.now_ms())
        warning = warning_line(replicated([(p.topic, p.partition) for p in plans], replicas))
        if warning:
            print(f"tiering: {warning}", file=sys.stderr)
        if not args.confirm:
            this_broker = next((s.broker_id for s in scan.log_dirs if s.broker_id is not None), None)
            print_plan(sys.stdout, plans, selection, args.delete_remote, replicas, this_broker, f"{command} --confirm")
            undone = undone_rollbacks(config, plans)
            for line in undone:
                print(f"tiering: {line}", file=sys.stderr)
            return EXIT_FAILED if undone else EXIT_OK
        return _confirmed(args, config, store, plans, topics, keep_free, clock, command)
    finally:
        store.close()


def undone_rollbacks(config: Config, plans: list[PartitionPlan]) -> list[str]:
    """The earlier `--delete-remote` rollbacks of these partitions that Kafka undid (this
    broker's log start moved above the restored one), checked without changing anything: the
    dry run says so rather than planning the same restore again as if nothing had happened."""
    if not config.kafka.bootstrap_servers or not (config.state.dir / "journal.sqlite").exists():
        return []
    journal = Journal(config.state.dir)
    try:
        pending = confirm.load(journal.get_meta(confirm.JOURNAL_KEY))
    finally:
        journal.close()
    checked = [p for p in plans if p.name in pending and not p.refused and not p.left
               and p.topic_id == pending[p.name].topic_id]
    if not checked:
        return []
    try:
        earliest = KafkaLogStarts(config.kafka.bootstrap_servers)([(p.topic, p.partition) for p in checked])
    except TieringError:
        return []       # the cluster cannot be asked: nothing can be said either way
    lines = []
    for plan in checked:
        decision = confirm.decide(pending[plan.name], earliest.get((plan.topic, plan.partition)),
                                  replica_log_start(plan))
        if decision.action == confirm.UNDONE:
            lines.append(f"{plan.name}: the earlier rollback was undone by Kafka ({decision.reason}); the store's "
                         "copies are kept; follow the replicated-topic procedure (README, Rollback)")
    return lines


def _confirmed(args: argparse.Namespace, config: Config, store: Any, plans: list[PartitionPlan], topics: list[str],
               keep_free: int, clock: SystemClock, command: str) -> int:
    on_terminal = sys.stderr.isatty() and sys.stdout.isatty()
    # On a terminal the bar and the summary say it all; per-segment events would scroll the bar away.
    log = configure_logging(sys.stdout, level="warning" if on_terminal else "info")
    bars: list[ProgressBar] = []
    events: list[ProgressEvents] = []

    def progress_for(total_bytes: int, total_segments: int) -> Progress:
        if on_terminal:
            bar = ProgressBar(total_bytes, sys.stderr)
            bars.append(bar)
            return Progress(total_bytes, total_segments, clock.monotonic, bar.update)
        progress = Progress(total_bytes, total_segments, clock.monotonic)
        events.append(ProgressEvents(progress, log))
        return progress

    # SIGTERM (systemd, kill) stops a rollback the way Ctrl-C does: cleanly, resumable.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    journal = Journal(config.state.dir)
    rollback = Rollback(store, journal, log, prefix=config.store.prefix, hash_prefix=config.store.hash_prefix,
                        concurrency=config.upload.concurrency, now_ms=clock.now_ms)
    try:
        earliest = KafkaLogStarts(config.kafka.bootstrap_servers) if config.kafka.bootstrap_servers else None
        report = rollback.run(plans, topics, keep_free, args.delete_remote, progress_for, command, earliest)
    finally:
        for bar in bars:
            bar.close()
        for event in events:
            event.close()
        journal.close()
    _summary(report, log, on_terminal, topics)
    for line in report.failures + report.undone:
        print(f"tiering: {line}", file=sys.stderr)
    for line in report.kept:
        print(f"tiering: {line}", file=sys.stderr)
    if report.interrupted:
        print(f"tiering: interrupted after restoring {report.segments} segment(s); rerun the same command to finish "
              "(restored files stay, nothing half-written is visible)", file=sys.stderr)
        return EXIT_INTERRUPTED
    # Kept copies after a restore are the procedure working (exit 0); an undone rollback, or a
    # confirmation the cluster could not give, leaves --delete-remote not done (exit 1).
    waiting = [line for line in report.kept if "start the broker, then run" not in line]
    return EXIT_FAILED if report.failures or report.undone or waiting else EXIT_OK


def _summary(report: RollbackReport, log: Any, on_terminal: bool, topics: list[str]) -> None:
    rate = report.bytes / report.seconds if report.seconds > 0 else 0.0
    fields = dict(topics=topics, partitions=len(report.results), segments_restored=report.segments,
                  bytes_restored=report.bytes, files_already_in_place=report.files_kept,
                  seconds=round(report.seconds, 2), rate_bytes_per_second=round(rate),
                  log_start_lowered={str(tp): list(v) for tp, v in report.log_starts.items()},
                  leader_epochs_merged=report.epochs_merged, remote_segments_deleted=report.remote_deleted,
                  failures=len(report.failures), interrupted=report.interrupted,
                  store_copies_kept=len(report.kept), rollbacks_undone=len(report.undone))
    if not on_terminal:
        log.info("rollback finished", **fields)
        return
    print(f"restored {report.segments} segment(s), {format_bytes(report.bytes)}, to {len(report.results)} "
          f"partition(s) in {report.seconds:.1f} s ({format_bytes(int(rate))}/s); "
          f"{report.files_kept} file(s) already on disk were kept")
    for tp, (old, new) in report.log_starts.items():
        print(f"  {tp}: log-start-offset-checkpoint {old} -> {new}")
    for name in report.epochs_merged:
        print(f"  {name}: leader epochs merged into leader-epoch-checkpoint")
    for name, count in report.remote_deleted.items():
        print(f"  {name}: {count} segment(s) removed from the store")
    print(f"tiering is off for {', '.join(topics)}; 'tiering resume --topic T' turns it back on")


# -- the dry run's table --------------------------------------------------------------------------

_COLUMNS = ("PARTITION", "LOG DIR", "SEGMENTS", "BYTES", "OFFSETS", "LOG START", "FREE AFTER")


def _replicas(config: Config, topics: list[str], now_ms: int,
              source_factory: Callable[[str], ReplicaSource] = KafkaReplicaSource) -> KnownReplicas | None:
    """The replica sets from the cluster (recorded in the journal), or as last recorded there
    while it answered; None when neither is known."""
    if not topics:
        return None
    source = source_factory(config.kafka.bootstrap_servers) if config.kafka.bootstrap_servers else None
    # Only a journal that exists: a dry run creates no state dir.
    journal = Journal(config.state.dir) if (config.state.dir / "journal.sqlite").exists() else None
    try:
        return known_replicas(source, journal, topics, now_ms)
    finally:
        if journal is not None:
            journal.close()


def print_plan(out: TextIO, plans: list[PartitionPlan], selection: Selection, delete_remote: bool,
               replicas: KnownReplicas | None = None, this_broker: int | None = None,
               command: str = "tiering rollback --confirm") -> None:
    spaces = disk_space(plans)
    shown = [p for p in plans if p.has_work]
    rows = [_row(p, spaces[p.log_dir]) for p in shown]
    total_bytes = sum(p.bytes for p in shown if not p.refused)
    total_segments = sum(len(p.restore) for p in shown if not p.refused)
    print(f"rollback plan for {selection.describe()} (dry run: nothing was changed)", file=out)
    if rows:
        rows.append(("total", f"{len(shown)} partition(s)", str(total_segments), format_bytes(total_bytes), "", "", ""))
        for line in aligned([_COLUMNS, *rows]):
            print(line, file=out)
    idle = len(plans) - len(shown)
    if idle:
        print(f"{idle} partition(s) have nothing in the store below their local segments: nothing to restore",
              file=out)
    for plan in shown:
        if plan.refused:
            print(f"{plan.name}: refused: {plan.refused}", file=out)
        elif plan.left:
            print(f"{plan.name}: {plan.left}", file=out)
    if replicas is not None:
        for line in procedure_lines([(p.topic, p.partition) for p in shown], replicas, this_broker, command):
            print(line, file=out)
    for log_dir in sorted({p.log_dir for p in shown}):
        state = probe_lock(log_dir)
        verdict = "--confirm will refuse until the broker stops" if state.held else "free"
        print(f"broker lock on {log_dir}: {state.detail} ({verdict})", file=out)
    if delete_remote:
        copies = sum(len(p.restore) + len(p.local_copies) + len(p.duplicates) for p in plans if not p.refused)
        print(f"--delete-remote: {copies} segment(s) would then be removed from the store, each only after its local "
              "copy is verified against the manifest and the running cluster confirms the restored log start "
              "(ListOffsets earliest): not in the command that restores; run it again once the broker is up",
              file=out)
    print("tiering is turned off for the topic(s) first; add --confirm to restore (a replicated topic: roll back "
          "every replica, see the README)", file=out)


def _row(plan: PartitionPlan, space: DiskSpace) -> tuple[str, ...]:
    if plan.refused:
        return (plan.name, str(plan.log_dir), "-", "-", "-", "-", format_bytes(space.free_after))
    offsets = f"{plan.restore[-1].base_offset}..{plan.restore[0].manifest.end_offset}" if plan.restore else "-"
    start = f"{plan.log_start} -> {plan.new_log_start}" if plan.new_log_start is not None else "unchanged"
    return (plan.name, str(plan.log_dir), str(len(plan.restore)), format_bytes(plan.bytes), offsets, start,
            format_bytes(space.free_after))
