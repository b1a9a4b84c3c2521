"""The ``modelworks`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from modelworks import __version__, crdgen


def _run(args: argparse.Namespace) -> int:
    from modelworks.handlers import run
    from modelworks.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"modelworks: {exc}", file=sys.stderr)
        return 2
    run(settings)
    return 0


def _crds(args: argparse.Namespace) -> int:
    if args.check:
        stale = crdgen.stale(Path(args.check))
        if stale:
            print(
                f"modelworks: {', '.join(stale)} in {args.check} differ from the API models; "
                "run `make crds` and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"{args.check}: up to date")
        return 0
    if args.write:
        for path in crdgen.write(Path(args.write)):
            print(path)
        return 0
    sys.stdout.write("---\n".join(crdgen.files().values()))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelworks", description=__doc__)
    p.add_argument("--version", action="version", version=f"modelworks {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator (settings from MODELWORKS_* variables)")
    run.set_defaults(func=_run)
    crds = sub.add_parser("crds", help="print the CRDs generated from the API models")
    group = crds.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="DIR", help="write them into DIR instead")
    group.add_argument("--check", metavar="DIR", help="exit 1 when DIR differs from the models")
    crds.set_defaults(func=_crds)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))
