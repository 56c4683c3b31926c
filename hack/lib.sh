#!/usr/bin/env bash
# Shared helpers for hack/tools.sh, hack/images.sh and hack/cluster/*.sh.
# Source it; it sets no shell options of its own.

CRONTASK_ROOT="${CRONTASK_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
CRONTASK_CACHE="${CRONTASK_CACHE:-/var/cache/crontask}"

# Pinned versions (see the header of hack/cluster/cluster.sh for why these).
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
# promtool (checks and unit-tests the chart's alerting rules): the Prometheus Go module's
# v0.MAJORMINOR.PATCH is Prometheus MAJOR.MINOR.PATCH (v0.316.0 = 3.16.0).
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
# The ServiceMonitor and PrometheusRule CRDs the chart's templates are validated against, from
# the Prometheus Operator's Go module (example/prometheus-operator-crd/).
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"

export PATH="/usr/local/go/bin:${PATH}"

_ct_ts() { date +%H:%M:%S; }
log()  { printf '[%s] %s\n' "$(_ct_ts)" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$(_ct_ts)" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "$(_ct_ts)" "$*" >&2; exit 1; }

# phase_begin NAME / phase_end : print how long a phase took; all phases are
# summarised by phase_summary.
_CT_PHASES=()
phase_begin() { _CT_PHASE_NAME="$1"; _CT_PHASE_T0=$(date +%s.%N); log "==> $1"; }
phase_end() {
  local t1 d
  t1=$(date +%s.%N)
  d=$(awk -v a="$_CT_PHASE_T0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  _CT_PHASES+=("${_CT_PHASE_NAME}: ${d}s")
  log "<== ${_CT_PHASE_NAME} done in ${d}s"
}
phase_summary() {
  local p
  [ "${#_CT_PHASES[@]}" -gt 0 ] || return 0
  log "phase timings:"
  for p in "${_CT_PHASES[@]}"; do printf '    %s\n' "$p" >&2; done
}

# run_ticking LABEL CMD... : run CMD, printing a heartbeat every TICK seconds
# (default 60) so long builds visibly progress. Returns CMD's exit status.
# With RT_LOG=FILE, CMD's output goes to FILE (the heartbeat still goes to stderr).
run_ticking() {
  local label="$1"; shift
  local tick="${TICK:-60}" t0 pid rc=0 n=0
  t0=$(date +%s)
  if [ -n "${RT_LOG:-}" ]; then "$@" >> "$RT_LOG" 2>&1 & else "$@" & fi
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    n=$((n + 1))
    if [ $((n % tick)) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then
      log "    ... ${label}: still running ($(( $(date +%s) - t0 ))s)"
    fi
  done
  wait "$pid" || rc=$?
  return "$rc"
}

# Go environment: everything cached outside the repository.
go_env() {
  export GOTOOLCHAIN=local
  export GOMODCACHE="${CRONTASK_CACHE}/gomod"
  export GOCACHE="${CRONTASK_CACHE}/gocache"
  export GOFLAGS="-buildvcs=false"
  export CGO_ENABLED=0
  mkdir -p "$GOMODCACHE" "$GOCACHE"
}

go_version_short() { go env GOVERSION 2>/dev/null || echo unknown; }

# Directory holding the pinned binaries (keyed by every version that goes in).
tools_bin_dir() {
  echo "${CRONTASK_CACHE}/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_$(go_version_short)"
}

# Where hack/tools.sh puts the Prometheus Operator CRDs (keyed by their version).
monitoring_crds_dir() {
  echo "${CRONTASK_CACHE}/schemas/prometheus-operator-${PROMETHEUS_OPERATOR_VERSION}"
}

# debian_mirror: DEBIAN_MIRROR, else the first Debian URI of the host's apt sources.
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(grep -rhoE '(URIs:|deb)\s+https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
      | awk '{print $2}' | head -1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

# sha256 of stdin, short
short_hash() { sha256sum | cut -c1-16; }

# wait_exec PID MARK: a child just started in the background is a copy of this shell (its
# command line ours) until it execs, and its command line reads empty during an exec (10 of
# 200 immediate reads, `setsid sleep 1 &`): a liveness check that looks for MARK there would
# take it for a process that exited. Wait up to 2 s for MARK to show, or for the process to go.
wait_exec() {
  local p="$1" mark="$2"
  for _ in $(seq 100); do
    grep -qF -- "$mark" "/proc/$p/cmdline" 2>/dev/null && return 0
    kill -0 "$p" 2>/dev/null || return 0
    sleep 0.02
  done
}

# take_lock NAME : serialise this script against other runs (same cache) on fd 9. The
# lock is released when the process exits; daemons started while holding it must be
# started with 9>&- so they do not keep it.
take_lock() {
  local f="${CRONTASK_CACHE}/locks/$1.lock"
  mkdir -p "${CRONTASK_CACHE}/locks"
  exec 9>"$f"
  if ! flock -n 9; then
    log "waiting for another $1 run to finish (lock $f)"
    flock -w "${CRONTASK_LOCK_TIMEOUT:-3600}" 9 || die "timed out waiting for lock $f"
  fi
}
