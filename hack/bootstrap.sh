#!/usr/bin/env bash
# Creates <repo>/.venv and installs the project with its dev extra at the pinned
# versions of constraints.txt, with uv (pip when uv cannot be had). uv's and pip's caches
# live under ~/.cache/modelworks so a second run on the same machine downloads nothing;
# a stamp skips the install entirely when pyproject.toml and constraints.txt have not
# changed.
# Also makes sure the system tools the unit tier and `make lint` need are there: lua5.4
# (the Argo CD health checks in manifests/gitops run in a real Lua interpreter) and the
# linter shellcheck (`make lint` checks every bash script). apt-get runs only when one
# is missing.
# And what the local cluster's object store and MLflow server run from: SeaweedFS's weed
# (hack/cluster.sh build seaweedfs, cached by version; needs Go) and the MLflow server's
# own environment (hack/mlflow-server-venv.sh), each made only when missing.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${MODELWORKS_CACHE:-$HOME/.cache/modelworks}
venv=$repo/.venv
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
export PIP_CACHE_DIR=$cache/pip PIP_DISABLE_PIP_VERSION_CHECK=1

# System packages as command:package, installed (after one apt-get update) only when
# their command is missing.
SYSTEM_TOOLS=(lua5.4:lua5.4 shellcheck:shellcheck)
ensure_tools() {
  local -a missing=()
  local entry
  for entry in "${SYSTEM_TOOLS[@]}"; do
    command -v "${entry%%:*}" >/dev/null || missing+=("${entry#*:}")
  done
  ((${#missing[@]})) || return 0
  if ! command -v apt-get >/dev/null || [[ $(id -u) != 0 ]]; then
    # The tests that need them skip with a reason (and fail under CI=true).
    echo "bootstrap: warning: missing ${missing[*]} (needs apt-get as root: install them by hand)" >&2
    return 0
  fi
  local start=$SECONDS
  echo "bootstrap: apt-get install ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || { echo "bootstrap: apt-get update failed" >&2; return 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    { echo "bootstrap: apt-get install ${missing[*]} failed" >&2; return 1; }
  echo "bootstrap: installed ${missing[*]} in $((SECONDS - start))s" >&2
}
ensure_tools

if command -v go >/dev/null; then
  "$repo/hack/cluster.sh" build seaweedfs
else
  echo "bootstrap: warning: go is not installed: the object store (SeaweedFS) cannot be built" >&2
fi
"$repo/hack/mlflow-server-venv.sh" >/dev/null

stamp_of() { { cat "$repo/pyproject.toml"; cat "$repo/constraints.txt" 2>/dev/null || true; } | sha256sum | cut -c1-16; }
want=$(stamp_of)
if [[ -x $venv/bin/python && -f $venv/.stamp && $(cat "$venv/.stamp") == "$want" ]]; then
  exit 0
fi
start=$SECONDS
constraints=()
[[ -f $repo/constraints.txt ]] && constraints=(-c "$repo/constraints.txt")

# uv (pinned, in a venv of its own under the cache) installs from its cache in seconds,
# where pip takes minutes to install the same wheels into every fresh clone's .venv.
# shellcheck source=hack/versions.env
UV_VERSION=$(. "$repo/hack/versions.env" && echo "$UV_VERSION")
uv_tool=$cache/uv-$UV_VERSION
ensure_uv() {
  [[ -x $uv_tool/bin/uv ]] && return 0
  rm -rf "$uv_tool"
  "$python" -m venv "$uv_tool" && "$uv_tool/bin/python" -m pip install -q "uv==$UV_VERSION"
}

if ensure_uv; then
  export UV_CACHE_DIR=$cache/uv UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
  [[ -x $venv/bin/python ]] || "$uv_tool/bin/uv" venv -q --seed --python "$(command -v "$python")" "$venv"
  "$uv_tool/bin/uv" pip install -q --python "$venv/bin/python" "${constraints[@]}" -e "${repo}[dev]"
else
  echo "bootstrap: uv unavailable, installing with pip (slower)" >&2
  [[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "${constraints[@]}" -e "${repo}[dev]"
fi
echo "$want" >"$venv/.stamp"
echo "bootstrap: python environment ready in $((SECONDS - start))s ($venv)" >&2
