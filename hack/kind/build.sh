#!/usr/bin/env bash
# Build, once, everything kind would otherwise download, and cache it by version:
#
#   hack/kind/build.sh [all]   binaries, root filesystem, images, then the node image
#   hack/kind/build.sh bins    the Go binaries only
#   hack/kind/build.sh images  binaries + root filesystem + image archives (no engine needed)
#   hack/kind/build.sh node    all of it, and the node image loaded into the running engine
#   hack/kind/build.sh names   print the image names kind expects, and ours
#
# What is built, from what (versions come from kind's own module, v${KIND_VERSION#v}):
#   kind                         sigs.k8s.io/kind (Go module)
#   base image                   kind's images/base/Dockerfile, run by `buildah bud` with
#                                containerd, runc, crictl, CNI plugins and the fuse-overlayfs
#                                snapshotter built from their Go modules at the versions its
#                                ARGs pin, FROM a debootstrapped Debian trixie holding the
#                                packages its clean-install step names (no network in a build)
#   kube-apiserver, -controller-manager, -scheduler, -proxy   hack/tools.sh's k8s binaries
#   etcd, CoreDNS                the versions `kubeadm config images list` names, from Go modules
#   pause                        kubernetes' build/pause/linux/pause.c, gcc -static
#   local-path-provisioner/-helper   kind's images/local-path-* recipes
#   kindnetd                     hack/kind/kindnetd (kind's is not on the module proxy)
#   node image                   `kind build node-image --type file` of a server tarball
# Every Dockerfile step runs in `unshare --net`: nothing is fetched while building images.
# Each artefact is cached under $CRONTASK_CACHE/kind, keyed by what goes into it; a second
# run takes seconds. Each build prints its time.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HERE/../lib.sh"
# shellcheck source=hack/kind/lib.sh
source "$HERE/lib.sh"
go_env

GOV="$(go_version_short)"
KIND_MOD="$(kind_module_dir)"
TOOLS_BIN="$(tools_bin_dir)"
BIN_ROOT="${KIND_CACHE}/bin"
IMAGES="${KIND_CACHE}/images"
BUILDAH_ROOT="${KIND_CACHE}/buildah"
BUILDAH_RUNROOT="/run/crontask-kind-buildah-$(printf '%s' "$BUILDAH_ROOT" | short_hash | cut -c1-8)"
WORK="${KIND_CACHE}/work"
# bump when a recipe here changes in a way its inputs' hashes do not show
RECIPE_REV=1

