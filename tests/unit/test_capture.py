"""Data capture: the server's buffer and writer (on a local filesystem), answer rows,
inference ids, the pod's capture config, and DataCaptureHealthy (table-driven, plain data)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from pyarrow import fs

from modelworks import conditions
from modelworks.api import MODEL_DEPLOYMENT
from modelworks.api.modeldeployment import DataCapture, ModelDeploymentSpec
from modelworks.builders.modeldeployment import ServerConfig, build_deployment
from modelworks.names import CAPTURE_CONFIG_ENV
from modelworks.serving import capture as server
from modelworks.status.capture import CapturePod, Health, capture_pods, health
from modelworks.status.common import typed
from modelworks.status.modeldeployment import Facts, Target, decide

T0 = 1_764_525_600_000  # 2025-11-30T18:00:00Z in ms
SERVER = ServerConfig("modelworks:0.1.0", "IfNotPresent", "http://mlflow:5000")
STORAGE = {"endpoint": "http://s3.example:9000", "credentials": {"secretName": "s3-keys"}}
CAPTURE = {"destination": "s3://bucket/churn", "redact": ["ssn"], "bufferRows": 100}
SPEC = {"model": {"name": "churn", "version": "3"}, "storage": STORAGE, "dataCapture": CAPTURE}


def spec_of(data: dict[str, Any]) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(data)


# ---- answers, ids, error kinds ----------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "prediction", "scores"),
    [
        (np.array([1, 0]), [1.0, 0.0], None),
        (np.array([[0.2, 0.8], [0.9, 0.1]]), [1.0, 0.0], [[0.2, 0.8], [0.9, 0.1]]),
        (np.array([[2.5], [3.5]]), [2.5, 3.5], None),
        (pd.DataFrame({"p": [0.5, 1.5]}), [0.5, 1.5], None),
        (pd.Series(["yes", "no"]), ["yes", "no"], None),
        (np.array(["a", "b"]), ["a", "b"], None),
        (np.float64(4.0), [4.0], None),
        ([True, False], [1.0, 0.0], None),
    ],
)
def test_rows_one_answer_per_input_row(result: Any, prediction: list[Any], scores: Any) -> None:
    answers = server.rows(result)
    assert answers.prediction == prediction and answers.scores == scores


@pytest.mark.parametrize(
    ("client", "kept"),
    [
        ("abc-1", True),
        ("", False),
        (None, False),
        ("x" * 129, False),
        ("é", False),
        ("a\nb", False),
    ],
)
def test_inference_id_keeps_a_sane_client_id(client: str | None, kept: bool) -> None:
    made = server.inference_id(client)
    assert (made == client) is kept
    if not kept:
        assert len(made) == 32 and int(made, 16) >= 0


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("AWS Error ACCESS_DENIED during PutObject operation", "access_denied"),
        ("AWS Error INVALID_ACCESS_KEY_ID", "access_denied"),
        (
            "When initiating multiple part upload for key 'x/y.parquet' in bucket 'b': AWS Error "
            "SIGNATURE_DOES_NOT_MATCH during CreateMultipartUpload operation: The request "
            "signature we calculated does not match the signature you provided.",
            "access_denied",
        ),
        ("AWS Error UNKNOWN (HTTP status 403) ... SignatureDoesNotMatch", "access_denied"),
        ("AWS Error NETWORK_CONNECTION during CreateMultipartUpload", "unreachable"),
        ("AWS Error NO_SUCH_BUCKET", "no_bucket"),
        ("something else", "other"),
    ],
)
def test_error_kind(text: str, kind: str) -> None:
    assert server.error_kind(OSError(text)) == kind


# ---- the buffer and the writer, on a local directory ------------------------------------


class LocalStore:
    """pyarrow's local filesystem under ``root``, creating parents like S3 needs not."""

    def __init__(self, root: Path, fail: int = 0) -> None:
        self.fs = fs.SubTreeFileSystem(str(root), fs.LocalFileSystem())
        self.fail = fail
        self.calls = 0

    def open_output_stream(self, path: str) -> Any:
        self.calls += 1
        if self.calls <= self.fail:
            raise OSError("AWS Error NETWORK_CONNECTION during PutObject operation")
        self.fs.create_dir(path.rsplit("/", 1)[0])
        return self.fs.open_output_stream(path)


