"""`tiering resume --topic T`: turn tiering back on for a topic after a rollback."""

from __future__ import annotations

import argparse

from tiering.cli.main import add_config_argument
from tiering.config import load_config
from tiering.errors import EXIT_OK, UsageError
from tiering.journal import Journal
from tiering.kafka.names import is_legal_topic


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("resume", help="turn tiering back on for a topic after a rollback")
    add_config_argument(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--topic", help="the topic to tier again")
    target.add_argument("--all", action="store_true", help="every topic tiering was turned off for")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.topic is not None and not is_legal_topic(args.topic):
        raise UsageError(f"--topic {args.topic!r} is not a legal Kafka topic name")
    config = load_config(args.config)
    journal = Journal(config.state.dir)
    try:
        topics = sorted(journal.disabled_topics()) if args.all else [args.topic]
        for topic in topics:
            if journal.enable_topic(topic):
                print(f"tiering is on again for topic {topic}: its rolled segments are uploaded and local retention "
                      "applies (a running daemon picks this up within a second)")
            else:
                print(f"tiering was not turned off for topic {topic}: nothing to do")
        if not topics:
            print("tiering is not turned off for any topic: nothing to do")
    finally:
        journal.close()
    return EXIT_OK
