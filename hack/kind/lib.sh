#!/usr/bin/env bash
# Shared settings and helpers of the kind backend (hack/kind/*.sh). Source it after
# hack/lib.sh; it sets no shell options of its own.
#
# The kind backend runs everything on this machine: Debian's Docker engine in a network
# namespace of its own (engine.sh), kind built from its Go module, and every image kind
# needs built here from kind's own recipes and Go modules (build.sh), then a kind cluster
# and a PostgreSQL server in that namespace (cluster.sh). See hack/cluster/README.md.
# shellcheck disable=SC2034  # settings for the scripts that source this file

# ---- pinned versions -------------------------------------------------------------------
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
# Debian 12's docker.io (Docker 20.10.24); pinned, installed by engine.sh's apt step.
DOCKER_DEB_VERSION="${DOCKER_DEB_VERSION:-20.10.24+dfsg1-1+deb12u1+b6}"
# kind's images/local-path-provisioner builds rancher/local-path-provisioner v0.0.34; the
# Go module proxy here serves only v0.0.30 of that module, the newest we can build.
LOCAL_PATH_PROVISIONER_VERSION="${LOCAL_PATH_PROVISIONER_VERSION:-v0.0.30}"
# The Debian release kind's base image starts from (images/base/Dockerfile: debian:trixie-slim).
KIND_DEBIAN_SUITE="${KIND_DEBIAN_SUITE:-trixie}"

# ---- identity: one engine + cluster per network namespace ------------------------------
# Defaults follow the local backend's identity (CRONTASK_NETNS / CRONTASK_CLUSTER_STATE), so
# an engineer who exported theirs never shares an engine with anyone else.
KIND_NETNS="${CRONTASK_KIND_NETNS:-${CRONTASK_NETNS:-crontask}-kind}"
KIND_NETNS_PATH="/run/netns/${KIND_NETNS}"
KIND_STATE="${CRONTASK_KIND_STATE:-${CRONTASK_CLUSTER_STATE:-/var/lib/crontask/cluster}-kind}"
KIND_CLUSTER_NAME="${CRONTASK_KIND_CLUSTER:-crontask}"
# The engine's "kind" network: fixed, so PostgreSQL can listen on its gateway before the
# cluster exists. It exists only inside the namespace.
KIND_SUBNET="${CRONTASK_KIND_SUBNET:-10.202.0.0/24}"
KIND_GATEWAY="${KIND_SUBNET%.*}.1"
KIND_POD_SUBNET="${CRONTASK_KIND_POD_SUBNET:-10.244.0.0/16}"

KIND_CACHE="${CRONTASK_CACHE}/kind"
# The engine's data root survives `down` (images are a cache; containers, networks and
# volumes are removed), keyed by the namespace so two engines never share one.
KIND_DOCKER_ROOT="${KIND_CACHE}/engines/${KIND_NETNS}"
KIND_DOCKER_SOCK="${KIND_STATE}/docker.sock"
KIND_RUN="${KIND_STATE}/run"
KIND_LOGS="${KIND_STATE}/logs"
KIND_KUBECONFIG="${KIND_STATE}/kubeconfig"
KIND_BIN_LINKS="${KIND_STATE}/bin"     # docker (Debian's client) and kind, first on PATH

# Debian's docker client, whatever else is on PATH (a newer static client may be).
DOCKER_CLI=/usr/bin/docker

# where build.sh puts kind; kind_path: PATH with our docker link (Debian's client) and kind first
kind_bin_dir() { echo "${KIND_CACHE}/bin/kind-${KIND_VERSION}-$(go_version_short)/bin"; }
kind_path() { echo "${KIND_BIN_LINKS}:$(kind_bin_dir):$PATH"; }

kind_docker() { DOCKER_HOST="unix://${KIND_DOCKER_SOCK}" "$DOCKER_CLI" "$@"; }
kind_in_ns() { nsenter --net="$KIND_NETNS_PATH" -- "$@"; }

# ---- kind's module: the recipes and the names it expects --------------------------------
kind_module_dir() {
  go_env
  local d
  d="$(go mod download -json "sigs.k8s.io/kind@${KIND_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  [ -d "$d" ] || die "cannot fetch sigs.k8s.io/kind@${KIND_VERSION} from the Go module proxy"
  echo "$d"
}

# kind_base_arg NAME: an ARG default of kind's images/base/Dockerfile (e.g. RUNC_VERSION).
kind_base_arg() {
  sed -n "s/^ARG $1=\"\\{0,1\\}\\([^\"]*\\)\"\\{0,1\\}\$/\\1/p" "$(kind_module_dir)/images/base/Dockerfile" | head -1
}

# kind_go_const FILE NAME: a string constant of kind's pkg/build/nodeimage (image names).
kind_go_const() {
  sed -n "s/^const $2 = \"\\(.*\\)\"\$/\\1/p" "$(kind_module_dir)/pkg/build/nodeimage/$1" | head -1
}

# The packages the base image's clean-install step installs (one per line).
kind_base_packages() {
  awk '/clean-install[ \t]*\\$/ {on=1; next}
       on && /^[ \t]*&&/ {exit}
       on {gsub(/\\/, ""); for (i = 1; i <= NF; i++) print $i}' \
    "$(kind_module_dir)/images/base/Dockerfile"
}

# The sandbox (pause) image kind's containerd config names; kind swaps kubeadm's for it.
kind_pause_image() {
  sed -n 's/^[ \t]*sandbox_image = "\(.*\)"/\1/p' "$(kind_module_dir)/images/base/files/etc/containerd/config.toml" | head -1
}

# The Go version kind builds its binaries with (ours: the toolchain hack/tools.sh uses).
kind_go_version() { head -1 "$(kind_module_dir)/.go-version" 2>/dev/null || echo unknown; }

# host_lacks_sys_resource: true when this root cannot hold CAP_SYS_RESOURCE (bit 24 of the
# bounding set), the sandbox quirk that breaks `docker run --privileged` with stock runc.
host_lacks_sys_resource() {
  local bnd
  bnd="$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
  [ -n "$bnd" ] && [ $(( 16#$bnd >> 24 & 1 )) -eq 0 ]
}

# Kernel settings. A kind node is a privileged container: its kubelet and its systemd-sysctl
# write host-wide sysctls (kernel.panic, kernel.pid_max, vm.overcommit_memory, ...). The
# engine records them all before it starts and writes back, on `down`, every one that changed.
# These change by themselves all the time and are never compared or restored:
KIND_VOLATILE_SYSCTLS='^(fs\.(dentry-state|file-nr|inode-nr|inode-state|quota\.)|kernel\.(ns_last_pid|random\.|pty\.nr|tainted)|net\.netfilter\.nf_conntrack_count)'
kind_sysctls() { sysctl -a 2>/dev/null | grep -vE "$KIND_VOLATILE_SYSCTLS" | LC_ALL=C sort; }
# kind_sysctls_restore FILE: write back every recorded value that differs now (if writable)
kind_sysctls_restore() {
  local line key value path now
  while IFS= read -r line; do
    key="${line%% = *}"; value="${line#* = }"
    path="/proc/sys/${key//.//}"
    [ -w "$path" ] || continue
    now="$(sysctl -n "$key" 2>/dev/null)" || continue
    if sysctl -qw "$key=$value" 2>/dev/null; then
      log "restored host sysctl $key = $value (was $now)"
    else
      warn "could not restore host sysctl $key = $value (now $now)"
    fi
  done < <(LC_ALL=C comm -23 "$1" <(kind_sysctls))
}