bah() { buildah --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" --storage-driver overlay "$@"; }

# timed NAME CMD...: run one build step and record how long it took.
timed() { local name="$1"; shift; phase_begin "$name"; "$@"; phase_end; }

# module_info MOD@VER FIELD: a field of `go mod download -json` (Dir, Origin hash, ...)
module_dir() { go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'; }
module_hash() { go mod download -json "$1" | sed -n 's/.*"Hash": "\(.*\)".*/\1/p' | head -1; }

# ---- Go binaries -------------------------------------------------------------------------
# collect_licenses DEST BIN...: the license files of every module linked into BIN, under
# DEST/<module path>/ (what kind's recipes get from `go-licenses save`).
collect_licenses() {
  local dest="$1"; shift
  local b mod ver dir f esc
  for b in "$@"; do
    go version -m "$b" | awk '$1=="mod" || $1=="dep" {print $2, $3}'
  done | sort -u | while read -r mod ver; do
    [ "$ver" = "(devel)" ] && continue
    # the module cache escapes upper-case letters as !lower-case
    esc="$(printf '%s' "$mod" | sed 's/\([A-Z]\)/!\L\1/g')"
    dir="${GOMODCACHE}/${esc}@${ver}"
    [ -d "$dir" ] || continue
    for f in "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING* "$dir"/NOTICE*; do
      [ -f "$f" ] || continue
      mkdir -p "$dest/$mod"; cp -f "$f" "$dest/$mod/"; chmod 644 "$dest/$mod/$(basename "$f")"
    done
  done
}

# go_bins NAME VERSION CGO TAGS LDFLAGS PKG@VER...: `go install` the packages into
# $BIN_ROOT/NAME-VERSION-go<v>/ (plus _LICENSES/), once.
go_bins() {
  local name="$1" ver="$2" cgo="$3" tags="$4" ldflags="$5"; shift 5
  local dir="${BIN_ROOT}/${name}-${ver}-${GOV}"
  if [ -f "$dir/.done" ]; then log "${name} ${ver}: cached"; return 0; fi
  local tmp="${dir}.tmp"
  rm -rf "$tmp"; mkdir -p "$tmp/bin"
  GOBIN="$tmp/bin" CGO_ENABLED="$cgo" run_ticking "go install ${name} ${ver}" \
    go install -trimpath ${tags:+-tags "$tags"} -ldflags "$ldflags" "$@"
  collect_licenses "$tmp/_LICENSES" "$tmp"/bin/*
  rm -rf "$dir"; mv "$tmp" "$dir"; : > "$dir/.done"
}

bindir() { echo "${BIN_ROOT}/$1-$2-${GOV}/bin"; }

CONTAINERD_VERSION="$(kind_base_arg CONTAINERD_VERSION)"
RUNC_VERSION="$(kind_base_arg RUNC_VERSION)"
CRICTL_VERSION="$(kind_base_arg CRICTL_VERSION)"
CNI_PLUGINS_VERSION="$(kind_base_arg CNI_PLUGINS_VERSION)"
FUSE_OVERLAYFS_VERSION="$(kind_base_arg CONTAINERD_FUSE_OVERLAYFS_VERSION)"
CONTAINERD_BUILDTAGS="$(kind_base_arg BUILDTAGS)"
for v in CONTAINERD_VERSION RUNC_VERSION CRICTL_VERSION CNI_PLUGINS_VERSION FUSE_OVERLAYFS_VERSION; do
  [ -n "${!v}" ] || die "cannot read $v from kind's images/base/Dockerfile"
done

# kubeadm's image list for our Kubernetes: the names (and so the versions) kind pre-loads.
kubeadm_images() {
  [ -x "$TOOLS_BIN/kubeadm" ] || die "kubeadm missing in $TOOLS_BIN: run hack/tools.sh"
  "$TOOLS_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null
}
kubeadm_image() { kubeadm_images | grep -E "/$1:" | head -1; }
ETCD_IMAGE="$(kubeadm_image etcd)"
COREDNS_IMAGE="$(kubeadm_image coredns)"
ETCD_IMAGE_VERSION="v${ETCD_IMAGE##*:}"; ETCD_IMAGE_VERSION="${ETCD_IMAGE_VERSION%-*}"   # 3.6.5-0 -> v3.6.5
COREDNS_VERSION="${COREDNS_IMAGE##*:}"
ETCD_BIN="${BIN_ROOT}/etcd-${ETCD_IMAGE_VERSION}-${GOV}/bin"

kindnetd_key() { (cd "$HERE/kindnetd" && cat go.mod go.sum ./*.go) | short_hash; }

# Two lanes of Go builds side by side: one `go build` leaves a core idle while it links or
# resolves modules, two keep both busy (about a fifth faster on 2 cores, cold).
build_bins() {
  mkdir -p "$WORK"
  ( bins_lane_a; phase_summary ) > "$WORK/bins-lane-a.log" 2>&1 &
  local lane_a=$!
  bins_lane_b
  if ! wait "$lane_a"; then cat "$WORK/bins-lane-a.log" >&2; die "a Go build failed (above)"; fi
  # lane A's timings, for the record
  sed -n '/phase timings:/,$p' "$WORK/bins-lane-a.log" | tail -n +2 >&2
}

bins_lane_a() {
  timed "coredns ${COREDNS_VERSION} (kubeadm's)" go_bins coredns "$COREDNS_VERSION" 0 "" \
    "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$(module_hash "github.com/coredns/coredns@${COREDNS_VERSION}" | cut -c1-7)" \
    "github.com/coredns/coredns@${COREDNS_VERSION}"
  timed "local-path-provisioner ${LOCAL_PATH_PROVISIONER_VERSION}" go_bins local-path-provisioner \
    "$LOCAL_PATH_PROVISIONER_VERSION" 0 "" "-s -w -X main.VERSION=${LOCAL_PATH_PROVISIONER_VERSION}" \
    "github.com/rancher/local-path-provisioner@${LOCAL_PATH_PROVISIONER_VERSION}"
  timed "kind ${KIND_VERSION}" go_bins kind "$KIND_VERSION" 0 "" \
    "-s -w -buildid= -X=sigs.k8s.io/kind/pkg/cmd/kind/version.gitCommit=$(module_hash "sigs.k8s.io/kind@${KIND_VERSION}")" \
    "sigs.k8s.io/kind@${KIND_VERSION}"
  local cni=github.com/containernetworking/plugins
  timed "CNI plugins ${CNI_PLUGINS_VERSION}" go_bins cni-plugins "$CNI_PLUGINS_VERSION" 0 "" \
    "-s -w -X ${cni}/pkg/utils/buildversion.BuildVersion=${CNI_PLUGINS_VERSION}" \
    "${cni}/plugins/ipam/host-local@${CNI_PLUGINS_VERSION}" "${cni}/plugins/main/loopback@${CNI_PLUGINS_VERSION}" \
    "${cni}/plugins/main/ptp@${CNI_PLUGINS_VERSION}" "${cni}/plugins/meta/portmap@${CNI_PLUGINS_VERSION}"
}

bins_lane_b() {
  local cd_pkg=github.com/containerd/containerd/v2 cd_ld
  cd_ld="-s -w -X ${cd_pkg}/version.Version=${CONTAINERD_VERSION} -X ${cd_pkg}/version.Revision=$(module_hash "${cd_pkg}@${CONTAINERD_VERSION}") -X ${cd_pkg}/version.Package=${cd_pkg}"
  timed "containerd ${CONTAINERD_VERSION}" go_bins containerd "$CONTAINERD_VERSION" 1 \
    "$CONTAINERD_BUILDTAGS urfave_cli_no_docs" "$cd_ld" \
    "${cd_pkg}/cmd/containerd@${CONTAINERD_VERSION}" "${cd_pkg}/cmd/ctr@${CONTAINERD_VERSION}"
  # the shim is static and built without cgo, as containerd's Makefile does
  timed "containerd-shim-runc-v2 ${CONTAINERD_VERSION}" go_bins containerd-shim "$CONTAINERD_VERSION" 0 \
    "$CONTAINERD_BUILDTAGS urfave_cli_no_docs no_grpc" "$cd_ld" \
    "${cd_pkg}/cmd/containerd-shim-runc-v2@${CONTAINERD_VERSION}"
  local fo=github.com/containerd/fuse-overlayfs-snapshotter/v2
  timed "containerd-fuse-overlayfs ${FUSE_OVERLAYFS_VERSION}" go_bins fuse-overlayfs "$FUSE_OVERLAYFS_VERSION" 1 "" \
    "-s -w -X ${fo}/cmd/containerd-fuse-overlayfs-grpc/version.Version=${FUSE_OVERLAYFS_VERSION} -X ${fo}/cmd/containerd-fuse-overlayfs-grpc/version.Revision=$(module_hash "${fo}@${FUSE_OVERLAYFS_VERSION}")" \
    "${fo}/cmd/containerd-fuse-overlayfs-grpc@${FUSE_OVERLAYFS_VERSION}"
  timed "runc ${RUNC_VERSION}" go_bins runc "$RUNC_VERSION" 1 "seccomp urfave_cli_no_docs" \
    "-s -w -X main.gitCommit=$(module_hash "github.com/opencontainers/runc@${RUNC_VERSION}")" \
    "github.com/opencontainers/runc@${RUNC_VERSION}"
  timed "crictl ${CRICTL_VERSION}" go_bins crictl "$CRICTL_VERSION" 0 "" \
    "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION}" \
    "sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}"
  timed "etcd ${ETCD_IMAGE_VERSION} (kubeadm's)" "$CRONTASK_ROOT/hack/tools.sh" etcd "$ETCD_IMAGE_VERSION" "$ETCD_BIN" etcdutl
  timed "kindnetd (hack/kind/kindnetd)" build_kindnetd
}

build_kindnetd() {
  local key dir tmp
  key="$(kindnetd_key)"
  dir="${BIN_ROOT}/kindnetd-${key}-${GOV}"
  if [ -f "$dir/.done" ]; then log "kindnetd ${key}: cached"; return 0; fi
  tmp="${dir}.tmp"; rm -rf "$tmp"; mkdir -p "$tmp/bin"
  (
    cd "$HERE/kindnetd"
    # -trimpath like the build below, so both share the compiled packages
    run_ticking "go test kindnetd" go test -trimpath -count=1 ./...
    run_ticking "go build kindnetd" go build -trimpath -ldflags "-s -w" -o "$tmp/bin/kindnetd" .
  )
  collect_licenses "$tmp/_LICENSES" "$tmp/bin/kindnetd"
  rm -rf "$dir"; mv "$tmp" "$dir"; : > "$dir/.done"
}
kindnetd_bin() { echo "${BIN_ROOT}/kindnetd-$(kindnetd_key)-${GOV}/bin"; }

# ---- root filesystem ------------------------------------------------------------------------
# Debian trixie (debian:trixie-slim is kind's base) with every package kind's base recipe
# installs, bootstrapped on the host because nothing inside a build may reach a mirror.
ROOTFS_PACKAGES="$(kind_base_packages | sort -u | paste -sd, -)"
rootfs_key() { printf '%s|%s|%s|%s' "$KIND_DEBIAN_SUITE" "$ROOTFS_PACKAGES" "$(debian_mirror)" "$RECIPE_REV" | short_hash; }
ROOTFS_TAR="${KIND_CACHE}/rootfs/${KIND_DEBIAN_SUITE}-$(rootfs_key).tar"

build_rootfs() {
  if [ -s "$ROOTFS_TAR" ]; then log "rootfs ${KIND_DEBIAN_SUITE}: cached ($(du -h "$ROOTFS_TAR" | cut -f1))"; return 0; fi
  [ -n "$ROOTFS_PACKAGES" ] || die "could not read the package list of kind's base recipe"
  mkdir -p "$(dirname "$ROOTFS_TAR")"
  local tmp; tmp="$(mktemp -d "${KIND_CACHE}/rootfs/build.XXXXXX")"
  log "debootstrap ${KIND_DEBIAN_SUITE} minbase + ${ROOTFS_PACKAGES} from $(debian_mirror)"
  RT_LOG="$tmp/debootstrap.log" run_ticking "debootstrap ${KIND_DEBIAN_SUITE}" debootstrap --variant=minbase \
    --include="$ROOTFS_PACKAGES" "$KIND_DEBIAN_SUITE" "$tmp/rootfs" "$(debian_mirror)" \
    || { tail -n 30 "$tmp/debootstrap.log" >&2; rm -rf "$tmp"; die "debootstrap ${KIND_DEBIAN_SUITE} failed"; }
  # what the debian:*-slim images do not carry: apt lists and downloaded packages
  rm -rf "$tmp"/rootfs/var/lib/apt/lists/* "$tmp"/rootfs/var/cache/apt/archives/*.deb
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$tmp/rootfs" -cf "$ROOTFS_TAR.tmp" .
  mv -f "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  rm -rf "$tmp"
}

# debootstrap mostly waits for the mirror: it runs beside the (CPU-bound) Go builds
rootfs_in_background() {
  mkdir -p "$WORK"
  ( phase_begin "rootfs ${KIND_DEBIAN_SUITE} (beside the Go builds)"; build_rootfs; phase_end; phase_summary ) \
    > "$WORK/rootfs.out" 2>&1 &
  ROOTFS_PID=$!
}
wait_for_rootfs() {
  if wait "$ROOTFS_PID"; then
    grep -E '^ +rootfs|^\[.*(debootstrap|rootfs)' "$WORK/rootfs.out" >&2 || true
  else
    cat "$WORK/rootfs.out" >&2; die "building the ${KIND_DEBIAN_SUITE} root filesystem failed"
  fi
}

# ---- images ------------------------------------------------------------------------------------
have_bah_image() { bah inspect --type image "$1" >/dev/null 2>&1; }

# The `FROM debian:trixie-slim` of kind's recipes: the bootstrapped root filesystem plus the
# two commands that stand in for its network installs (they verify and clean, then remove
# themselves, so the images they help build carry nothing of ours).
TRIXIE_REF="localhost/crontask-kind/debian:${KIND_DEBIAN_SUITE}-$(rootfs_key)"
build_trixie_image() {
  if have_bah_image "$TRIXIE_REF"; then return 0; fi
  local ctx="$WORK/trixie"
  rm -rf "$ctx"; mkdir -p "$ctx/sbin"
  offline_installers "$ctx/sbin"
  cp "$ROOTFS_TAR" "$ctx/rootfs.tar"
  printf 'FROM scratch\nADD rootfs.tar /\nCOPY sbin/ /usr/local/sbin/\nCMD ["bash"]\n' > "$ctx/Containerfile"
  bah_build "$ctx" "$TRIXIE_REF"
  rm -rf "$ctx"
}

# offline_installers DIR: crontask-offline-clean-install is kind's clean-install with its
# three network steps (apt-get update, upgrade, install) replaced by a check that the
# packages are installed; crontask-offline-install is the same check for a plain `apt install`.
offline_installers() {
  local dir="$1" src="$KIND_MOD/images/base/files/usr/local/bin/clean-install" check
  check='for p in "$@"; do
  dpkg-query -W -f="\${Status}\n" "$p" 2>/dev/null | grep -qx "install ok installed" \
    || { echo "offline build: package $p is not in the bootstrapped root filesystem" >&2; exit 1; }
done'
  [ "$(grep -cE '^apt-get (update|upgrade -y|install -y --no-install-recommends "\$@")$' "$src")" = 3 ] \
    || die "kind's clean-install changed: review offline_installers in $0"
  awk -v check="$check" '
    /^apt-get update$/ || /^apt-get upgrade -y$/ {next}
    /^apt-get install -y --no-install-recommends "\$@"$/ {print check; next}
    {print}
    END {print "rm -f /usr/local/sbin/crontask-offline-install /usr/local/sbin/crontask-offline-clean-install"}
  ' "$src" > "$dir/crontask-offline-clean-install"
  { printf '#!/bin/sh\nset -eu\n%s\n' "$check"
    echo "rm -f /usr/local/sbin/crontask-offline-install /usr/local/sbin/crontask-offline-clean-install"; } \
    > "$dir/crontask-offline-install"
  chmod 755 "$dir"/crontask-offline-*
}

# bah_build CONTEXT REF [buildah bud args...]: build offline (no network namespace link at all).
bah_build() {
  local ctx="$1" ref="$2"; shift 2
  local logf
  logf="$WORK/$(printf '%s' "$ref" | tr '/:' '__').log"
  RT_LOG="$logf" run_ticking "buildah bud $ref" unshare --net -- buildah --root "$BUILDAH_ROOT" \
    --runroot "$BUILDAH_RUNROOT" --storage-driver overlay bud --isolation chroot --pull-never \
    --layers=false -f "$ctx/Containerfile" -t "$ref" "$@" "$ctx" \
    || { tail -n 40 "$logf" >&2; die "image build of $ref failed (log: $logf)"; }
}

# transform_recipe IN OUT "DROP..." [FIND REPLACE]...: one of kind's Dockerfiles, offline:
# the stages named in DROP (they clone and build from git) are removed, and `COPY --from=S`
# of a dropped stage S reads the same path below stages/S/ of the context instead, where this
# script puts what that stage would have built; each FIND (a literal string) must occur and
# is replaced by REPLACE. Anything else in the recipe is kept as upstream wrote it.
transform_recipe() {
  local in="$1" out="$2" drop="$3"; shift 3
  awk -v drop=" $drop " '
    BEGIN { stage = -1 }
    toupper($1) == "FROM" {
      stage++; name = stage
      for (i = 2; i < NF; i++) if (toupper($i) == "AS") name = $(i + 1)
      skipping = index(drop, " " name " ") > 0
      if (!skipping) kept[name] = 1
    }
    skipping { next }
    toupper($1) == "COPY" {
      for (i = 2; i <= NF; i++) if ($i ~ /^--from=/) {
        from = substr($i, 8)
        if (index(drop, " " from " ") > 0) {
          $i = ""; src = i + 1
          while ($src ~ /^--/) src++
          $src = "stages/" from $src
          $0 = $0; gsub(/  +/, " ")
        } else if (!(from in kept)) {
          print "COPY --from=" from " names a stage that is neither kept nor built here" > "/dev/stderr"
          exit 1
        }
      }
    }
    { print }
  ' "$in" > "$out" || die "cannot make $in offline"
  local text find repl
  text="$(cat "$out")"
  while [ "$#" -ge 2 ]; do
    find="$1" repl="$2"; shift 2
    [[ "$text" == *"$find"* ]] || die "the recipe $in no longer contains: $find"
    text="${text//"$find"/$repl}"
  done
  printf '%s\n' "$text" > "$out"
}

# stage_dir STAGE BINDIR DEST-PATH...: lay out what a dropped stage produced
stage_copy() {  # stage_copy CTX STAGE SRC-FILE PATH-IN-STAGE
  mkdir -p "$(dirname "$1/stages/$2$4")"
  cp -f "$3" "$1/stages/$2$4"
}
stage_licenses() {  # stage_licenses CTX STAGE LICENSE-DIR...
  local ctx="$1" stage="$2"; shift 2
  mkdir -p "$ctx/stages/$stage/_LICENSES"
  local d; for d in "$@"; do cp -a "$d"/. "$ctx/stages/$stage/_LICENSES/"; done
}

# archive NAME REF KEY BUILD-FUNCTION: build REF with BUILD-FUNCTION unless the docker-archive
# $IMAGES/NAME-KEY.tar exists; then write that archive (what `docker load` and kind read).
archive_path() { echo "${IMAGES}/$1-$2.tar"; }
archive() {
  local name="$1" ref="$2" key="$3" fn="$4" out
  out="$(archive_path "$name" "$key")"
  if [ -s "$out" ]; then log "$name image: cached ($ref)"; return 0; fi
  mkdir -p "$IMAGES"
  "$fn" "$ref"
  rm -f "$out.tmp"
  bah push --quiet "$ref" "docker-archive:$out.tmp:$ref" >/dev/null
  mv -f "$out.tmp" "$out"
  echo "$ref" > "$out.ref"
  log "$name image $ref: $(du -h "$out" | cut -f1)"
}

# ---- the images ----------------------------------------------------------------------------------
static_key() { { echo "$RECIPE_REV"; rootfs_key; cat "$HERE/images/static.Containerfile"; } | short_hash; }
STATIC_REF="localhost/crontask-kind/static-debian13:$(static_key)"
build_static_image() {
  have_bah_image "$STATIC_REF" && return 0
  local ctx="$WORK/static"; rm -rf "$ctx"; mkdir -p "$ctx"
  cp "$HERE/images/static.Containerfile" "$ctx/Containerfile"
  bah_build "$ctx" "$STATIC_REF" --build-arg "TRIXIE=$TRIXIE_REF"
  rm -rf "$ctx"
}

iptables_key() {
  { static_key; cat "$HERE/images/iptables.Containerfile" "$HERE/images/iptables-wrapper" \
      "$KIND_MOD/images/local-path-helper/stage-binary-and-deps.sh"; } | short_hash
}
IPTABLES_REF="localhost/crontask-kind/distroless-iptables:$(iptables_key)"
build_iptables_image() {
  have_bah_image "$IPTABLES_REF" && return 0
  local ctx="$WORK/iptables"; rm -rf "$ctx"; mkdir -p "$ctx"
  cp "$HERE/images/iptables.Containerfile" "$ctx/Containerfile"
  cp "$HERE/images/iptables-wrapper" "$KIND_MOD/images/local-path-helper/stage-binary-and-deps.sh" "$ctx/"
  chmod 755 "$ctx"/iptables-wrapper "$ctx"/stage-binary-and-deps.sh
  bah_build "$ctx" "$IPTABLES_REF" --build-arg "TRIXIE=$TRIXIE_REF" --build-arg "STATIC=$STATIC_REF"
  rm -rf "$ctx"
}

# the bases every image below needs (kept in buildah's store between runs)
build_bases() { build_trixie_image; build_static_image; build_iptables_image; }

# copy_recipe DIR CTX: one of kind's image directories as a writable build context
copy_recipe() { rm -rf "$2"; mkdir -p "$(dirname "$2")"; cp -r "$1" "$2"; chmod -R u+w "$2"; }

# -- kind's base image: images/base/Dockerfile ---------------------------------------------------
BASE_STAGES="go-build build-containerd build-runc build-crictl build-cni build-fuse-overlayfs"
base_key() {
  { echo "$RECIPE_REV $KIND_VERSION $GOV"; rootfs_key
    echo "$CONTAINERD_VERSION $RUNC_VERSION $CRICTL_VERSION $CNI_PLUGINS_VERSION $FUSE_OVERLAYFS_VERSION"
  } | short_hash
}
BASE_REF="localhost/crontask-kind/base:${KIND_VERSION}-$(base_key)"
build_base_image() {
  local ref="$1" ctx="$WORK/base" cd_bin rc_bin
  build_bases
  copy_recipe "$KIND_MOD/images/base" "$ctx"
  transform_recipe "$KIND_MOD/images/base/Dockerfile" "$ctx/Containerfile" "$BASE_STAGES" \
    "DEBIAN_FRONTEND=noninteractive clean-install" "DEBIAN_FRONTEND=noninteractive crontask-offline-clean-install"
  cd_bin="$(bindir containerd "$CONTAINERD_VERSION")"
  for b in containerd ctr; do stage_copy "$ctx" build-containerd "$cd_bin/$b" "/containerd/bin/$b"; done
  stage_copy "$ctx" build-containerd "$(bindir containerd-shim "$CONTAINERD_VERSION")/containerd-shim-runc-v2" \
    /containerd/bin/containerd-shim-runc-v2
  stage_licenses "$ctx" build-containerd "${BIN_ROOT}/containerd-${CONTAINERD_VERSION}-${GOV}/_LICENSES" \
    "${BIN_ROOT}/containerd-shim-${CONTAINERD_VERSION}-${GOV}/_LICENSES"
  rc_bin="$(bindir runc "$RUNC_VERSION")"
  stage_copy "$ctx" build-runc "$rc_bin/runc" /runc/runc
  stage_licenses "$ctx" build-runc "${BIN_ROOT}/runc-${RUNC_VERSION}-${GOV}/_LICENSES"
  stage_copy "$ctx" build-crictl "$(bindir crictl "$CRICTL_VERSION")/crictl" /cri-tools/build/crictl
  stage_licenses "$ctx" build-crictl "${BIN_ROOT}/crictl-${CRICTL_VERSION}-${GOV}/_LICENSES"
  for b in host-local loopback ptp portmap; do
    stage_copy "$ctx" build-cni "$(bindir cni-plugins "$CNI_PLUGINS_VERSION")/$b" "/cni-plugins/bin/$b"
  done
  stage_licenses "$ctx" build-cni "${BIN_ROOT}/cni-plugins-${CNI_PLUGINS_VERSION}-${GOV}/_LICENSES"
  stage_copy "$ctx" build-fuse-overlayfs "$(bindir fuse-overlayfs "$FUSE_OVERLAYFS_VERSION")/containerd-fuse-overlayfs-grpc" \
    /fuse-overlayfs-snapshotter/bin/containerd-fuse-overlayfs-grpc
  stage_licenses "$ctx" build-fuse-overlayfs "${BIN_ROOT}/fuse-overlayfs-${FUSE_OVERLAYFS_VERSION}-${GOV}/_LICENSES"
  bah_build "$ctx" "$ref" --build-arg "BASE_IMAGE=$TRIXIE_REF"
}

# -- kind's images/local-path-helper and images/local-path-provisioner ------------------------------
HELPER_IMAGE="$(kind_go_const const_storage.go storageHelperImage)"
PROVISIONER_IMAGE="$(kind_go_const const_storage.go storageProvisionerImage)"
KINDNETD_IMAGE="$(kind_go_const const_cni.go kindnetdImage)"
PAUSE_IMAGE="$(kind_pause_image)"
helper_key() { { echo "$RECIPE_REV $KIND_VERSION"; static_key; } | short_hash; }
build_helper_image() {
  local ref="$1" ctx="$WORK/local-path-helper"
  build_bases
  copy_recipe "$KIND_MOD/images/local-path-helper" "$ctx"
  transform_recipe "$KIND_MOD/images/local-path-helper/Dockerfile" "$ctx/Containerfile" "" \
    "apt update && apt install -y --no-install-recommends bash" "crontask-offline-install bash" \
    "gcr.io/distroless/static-debian13" "$STATIC_REF"
  bah_build "$ctx" "$ref" --build-arg "BASE=$TRIXIE_REF"
}
provisioner_key() { { echo "$RECIPE_REV $KIND_VERSION $LOCAL_PATH_PROVISIONER_VERSION $GOV"; static_key; } | short_hash; }
build_provisioner_image() {
  local ref="$1" ctx="$WORK/local-path-provisioner"
  build_bases
  copy_recipe "$KIND_MOD/images/local-path-provisioner" "$ctx"
  transform_recipe "$KIND_MOD/images/local-path-provisioner/Dockerfile" "$ctx/Containerfile" "0" \
    "gcr.io/distroless/static-debian13" "$STATIC_REF"
  stage_copy "$ctx" 0 "$(bindir local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION")/local-path-provisioner" \
    /usr/local/bin/local-path-provisioner
  stage_licenses "$ctx" 0 "${BIN_ROOT}/local-path-provisioner-${LOCAL_PATH_PROVISIONER_VERSION}-${GOV}/_LICENSES"
  bah_build "$ctx" "$ref" --build-arg "VERSION=$LOCAL_PATH_PROVISIONER_VERSION"
}

# -- Kubernetes' own images -------------------------------------------------------------------------
K8S_MOD="$(module_dir "k8s.io/kubernetes@${K8S_VERSION}")"
server_key() { { echo "$RECIPE_REV $1 $TOOLS_BIN"; static_key; iptables_key; } | short_hash; }
# build_server_image REF: kubernetes' build/server-image recipe; kube-apiserver's own one drops
# its setcap stage for a binary given the capability on the host (the image has no setcap).
build_server_image() {
  local ref="$1" bin ctx base
  bin="${ref##*/}"; bin="${bin%%:*}"
  ctx="$WORK/$bin"; rm -rf "$ctx"; mkdir -p "$ctx"
  base="$STATIC_REF"; [ "$bin" = kube-proxy ] && base="$IPTABLES_REF"
  build_bases
  if [ -f "$K8S_MOD/build/server-image/$bin/Dockerfile" ]; then
    transform_recipe "$K8S_MOD/build/server-image/$bin/Dockerfile" "$ctx/Containerfile" "0"
    mkdir -p "$ctx/stages/0"; cp "$TOOLS_BIN/$bin" "$ctx/stages/0/$bin"
    setcap cap_net_bind_service=+ep "$ctx/stages/0/$bin"
  else
    cp "$K8S_MOD/build/server-image/Dockerfile" "$ctx/Containerfile"
    cp "$TOOLS_BIN/$bin" "$ctx/$bin"
  fi
  bah_build "$ctx" "$ref" --build-arg "BASEIMAGE=$base" --build-arg "BINARY=$bin"
}

etcd_key() { { echo "$RECIPE_REV $ETCD_IMAGE $ETCD_BIN"; static_key; cat "$HERE/images/etcd.Containerfile"; } | short_hash; }
build_etcd_image() {
  local ref="$1" ctx="$WORK/etcd"; rm -rf "$ctx"; mkdir -p "$ctx"
  build_bases
  cp "$HERE/images/etcd.Containerfile" "$ctx/Containerfile"
  cp "$ETCD_BIN"/etcd "$ETCD_BIN"/etcdctl "$ETCD_BIN"/etcdutl "$ctx/"
  bah_build "$ctx" "$ref" --build-arg "BASE=$STATIC_REF"
}

coredns_key() { { echo "$RECIPE_REV $COREDNS_IMAGE $GOV"; static_key; } | short_hash; }
# CoreDNS' own Dockerfile (from its module): its build stage (apt-get install + setcap) is done
# on the host; the CA bundle comes from the trixie root filesystem.
build_coredns_image() {
  local ref="$1" ctx="$WORK/coredns" src
  build_bases
  src="$(module_dir "github.com/coredns/coredns@${COREDNS_VERSION}")"
  rm -rf "$ctx"; mkdir -p "$ctx/stages/build/etc/ssl/certs"
  transform_recipe "$src/Dockerfile" "$ctx/Containerfile" "build"
  cp "$(bindir coredns "$COREDNS_VERSION")/coredns" "$ctx/stages/build/coredns"
  setcap cap_net_bind_service=+ep "$ctx/stages/build/coredns"
  tar -xOf "$ROOTFS_TAR" ./etc/ssl/certs/ca-certificates.crt > "$ctx/stages/build/etc/ssl/certs/ca-certificates.crt"
  bah_build "$ctx" "$ref" --build-arg "BASE=$STATIC_REF"
}

pause_key() { { echo "$RECIPE_REV $PAUSE_IMAGE"; cat "$K8S_MOD/build/pause/linux/pause.c" "$HERE/images/pause.Containerfile"; gcc --version | head -1; } | short_hash; }
build_pause_image() {
  local ref="$1" ctx="$WORK/pause"; rm -rf "$ctx"; mkdir -p "$ctx/bin"
  cp "$HERE/images/pause.Containerfile" "$ctx/Containerfile"
  gcc -Os -static -Wall -Werror -DVERSION="v${PAUSE_IMAGE##*:}-crontask" -o "$ctx/bin/pause-linux-amd64" \
    "$K8S_MOD/build/pause/linux/pause.c"
  strip "$ctx/bin/pause-linux-amd64"
  bah_build "$ctx" "$ref"
}

kindnetd_image_key() { { echo "$RECIPE_REV"; kindnetd_key; static_key; cat "$HERE/images/kindnetd.Containerfile"; } | short_hash; }
build_kindnetd_image() {
  local ref="$1" ctx="$WORK/kindnetd"; rm -rf "$ctx"; mkdir -p "$ctx"
  build_bases
  cp "$HERE/images/kindnetd.Containerfile" "$ctx/Containerfile"
  cp "$(kindnetd_bin)/kindnetd" "$ctx/"
  cp -a "$(kindnetd_bin)/../_LICENSES" "$ctx/_LICENSES"
  bah_build "$ctx" "$ref" --build-arg "BASE=$STATIC_REF"
}

# image_plan: "NAME REF KEY BUILD-FUNCTION" for every archive the node image is made from.
image_plan() {
  local img name
  echo "base $BASE_REF $(base_key) build_base_image"
  for img in $(kubeadm_images); do
    case "$img" in
      */kube-apiserver:*|*/kube-controller-manager:*|*/kube-scheduler:*|*/kube-proxy:*)
        name="${img##*/}"; name="${name%%:*}"
        echo "$name $img $(server_key "$img") build_server_image" ;;
      */etcd:*) echo "etcd $img $(etcd_key) build_etcd_image" ;;
      */coredns:*) echo "coredns $img $(coredns_key) build_coredns_image" ;;
      */pause:*) ;;   # kind replaces kubeadm's pause image with its containerd config's
      *) die "kubeadm names an image this script does not build: $img" ;;
    esac
  done
  echo "pause $PAUSE_IMAGE $(pause_key) build_pause_image"
  echo "kindnetd $KINDNETD_IMAGE $(kindnetd_image_key) build_kindnetd_image"
  echo "local-path-provisioner $PROVISIONER_IMAGE $(provisioner_key) build_provisioner_image"
  echo "local-path-helper $HELPER_IMAGE $(helper_key) build_helper_image"
}

