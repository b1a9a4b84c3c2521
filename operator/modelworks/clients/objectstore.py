"""Object storage for the pods that read or write it: any S3-compatible service.

Pods get the endpoint and credentials as environment variables (``spec.storage``, see
:func:`modelworks.builders.common.storage_env`): the standard ``AWS_*`` names that
boto3, pyarrow and MLflow read. This module turns them into a pyarrow filesystem, so
Parquet is written and read the same way on AWS S3, MinIO, Ceph or SeaweedFS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pyarrow import fs

from modelworks.names import S3_ACCESS_KEY_ENV, S3_ENDPOINT_ENV, S3_REGION_ENV, S3_SECRET_KEY_ENV

S3_SCHEME = "s3://"
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def path(self) -> str:
        """``bucket/key`` as pyarrow's S3 filesystem names it."""
        return f"{self.bucket}/{self.key}".rstrip("/")


def parse_s3(uri: str) -> S3Location:
    """Bucket and key of ``s3://bucket/key``; ValueError names anything else."""
    if not uri.startswith(S3_SCHEME):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return S3Location(bucket, key.strip("/"))


def s3_filesystem(env: Mapping[str, str] | None = None) -> fs.S3FileSystem:
    """The S3 filesystem the pod's environment describes (endpoint, region, keys)."""
    env = os.environ if env is None else env
    options: dict[str, object] = {
        "connect_timeout": CONNECT_TIMEOUT,
        "request_timeout": REQUEST_TIMEOUT,
    }
    endpoint = env.get(S3_ENDPOINT_ENV)
    if endpoint:
        parts = urlsplit(endpoint)
        options["endpoint_override"] = parts.netloc
        options["scheme"] = parts.scheme or "https"
        options["force_virtual_addressing"] = False
    region = env.get(S3_REGION_ENV)
    options["region"] = region or "us-east-1"
    access, secret = env.get(S3_ACCESS_KEY_ENV), env.get(S3_SECRET_KEY_ENV)
    if access and secret:
        options["access_key"] = access
        options["secret_key"] = secret
    return fs.S3FileSystem(**options)
