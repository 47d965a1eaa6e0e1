"""Command line: ``python -m service <command>``.

Commands: ``gateway``, ``archiver``, ``metrics``, ``reconciler``, ``dev`` (the whole
local stack on an embedded broker), ``topics ensure``, ``sign-url``, ``spool
inspect|drain``, ``replay``. Configuration comes from environment variables only; a bad
one stops start-up with its name.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from service.config.env import ConfigError, Env


def _gateway(_: argparse.Namespace) -> int:
    from service.config.gateway import GatewayConfig
    from service.gateway.main import run_gateway
    from service.observability.logging import configure_logging
    from service.runtime import run_process

    config = GatewayConfig.from_env()
    configure_logging(config.process.log_level, process="gateway")
    run_process(config.process, run_gateway(config))
    return 0


def _archiver(_: argparse.Namespace) -> int:
    from service.config.archiver import ArchiverConfig
    from service.consumers.archiver.main import run_archiver
    from service.contracts.vocabulary import FILE_ROLES
    from service.observability.logging import configure_logging
    from service.runtime import run_process

    config = ArchiverConfig.from_env(file_roles=FILE_ROLES)
    configure_logging(config.process.log_level, process="archiver")
    return run_process(config.process, run_archiver(config))


def _metrics(_: argparse.Namespace) -> int:
    from service.config.metrics_consumer import MetricsConsumerConfig
    from service.consumers.metrics.main import run_metrics
    from service.observability.logging import configure_logging
    from service.runtime import run_process

    config = MetricsConsumerConfig.from_env()
    configure_logging(config.process.log_level, process="metrics")
    return run_process(config.process, run_metrics(config))


def _reconciler(_: argparse.Namespace) -> int:
    from service.config.reconciler import ReconcilerConfig
    from service.consumers.reconciler.main import run_reconciler
    from service.observability.logging import configure_logging
    from service.runtime import run_process

    config = ReconcilerConfig.from_env()
    configure_logging(config.process.log_level, process="reconciler")
    return run_process(config.process, run_reconciler(config))


def _topics(args: argparse.Namespace) -> int:
    from service.config.kafka import KafkaSettings
    from service.config.shared import read_log_level
    from service.kafka.topics import ensure_topics, project_topics
    from service.observability.logging import configure_logging

    env = Env()
    configure_logging(read_log_level(env), process="topics")
    settings = KafkaSettings.from_env(env, client_id="music-topics")
    if args.action == "ensure":
        asyncio.run(ensure_topics(settings, project_topics(env)))
    return 0


def _sign_url(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from service.gateway.security import SecurityConfig, sign_callback_url

    env = Env()
    key = SecurityConfig.from_env(env).url_signing_key
    if key is None:
        raise ConfigError("CALLBACK_URL_SIGNING_KEY", "is required to sign callback URLs")
    base_url = args.base_url or env.optional_text("CALLBACK_BASE_URL")
    if base_url is None:
        raise ConfigError("CALLBACK_BASE_URL", "give --base-url or set CALLBACK_BASE_URL")
    try:
        url = sign_callback_url(base_url, args.task_ref, key,
                                expires_in=timedelta(hours=args.expires_in_hours))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(url)
    return 0


def _spool(args: argparse.Namespace) -> int:
    from pathlib import Path

    from service.spool import cli

    if args.action == "inspect":
        directory = args.dir or Env().optional_text("SPOOL_DIR")
        if directory is None:
            raise ConfigError("SPOOL_DIR", "is required (or give --dir)")
        return cli.inspect(Path(directory), records=args.records)
    from service.config.gateway import GatewayConfig
    from service.observability.logging import configure_logging

    config = GatewayConfig.from_env()
    configure_logging(config.process.log_level, process="spool", stream=sys.stderr.buffer)
    return asyncio.run(cli.drain(config, give_up_after=args.timeout))


def _replay(args: argparse.Namespace) -> int:
    from service.config.gateway import GatewayConfig
    from service.core.timefmt import epoch_seconds
    from service.gateway.replay import ReplayRange, replay
    from service.observability.logging import configure_logging

    times = {}
    for name in ("since", "until"):
        text = getattr(args, name)
        times[name] = None if text is None else epoch_seconds(text)
        if text is not None and times[name] is None:
            print(f"error: --{name}: expected an RFC 3339 time, got {text!r}", file=sys.stderr)
            return 2
    config = GatewayConfig.from_env()
    configure_logging(config.process.log_level, process="replay", stream=sys.stderr.buffer)
    wanted = ReplayRange(
        partitions=tuple(args.partition) if args.partition else None,
        from_offset=args.from_offset, to_offset=args.to_offset,
        since=times["since"], until=times["until"])
    return asyncio.run(replay(config, wanted, dry_run=args.dry_run,
                              republish_rejected=args.republish_rejected))


def _dev(_: argparse.Namespace) -> int:
    from service.devstack.stack import run_dev_stack

    return run_dev_stack(Env())


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "gateway": _gateway,
    "archiver": _archiver,
    "metrics": _metrics,
    "reconciler": _reconciler,
    "topics": _topics,
    "sign-url": _sign_url,
    "spool": _spool,
    "replay": _replay,
    "dev": _dev,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gateway", help="serve provider callbacks and publish them to Kafka")
    sub.add_parser("archiver", help="archive audio and covers of events to object storage")
    sub.add_parser("metrics", help="turn the event stream into Prometheus metrics")
    sub.add_parser("reconciler", help="ask the provider about submitted tasks whose "
                   "callbacks never came, and publish their outcome")
    sub.add_parser("dev", help="the whole local stack on an embedded broker (make run)")
    sign = sub.add_parser(
        "sign-url", help="mint a per-task callback URL signed with CALLBACK_URL_SIGNING_KEY")
    sign.add_argument("--task-ref", required=True,
                      help="your reference for the submission (1-128 printable characters)")
    sign.add_argument("--base-url", help="callback URL to sign (default: CALLBACK_BASE_URL); "
                      "keep ?token=... in it when URL tokens are configured too")
    sign.add_argument("--expires-in-hours", type=float, default=48.0,
                      help="validity of the URL (default 48)")
    topics = sub.add_parser("topics", help="manage the project's Kafka topics")
    topics.add_argument("action", choices=["ensure"], help="create missing topics")
    spool = sub.add_parser("spool", help="inspect the gateway's spool (SPOOL_DIR), or drain a "
                           "spool no gateway is using to Kafka")
    spool.add_argument("action", choices=["inspect", "drain"])
    spool.add_argument("--dir", help="inspect: the spool directory (default: SPOOL_DIR)")
    spool.add_argument("--records", action="store_true", help="inspect: one line per record")
    spool.add_argument("--timeout", type=float, default=600.0,
                       help="drain: give up after this many seconds (default 600)")
    replay = sub.add_parser(
        "replay", help="run records of the rejected topic through the current normalizer and "
        "publish the events (same body, same event id)")
    replay.add_argument("--partition", type=int, action="append",
                        help="only this partition (repeatable; default: all)")
    replay.add_argument("--from-offset", type=int, help="first offset, in each partition")
    replay.add_argument("--to-offset", type=int, help="last offset (inclusive)")
    replay.add_argument("--since", help="records written at or after this RFC 3339 time")
    replay.add_argument("--until", help="records written at or before this RFC 3339 time")
    replay.add_argument("--dry-run", action="store_true", help="report, publish nothing")
    replay.add_argument("--republish-rejected", action="store_true",
                        help="write bodies still rejected to the rejected topic again")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
