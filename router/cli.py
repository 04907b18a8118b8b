"""The `hybrid-router` command line: argument parsing and dispatch only.

Each subcommand lives in its own module and is imported only when used, so
`validate` does not pay for grpc and `serve` does not pay for the simulator.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, function, one-line help); each module has
# add_arguments(parser) and a run(args) -> int
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("router.server.main", "the ext_proc server, Prometheus metrics and gRPC health"),
    "validate": ("router.validate", "check policies, scenarios and feed files; exit 0 or 2"),
    "simulate": ("simulator.cli", "a what-if run through the same routing core"),
    "plan": ("simulator.plan.cli", "the cheapest fleet and policy meeting an SLO, by "
                                   "simulation"),
    "feed": ("router.feed.cli", "feed tools: `feed serve --from FILE`"),
    "envoy-config": ("router.envoy_config", "print the Envoy config for a policy"),
    "explain": ("router.explain", "one request's decision, every candidate and why"),
    "demo": ("router.demo", "real Envoy + router + feed + emulated nodes, with a live summary"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only `command`'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="hybrid-router",
        description="Envoy ext_proc router for hybrid edge/cloud inference.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        if name != command:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                p.set_defaults(_missing=module)
                continue
            raise
        if not hasattr(mod, "add_arguments"):
            p.set_defaults(_missing=module)
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the subcommand; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"hybrid-router {args.command}: not available in this build", file=sys.stderr)
        return 2
    run: Callable[[argparse.Namespace], int] = args._run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
