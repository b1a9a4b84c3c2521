#!/usr/bin/env bash
# A Prometheus binary for the tests, from Debian's package, unpacked under
# ~/.cache/modelworks (not installed: no service starts, nothing else changes).
# Debian builds it without Kubernetes service discovery: the e2e fixture writes the
# model-server pods to a file_sd file instead (tests/e2e/conftest.py).
#
#   hack/prometheus.sh path   print the path of the prometheus binary (fetching it once)
#
#   MODELWORKS_PROMETHEUS=/path/to/prometheus   use that binary instead (e.g. an upstream
#                                               release where Debian's package is not at hand)
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/versions.env
source "$HACK_DIR/versions.env"
CACHE_DIR=${MODELWORKS_CACHE:-$HOME/.cache/modelworks}

die() { printf 'prometheus: error: %s\n' "$*" >&2; exit 1; }

fetch() {
  if [[ -n ${MODELWORKS_PROMETHEUS:-} ]]; then
    [[ -x $MODELWORKS_PROMETHEUS ]] || die "MODELWORKS_PROMETHEUS=$MODELWORKS_PROMETHEUS is not an executable"
    printf '%s\n' "$MODELWORKS_PROMETHEUS"
    return
  fi
  local want=$PROMETHEUS_DEB_VERSION dest tmp deb
  dest=$CACHE_DIR/prometheus-${want//[^A-Za-z0-9.]/_}
  if [[ -x $dest/usr/bin/prometheus ]]; then
    printf '%s\n' "$dest/usr/bin/prometheus"
    return
  fi
  command -v apt-get >/dev/null || die "no apt-get here to fetch Debian's prometheus $want"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  # apt-get download needs the package lists (one update when they lack the version).
  if ! (cd "$tmp" && apt-get download -qq "prometheus=$want" >/dev/null 2>&1); then
    apt-get update -qq >&2 || die "apt-get update failed"
    (cd "$tmp" && apt-get download -qq "prometheus=$want" >&2) ||
      die "Debian's prometheus $want is not available (hack/versions.env PROMETHEUS_DEB_VERSION)"
  fi
  deb=$(ls "$tmp"/prometheus_*.deb)
  mkdir -p "$tmp/root"
  dpkg-deb -x "$deb" "$tmp/root"
  "$tmp/root/usr/bin/prometheus" --version >/dev/null 2>&1 || die "the unpacked prometheus does not run"
  mkdir -p "$CACHE_DIR"
  rm -rf "$dest"
  mv "$tmp/root" "$dest"
  printf '%s\n' "$dest/usr/bin/prometheus"
}

case ${1:-} in
  path) fetch ;;
  *) printf 'usage: %s path\n' "$0" >&2; exit 2 ;;
esac