build_images() {
  mkdir -p "$WORK" "$IMAGES"
  local name ref key fn
  while read -r name ref key fn; do
    timed "image $name ($ref)" archive "$name" "$ref" "$key" "$fn"
  done < <(image_plan)
  # drop intermediate build images; the bases stay for the next build
  bah rmi --prune >/dev/null 2>&1 || true
}

# ---- the node image (needs the running engine: hack/kind/engine.sh up) -----------------------------
node_key() { { echo "$RECIPE_REV $KIND_VERSION $K8S_VERSION $TOOLS_BIN"; image_plan | awk '{print $1, $3}'; } | short_hash; }

# node_ref: the node image's name. It says where it comes from: built here, not kindest/node.
node_ref() { echo "crontask.local/kind-node:${K8S_VERSION}-$(node_key)"; }
node_archive() { echo "${KIND_CACHE}/node/node-$(node_key).tar"; }

# save_archive OUT REF...: a docker-archive of REFs whose "repositories" index comes first and
# names each image as kind and containerd spell it (docker.io/...): kind reads the tags of a
# Kubernetes image archive from the first of manifest.json/repositories it meets, and counts
# every tag it finds as an image it need not pull.
save_archive() {
  local out="$1"; shift
  local dir="$out.d"
  rm -rf "$dir"; mkdir -p "$dir"
  kind_docker save "$@" | tar -C "$dir" -xf -
  jq 'with_entries(.key |= (split("/") as $p
        | if ($p | length) == 1 then "docker.io/library/" + .
          elif ($p[0] | test("[.:]") or . == "localhost") then .
          else "docker.io/" + . end))' "$dir/repositories" > "$dir/repositories.full"
  mv -f "$dir/repositories.full" "$dir/repositories"
  local rest=()
  mapfile -t rest < <(cd "$dir" && find . -mindepth 1 -maxdepth 1 ! -name repositories ! -name manifest.json -printf '%f\n' | sort)
  ( cd "$dir" && tar --numeric-owner -cf "$out" repositories manifest.json "${rest[@]}" )
  rm -rf "$dir"
}

