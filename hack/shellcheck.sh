#!/usr/bin/env bash
# Runs shellcheck on every tracked script with a bash or sh shebang (and every *.sh), so
# a new script is checked without anyone having to list it here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v shellcheck >/dev/null; then
  echo "shellcheck: not installed (hack/bootstrap.sh installs it: apt-get install shellcheck)" >&2
  exit 1
fi
scripts=()
while IFS= read -r -d '' file; do
  [[ -f $file ]] || continue
  if [[ $file == *.sh ]] || head -n1 -- "$file" | grep -qE '^#!.*[/ ](ba)?sh([[:space:]]|$)'; then
    scripts+=("$file")
  fi
done < <(git ls-files -z)
((${#scripts[@]})) || { echo "shellcheck: no scripts found" >&2; exit 1; }
# -x follows `source`/`.` of files named by a `# shellcheck source=` directive.
shellcheck -x "${scripts[@]}"
