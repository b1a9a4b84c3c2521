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


def _serve(args: argparse.Namespace) -> int:
    import os
    import tempfile

    import uvicorn

    from modelworks.serving.app import MODEL_URI_ENV

    os.environ[MODEL_URI_ENV] = args.model_uri
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker counts for itself; /metrics sums the workers' files.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelworks-metrics-")
    uvicorn.run(
        "modelworks.serving.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_graceful_shutdown=args.drain_seconds,  # SIGTERM: finish in-flight requests
        access_log=False,
        log_level="info",
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelworks", description=__doc__)
    p.add_argument("--version", action="version", version=f"modelworks {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator (settings from MODELWORKS_* variables)")
    run.set_defaults(func=_run)
    serve = sub.add_parser(
        "serve", help="serve a registered model: MLflow's scoring protocol plus /metrics"
    )
    serve.add_argument(
        "--model-uri", required=True, help="models:/<name>/<version>, models:/<name>@<alias>, ..."
    )
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--drain-seconds", type=int, default=25, help="grace for in-flight requests on SIGTERM"
    )
    serve.set_defaults(func=_serve)
    crds = sub.add_parser("crds", help="print the CRDs generated from the API models")
    group = crds.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="DIR", help="write them into DIR instead")
    group.add_argument("--check", metavar="DIR", help="exit 1 when DIR differs from the models")
    crds.set_defaults(func=_crds)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))