def config(**extra: Any) -> DataCapture:
    return DataCapture.model_validate({**CAPTURE, "flushInterval": "1h", **extra})


def dropped(reason: str) -> float:
    return float(server.DROPPED.labels("churn", "3", reason)._value.get())


def read(root: Path) -> dict[str, list[Any]]:
    part = ds.partitioning(
        pa.schema([(n, pa.string()) for n in ("model", "version", "date", "hour")]), flavor="hive"
    )
    return dict(ds.dataset(root / "bucket/churn/capture", partitioning=part).to_table().to_pydict())


def answer(capture: server.Capture, rid: str, frame: pd.DataFrame, result: Any) -> None:
    token = server.CURRENT.set(server.Inference(rid, T0))
    try:
        capture.answered(frame, result)
    finally:
        server.CURRENT.reset(token)


def test_rows_are_written_per_hour_partition_with_ids_and_redaction(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    capture = server.Capture(config(), "churn", "3", filesystem=lambda: store)
    answer(capture, "one", pd.DataFrame({"age": [30.0], "ssn": ["123"]}), np.array([[0.1, 0.9]]))
    answer(capture, "two", pd.DataFrame({"age": [1.0, 2.0], "ssn": ["a", "b"]}), np.array([0, 1]))
    capture.close()
    rows = read(tmp_path)
    assert rows["inference_id"] == ["one", "two/0", "two/1"]
    assert rows["request_id"] == ["one", "two", "two"]
    assert rows["ssn"] == [None, None, None] and rows["age"] == [30.0, 1.0, 2.0]
    assert rows["prediction"] == [1.0, 0.0, 1.0]
    assert rows["scores"] == [[0.1, 0.9], None, None]
    assert set(zip(rows["model"], rows["version"], rows["date"], rows["hour"], strict=True)) == {
        ("churn", "3", "2025-11-30", "18")
    }
    assert [p.name for p in (tmp_path / "bucket/churn/capture").iterdir()] == ["model=churn"]


def test_a_full_buffer_drops_new_rows_and_counts_them(tmp_path: Path) -> None:
    capture = server.Capture(config(), "churn", "3", filesystem=lambda: LocalStore(tmp_path))
    before = dropped("buffer_full")
    answer(capture, "big", pd.DataFrame({"age": [1.0] * 90}), np.zeros(90))
    answer(capture, "over", pd.DataFrame({"age": [1.0] * 11}), np.zeros(11))
    answer(capture, "fits", pd.DataFrame({"age": [1.0] * 10}), np.zeros(10))
    assert dropped("buffer_full") - before == 11
    capture.flush()
    assert len(read(tmp_path)["inference_id"]) == 100


def test_a_failed_write_is_retried_then_dropped_and_counted(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, fail=server.ATTEMPTS)
    capture = server.Capture(config(), "churn", "3", filesystem=lambda: store)
    before = dropped("write_failed")
    answer(capture, "a", pd.DataFrame({"age": [1.0, 2.0]}), np.zeros(2))
    for _ in range(server.ATTEMPTS):
        capture.flush()
    assert dropped("write_failed") - before == 2
    answer(capture, "b", pd.DataFrame({"age": [1.0]}), np.zeros(1))
    capture.flush()
    assert read(tmp_path)["inference_id"] == ["b"]
    store.fail, store.calls = 1, 0
    answer(capture, "c", pd.DataFrame({"age": [1.0]}), np.zeros(1))
    capture.flush()
    capture.flush()
    assert sorted(read(tmp_path)["inference_id"]) == ["b", "c"]


def test_sampling_zero_captures_nothing_and_the_request_path_does_no_io(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    capture = server.Capture(config(samplingPercent=0), "churn", "3", filesystem=lambda: store)
    answer(capture, "a", pd.DataFrame({"age": [1.0]}), np.zeros(1))
    sampled = server.Capture(config(), "churn", "3", filesystem=lambda: store)
    answer(sampled, "b", pd.DataFrame({"age": [1.0]}), np.zeros(1))
    assert store.calls == 0
    capture.close()
    sampled.close()
    assert read(tmp_path)["inference_id"] == ["b"]


def test_the_flush_thread_writes_when_half_the_buffer_is_used(tmp_path: Path) -> None:
    written = threading.Event()

    class Signalling(LocalStore):
        def open_output_stream(self, path: str) -> Any:
            written.set()
            return super().open_output_stream(path)

    capture = server.Capture(config(), "churn", "3", filesystem=lambda: Signalling(tmp_path))
    capture.start()
    answer(capture, "half", pd.DataFrame({"age": [1.0] * 50}), np.zeros(50))
    assert written.wait(10)
    capture.close()


# ---- the pod's configuration ------------------------------------------------------------


def pod_of(spec: dict[str, Any]) -> dict[str, Any]:
    obj = {
        "apiVersion": "modelworks.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn", "namespace": "ml", "uid": "u-1"},
    }
    dep = build_deployment(obj, spec_of(spec), SERVER, version="3", track="stable", replicas=1)
    return dict(dep["spec"]["template"])


def test_the_capture_config_reaches_the_server_without_credentials() -> None:
    with_capture = pod_of(
        {**SPEC, "dataCapture": {**CAPTURE, "feedback": {"token": {"secretName": "fb"}}}}
    )
    without = pod_of({k: v for k, v in SPEC.items() if k != "dataCapture"})
    env = {e["name"]: e for e in with_capture["spec"]["containers"][0]["env"]}
    value = json.loads(env[CAPTURE_CONFIG_ENV]["value"])
    assert value == {
        "destination": "s3://bucket/churn",
        "redact": ["ssn"],
        "bufferRows": 100,
        "flushInterval": "30s",
        "samplingPercent": 100.0,
    }
    assert DataCapture.model_validate(value).destination == "s3://bucket/churn"
    assert "secretKeyRef" in env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]
    assert CAPTURE_CONFIG_ENV not in {e["name"] for e in without["spec"]["containers"][0]["env"]}
    # The last flush fits in the grace period; a changed template rolls the pods.
    grace = with_capture["spec"]["terminationGracePeriodSeconds"]
    assert grace >= without["spec"]["terminationGracePeriodSeconds"] + server.STOP_SECONDS
    assert with_capture != without


