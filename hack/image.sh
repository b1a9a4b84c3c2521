#!/usr/bin/env bash
# Images without Docker and without a registry.
#
#   hack/image.sh base [--refresh]  debootstrap Debian bookworm (minbase) and import it as the
#                                   image the Dockerfile's FROM names (debian:bookworm-slim)
#   hack/image.sh build             buildah bud --pull=never --layers the project image
#                                   (docker.io/library/modelworks:<__version__>), only when its
#                                   inputs changed
#   hack/image.sh load              copy the project image into containerd's k8s.io namespace
#                                   (socket: $CONTAINERD_ADDRESS, default /run/containerd/containerd.sock)
#   hack/image.sh all               base + build (+ load when containerd is reachable)
#   hack/image.sh name              print the image reference pods use
#   hack/image.sh status            what is built, cached and loaded
#
# Cache (survives a wiped buildah storage): ${MODELWORKS_CACHE:-~/.cache/modelworks}/
#   images/debian-bookworm-minbase.tar(.sha256, .info)  the debootstrap'd root file system
#   images/pip-config/   pip.conf + the host's CA bundle, mounted into the build's RUN steps
#   images/build.log     the last build's full output
#   images/layer-ids     intermediate images our builds made (garbage-collected by the next build)
# Environment: DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR (default: what apt on this host uses),
#   CONTAINERD_ADDRESS, CONTAINERD_SNAPSHOTTER (default overlayfs), STORAGE_DRIVER (buildah's,
#   e.g. vfs where overlay does not work), BUILDAH_NETWORK (default host), MODELWORKS_CA_BUNDLE
#   (CA bundle pip trusts in the build; default the host's), MODELWORKS_IMAGE_GC=0 (keep the
#   intermediate images of earlier builds). Details: docs/images.md.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${MODELWORKS_CACHE:-$HOME/.cache/modelworks}
imgcache=$cache/images
suite=       # from the Dockerfile's FROM: debian:bookworm-slim -> bookworm (see base_suite)
base_tar=    # $imgcache/debian-<suite>-minbase.tar
containerd_address=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
snapshotter=${CONTAINERD_SNAPSHOTTER:-overlayfs}
label_inputs=dev.modelworks.inputs
label_base=dev.modelworks.base-tar-sha256
ctr_label_id=dev.modelworks/image-id

log() { printf '%s\n' "image: $*" >&2; }
die() { printf '%s\n' "image: error: $*" >&2; exit 1; }

