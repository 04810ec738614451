"""The ``pulseboard`` command: parse arguments, set up logging, call a ``run_*`` function."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulseboard", description="Live operational dashboards from a stream of events."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate a config file and summarise it")
    check.add_argument("config", help="path to a pulseboard.yaml")

    demo = commands.add_parser("demo", help="run the built-in shop demo")
    demo.add_argument("--events", type=_positive, default=200_000, help="events to simulate")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the simulated traffic")

    bench = commands.add_parser("bench", help="run a benchmark and print its result")
    bench.add_argument("name", choices=["engine"], help="which benchmark")
    bench.add_argument("--events", type=_positive, default=1_000_000, help="events to process")
    bench.add_argument(
        "--workers",
        type=int,
        choices=[1, 2],
        default=2,
        help="1: decode and aggregate in one process; 2: decode in one, aggregate in another",
    )
    bench.add_argument("--repeat", type=_positive, default=3, help="rounds to take the best of")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "check":
        from pulseboard.config import run_check

        return run_check(args.config, sys.stdout, sys.stderr)
    if args.command == "demo":
        from pulseboard.demo import run_demo

        return run_demo(events=args.events, seed=args.seed, out=sys.stdout)
    if args.command == "bench":
        from pulseboard.benchmarks.engine import run_engine_bench

        return run_engine_bench(
            events=args.events,
            workers=args.workers,
            repeat=args.repeat,
            as_json=args.json,
            out=sys.stdout,
        )
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