build_node() {
  [ -S "$KIND_DOCKER_SOCK" ] && kind_docker info >/dev/null 2>&1 \
    || die "no engine at $KIND_DOCKER_SOCK: run hack/kind/engine.sh up first"
  local ref archive
  ref="$(node_ref)"; archive="$(node_archive)"
  if kind_docker image inspect "$ref" >/dev/null 2>&1; then log "node image $ref: in the engine"; return 0; fi
  if [ -s "$archive" ]; then
    phase_begin "docker load node image"; kind_docker load -q -i "$archive" >/dev/null; phase_end
    return 0
  fi
  local work="$WORK/node" name iref key fn extra=() kubes=()
  rm -rf "$work"; mkdir -p "$work/kubernetes/server/bin"
  phase_begin "docker load the images"
  while read -r name iref key fn; do
    kind_docker load -q -i "$(archive_path "$name" "$key")" >/dev/null
    case "$name" in
      base) ;;
      kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy) kubes+=("$name=$iref") ;;
      *) extra+=("$iref") ;;
    esac
  done < <(image_plan)
  phase_end
  phase_begin "server tarball (kubeadm, kubelet, kubectl + image archives)"
  local b kv
  for b in kubeadm kubelet kubectl; do cp "$TOOLS_BIN/$b" "$work/kubernetes/server/bin/$b"; done
  echo "$K8S_VERSION" > "$work/kubernetes/version"
  for kv in "${kubes[@]}"; do
    name="${kv%%=*}"; iref="${kv#*=}"
    echo "$iref" > "$work/kubernetes/server/bin/${name}.docker_tag"
    if [ "$name" = kube-apiserver ]; then
      # the images kind pre-pulls ride along in this archive (see save_archive)
      save_archive "$work/kubernetes/server/bin/${name}.tar" "$iref" "${extra[@]}"
    else
      save_archive "$work/kubernetes/server/bin/${name}.tar" "$iref"
    fi
  done
  tar -C "$work" -cf - kubernetes | pigz -1 > "$work/kubernetes-server-linux-amd64.tar.gz"
  phase_end
  phase_begin "kind build node-image"
  mkdir -p "$(dirname "$archive")"
  RT_LOG="$work/kind-build.log" run_ticking "kind build node-image" kind_in_ns env \
    PATH="$(kind_path)" DOCKER_HOST="unix://${KIND_DOCKER_SOCK}" \
    kind build node-image -v 1 --type file --base-image "$BASE_REF" --image "$ref" \
    "$work/kubernetes-server-linux-amd64.tar.gz" \
    || { tail -n 40 "$work/kind-build.log" >&2; die "kind build node-image failed (log: $work/kind-build.log)"; }
  cp "$work/kind-build.log" "$archive.build.log"
  # every image kind would otherwise fetch must be among the ones it was given
  grep -q "Failed to pull" "$work/kind-build.log" && die "kind build node-image tried to pull (log: $archive.build.log)"
  phase_end
  phase_begin "docker save node image (cache)"
  mkdir -p "$(dirname "$archive")"
  kind_docker save -o "$archive.tmp" "$ref"
  mv -f "$archive.tmp" "$archive"
  log "node image $ref: $(du -h "$archive" | cut -f1) archive"
  # the parts are in the node image now
  while read -r name iref key fn; do kind_docker rmi -f "$iref" >/dev/null 2>&1 || true; done < <(image_plan)
  phase_end
  rm -rf "$work"
}

names() {
  echo "KIND_BIN=$(bindir kind "$KIND_VERSION")/kind"
  echo "NODE_IMAGE=$(node_ref)"
  echo "NODE_ARCHIVE=$(node_archive)"
  image_plan | awk '{print "IMAGE " $1 "=" $2}'
}

main() {
  local cmd="${1:-all}"
  case "$cmd" in
    names) names; return 0 ;;
  esac
  [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, buildah)"
  take_lock kind-build
  case "$cmd" in
    bins) build_bins ;;
    images) rootfs_in_background; build_bins; wait_for_rootfs; build_images ;;
    node|all) rootfs_in_background; build_bins; wait_for_rootfs; build_images; build_node ;;
    *) die "usage: $0 [all|bins|images|node|names]" ;;
  esac
  phase_summary
}

main "$@"; exit $?