# Timed steps: "==> what" ... "<== what: 12.3s".
step_begin() { _step_name=$1; _step_t0=$EPOCHREALTIME; log "==> $1"; }
step_end() { log "<== $_step_name: $(elapsed "$_step_t0")s${1:+ ($1)}"; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

need_root() { [[ $(id -u) == 0 ]] || die "run as root (buildah, debootstrap and ctr need it here)"; }

ensure_packages() { # ensure_packages <command>=<package> ...
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
  done
  ((${#missing[@]})) || return 0
  step_begin "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; } ||
    die "could not install ${missing[*]}"
  step_end
}

ensure_buildah() {
  ensure_packages buildah=buildah runc=runc
  buildah info >/dev/null 2>&1 ||
    die "buildah cannot open its storage ($(buildah info 2>&1 | tail -1)); try STORAGE_DRIVER=vfs"
}

# The image every FROM of the Dockerfile names (build stages excluded), fully qualified the
# way buildah, containerd and the kubelet spell it: debian:bookworm-slim ->
# docker.io/library/debian:bookworm-slim.
qualify() {
  local ref=$1 first=${1%%/*}
  if [[ $ref != */* ]]; then
    ref=docker.io/library/$ref
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
    ref=docker.io/$ref
  fi
  [[ ${ref##*/} == *[:@]* ]] || ref=$ref:latest
  printf '%s\n' "$ref"
}
base_ref() {
  local refs
  refs=$(awk 'toupper($1) == "FROM" {
      i = 2; while ($i ~ /^--/) i++
      if (!($i in stage)) print $i
      if (toupper($(i + 1)) == "AS") stage[$(i + 2)] = 1
    }' "$repo/Dockerfile" | sort -u)
  [[ -n $refs && $refs != *$'\n'* ]] || die "expected one base image in the Dockerfile, found: ${refs:-none}"
  qualify "$refs"
}

# The Debian suite the base image is made from: debian:<suite>[-slim].
base_suite() {
  local ref tag
  ref=$(base_ref)
  tag=${ref##*:}
  [[ ${ref%:*} == docker.io/library/debian && ${tag%-slim} =~ ^[a-z]+$ ]] ||
    die "the Dockerfile's base image $ref is not debian:<suite>[-slim]; debootstrap cannot make it"
  suite=${tag%-slim}
  base_tar=$imgcache/debian-$suite-minbase.tar
}

version() {
  sed -nE 's/^__version__[[:space:]]*=[[:space:]]*["'\'']([^"'\'']+)["'\''].*/\1/p' \
    "$repo/operator/modelworks/__init__.py" | head -1
}
project_ref() {
  local v
  v=$(version)
  [[ -n $v ]] || die "no __version__ in operator/modelworks/__init__.py"
  printf 'docker.io/library/modelworks:%s\n' "$v"
}

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }
image_label() { buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }
image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1"; }
image_size() { buildah images --format '{{.Size}}' "$1" 2>/dev/null | head -1; }

# The Debian mirror apt on this host uses (deb822 *.sources first, then one-line lists).
apt_uri_for() { # apt_uri_for <suite>
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    uri=$(awk -v want="$1" 'BEGIN { RS = ""; FS = "\n" }
      { uris = ""; suites = ""; types = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^[ \t]*#/) continue
          split($i, kv, ":"); key = tolower(kv[1]); val = substr($i, length(kv[1]) + 2)
          gsub(/^[ \t]+|[ \t]+$/, "", val)
          if (key == "uris") uris = val; else if (key == "suites") suites = val
          else if (key == "types") types = val; else if (key == "enabled") enabled = tolower(val)
        }
        if (enabled == "no" || (" " types " ") !~ / deb /) next
        n = split(suites, s, /[ \t]+/)
        for (j = 1; j <= n; j++) if (s[j] == want) { split(uris, u, /[ \t]+/); print u[1]; exit }
      }' "$f")
    [[ -n $uri ]] && { printf '%s\n' "$uri"; return; }
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -E 's/\[[^]]*\]//' | awk -v want="$1" '$1 == "deb" && $3 == want { print $2; exit }'
}
debian_mirror() { printf '%s\n' "${DEBIAN_MIRROR:-$(apt_uri_for "$suite")}" | sed -E 's,/+$,,;s,^$,http://deb.debian.org/debian,'; }
security_mirror() { printf '%s\n' "${DEBIAN_SECURITY_MIRROR:-$(apt_uri_for "$suite-security")}" | sed -E 's,/+$,,;s,^$,http://deb.debian.org/debian-security,'; }

# What the official debian:*-slim images do on top of debootstrap (debuerreotype's "slimify"
# and "minimizing-config"), so the Dockerfile behaves the same here and under Docker.
configure_rootfs() {
  local root=$1 mirror=$2 security=$3
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -f "$root/etc/apt/sources.list"
  [[ -f $root/usr/share/keyrings/debian-archive-keyring.gpg ]] ||
    die "debian-archive-keyring is missing from the root file system"
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  # No daemon may start inside an image build.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  # Apply the excludes to what debootstrap already installed.
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{groff,info,linda,lintian/overrides,locale,man}/*
  # Caches, logs and host leftovers.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/cache/apt/archives/partial/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
    "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache
  mkdir -p "$root/var/lib/apt/lists/partial"
  find "$root/var/log" -type f -delete
  : >"$root/etc/resolv.conf"
  : >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
}

debootstrap_tar() {
  local mirror security work
  mirror=$(debian_mirror)
  security=$(security_mirror)
  ensure_packages debootstrap=debootstrap
  mkdir -p "$imgcache"
  work=$(mktemp -d "$imgcache/.rootfs.XXXXXX")
  # shellcheck disable=SC2064 # expand now: the local is gone when the EXIT trap runs
  trap "rm -rf '$work'" EXIT
  step_begin "debootstrap --variant=minbase $suite ($mirror)"
  debootstrap --variant=minbase --arch="$(dpkg --print-architecture)" "$suite" "$work/root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  step_end
  step_begin "slim the root file system and pack it"
  configure_rootfs "$work/root" "$mirror" "$security"
  tar --numeric-owner --xattrs --acls --sort=name -C "$work/root" -cf "$work/rootfs.tar" .
  (cd "$work" && sha256sum rootfs.tar | sed "s/rootfs.tar/$(basename "$base_tar")/") >"$work/rootfs.tar.sha256"
  {
    echo "suite=$suite"
    echo "mirror=$mirror"
    echo "security=$security"
    echo "created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "debootstrap=$(dpkg-query -W -f='${Version}' debootstrap)"
  } >"$work/rootfs.tar.info"
  mv -f "$work/rootfs.tar" "$base_tar"
  mv -f "$work/rootfs.tar.sha256" "$base_tar.sha256"
  mv -f "$work/rootfs.tar.info" "$base_tar.info"
  step_end "$(du -h "$base_tar" | cut -f1)"
  rm -rf "$work"
  trap - EXIT
}

tar_ok() { [[ -f $base_tar && -f $base_tar.sha256 ]] && (cd "$imgcache" && sha256sum --quiet -c "$base_tar.sha256" >/dev/null 2>&1); }
tar_sum() { cut -d' ' -f1 "$base_tar.sha256"; }

cmd_base() {
  local refresh=0 ref sum ctr mnt
  [[ ${1:-} == --refresh ]] && refresh=1
  need_root
  ensure_buildah
  ref=$(base_ref)
  if ((refresh)) || ! tar_ok; then
    ((refresh)) || [[ ! -f $base_tar ]] || log "cached $base_tar does not match its checksum; recreating it"
    debootstrap_tar
  fi
  sum=$(tar_sum)
  if image_exists "$ref" && [[ $(image_label "$ref" "$label_base") == "$sum" ]]; then
    log "base image $ref is up to date (rootfs ${sum:0:12})"
    return 0
  fi
  local previous=
  image_exists "$ref" && previous=$(image_id "$ref")
  step_begin "import $(basename "$base_tar") as $ref"
  ctr=$(buildah from --pull=never scratch)
  # shellcheck disable=SC2064 # expand now: the local is gone when the EXIT trap runs
  trap "buildah rm '$ctr' >/dev/null 2>&1 || true" EXIT
  mnt=$(buildah mount "$ctr")
  tar --numeric-owner --xattrs --acls -xpf "$base_tar" -C "$mnt"
  buildah umount "$ctr" >/dev/null
  buildah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --os linux --arch "$(dpkg --print-architecture)" --created-by "hack/image.sh base" \
    --label "$label_base=$sum" "$ctr"
  buildah commit --quiet --rm "$ctr" "$ref" >/dev/null
  trap - EXIT
  step_end "$(image_size "$ref")"
  # The old base goes once nothing is built on it any more (the next build's clean-up).
  [[ -z $previous ]] || buildah rmi "$previous" >/dev/null 2>&1 || true
}

# Everything the Dockerfile can see, as the build context sees it (.dockerignore: no
# __pycache__; no *.egg-info), plus the base image: a change of any of them rebuilds.
inputs_hash() {
  local base_id=$1
  (
    cd "$repo"
    echo "base $base_id"
    for f in Dockerfile .dockerignore pyproject.toml constraints.txt README.md; do
      [[ -f $f ]] && sha256sum "$f"
    done
    find operator examples \( -name __pycache__ -o -name '*.egg-info' \) -prune -o -type f -print0 |
      LC_ALL=C sort -z | xargs -0r sha256sum
  ) | sha256sum | cut -c1-32
}

# pip's configuration for RUN steps: the host's CA bundle (a TLS-inspecting proxy, a
# corporate CA) and its index and timeout settings, if any.
pip_config() {
  local dir=$imgcache/pip-config bundle="" f
  for f in "${MODELWORKS_CA_BUNDLE:-}" "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" \
    /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    [[ -n $f && -f $f ]] && { bundle=$f; break; }
  done
  mkdir -p "$dir"
  {
    echo "[global]"
    [[ -n $bundle ]] && echo "cert = /root/.config/pip/ca-certificates.crt"
    [[ -n ${PIP_INDEX_URL:-} ]] && echo "index-url = $PIP_INDEX_URL"
    [[ -n ${PIP_EXTRA_INDEX_URL:-} ]] && echo "extra-index-url = $PIP_EXTRA_INDEX_URL"
    [[ -n ${PIP_DEFAULT_TIMEOUT:-} ]] && echo "timeout = $PIP_DEFAULT_TIMEOUT"
    true
  } >"$dir/pip.conf"
  if [[ -n $bundle ]]; then cp -f "$bundle" "$dir/ca-certificates.crt"; else rm -f "$dir/ca-certificates.crt"; fi
}

cmd_build() {
  local ref base hash network=${BUILDAH_NETWORK:-host}
  need_root
  ensure_buildah
  ref=$(project_ref)
  base=$(base_ref)
  image_exists "$base" || die "base image $base is missing: run hack/image.sh base"
  hash=$(inputs_hash "$(image_id "$base")")
  if image_exists "$ref" && [[ $(image_label "$ref" "$label_inputs") == "$hash" ]]; then
    log "project image $ref is up to date (inputs ${hash:0:12})"
    return 0
  fi
  pip_config
  step_begin "buildah bud $ref (log: $imgcache/build.log)"
  # --volume: pip inside the build trusts what this host trusts (a TLS-inspecting proxy, a
  # corporate CA); it leaves an empty /root/.config/pip mount point behind, nothing else.
  # Docker builds the same Dockerfile without it. --network host: RUN steps only need
  # outbound HTTP(S); no CNI bridge or iptables rules needed.
  local rc
  set +e
  # --volume uv: when hack/bootstrap.sh has installed uv, the dependency layer is installed
  # by the same uv from the same wheel cache (seconds instead of minutes of pip downloads).
  local -a uv_volumes=()
  local uv_bin
  # shellcheck source=hack/versions.env
  uv_bin=$cache/uv-$(. "$repo/hack/versions.env" && echo "$UV_VERSION")/bin
  if [[ ${MODELWORKS_IMAGE_UV:-1} == 1 && -x $uv_bin/uv ]]; then
    mkdir -p "$cache/uv"
    uv_volumes=(--volume "$uv_bin:/opt/uv:ro" --volume "$cache/uv:/opt/uv-cache")
  fi
  buildah bud --pull=never --layers --force-rm --network "$network" \
    --volume "$imgcache/pip-config:/root/.config/pip:ro" "${uv_volumes[@]}" \
    --label "$label_inputs=$hash" \
    -f "$repo/Dockerfile" -t "$ref" "$repo" 2>&1 | tee "$imgcache/build.log" |
    grep --line-buffered -E '^(\[[0-9]+/[0-9]+\] )?STEP |^--> Using cache|^Successfully tagged' >&2
  rc=${PIPESTATUS[0]}
  set -e
  if ((rc != 0)); then
    built_ids >>"$imgcache/layer-ids" # garbage unless a later build reuses them
    tail -25 "$imgcache/build.log" >&2
    die "buildah bud failed (full log: $imgcache/build.log)"
  fi
  step_end "$(image_size "$ref")"
  collect_garbage
}

# The intermediate images (--layers cache) the last build used or made, in build order.
built_ids() { grep -oE '^--> (Using cache )?[0-9a-f]{11,64}' "$imgcache/build.log" | awk '{ print substr($NF, 1, 11) }'; }

# Every code change leaves a chain of untagged images behind (~1 GB each: the venv layer
# and its copy). Remove the ones earlier builds made that this build did not reuse, newest
# first (children before parents); never touch images this script did not build.
collect_garbage() {
  local now old id tagged before after
  [[ ${MODELWORKS_IMAGE_GC:-1} == 1 ]] || return 0
  before=$(buildah images -a -q | wc -l)
  now=$(built_ids | sort -u)
  tagged=$(buildah images -a --noheading --no-trunc --format '{{.ID}} {{.Name}}' |
    awk '$2 != "<none>" { sub(/^sha256:/, "", $1); print substr($1, 1, 11) }')
  if [[ -f $imgcache/layer-ids ]]; then
    old=$(tac "$imgcache/layer-ids" | awk '!seen[$0]++')
    for id in $old; do
      grep -qx "$id" <<<"$now"$'\n'"$tagged" && continue
      buildah rmi "$id" >/dev/null 2>&1 || true # gone already with its child
    done
  fi
  built_ids >"$imgcache/layer-ids"
  after=$(buildah images -a -q | wc -l)
  ((after >= before)) || log "removed $((before - after)) intermediate images of earlier builds"
}

containerd_ok() { [[ -S $containerd_address ]] && ctr --address "$containerd_address" version >/dev/null 2>&1; }

# An import into containerd 1.6 failed here once with "parent snapshot ... does not exist"
# (a layer snapshot it had just found was gone when the next layer was stacked on it, as
# when its garbage collector runs meanwhile); the same import passed when run again, which
# recreates a missing layer: try three times before giving up.
import_image() {
  local archive=$1 try
  for try in 1 2 3; do
    if ctr --address "$containerd_address" -n k8s.io images import --snapshotter "$snapshotter" "$archive" >&2; then
      return 0
    fi
    log "import failed (try $try of 3)"
    sleep 3
  done
  die "could not import $archive into containerd"
}

cmd_load() {
  local ref id have tmp
  need_root
  ensure_buildah
  command -v ctr >/dev/null || die "ctr not found (apt-get install containerd)"
  containerd_ok || die "containerd is not reachable at $containerd_address (is it running? set CONTAINERD_ADDRESS to its socket)"
  ref=$(project_ref)
  image_exists "$ref" || die "project image $ref is missing: run hack/image.sh build"
  id=$(image_id "$ref")
  have=$(ctr --address "$containerd_address" -n k8s.io images ls "name==$ref" 2>/dev/null |
    awk 'NR > 1 { print $NF }' | tr ',' '\n' | sed -n "s,^$ctr_label_id=,,p")
  if [[ $have == "$id" ]]; then
    log "containerd ($containerd_address) already has $ref (${id:0:12})"
    return 0
  fi
  mkdir -p "$imgcache"
  tmp=$(mktemp "$imgcache/.load.XXXXXX.tar")
  # shellcheck disable=SC2064 # expand now: the local is gone when the EXIT trap runs
  trap "rm -f '$tmp'" EXIT
  step_begin "load $ref into containerd k8s.io ($containerd_address)"
  rm -f "$tmp"
  buildah push --quiet "$ref" "docker-archive:$tmp:$ref" >&2
  import_image "$tmp"
  ctr --address "$containerd_address" -n k8s.io images label "$ref" "$ctr_label_id=$id" \
    io.cri-containerd.pinned=pinned >/dev/null
  # The CRI plugin keeps a sha256:<image id> reference to every image it saw; drop the one of
  # the image this load replaced so its ~1 GB can be garbage-collected (running containers
  # keep their snapshots).
  if [[ -n $have && $have != "$id" ]]; then
    ctr --address "$containerd_address" -n k8s.io images rm "sha256:$have" >/dev/null 2>&1 || true
  fi
  step_end
  rm -f "$tmp"
  trap - EXIT
}

cmd_all() {
  local t0=$EPOCHREALTIME
  cmd_base "$@"
  cmd_build
  if containerd_ok; then
    cmd_load
  else
    log "containerd is not reachable at $containerd_address: skipping load"
  fi
  log "all: $(elapsed "$t0")s"
}

cmd_status() {
  local ref base
  ref=$(project_ref)
  base=$(base_ref)
  echo "base:     $base $(image_exists "$base" && echo "$(image_id "$base" | cut -c1-12) $(image_size "$base")" || echo missing)"
  echo "project:  $ref $(image_exists "$ref" && echo "$(image_id "$ref" | cut -c1-12) $(image_size "$ref")" || echo missing)"
  echo "rootfs:   $base_tar $(tar_ok && echo "ok $(du -h "$base_tar" | cut -f1)" || echo missing)"
  if containerd_ok; then
    echo "containerd ($containerd_address):"
    ctr --address "$containerd_address" -n k8s.io images ls "name==$ref" | sed 's/^/  /'
  else
    echo "containerd: not reachable at $containerd_address"
  fi
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    base | build | load | all)
      base_suite
      mkdir -p "$imgcache"
      exec 9>"$imgcache/.lock"
      flock 9 || die "cannot lock $imgcache/.lock"
      "cmd_$cmd" "$@"
      ;;
    name) project_ref ;;
    status) base_suite && cmd_status ;;
    *)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
      [[ $cmd == -h || $cmd == --help || $cmd == help ]] && exit 0 || exit 2
      ;;
  esac
}

main "$@"
