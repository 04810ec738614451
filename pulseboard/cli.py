"""The ``pulseboard`` command: parse arguments, set up logging, call a ``run_*`` function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from pulseboard.auth import SCOPES
from pulseboard.errors import PulseboardError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}")
    return value


def _verbose(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: without the flag here, the top-level -v (before the command) still counts
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages"
    )


def _server_options(parser: argparse.ArgumentParser) -> None:
    _verbose(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--data-dir", help="directory of the embedded stores (overrides storage.data_dir)"
    )


def _store_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        help="a pulseboard.yaml: the stores of its storage (its data_dir, or Redis and PostgreSQL)",
    )
    where.add_argument(
        "--data-dir", help="the data directory of a server (default: ./pulseboard-data)"
    )


def _add_operations(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reconcile = commands.add_parser("reconcile", help="apply pending late events to history now")
    reconcile.add_argument(
        "--config",
        required=True,
        help="a pulseboard.yaml: the stores of its storage (its data_dir, or Redis and PostgreSQL)",
    )
    reconcile.add_argument("--data-dir", help="overrides storage.data_dir (embedded stores)")

    dlq = commands.add_parser("dlq", help="dead letters: rejected events with their reasons")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = dlq_commands.add_parser("list", help="show dead letters, oldest first")
    _store_options(dlq_list)
    dlq_list.add_argument("--limit", type=_positive, default=100)
    dlq_list.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = dlq_commands.add_parser("replay", help="re-submit dead letters to a server")
    _store_options(replay)
    replay.add_argument("--url", default="http://127.0.0.1:8000", help="the server to send to")
    replay.add_argument("--api-key", help="a key with the ingest scope")
    replay.add_argument("--limit", type=_positive, default=100_000)

    keys = commands.add_parser("keys", help="API keys (stored hashed)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="create a key and print it once")
    _store_options(create)
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=list(SCOPES),
        help="a scope the key grants (repeat for several)",
    )
    create.add_argument("--name", default="", help="a note on what the key is for")
    listing = key_commands.add_parser("list", help="list keys (ids and scopes, no secrets)")
    _store_options(listing)
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    _store_options(revoke)
    revoke.add_argument("key_id")


def _add_traffic(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="run the shop demo: server, simulated traffic, URL")
    _server_options(demo)
    demo.add_argument(
        "--rate", type=float, default=500.0, help="simulated events/s, the mean over a day"
    )

    simulate = commands.add_parser("simulate", help="send realistic shop traffic to a server")
    simulate.add_argument("--url", default="http://127.0.0.1:8000")
    simulate.add_argument("--rate", type=float, default=200.0, help="events per second (mean)")
    simulate.add_argument("--duration", type=float, default=60.0, help="seconds to run")
    simulate.add_argument("--late", type=_share, default=0.01, help="share of late events")
    simulate.add_argument("--duplicates", type=_share, default=0.01, help="share of re-sends")
    simulate.add_argument("--malformed", type=_share, default=0.001, help="share of bad events")
    simulate.add_argument("--api-key", help="a key with the ingest scope")
    simulate.add_argument("--seed", type=int, help="random seed")
    simulate.add_argument(
        "--stop-with-parent", action="store_true", help="stop when the starting process exits"
    )

    bench = commands.add_parser("bench", help="run a benchmark and print its result")
    bench.add_argument(
        "name", choices=["engine", "pipeline", "web", "history"], help="which benchmark"
    )
    bench.add_argument(
        "--url", help="history: an empty PostgreSQL database to fill (postgresql://...)"
    )
    bench.add_argument("--days", type=_positive, default=90, help="history: days of 1m windows")
    bench.add_argument("--events", type=_positive, help="events to process or send")
    bench.add_argument(
        "--workers",
        type=int,
        choices=[1, 2],
        default=2,
        help="engine: 1 decodes and aggregates in one process, 2 in two",
    )
    bench.add_argument(
        "--repeat", type=_positive, default=3, help="rounds to take the best of (web: page loads)"
    )
    bench.add_argument("--producers", type=_positive, default=4, help="pipeline: producers")
    bench.add_argument(
        "--rate", type=_positive, default=50_000, help="pipeline: events/s of the freshness phase"
    )
    bench.add_argument(
        "--duration", type=_positive, default=20, help="pipeline: seconds of the freshness phase"
    )
    bench.add_argument(
        "--distributed",
        action="store_true",
        help="pipeline: one serve --role api and --processors serve --role processor on "
        "Redis and PostgreSQL (a throwaway key prefix and database, removed afterwards)",
    )
    bench.add_argument(
        "--processors", type=_positive, help="pipeline --distributed: processors (default 1)"
    )
    bench.add_argument(
        "--redis-url",
        help="pipeline --distributed: a Redis on this machine (default redis://127.0.0.1:6379/0)",
    )
    bench.add_argument(
        "--postgres-url",
        help="pipeline --distributed: a PostgreSQL server on this machine whose user may create "
        "databases (default postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulseboard", description="Live operational dashboards from a stream of events."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate a config file and summarise it")
    check.add_argument("config", help="path to a pulseboard.yaml")

    serve = commands.add_parser("serve", help="run the pipeline and its HTTP API")
    serve.add_argument("--config", required=True, help="path to a pulseboard.yaml")
    _server_options(serve)
    serve.add_argument(
        "--require-keys",
        action="store_true",
        help="require API keys on loopback too (always required on other addresses)",
    )
    serve.add_argument(
        "--role",
        choices=["all", "api", "processor"],
        default="all",
        help="distributed mode: api (HTTP only), processor (no HTTP), or all (an API and one "
        "processor; the only role of the embedded mode)",
    )
    _add_traffic(commands)
    _add_operations(commands)
    return parser


def _check(args: argparse.Namespace) -> int:
    from pulseboard.config import run_check
    from pulseboard.server import check_storage

    return run_check(args.config, sys.stdout, sys.stderr, check_storage)


def _serve(args: argparse.Namespace) -> int:
    from pulseboard.server import run_serve

    return run_serve(
        args.config,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        require_keys=args.require_keys,
        verbose=args.verbose,
        role=args.role,
    )


def _demo(args: argparse.Namespace) -> int:
    from pulseboard.demo import run_demo

    return run_demo(
        host=args.host, port=args.port, data_dir=args.data_dir, rate=args.rate, verbose=args.verbose
    )


def _simulate(args: argparse.Namespace) -> int:
    from pulseboard.simulate import run_simulate

    return run_simulate(
        url=args.url,
        rate=args.rate,
        duration_s=args.duration,
        late=args.late,
        duplicates=args.duplicates,
        malformed=args.malformed,
        api_key=args.api_key,
        seed=args.seed,
        stop_with_parent=args.stop_with_parent,
        out=sys.stdout,
    )


def _bench(args: argparse.Namespace) -> int:
    if args.name in ("web", "history"):
        if args.name == "web":
            from pulseboard.benchmarks.web import run_web_bench

            result = run_web_bench(runs=args.repeat)
        else:
            from pulseboard.benchmarks.history import run_history_bench

            if not args.url:
                raise PulseboardError("bench history needs --url postgresql://... (empty db)")
            result = run_history_bench(args.url, days=args.days)
        print(json.dumps(result, indent=None if args.json else 2))
        return 0
    if args.name == "pipeline":
        from pulseboard.benchmarks.pipeline import Distributed, run_pipeline_bench

        options = {
            "processors": args.processors,
            "redis_url": args.redis_url,
            "postgres_url": args.postgres_url,
        }
        given = {name: value for name, value in options.items() if value is not None}
        distributed = Distributed(**given) if args.distributed else None
        if given and distributed is None:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise PulseboardError(f"{flags}: only with --distributed")
        return run_pipeline_bench(
            events=args.events,
            as_json=args.json,
            out=sys.stdout,
            producers=args.producers,
            freshness_rate=args.rate,
            freshness_s=args.duration,
            distributed=distributed,
        )
    from pulseboard.benchmarks.engine import run_engine_bench

    return run_engine_bench(
        events=args.events or 1_000_000,
        workers=args.workers,
        repeat=args.repeat,
        as_json=args.json,
        out=sys.stdout,
    )


def _reconcile(args: argparse.Namespace) -> int:
    from pulseboard import admin

    stores = admin.operator_stores(args.config, args.data_dir)
    return admin.run_reconcile(stores, sys.stdout)


def _dlq(args: argparse.Namespace) -> int:
    from pulseboard import admin

    stores = admin.operator_stores(args.config, args.data_dir)
    if args.dlq_command == "list":
        return admin.run_dlq_list(stores, limit=args.limit, as_json=args.json, out=sys.stdout)
    return admin.run_dlq_replay(
        stores,
        url=args.url.rstrip("/"),
        api_key=args.api_key,
        limit=args.limit,
        out=sys.stdout,
        err=sys.stderr,
    )


def _keys(args: argparse.Namespace) -> int:
    from pulseboard import admin

    stores = admin.operator_stores(args.config, args.data_dir)
    if args.keys_command == "create":
        return admin.run_keys_create(stores, args.scope, args.name, sys.stdout)
    if args.keys_command == "list":
        return admin.run_keys_list(stores, sys.stdout)
    return admin.run_keys_revoke(stores, args.key_id, sys.stdout, sys.stderr)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "check": _check,
    "serve": _serve,
    "demo": _demo,
    "simulate": _simulate,
    "bench": _bench,
    "reconcile": _reconcile,
    "dlq": _dlq,
    "keys": _keys,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    # the stores log an outage when it starts and ends; the pool would at every reconnection
    logging.getLogger("psycopg.pool").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    try:
        return _COMMANDS[args.command](args)
    except PulseboardError as exc:
        print(f"pulseboard {args.command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader of our output went away (`… | head`): stop quietly, and point stdout at
        # nothing so that the interpreter's last flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
