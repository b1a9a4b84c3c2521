"""Data validation before training, against a real API server and a real MLflow server.

kwok pods run no code, so the test plays the validation pod as it plays the trainer: it
runs ``modelworks validate-data`` with the very arguments of the Job the operator made
(on a local dataset), then writes the pod's exit code and termination message into its
status, as the kubelet would; the Job controller and the operator do the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelworks import datacheck
from modelworks.builders.modeldeployment import ServerConfig
from modelworks.clients.mlflow import Registry
from modelworks.reconcilers.trainingjob import reconcile
from modelworks.status.trainingjob import StartRun
from tests.integration.test_trainingjob import kwok_pods, training_job
from tests.support import ROOT, Cluster, MlflowServer, eventually, object_store, run_operator

pytestmark = pytest.mark.integration
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


@pytest.fixture
def operator(crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path) -> Iterator[Any]:
    with run_operator(crds, tmp, namespaces=namespace, mlflow_tracking_uri=mlflow.uri) as op:
        yield op


CRD = ROOT / "crds" / "modelworks.dev_trainingjobs.yaml"


def write(crds: Cluster, obj: dict[str, Any]) -> None:
    """Apply ``obj``, with this tree's TrainingJob CRD applied again first: the shared
    cluster's CRDs are also applied by test sessions of other branches."""

    def applied() -> bool:
        crds.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        return crds.apply(obj, check=False).returncode == 0

    eventually(applied, timeout=60, interval=2, what=f"{obj['metadata']['name']} applied")


def jobs(crds: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    found = json.loads(crds.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)
    return {j["metadata"]["name"]: j for j in found["items"]}


def play_validation(crds: Cluster, namespace: str, job: str, tmp: Path) -> int:
    """Run the check the Job's pod would run, and report it through the pod's status."""
    pod = eventually(
        lambda: next(
            (
                p
                for p in json.loads(
                    crds.kubectl(
                        "get",
                        "pods",
                        "-n",
                        namespace,
                        "-l",
                        f"{JOB_NAME_LABEL}={job}",
                        "-o",
                        "json",
                    ).stdout
                )["items"]
                if (p.get("status") or {}).get("phase") == "Running"
            ),
            None,
        ),
        timeout=60,
        what=f"the running pod of {job}",
    )
    container = pod["spec"]["containers"][0]
    args = container["args"]
    assert args[0] == "validate-data"
    log = tmp / f"{job}.termination"
    code = datacheck.main(
        args[args.index("--dataset") + 1],
        args[args.index("--config") + 1],
        termination_log=log,
    )
    started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    status = {
        "phase": "Succeeded" if code == 0 else "Failed",
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": code,
                        "reason": "Completed" if code == 0 else "Error",
                        "message": log.read_text(),
                        "startedAt": started,
                        "finishedAt": started,
                    }
                },
            }
        ],
    }
    name = pod["metadata"]["name"]
    crds.kubectl(
        "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    return code


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_)


