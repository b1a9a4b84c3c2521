#!/usr/bin/env bash
# Creates <repo>/.venv and installs the project with its dev extra at the pinned
# versions of constraints.txt. pip's cache lives under ~/.cache/modelworks so a second
# run on the same machine downloads nothing; a stamp skips the install entirely when
# pyproject.toml and constraints.txt have not changed.
# Also makes sure the system tools the unit tier needs are there (lua5.4: the Argo CD
# health checks in manifests/gitops run in a real Lua interpreter); apt-get runs only
# when one is missing.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${MODELWORKS_CACHE:-$HOME/.cache/modelworks}
venv=$repo/.venv
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
export PIP_CACHE_DIR=$cache/pip PIP_DISABLE_PIP_VERSION_CHECK=1

# System packages, installed (after one apt-get update) only when their command is missing.
SYSTEM_TOOLS=(lua5.4:lua5.4)
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

stamp_of() { { cat "$repo/pyproject.toml"; cat "$repo/constraints.txt" 2>/dev/null || true; } | sha256sum | cut -c1-16; }
want=$(stamp_of)
if [[ -x $venv/bin/python && -f $venv/.stamp && $(cat "$venv/.stamp") == "$want" ]]; then
  exit 0
fi
start=$SECONDS
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
constraints=()
[[ -f $repo/constraints.txt ]] && constraints=(-c "$repo/constraints.txt")
"$venv/bin/python" -m pip install -q "${constraints[@]}" -e "$repo[dev]"
echo "$want" >"$venv/.stamp"
echo "bootstrap: python environment ready in $((SECONDS - start))s ($venv)" >&2
