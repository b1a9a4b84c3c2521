#!/usr/bin/env bash
# Creates <repo>/.venv and installs the project with its dev extra at the pinned
# versions of constraints.txt. pip's cache lives under ~/.cache/modelworks so a second
# run on the same machine downloads nothing; a stamp skips the install entirely when
# pyproject.toml and constraints.txt have not changed.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${MODELWORKS_CACHE:-$HOME/.cache/modelworks}
venv=$repo/.venv
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
export PIP_CACHE_DIR=$cache/pip PIP_DISABLE_PIP_VERSION_CHECK=1

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
