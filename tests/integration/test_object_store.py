"""The local S3 object store (SeaweedFS, hack/seaweedfs.sh) as every S3 client sees it:
pyarrow with the key from ``hack/cluster.sh env``, a wrong key refused, the Secret that
``spec.storage`` names, and MLflow's artifacts really in the bucket ``mlflow``."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from modelworks.clients.objectstore import parse_s3, s3_filesystem
from modelworks.names import S3_ACCESS_KEY_ENV, S3_ENDPOINT_ENV, S3_SECRET_KEY_ENV
from tests.support import (
    S3_SECRET,
    Cluster,
    ObjectStore,
    mlflow_client,
    mlflow_server,
    object_store,
    object_store_secret,
)

pytestmark = pytest.mark.integration

# A bad signature (wrong secret key) or a denied request, as pyarrow names S3's errors.
REFUSED = r"SIGNATURE_DOES_NOT_MATCH|ACCESS_DENIED"


@pytest.fixture
def store(cluster: Cluster) -> ObjectStore:
    return object_store(cluster)


def test_write_list_read_delete(store: ObjectStore) -> None:
    s3 = store.filesystem()
    prefix = f"{store.bucket}/t-{uuid.uuid4().hex[:10]}"
    body = b"modelworks\n" * 1000
    with s3.open_output_stream(f"{prefix}/a/b.bin") as out:
        out.write(body)

    listed = s3.get_file_info(fs.FileSelector(prefix, recursive=True))
    assert [(i.path, i.size) for i in listed if i.type == fs.FileType.File] == [
        (f"{prefix}/a/b.bin", len(body))
    ]
    with s3.open_input_stream(f"{prefix}/a/b.bin") as got:
        assert got.read() == body

    s3.delete_file(f"{prefix}/a/b.bin")
    assert s3.get_file_info(f"{prefix}/a/b.bin").type == fs.FileType.NotFound
    s3.delete_dir(prefix)


def test_a_wrong_secret_key_is_refused(store: ObjectStore) -> None:
    wrong = store.filesystem(secret_access_key=store.secret_access_key[::-1])
    key = f"{store.bucket}/t-{uuid.uuid4().hex[:10]}/x"
    with pytest.raises(OSError, match=REFUSED), wrong.open_output_stream(key) as out:
        out.write(b"x")
    with pytest.raises(OSError, match=REFUSED):
        wrong.get_file_info(fs.FileSelector(store.bucket, recursive=True))
    assert store.filesystem().get_file_info(key).type == fs.FileType.NotFound


def test_the_secret_spec_storage_names(
    cluster: Cluster, namespace: str, store: ObjectStore
) -> None:
    storage = object_store_secret(cluster, namespace)

    assert storage == {"endpoint": store.endpoint, "credentials": {"secretName": S3_SECRET}}
    secret = cluster.get("secret", S3_SECRET, namespace)
    assert secret is not None
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {
        "AWS_ACCESS_KEY_ID": store.access_key_id,
        "AWS_SECRET_ACCESS_KEY": store.secret_access_key,
    }


def test_mlflow_artifacts_land_in_the_bucket(store: ObjectStore, tmp: Path) -> None:
    local = tmp / "model.txt"
    local.write_text("weights\n")
    with mlflow_server(tmp / "mlflow", store=store) as server:
        client = mlflow_client(server.uri)
        run = client.create_run(client.create_experiment("object-store"))
        client.log_artifact(run.info.run_id, str(local), "model")

        assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == [
            "model/model.txt"
        ]
        downloaded = client.download_artifacts(run.info.run_id, "model/model.txt", str(tmp))
        assert Path(downloaded).read_text() == "weights\n"

    prefix = server.artifacts.removeprefix("s3://").rstrip("/")
    s3 = store.filesystem()
    files = {
        i.path: i.size
        for i in s3.get_file_info(fs.FileSelector(prefix, recursive=True))
        if i.type == fs.FileType.File
    }
    assert files == {f"{prefix}/1/{run.info.run_id}/artifacts/model/model.txt": 8}
    with s3.open_input_stream(f"{prefix}/1/{run.info.run_id}/artifacts/model/model.txt") as got:
        assert got.read() == b"weights\n"
    s3.delete_dir(prefix)


def test_the_pods_filesystem_reads_and_writes_it(store: ObjectStore) -> None:
    pod_env = {
        S3_ENDPOINT_ENV: store.endpoint,
        S3_ACCESS_KEY_ENV: store.access_key_id,
        S3_SECRET_KEY_ENV: store.secret_access_key,
    }
    s3 = s3_filesystem(pod_env)
    where = parse_s3(f"s3://{store.bucket}/t-{uuid.uuid4().hex[:10]}/part-0.parquet")
    table = pa.table({"id": ["a", "b"], "score": [0.25, 0.75]})

    pq.write_table(table, where.path, filesystem=s3)

    assert pq.read_table(where.path, filesystem=store.filesystem()).equals(table)
    s3.delete_file(where.path)
