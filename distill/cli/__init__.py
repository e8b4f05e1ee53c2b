"""The ``vlm-distill`` console script: one subcommand per module, rich only at this edge.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``vlm-distill harvest`` never pays for torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from vlmclient.errors import ConfigurationError, VLMError

# command name -> (module, one-line help). Order is the order of `vlm-distill --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("distill.cli.demo", "run the whole pipeline on the embedded default"),
    "harvest": ("distill.cli.harvest", "buy teacher embeddings for a dataset, under a budget"),
    "train": ("distill.cli.train", "train a student from cached teacher outputs"),
    "eval": ("distill.cli.evaluate", "evaluate a trained run on a dataset, per domain"),
    "report": ("distill.cli.report", "spend and cache report from a cache or run folder"),
    "cache": ("distill.cli.cache_cmd", "inspect, verify, export or prune a response cache"),
    "serve-teacher": ("distill.cli.serve_teacher", "serve the local pay-per-query teacher"),
    "providers": ("distill.cli.providers", "list providers, models, env vars and prices"),
    "data": ("distill.cli.data", "build the bundled datasets (make-digits, ...)"),
}

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUDGET = 3


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (mod, help_) in COMMANDS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = (mod, help_)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-distill",
        description="Distil a pay-per-query vision-language teacher into a small local model.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v INFO, -vv DEBUG")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(mod).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(_available()[args.command][0])
    try:
        return int(module.run(args))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(
            "interrupted: everything bought so far is cached; run again to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
