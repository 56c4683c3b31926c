#!/usr/bin/env bash
# Build the project's container images without any registry or Docker engine.
#
#   hack/images.sh [all]     base + pause + jobs + operator, then import into the local
#                            cluster's containerd when it is running
#   hack/images.sh pause     only the pause (sandbox) image archive
#   hack/images.sh base      only the Debian base image
#   hack/images.sh import    (re)import every built archive into containerd
#   hack/images.sh project   only the jobs and operator image archives (the kind backend
#                            loads them with `kind load image-archive`)
#   hack/images.sh names     print NAME=REF lines for the images
#
# How: debootstrap a Debian bookworm rootfs (minbase + python3, python3-venv), cached
# as an OCI archive keyed by its inputs; `buildah bud --isolation chroot
# --storage-driver vfs` of operator/Dockerfile and jobs/Dockerfile FROM that base with
# wheels built on the host (pip inside the build cannot reach the index); `buildah
# push ... oci-archive:`; `ctr -n k8s.io images import`. The pause image is upstream's
# build/pause/linux/pause.c (from the k8s module cache) compiled with gcc -static, in
# a FROM scratch image. Each image is rebuilt only when the hash of its inputs changed.
#
# Env: CRONTASK_CACHE (default /var/cache/crontask)
#      CRONTASK_JOBS_IMAGE (crontask-jobs:dev) CRONTASK_OPERATOR_IMAGE (crontask-operator:dev)
#      CRONTASK_PAUSE_IMAGE (localhost/crontask-pause:3.10.1)
#      CONTAINERD_ADDRESS  containerd socket to import into (default: the local
#                          cluster's, if it is running; skipped otherwise)
#      DEBIAN_MIRROR (default: the first deb.debian.org-style URI of the host's apt sources)
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JOBS_IMAGE="${CRONTASK_JOBS_IMAGE:-crontask-jobs:dev}"
OPERATOR_IMAGE="${CRONTASK_OPERATOR_IMAGE:-crontask-operator:dev}"
PAUSE_IMAGE="${CRONTASK_PAUSE_IMAGE:-localhost/crontask-pause:3.10.1}"
IMG_DIR="${CRONTASK_CACHE}/images"
ARCHIVES="${IMG_DIR}/archives"
BUILDAH_ROOT="${IMG_DIR}/buildah/storage"
# buildah's run root (locks, transient state) is per storage root
BUILDAH_RUNROOT="/run/crontask-buildah-$(printf '%s' "$BUILDAH_ROOT" | short_hash | cut -c1-8)"
BASE_SUITE=bookworm
BASE_INCLUDE="python3,python3-venv,ca-certificates"
CLUSTER_STATE="${CRONTASK_CLUSTER_STATE:-/var/lib/crontask/cluster}"