def test_bad_data_trains_nothing_and_a_fixed_spec_trains(
    crds: Cluster, mlflow: MlflowServer, namespace: str, operator: Any, tmp: Path
) -> None:
    bad, good = tmp / "bad.csv", tmp / "good.csv"
    bad.write_text("age,churned\n" + "".join(f"{i},0\n" for i in range(5)) + ",0\n")
    good.write_text("age,churned\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    check = {
        "minRows": 10,
        "maxMissingShare": 0.05,
        "schema": {"columns": [{"name": "age", "type": "numeric"}]},
        "label": {"column": "churned", "classes": ["0", "1"]},
    }
    tj = training_job(
        "checked",
        namespace,
        model=f"m-{namespace}",
        suspend=False,
        podTemplate=kwok_pods(delay="1h"),  # the test ends the validation pod itself
        dataset={"uri": f"file://{bad}"},
        dataValidation=check,
    )
    write(crds, tj)
    first = eventually(
        lambda: next((n for n in jobs(crds, namespace) if n.endswith("-dv")), None),
        timeout=60,
        what="the validation Job",
    )
    obj = crds.get("tj", "checked", namespace) or {}
    assert obj["status"]["phase"] == "Pending" and not (obj["status"].get("mlflow") or {})
    assert play_validation(crds, namespace, first, tmp) == 2
    crds.kubectl(
        "wait",
        "tj/checked",
        "-n",
        namespace,
        "--for=condition=DataValidated=False",
        "--timeout=60s",
    )
    obj = crds.get("tj", "checked", namespace) or {}
    cond = condition(obj, "DataValidated")
    assert obj["status"]["phase"] == "Failed" and cond["reason"] == "DataInvalid", cond
    failures = {(f["rule"], f.get("column")) for f in obj["status"]["dataValidation"]["failures"]}
    assert failures == {("minRows", None), ("maxMissingShare", "age"), ("label.classes", "churned")}
    age = next(f for f in obj["status"]["dataValidation"]["failures"] if f.get("column") == "age")
    assert age["value"] == pytest.approx(1 / 6, abs=1e-6) and age["limit"] == 0.05
    assert list(jobs(crds, namespace)) == [first], "nothing trains on bad data"
    assert not (obj["status"].get("mlflow") or {}), "no MLflow run for bad data"
    warnings = crds.kubectl(
        "get", "events", "-n", namespace, "--field-selector",
        "type=Warning,involvedObject.name=checked,reason=DataInvalid", "-o", "json",
    ).stdout  # fmt: skip
    messages = [e["message"] for e in json.loads(warnings)["items"]]
    assert messages and "6 rows, fewer than the 10 required" in messages[0], messages

    write(crds, {**tj, "spec": {**tj["spec"], "dataset": {"uri": f"file://{good}"}}})
    second = eventually(
        lambda: next((n for n in jobs(crds, namespace) if n.endswith("-dv") and n != first), None),
        timeout=60,
        what="the validation Job of the fixed spec",
    )
    assert play_validation(crds, namespace, second, tmp) == 0
    obj = eventually(
        lambda: (
            (o := crds.get("tj", "checked", namespace))
            and (o.get("status") or {}).get("mlflow", {}).get("runId")
            and o
        ),
        timeout=60,
        what="the MLflow run of the fixed spec",
    )
    assert condition(obj, "DataValidated")["status"] == "True"
    assert obj["status"]["dataValidation"] == {
        "jobName": second,
        "passed": True,
        "rows": 40,
        "summary": "40 rows passed every check",
    }
    training = obj["status"]["jobName"]
    eventually(lambda: training in jobs(crds, namespace), timeout=60, what="the training Job")
    eventually(lambda: first not in jobs(crds, namespace), timeout=60, what="the old check removed")


def test_a_crash_never_starts_a_second_check(
    crds: Cluster, kube: Any, mlflow: MlflowServer, namespace: str, tmp: Path
) -> None:
    """Passes in this process, each on a status that was never stored (the operator died
    after acting): one validation Job, no run, no training Job."""
    data = tmp / "d.csv"
    data.write_text("age,y\n1,0\n2,1\n")
    write(
        crds,
        training_job(
            "crashy",
            namespace,
            model=f"m-{namespace}",
            suspend=False,
            podTemplate=kwok_pods(delay="1h"),
            dataset={"uri": f"file://{data}"},
            dataValidation={"minRows": 1},
        ),
    )
    obj = crds.get("tj", "crashy", namespace) or {}
    registry = Registry(mlflow.uri)
    server = ServerConfig("modelworks:0.1.0", "IfNotPresent", mlflow.uri)
    for _ in range(3):
        out = reconcile(
            obj, kube=kube, registry=registry, now="2026-01-01T00:00:00Z", server=server
        )
        assert out.status["phase"] == "Pending"
        assert not any(isinstance(a, StartRun) for a in out.actions)
    checks = list(jobs(crds, namespace))
    assert len(checks) == 1 and checks[0].endswith("-dv"), checks
    assert Registry(mlflow.uri).experiment_id(f"{namespace}-crashy") is None, "no run yet"


def test_the_check_reads_s3_parquet_and_tells_a_store_error_from_bad_data(
    cluster: Cluster, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Job's reader on the real store, with the env storage_env gives a pod: a Parquet
    file and a prefix of them are judged; a wrong secret is an error (exit 1), not a verdict."""
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    store = object_store(cluster)
    fs = store.filesystem()
    prefix = f"{store.bucket}/validate-{uuid.uuid4().hex[:8]}"
    table = pa.table({"age": [1.0, None, 3.0, 4.0], "y": [0, 1, 0, 1]})
    for part in ("a", "b"):
        with fs.open_output_stream(f"{prefix}/train/{part}.parquet") as out:
            pq.write_table(table, out)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", store.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.secret_access_key)
    log = tmp / "term"
    config = json.dumps({"minRows": 8, "maxMissingShare": 0.2, "label": {"column": "y"}})
    assert datacheck.main(f"s3://{prefix}/train/a.parquet", config, termination_log=log) == 2
    verdict = json.loads(log.read_text())
    assert {(f["rule"], f.get("column")) for f in verdict["failures"]} == {
        ("minRows", None),
        ("maxMissingShare", "age"),
    }
    assert datacheck.main(f"s3://{prefix}/train/", config, termination_log=log) == 2
    assert json.loads(log.read_text())["rows"] == 8
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    assert datacheck.main(f"s3://{prefix}/train/a.parquet", config, termination_log=log) == 1
    assert not log.read_text().startswith("{"), "an error is text, not a verdict"