# ---- DataCaptureHealthy -----------------------------------------------------------------


def samples(
    *, flush: float = 0.0, error: float = 0.0, kind: str = "", full: float = 0, failed: float = 0
) -> tuple[Any, ...]:
    base = {"model": "churn", "version": "3"}
    out: list[Any] = [
        ("modelworks_capture_rows_total", base, 10.0),
        ("modelworks_capture_dropped_rows_total", {**base, "reason": "buffer_full"}, full),
        ("modelworks_capture_dropped_rows_total", {**base, "reason": "write_failed"}, failed),
        ("modelworks_capture_last_flush_timestamp_seconds", base, flush),
    ]
    if error:
        out.append(
            ("modelworks_capture_last_error_timestamp_seconds", {**base, "kind": kind}, error)
        )
    return tuple(out)


WHERE = "s3://bucket/churn at http://s3.example:9000 with the keys of Secret s3-keys"


@pytest.mark.parametrize(
    ("pods", "before", "status", "reason", "words", "after"),
    [
        ([CapturePod("p1", samples(flush=100))], 0, "True", "Writing", [WHERE], 0),
        ([CapturePod("p1", samples())], 0, "True", "Buffering", ["no row written"], 0),
        ([], 0, "Unknown", "NoCaptureMetrics", ["0 pod(s)"], 0),
        ([CapturePod("p1", error="timed out")], 4, "Unknown", "NoCaptureMetrics", ["1 without"], 4),
        (
            [CapturePod("p1", samples(flush=100, error=200, kind="access_denied", failed=7))],
            0,
            "False",
            "WriteFailing",
            ["pod p1", "(access_denied)", "7 row(s) dropped", "Secret s3-keys", "s3.example"],
            7,
        ),
        (
            [CapturePod("p1", samples(flush=300, error=200, kind="unreachable"))],
            0,
            "True",
            "Writing",
            [],
            0,
        ),
        (
            [CapturePod("p1", samples(flush=300, full=5)), CapturePod("p2", samples(flush=9))],
            2,
            "False",
            "RowsDropped",
            ["3 captured row(s) dropped", "bufferRows"],
            5,
        ),
        ([CapturePod("p1", samples(flush=300, full=5))], 5, "True", "Writing", [], 5),
        # counters restart with new pods: fewer drops than before is not news
        ([CapturePod("p1", samples(flush=300, full=1))], 5, "True", "Writing", [], 1),
        (
            [
                CapturePod("p1", samples(flush=300)),
                CapturePod(
                    "p2",
                    waiting="CreateContainerConfigError",
                    waiting_message='secret "s3-keys" not found',
                ),
            ],
            0,
            "False",
            "SecretUnavailable",
            ["pod p2", 'secret "s3-keys" not found', WHERE],
            0,
        ),
    ],
)
def test_data_capture_healthy(
    pods: list[CapturePod], before: int, status: str, reason: str, words: list[str], after: int
) -> None:
    found, dropped_now = health(spec_of(SPEC), pods, before)
    assert (found.status, found.reason) == (status, reason), found.message
    for word in words:
        assert word in found.message
    assert dropped_now == after


