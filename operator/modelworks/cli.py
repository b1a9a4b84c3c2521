"""The ``modelworks`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelworks import __version__, crdgen
from modelworks.api import API_VERSION, KINDS, TRAINING_JOB
from modelworks.humans import lineage, tables
from modelworks.humans import watch as watching
from modelworks.humans.common import clip, key_metrics
from modelworks.names import SERVER_PORT

if TYPE_CHECKING:
    from modelworks.clients.kube import Kube


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

    from modelworks.names import MODEL_URI_ENV

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


def _performance(args: argparse.Namespace) -> int:
    from modelworks.quality.lean import refuse_unused

    refuse_unused()
    from modelworks.quality import check

    return check.main(args.config)


def _drift(args: argparse.Namespace) -> int:
    from modelworks import batch

    return batch.main(args.reference, args.reference_kind, args.current, args.config)


def _snapshot(args: argparse.Namespace) -> int:
    from modelworks import snapshot

    return snapshot.main(args.config)


def _validate_data(args: argparse.Namespace) -> int:
    from modelworks import datacheck

    return datacheck.main(args.dataset, args.config, args.profile, args.note)


# --- helpers for people: status and watch ------------------------------------------------

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _default_namespace() -> str:
    """The namespace kubectl would use: the pod's own in a cluster, else the context's."""
    import os

    import yaml

    if os.environ.get("KUBERNETES_SERVICE_HOST") and SA_NAMESPACE.is_file():
        return SA_NAMESPACE.read_text().strip() or "default"
    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    current: str | None = None
    contexts: dict[str, Any] = {}
    for path in paths or [str(Path.home() / ".kube" / "config")]:
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        current = current or doc.get("current-context")
        for ctx in doc.get("contexts") or []:
            contexts.setdefault(ctx.get("name"), ctx.get("context") or {})
    return str((contexts.get(current or "") or {}).get("namespace") or "default")


def _kube() -> Kube:
    from modelworks.clients.kube import Kube

    return Kube.from_environment()


def _list_all(kube: Kube, kind: str, namespace: str | None) -> list[dict[str, Any]]:
    """Every object of a Modelworks kind; none when its CRD is not installed."""
    from modelworks.clients.kube import KubeError

    try:
        return kube.list(API_VERSION, kind, namespace)
    except KubeError as exc:
        if exc.status == 404:
            return []
        raise


def _tracking_uri() -> str:
    import os

    return (
        os.environ.get("MODELWORKS_MLFLOW_TRACKING_URI")
        or os.environ.get("MLFLOW_TRACKING_URI")
        or ""
    ).strip()


def _registry_facts(
    uri: str, versions: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per version: its run id, aliases and key metrics, read from MLflow. Read-only."""
    from modelworks.clients.mlflow import Registry

    registry = Registry(uri)
    facts: dict[tuple[str, str], dict[str, Any]] = {}
    runs: dict[str, dict[str, float]] = {}
    for model, version in versions:
        try:
            info = registry.get_version(model, version)
            if info is None:
                continue
            if info.run_id and info.run_id not in runs:
                runs[info.run_id] = registry.get_run(info.run_id).metrics
        except Exception as exc:  # an outage or a permission: the table is still useful
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            print(
                f"modelworks: MLflow at {uri} did not answer ({first}); "
                "showing the cluster's view only",
                file=sys.stderr,
            )
            break
        facts[(model, version)] = {
            "runId": info.run_id,
            "aliases": list(info.aliases),
            "metrics": dict(key_metrics(runs.get(info.run_id or ""), limit=3)),
        }
    return facts


