"""Set spec.storage.endpoint (and the capture bucket) on the Modelworks objects of a
YAML stream: ``kubectl kustomize manifests/loop | python hack/with-endpoint.py URL BUCKET``.

The samples name no endpoint (AWS S3 by default); ``make demo`` points them at the
local object store this way, without a copy of the samples.
"""

from __future__ import annotations

import sys

import yaml


def main() -> int:
    endpoint, bucket = sys.argv[1], sys.argv[2]
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    for doc in docs:
        spec = doc.get("spec") or {}
        if "storage" in spec:
            spec["storage"]["endpoint"] = endpoint
        capture = spec.get("dataCapture")
        if capture:
            prefix = capture["destination"].removeprefix("s3://").partition("/")[2]
            capture["destination"] = f"s3://{bucket}/{prefix}"
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
