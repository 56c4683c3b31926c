#!/usr/bin/env bash
# Proves that the kind backend leaves the host as it found it.
#
#   hack/kind/host-state.sh snapshot FILE   record what the backend could change on the host
#   hack/kind/host-state.sh compare FILE    compare the host now with FILE; print every
#                                           difference and exit 1 if there is one
#   hack/kind/host-state.sh cycles N        N times: snapshot, hack/kind/cluster.sh up, a
#                                           pod that reaches PostgreSQL, down, compare
#
# Recorded, in the host's own network and mount namespaces: every iptables/ip6tables rule
# of both backends (legacy and nft, every table, `-S`: no counters) and `nft list ruleset`
# (counters dropped), links and routes, mounts, network namespaces, every sysctl but the few
# that change by themselves, paths Docker uses by default, our cgroups, and
# every process that belongs to this backend (its state dir, data root or namespaces).
# Other engineers' clusters live in network namespaces of their own and under their own
# state dirs: their mounts there (and under /run/netns, /var/cache/crontask/images) are left
# out, so their activity cannot fail this check, and nothing of ours can hide there.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HERE/../lib.sh"
# shellcheck source=hack/kind/lib.sh
source "$HERE/lib.sh"

DOCKER_PATHS=(/lib/modules /run/docker /run/docker.sock /var/run/docker.pid /var/lib/docker
  /etc/docker/daemon.json /run/containerd/containerd.sock)

# mounts that are not ours to judge: other clusters' state and netns, shared image builds
foreign_mount() {
  local m="$1"
  case "$m" in
    "$KIND_STATE"|"$KIND_STATE"/*|"$KIND_DOCKER_ROOT"|"$KIND_DOCKER_ROOT"/*|"$KIND_NETNS_PATH") return 1 ;;
    /var/lib/crontask/*|/run/netns|/run/netns/*|"${CRONTASK_CACHE}/images"/*) return 0 ;;
  esac
  return 1
}

section() { printf '== %s\n' "$1"; }

snapshot() {
  local t b m p
  for b in iptables-legacy iptables-nft ip6tables-legacy ip6tables-nft; do
    for t in filter nat mangle raw security; do
      section "$b -t $t"
      "$b" -t "$t" -S 2>&1 || true
    done
  done
  section "nft list ruleset"
  nft list ruleset 2>&1 | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/' || true
  section "links"; ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
  section "routes"; { ip -4 route show table all; ip -6 route show table all; } 2>/dev/null | sort
  section "network namespaces (ours)"; ip netns list 2>/dev/null | awk '{print $1}' | grep -xF "$KIND_NETNS" || true
  section "mounts"
  awk '{print $5, $(NF-2), $(NF-1)}' /proc/self/mountinfo | while read -r m t p; do
    foreign_mount "$m" || echo "$m $t $p"
  done | sort
  section "sysctls (all but the volatile ones)"
  kind_sysctls
  section "docker paths"
  for p in "${DOCKER_PATHS[@]}"; do [ -e "$p" ] && echo "$p exists" || echo "$p absent"; done
  section "cgroups (ours)"
  for m in $(awk '$3=="cgroup" || $3=="cgroup2" {print $2}' /proc/self/mounts); do
    [ -d "$m/$KIND_NETNS" ] && echo "$m/$KIND_NETNS"
  done
  section "state (ours)"
  [ -e "$KIND_STATE" ] && echo "$KIND_STATE exists" || echo "$KIND_STATE absent"
  section "processes (ours)"
  our_processes
}

# processes of this backend: anything naming our state dir, data root or socket, or living in
# our network namespace
our_processes() {
  local p net="" cmd
  [ -e "$KIND_NETNS_PATH" ] && net="$(stat -L -c %i "$KIND_NETNS_PATH")"
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [ "$p" = "$$" ] || [ "$p" = "$BASHPID" ] && continue
    cmd="$( { tr '\0' ' ' < "/proc/$p/cmdline"; } 2>/dev/null || true)"
    [ -n "$cmd" ] || continue
    case "$cmd" in *host-state.sh*) continue ;; esac
    if [[ "$cmd" == *"$KIND_STATE"* || "$cmd" == *"$KIND_DOCKER_ROOT"* ]] \
       || { [ -n "$net" ] && [ "$(stat -L -c %i "/proc/$p/ns/net" 2>/dev/null)" = "$net" ]; }; then
      echo "$( { cat "/proc/$p/comm"; } 2>/dev/null) ${cmd:0:120}"
    fi
  done | sort
}

compare() {
  local before="$1" now
  now="$(mktemp)"
  snapshot > "$now"
  if diff -u "$before" "$now" > "$now.diff"; then
    log "host state unchanged ($(grep -c '' "$before") lines: iptables/nft rules, links, routes, mounts, sysctls, paths, cgroups, processes)"
    rm -f "$now" "$now.diff"
    return 0
  fi
  warn "the host changed:"
  cat "$now.diff" >&2
  rm -f "$now" "$now.diff"
  return 1
}

cycles() {
  local n="${1:-2}" i dir rc=0
  dir="$(mktemp -d /tmp/crontask-kind-host-state.XXXXXX)"
  for i in $(seq 1 "$n"); do
    log "up/down cycle $i of $n"
    snapshot > "$dir/before-$i"
    "$HERE/cluster.sh" up >/dev/null
    "$HERE/cluster.sh" exec -- kubectl wait --for=condition=Ready node --all --timeout=60s >/dev/null
    probe_pod
    "$HERE/cluster.sh" down >/dev/null
    compare "$dir/before-$i" || rc=1
  done
  rm -rf "$dir"
  return "$rc"
}

# a pod on the node resolves a name through the kube-dns Service (pod -> Service -> CoreDNS
# pod: kube-proxy's rules, the CNI, CoreDNS) and logs in to PostgreSQL through its node (the
# path the e2e job pods take)
probe_pod() {
  local image
  image="${CRONTASK_JOBS_IMAGE:-crontask-jobs:dev}"
  "$HERE/cluster.sh" exec -- kubectl delete pod crontask-probe --ignore-not-found --wait=true >/dev/null
  "$HERE/cluster.sh" exec -- sh -c "kubectl run crontask-probe --restart=Never --image='$image' \
    --image-pull-policy=Never --env=DATABASE_URL=\"\$DATABASE_URL\" --command -- python3 -c \
    'import os, socket, psycopg; print(\"probe: kubernetes.default ->\", socket.gethostbyname(\"kubernetes.default.svc.cluster.local\")); psycopg.connect(os.environ[\"DATABASE_URL\"], connect_timeout=10).close(); print(\"probe: PostgreSQL reached\")' >/dev/null"
  "$HERE/cluster.sh" exec -- kubectl wait --for=jsonpath='{.status.phase}'=Succeeded pod/crontask-probe --timeout=120s >/dev/null \
    || { "$HERE/cluster.sh" exec -- kubectl describe pod crontask-probe >&2; "$HERE/cluster.sh" exec -- kubectl logs crontask-probe >&2 || true; die "probe pod failed"; }
  "$HERE/cluster.sh" exec -- kubectl logs crontask-probe >&2
}

case "${1:-}" in
  snapshot) [ -n "${2:-}" ] || die "usage: $0 snapshot FILE"; snapshot > "$2" ;;
  compare) [ -n "${2:-}" ] || die "usage: $0 compare FILE"; compare "$2" ;;
  cycles) cycles "${2:-2}" ;;
  *) die "usage: $0 snapshot FILE | compare FILE | cycles [N]" ;;
esac