bah() { buildah --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" --storage-driver vfs "$@"; }

# docker.io/library/NAME:TAG is what the CRI resolves a bare NAME:TAG in a Pod spec to.
full_ref() {
  local r="$1" first="${1%%/*}"
  if [[ "$r" != */* ]]; then r="docker.io/library/$r"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then r="docker.io/$r"; fi
  echo "$r"
}

mirror() { debian_mirror; }

have_image() { local l; l="$(bah images --noheading --format '{{.Name}}:{{.Tag}}' 2>/dev/null || true)"; grep -qxF "$1" <<<"$l"; }

# ---- base ------------------------------------------------------------------------
base_key() { printf '%s|%s|%s|minbase|v2' "$BASE_SUITE" "$BASE_INCLUDE" "$(mirror)" | short_hash; }
base_ref() { echo "localhost/crontask-base:${BASE_SUITE}-$(base_key)"; }

build_base() {
  local key ref archive rootfs tmp
  key="$(base_key)"; ref="$(base_ref)"
  archive="${IMG_DIR}/base-${BASE_SUITE}-${key}.oci.tar"
  if have_image "$ref"; then log "base image $ref present"; return 0; fi
  if [ ! -s "$archive" ]; then
    tmp="$(mktemp -d "${IMG_DIR}/base-build.XXXXXX")"
    rootfs="$tmp/rootfs"
    log "debootstrap ${BASE_SUITE} (minbase + ${BASE_INCLUDE}) from $(mirror)"
    RT_LOG="$tmp/debootstrap.log" run_ticking debootstrap debootstrap --variant=minbase \
      --include="$BASE_INCLUDE" "$BASE_SUITE" "$rootfs" "$(mirror)" \
      || { tail -n 30 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
    # Trim what an image never needs.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
      "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/* "$rootfs"/tmp/*
    tar --numeric-owner --xattrs -C "$rootfs" -cf "$tmp/rootfs.tar" .
    rm -rf "$rootfs"
    printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/usr/bin/python3"]\n' > "$tmp/Containerfile"
    log "importing rootfs as $ref"
    bah bud --quiet --isolation chroot --layers=false -f "$tmp/Containerfile" -t "$ref" "$tmp" >/dev/null
    bah push --quiet "$ref" "oci-archive:${archive}.tmp:${ref}" >/dev/null
    mv -f "${archive}.tmp" "$archive"
    rm -rf "$tmp"
  else
    log "loading cached base archive $archive"
    bah pull --quiet "oci-archive:${archive}" >/dev/null
    bah tag "$(bah images --noheading --format '{{.ID}}' --filter "reference=${ref}" | head -1 || true)" "$ref" 2>/dev/null || true
    have_image "$ref" || die "base archive did not load as $ref"
  fi
}

# ---- pause -------------------------------------------------------------------------
pause_src() {
  go_env
  local dir
  dir="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  echo "$dir/build/pause/linux/pause.c"
}

build_pause() {
  local src key archive tmp ref
  ref="$(full_ref "$PAUSE_IMAGE")"
  src="$(pause_src)"; [ -f "$src" ] || die "pause.c not found at $src"
  key="$( { cat "$src"; echo "$ref"; gcc --version | head -1; } | short_hash)"
  archive="${ARCHIVES}/pause.oci.tar"
  if [ -s "$archive" ] && [ "$(cat "$archive.key" 2>/dev/null)" = "$key" ]; then
    log "pause image $ref: archive up to date"; return 0
  fi
  tmp="$(mktemp -d "${IMG_DIR}/pause-build.XXXXXX")"
  gcc -Os -static -Wall -Werror -DVERSION="v3.10.1-crontask" -o "$tmp/pause" "$src"
  strip "$tmp/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$tmp/Containerfile"
  bah bud --quiet --isolation chroot --layers=false -f "$tmp/Containerfile" -t "$ref" "$tmp" >/dev/null
  push_archive "$ref" "$archive"
  echo "$key" > "$archive.key"
  rm -rf "$tmp"
  log "pause image $ref built"
}

push_archive() {  # push_archive REF FILE
  mkdir -p "$(dirname "$2")"
  rm -f "$2.tmp"
  bah push --quiet "$1" "oci-archive:$2.tmp:$1" >/dev/null
  mv -f "$2.tmp" "$2"
  rm -f "$2.imported"
}

# ---- project images -----------------------------------------------------------------
# Hash of everything that goes into the wheels and the images.
project_key() {
  ( cd "$CRONTASK_ROOT"
    { for f in pyproject.toml constraints.txt README.md .dockerignore jobs/Dockerfile operator/Dockerfile; do
        [ -f "$f" ] && { echo "== $f"; cat "$f"; }
      done
      # whole package roots (pyproject's packages.find "where" dirs), so renames need no edit
      find jobs operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' \
        -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum
      base_ref
    } | short_hash )
}

wheel_venv() {
  local v="${IMG_DIR}/wheel-venv"
  if [ ! -x "$v/bin/pip" ]; then
    python3 -m venv "$v"
    local pipv
    pipv="$(awk -F'==' 'tolower($1)=="pip"{print $2}' "$CRONTASK_ROOT/constraints.txt" 2>/dev/null || true)"
    "$v/bin/pip" install -q --disable-pip-version-check "pip${pipv:+==$pipv}" >/dev/null
  fi
  echo "$v"
}

build_context() {  # build_context DIR : project sources + host-built wheels
  local ctx="$1" venv
  rm -rf "$ctx"; mkdir -p "$ctx/wheels"
  ( cd "$CRONTASK_ROOT"
    tar --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' -cf - \
      pyproject.toml constraints.txt README.md .dockerignore \
      jobs operator
  ) | tar -C "$ctx" -xf -
  venv="$(wheel_venv)"
  log "pip wheel .[jobs,operator] (constraints.txt) on the host"
  # The wheel cache keeps later runs fast; the project's own wheel is always rebuilt.
  run_ticking "pip wheel" "$venv/bin/pip" wheel -q --disable-pip-version-check \
    --cache-dir "${IMG_DIR}/pip-cache" -c "$ctx/constraints.txt" \
    --build-constraint "$ctx/constraints.txt" -w "$ctx/wheels" "${ctx}[jobs,operator]"
  ls "$ctx/wheels"/crontask-*.whl >/dev/null || die "no crontask wheel was built"
}

build_project_images() {
  local key ctx name df ref archive
  [ -f "$CRONTASK_ROOT/pyproject.toml" ] || die "no pyproject.toml in $CRONTASK_ROOT"
  key="$(project_key)"
  local todo=()
  for name in jobs operator; do
    archive="${ARCHIVES}/${name}.oci.tar"
    if [ -s "$archive" ] && [ "$(cat "$archive.key" 2>/dev/null)" = "$key" ]; then
      log "$name image: archive up to date (inputs $key)"
    else todo+=("$name"); fi
  done
  [ "${#todo[@]}" -gt 0 ] || return 0
  build_base
  ctx="${IMG_DIR}/context"
  build_context "$ctx"
  for name in "${todo[@]}"; do
    if [ "$name" = jobs ]; then ref="$(full_ref "$JOBS_IMAGE")"; else ref="$(full_ref "$OPERATOR_IMAGE")"; fi
    df="$ctx/$name/Dockerfile"
    archive="${ARCHIVES}/${name}.oci.tar"
    log "buildah bud $name -> $ref"
    rm -f "${IMG_DIR}/${name}-build.log"
    RT_LOG="${IMG_DIR}/${name}-build.log" run_ticking "buildah bud $name" bah bud --isolation chroot \
      --layers=false --build-arg "BASE_IMAGE=$(base_ref)" -f "$df" -t "$ref" "$ctx" \
      || { tail -n 40 "${IMG_DIR}/${name}-build.log" >&2; die "image build of $name failed"; }
    push_archive "$ref" "$archive"
    echo "$key" > "$archive.key"
    echo "$ref" > "$archive.ref"
    log "$name image $ref: $(du -h "$archive" | cut -f1) archive"
  done
  # drop dangling build layers from the vfs store (vfs copies every layer in full)
  bah rmi --prune >/dev/null 2>&1 || true
}

# ---- import ----------------------------------------------------------------------------
containerd_address() {
  if [ -n "${CONTAINERD_ADDRESS:-}" ]; then echo "$CONTAINERD_ADDRESS"; return; fi
  local s="${CLUSTER_STATE}/containerd/containerd.sock"
  [ -S "$s" ] && echo "$s"
}

import_all() {
  local addr a
  addr="$(containerd_address || true)"
  if [ -z "$addr" ] || [ ! -S "$addr" ] || ! ctr --address "$addr" version >/dev/null 2>&1; then
    log "no running containerd (cluster down): archives are imported by cluster.sh up"; return 0
  fi
  for a in "$ARCHIVES"/*.oci.tar; do
    [ -e "$a" ] || continue
    local mark="$a.imported" sum
    sum="$(stat -c '%s-%Y' "$a")@$addr@$(stat -c %Y "$addr")"
    if [ "$(cat "$mark" 2>/dev/null)" = "$sum" ]; then continue; fi
    log "ctr -n k8s.io images import $(basename "$a")"
    ctr --address "$addr" -n k8s.io images import --all-platforms "$a" >/dev/null
    echo "$sum" > "$mark"
  done
}

main() {
  mkdir -p "$IMG_DIR" "$ARCHIVES" "$BUILDAH_ROOT"
  command -v buildah >/dev/null || die "buildah missing: run hack/tools.sh apt"
  local cmd="${1:-all}"
  [ "$cmd" = names ] || take_lock images
  case "$cmd" in
    names) echo "JOBS_IMAGE=$JOBS_IMAGE"; echo "OPERATOR_IMAGE=$OPERATOR_IMAGE"; echo "PAUSE_IMAGE=$PAUSE_IMAGE"; return 0 ;;
    pause) phase_begin "pause image"; build_pause; phase_end ;;
    base) phase_begin "base image"; build_base; phase_end ;;
    import) phase_begin "import"; import_all; phase_end ;;
    project) phase_begin "jobs + operator images"; build_project_images; phase_end ;;
    all)
      phase_begin "pause image"; build_pause; phase_end
      phase_begin "jobs + operator images"; build_project_images; phase_end
      phase_begin "import into containerd"; import_all; phase_end
      ;;
    *) die "usage: $0 [all|pause|base|import|project|names]" ;;
  esac
  phase_summary
}

main "$@"; exit $?
