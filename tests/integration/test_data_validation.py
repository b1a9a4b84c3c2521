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
from tests.integration.test_trainingjob import kwok_pods, training_job
from tests.support import Cluster, MlflowServer, eventually, run_operator

pytestmark = pytest.mark.integration
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


@pytest.fixture
def operator(crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path) -> Iterator[Any]:
    with run_operator(crds, tmp, namespaces=namespace, mlflow_tracking_uri=mlflow.uri) as op:
        yield op


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
    bad.write_text("age,y\n" + "".join(f"{i},0\n" for i in range(5)) + ",0\n")
    good.write_text("age,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    check = {
        "minRows": 10,
        "maxMissingShare": 0.05,
        "schema": {"columns": [{"name": "age", "type": "numeric"}]},
        "label": {"column": "y", "classes": ["0", "1"]},
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
    crds.apply(tj)
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
    assert failures == {("minRows", None), ("maxMissingShare", "age"), ("label.classes", "y")}
    age = next(f for f in obj["status"]["dataValidation"]["failures"] if f.get("column") == "age")
    assert age["value"] == pytest.approx(1 / 6) and age["limit"] == 0.05
    assert list(jobs(crds, namespace)) == [first], "nothing trains on bad data"
    assert not (obj["status"].get("mlflow") or {}), "no MLflow run for bad data"
    warnings = crds.kubectl(
        "get", "events", "-n", namespace, "--field-selector",
        "type=Warning,involvedObject.name=checked,reason=DataInvalid", "-o", "json",
    ).stdout  # fmt: skip
    messages = [e["message"] for e in json.loads(warnings)["items"]]
    assert messages and "6 rows, fewer than the 10 required" in messages[0], messages

    crds.kubectl(
        "patch", "tj", "checked", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"dataset": {"uri": f"file://{good}"}}}),
    )  # fmt: skip
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
