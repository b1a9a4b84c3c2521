"""spec.storage -> pod environment: endpoint and region as values, credentials only as
secretKeyRef (the operator never holds them)."""

from __future__ import annotations

from typing import Any

import pytest

from modelworks.api.common import ObjectStore
from modelworks.builders.common import storage_env
from modelworks.clients.objectstore import parse_s3


def _ref(env: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


CASES = [
    ("none", None, []),
    ("ambient identity", {"region": "eu-west-1"}, [{"name": "AWS_REGION", "value": "eu-west-1"}]),
    (
        "endpoint and default keys",
        {"endpoint": "http://10.0.0.1:8333", "credentials": {"secretName": "s3"}},
        [
            {"name": "AWS_ENDPOINT_URL_S3", "value": "http://10.0.0.1:8333"},
            {"name": "MLFLOW_S3_ENDPOINT_URL", "value": "http://10.0.0.1:8333"},
            _ref("AWS_ACCESS_KEY_ID", "s3", "AWS_ACCESS_KEY_ID"),
            _ref("AWS_SECRET_ACCESS_KEY", "s3", "AWS_SECRET_ACCESS_KEY"),
        ],
    ),
    (
        "keys renamed",
        {
            "credentials": {
                "secretName": "minio",
                "keys": {"AWS_SECRET_ACCESS_KEY": "secretkey", "AWS_ACCESS_KEY_ID": "accesskey"},
            }
        },
        [
            _ref("AWS_ACCESS_KEY_ID", "minio", "accesskey"),
            _ref("AWS_SECRET_ACCESS_KEY", "minio", "secretkey"),
        ],
    ),
]


@pytest.mark.parametrize(("store", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_storage_env(store: dict[str, Any] | None, want: list[dict[str, Any]]) -> None:
    parsed = None if store is None else ObjectStore.model_validate(store)
    assert storage_env(parsed) == want


def test_no_value_of_a_credential_is_ever_an_env_value() -> None:
    env = storage_env(
        ObjectStore.model_validate({"endpoint": "https://s3", "credentials": {"secretName": "x"}})
    )
    assert all("value" not in e for e in env if e["name"].startswith("AWS_") and "KEY" in e["name"])


@pytest.mark.parametrize(
    ("uri", "bucket", "key"),
    [("s3://b/p/q", "b", "p/q"), ("s3://b", "b", ""), ("s3://b/p/", "b", "p")],
)
def test_parse_s3(uri: str, bucket: str, key: str) -> None:
    loc = parse_s3(uri)
    assert (loc.bucket, loc.key) == (bucket, key)


@pytest.mark.parametrize("uri", ["file:///x", "s3:///key", "http://b/k"])
def test_parse_s3_refuses(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_s3(uri)
