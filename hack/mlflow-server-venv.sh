#!/usr/bin/env bash
# The MLflow tracking server's own Python environment: mlflow plus boto3 for its S3
# artifact store (hack/mlflow.sh: --artifacts-destination s3://mlflow/). It cannot share
# <repo>/.venv: botocore requires python-dateutil<3 and kubernetes (the operator's
# client) pins python-dateutil 4.0.0. A server is a deployment of its own anyway.
#
# Made once per content of constraints.txt and hack/mlflow-server.txt, under the cache
# (~/.cache/modelworks/mlflow-server-<digest>), with the same pinned uv as hack/bootstrap.sh;
# prints the environment's directory (its mlflow is <dir>/bin/mlflow).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${MODELWORKS_CACHE:-$HOME/.cache/modelworks}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
requirements=$repo/hack/mlflow-server.txt

digest=$(cat "$repo/constraints.txt" "$requirements" | sha256sum | cut -c1-16)
venv=$cache/mlflow-server-$digest
if [[ -f $venv/.complete ]]; then
  printf '%s\n' "$venv"
  exit 0
fi

# shellcheck source=hack/versions.env
UV_VERSION=$(. "$repo/hack/versions.env" && echo "$UV_VERSION")
uv_tool=$cache/uv-$UV_VERSION
mkdir -p "$cache"
# One maker at a time (bootstrap, hack/mlflow.sh and tests may ask at once).
exec 9>"$venv.lock"
flock 9
if [[ ! -f $venv/.complete ]]; then
  if [[ ! -x $uv_tool/bin/uv ]]; then
    rm -rf "$uv_tool"
    "$python" -m venv "$uv_tool" >&2 && "$uv_tool/bin/python" -m pip install -q "uv==$UV_VERSION" >&2
  fi
  export UV_CACHE_DIR=$cache/uv UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
  start=$SECONDS
  constraints=$(mktemp)
  trap 'rm -f "$constraints"' EXIT
  # The project's pins, except the packages hack/mlflow-server.txt pins itself.
  awk -F'==' 'NR == FNR { if ($0 !~ /^#/ && $1 != "") own[tolower($1)] = 1; next } !(tolower($1) in own)' \
    "$requirements" "$repo/constraints.txt" >"$constraints"
  rm -rf "$venv"
  "$uv_tool/bin/uv" venv -q --python "$(command -v "$python")" "$venv" >&2
  "$uv_tool/bin/uv" pip install -q --python "$venv/bin/python" -c "$constraints" -r "$requirements" >&2
  touch "$venv/.complete"
  echo "mlflow-server-venv: ready in $((SECONDS - start))s ($venv)" >&2
fi
printf '%s\n' "$venv"