def _status_cmd(args: argparse.Namespace) -> int:
    import json
    import shutil
    from datetime import UTC, datetime

    from modelworks.clients.kube import KubeError

    namespace = None if args.all_namespaces else (args.namespace or _default_namespace())
    try:
        kube = _kube()
        tjs, mdeps, dmons = (_list_all(kube, kind, namespace) for kind in (k.kind for k in KINDS))
    except KubeError as exc:
        print(f"modelworks: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # no kubeconfig, an unreachable server
        print(f"modelworks: cannot reach the cluster: {exc}", file=sys.stderr)
        return 1
    tree = lineage.build(tjs, mdeps, dmons)
    uri = "" if args.no_mlflow else _tracking_uri()
    if uri and lineage.model_versions(tree):
        facts = _registry_facts(uri, lineage.model_versions(tree))
        tree = lineage.build(tjs, mdeps, dmons, registry=facts)
    if args.output == "json":
        print(json.dumps({"namespace": namespace, **tree}, indent=2))
        return 0
    if not (tjs or mdeps or dmons):
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        print(f"No Modelworks objects in {where}.", file=sys.stderr)
        return 0
    width = args.width or max(80, shutil.get_terminal_size((120, 24)).columns)
    sys.stdout.write(
        tables.status_table(tree, now=datetime.now(UTC), width=width, namespaces=namespace is None)
    )
    return 0


def _watch_cmd(args: argparse.Namespace) -> int:
    from modelworks.clients.kube import KubeError

    namespace = args.namespace or _default_namespace()
    if args.interval <= 0 or (args.timeout is not None and args.timeout < 0):
        print("modelworks: --interval must be positive, --timeout not negative", file=sys.stderr)
        return 1
    try:
        kube = _kube()
        obj = kube.get(API_VERSION, TRAINING_JOB.kind, namespace, args.name)
    except KubeError as exc:
        print(f"modelworks: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # no kubeconfig, an unreachable server
        print(f"modelworks: cannot reach the cluster: {exc}", file=sys.stderr)
        return 1
    if obj is None:
        print(
            f"modelworks: trainingjob {args.name} not found in namespace {namespace}",
            file=sys.stderr,
        )
        return 1
    return _follow(kube, namespace, obj, args)


def _follow(kube: Kube, namespace: str, obj: dict[str, Any], args: argparse.Namespace) -> int:
    """Print the TrainingJob's progress until it ends (0, 1) or ``--timeout`` passes (2)."""
    import time

    out = sys.stdout
    tty = out.isatty()
    start = time.monotonic()
    deadline = None if args.timeout is None else start + args.timeout
    shown = ""
    while True:
        line = watching.watch_line(obj)
        if tty:
            import shutil

            elapsed = f"  {int(time.monotonic() - start)}s"
            columns = shutil.get_terminal_size((120, 24)).columns
            out.write("\r" + clip(line + elapsed, columns - 1) + "\x1b[K")
            out.flush()
        elif line != shown:
            print(line, flush=True)
        shown = line
        code = watching.finished(obj)
        if code is not None:
            if tty:
                out.write("\n")
            print("\n".join(watching.outcome_lines(obj, name=args.name)), flush=True)
            return code
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            if tty:
                out.write("\n")
            print("\n".join(watching.timeout_lines(obj, args.timeout)), flush=True)
            return 2
        time.sleep(
            args.interval if deadline is None else max(0.0, min(args.interval, deadline - now))
        )
        try:
            found = kube.get(API_VERSION, TRAINING_JOB.kind, namespace, args.name)
        except Exception as exc:  # a blip of the API server: keep the last state, try again
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            print(("\n" if tty else "") + f"modelworks: {first} (retrying)", file=sys.stderr)
            continue
        if found is None:
            if tty:
                out.write("\n")
            print("\n".join(watching.outcome_lines(None, name=args.name)), flush=True)
            return 1
        obj = found


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
    serve.add_argument("--port", type=int, default=SERVER_PORT)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--drain-seconds", type=int, default=25, help="grace for in-flight requests on SIGTERM"
    )
    serve.set_defaults(func=_serve)
    drift = sub.add_parser(
        "drift",
        help="a batch drift check (what a DriftMonitor's Job runs): "
        "prints the result and writes it to the termination message",
    )
    drift.add_argument("--reference", required=True, help="dataset or profile URI")
    drift.add_argument("--reference-kind", choices=["dataset", "profile"], default="dataset")
    drift.add_argument("--current", required=True, help="dataset URI (CSV or Parquet)")
    drift.add_argument("--config", default="{}", help="the monitor's drift settings, as JSON")
    drift.set_defaults(func=_drift)
    snap = sub.add_parser(
        "snapshot",
        help="materialise the captured, labelled rows of a window as a dataset snapshot "
        "(what a DriftMonitor's snapshot Job runs)",
    )
    snap.add_argument("--config", required=True, help="destination, window, columns, as JSON")
    snap.set_defaults(func=_snapshot)
    performance = sub.add_parser(
        "performance",
        help="a model-quality check (what a DriftMonitor's performance Job runs): "
        "prints the result and writes it to the termination message",
    )
    performance.add_argument("--config", required=True, help="window, metrics, store, as JSON")
    performance.set_defaults(func=_performance)
    check = sub.add_parser(
        "validate-data",
        help="check a dataset before training (what a TrainingJob's validation Job runs): "
        "exit 0 passed, 2 the data failed a check, 1 the check could not run",
    )
    check.add_argument("--dataset", required=True, help="dataset URI (CSV or Parquet)")
    check.add_argument("--config", required=True, help="spec.dataValidation, as JSON")
    check.add_argument("--profile", help="reference profile URI whose columns are the schema")
    check.add_argument("--note", help="a line the verdict carries (e.g. where the schema is from)")
    check.set_defaults(func=_validate_data)
    _add_status_and_watch(sub)
    crds = sub.add_parser("crds", help="print the CRDs generated from the API models")
    group = crds.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="DIR", help="write them into DIR instead")
    group.add_argument("--check", metavar="DIR", help="exit 1 when DIR differs from the models")
    crds.set_defaults(func=_crds)
    return p


def _add_status_and_watch(sub: Any) -> None:
    """The helpers for people: ``status`` and ``watch``."""
    status = sub.add_parser(
        "status",
        help="all Modelworks objects with their lineage: "
        "TrainingJob -> model version -> ModelDeployment -> DriftMonitor",
    )
    scope = status.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    scope.add_argument("-A", "--all-namespaces", action="store_true")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    status.add_argument(
        "--no-mlflow",
        action="store_true",
        help="do not ask MLflow for run ids, metrics and aliases "
        "(asked when MODELWORKS_MLFLOW_TRACKING_URI or MLFLOW_TRACKING_URI is set)",
    )
    status.add_argument("--width", type=int, help="table width (default: the terminal's)")
    status.set_defaults(func=_status_cmd)
    watch = sub.add_parser(
        "watch",
        help="follow a TrainingJob until it ends: exit 0 succeeded, 1 failed, 2 timed out",
    )
    watch.add_argument(
        "kind", choices=[TRAINING_JOB.singular, TRAINING_JOB.plural, *TRAINING_JOB.short_names]
    )
    watch.add_argument("name")
    watch.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    watch.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up after this long (exit 2)"
    )
    watch.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="poll interval (2)"
    )
    watch.set_defaults(func=_watch_cmd)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))