def test_without_credentials_the_message_says_whose_identity() -> None:
    spec = spec_of({**SPEC, "storage": {"endpoint": "http://s3.example:9000"}})
    found, _ = health(spec, [CapturePod("p1", samples(flush=1, error=2, kind="other"))], 0)
    assert found == Health(
        "False",
        "WriteFailing",
        "pod p1 cannot write to s3://bucket/churn at http://s3.example:9000 with the pod's own "
        "identity (no spec.storage.credentials) (other); 0 row(s) dropped after retries",
    )


def test_retention_is_said_to_be_the_buckets() -> None:
    spec = spec_of({**SPEC, "dataCapture": {**CAPTURE, "retention": "2160h"}})
    found, _ = health(spec, [CapturePod("p1", samples(flush=1))], 0)
    assert found.message.endswith(
        "retention 2160h is the bucket's lifecycle rule (docs/data-capture.md)"
    )


def test_capture_pods_reads_waiting_reasons_and_scrapes() -> None:
    pods = [
        {"metadata": {"name": "a"}, "status": {}},
        {
            "metadata": {"name": "b"},
            "status": {
                "containerStatuses": [
                    {"state": {"waiting": {"reason": "CreateContainerConfigError", "message": "m"}}}
                ]
            },
        },
    ]
    got = capture_pods(pods, {"a": (samples(), None)})
    assert got == (
        CapturePod("a", samples(), None),
        CapturePod("b", (), "not scraped", "CreateContainerConfigError", "m"),
    )


def test_decide_puts_the_condition_only_with_data_capture_and_looks_again() -> None:
    facts = Facts(
        Target("3", "run3", "runs:/run3/model"),
        capture=(CapturePod("p", samples(full=2)),),
        generation=1,
    )
    with_capture = decide(spec_of(SPEC), facts, {}, "2026-01-01T00:00:00Z")
    assert typed(MODEL_DEPLOYMENT, with_capture.status) == with_capture.status
    cond = conditions.get(with_capture.status["conditions"], "DataCaptureHealthy")
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", "RowsDropped")
    assert with_capture.status["dataCapture"] == {"rowsDropped": 2}
    assert any(e.reason == "RowsDropped" and e.type == "Warning" for e in with_capture.events)
    assert with_capture.requeue_after is not None
    plain = {k: v for k, v in SPEC.items() if k != "dataCapture"}
    without = decide(spec_of(plain), facts, with_capture.status, "2026-01-01T00:01:00Z")
    assert conditions.get(without.status["conditions"], "DataCaptureHealthy") is None
    assert "dataCapture" not in without.status
