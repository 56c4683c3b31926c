#!/usr/bin/env bash
# Debian's Docker engine for the kind backend, in a network namespace of the project's own.
#
#   hack/kind/engine.sh apt      install the pinned Debian packages it needs (docker.io, jq, ...)
#   hack/kind/engine.sh up       start it (idempotent): netns, dockerd, the "kind" network
#   hack/kind/engine.sh down     remove every container, network and volume it has, stop it and
#                                everything it started, remove the netns, cgroups and state
#   hack/kind/engine.sh status   what runs
#   hack/kind/engine.sh env      DOCKER_HOST=... and PATH=... lines for a shell
#   hack/kind/engine.sh exec -- CMD   run CMD inside the namespace with DOCKER_HOST and PATH set
#
# Isolation. dockerd runs in the network namespace $KIND_NETNS (default: $CRONTASK_NETNS-kind),
# which has a loopback, the bridges dockerd makes, and a blackhole default route: nothing it
# or a container sends can leave the machine, and its iptables rules live in that namespace
# only. It also runs in a mount namespace of its own with a private tmpfs on /run, so its
# exec root, containerd's sockets, the shims' fixed /run paths and every overlay mount stay out
# of the host's mount table and vanish with it. Its containers' cgroups sit under
# /$KIND_NETNS in every hierarchy. Only the data root (images: a cache) survives `down`,
# under $CRONTASK_CACHE/kind/engines/$KIND_NETNS.
#
# Sandbox quirk: when root lacks CAP_SYS_RESOURCE, `--privileged` containers cannot start
# with stock runc; then (only then) runc-without-sys-resource is dockerd's default runtime.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HERE/../lib.sh"
# shellcheck source=hack/kind/lib.sh
source "$HERE/lib.sh"

APT_PACKAGES=("docker.io=${DOCKER_DEB_VERSION}" jq pigz libseccomp-dev debootstrap buildah uidmap)
CGROUP_PARENT="/${KIND_NETNS}"
DOCKERD_LOG="${KIND_LOGS}/dockerd.log"
START_TIMEOUT="${CRONTASK_START_TIMEOUT:-120}"

apt_install() {
  local missing=() p name want
  for p in "${APT_PACKAGES[@]}"; do
    name="${p%%=*}"; want="${p#*=}"; [ "$want" = "$p" ] && want=""
    if ! dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q 'install ok installed' \
       || { [ -n "$want" ] && [ "$(dpkg-query -W -f='${Version}' "$name")" != "$want" ]; }; then
      missing+=("$p")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then log "apt: kind packages already installed"; return 0; fi
  log "apt: installing ${missing[*]}"
  apt-get update -qq
  # docker.io's post-install start is refused where there is no init system; that is fine:
  # this script starts its own dockerd.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

engine_pid() { cat "$KIND_RUN/dockerd.pid" 2>/dev/null || true; }
engine_alive() {
  local p; p="$(engine_pid)"
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && grep -qF -- "$KIND_STATE/daemon.json" "/proc/$p/cmdline" 2>/dev/null
}
engine_ready() { engine_alive && kind_docker info >/dev/null 2>&1; }

setup_netns() {
  mkdir -p "$KIND_RUN"
  if [ ! -e "$KIND_NETNS_PATH" ]; then
    # `ip netns add` turns /run/netns into a bind mount the first time: remember if we did
    if ! mountpoint -q /run/netns 2>/dev/null; then : > "$KIND_RUN/made-run-netns-mount"; fi
    ip netns add "$KIND_NETNS"
  fi
  kind_in_ns ip link set lo up
  # nothing outside the namespace is reachable: no link out, and a blackhole default route
  kind_in_ns ip route replace blackhole default
  kind_in_ns ip -6 route replace blackhole default 2>/dev/null || true
  kind_in_ns sysctl -qw net.ipv4.ip_forward=1
}

write_daemon_json() {
  local runtime=""
  if host_lacks_sys_resource; then
    install -m 0755 "$HERE/runc-without-sys-resource" "$KIND_BIN_LINKS/runc-without-sys-resource"
    runtime=",
  \"runtimes\": {\"runc-without-sys-resource\": {\"path\": \"$KIND_BIN_LINKS/runc-without-sys-resource\"}},
  \"default-runtime\": \"runc-without-sys-resource\""
    log "root lacks CAP_SYS_RESOURCE: containers run through runc-without-sys-resource"
  fi
  cat > "$KIND_STATE/daemon.json" <<EOF
{
  "data-root": "$KIND_DOCKER_ROOT",
  "exec-root": "/run/docker",
  "pidfile": "/run/docker.pid",
  "hosts": ["unix://$KIND_DOCKER_SOCK"],
  "storage-driver": "overlay2",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "cgroup-parent": "$CGROUP_PARENT",
  "bip": "10.203.0.1/24",
  "ip6tables": false,
  "log-driver": "json-file",
  "log-opts": {"max-size": "20m", "max-file": "2"},
  "features": {"buildkit": false}$runtime
}
EOF
}

start_dockerd() {
  mkdir -p "$KIND_STATE" "$KIND_RUN" "$KIND_LOGS" "$KIND_DOCKER_ROOT" "$KIND_BIN_LINKS"
  ln -sf "$DOCKER_CLI" "$KIND_BIN_LINKS/docker"
  write_daemon_json
  # kind bind-mounts the host's /lib/modules into its nodes; Docker would create it if absent
  if [ ! -e /lib/modules ]; then mkdir -p /lib/modules; : > "$KIND_RUN/made-lib-modules"; fi
  printf '\n===== dockerd start %s\n' "$(date -Is)" >> "$DOCKERD_LOG"
  # nsenter: the network namespace; unshare: a private mount namespace with its own /run
  setsid nsenter --net="$KIND_NETNS_PATH" -- unshare --mount --propagation private -- /bin/sh -c \
    'mount -t tmpfs -o mode=755,nosuid,nodev crontask-kind-run /run && mkdir -p /run/lock && exec "$@"' \
    sh dockerd --config-file "$KIND_STATE/daemon.json" >> "$DOCKERD_LOG" 2>&1 < /dev/null 9>&- &
  echo $! > "$KIND_RUN/dockerd.pid"
  wait_exec $! "$KIND_STATE/daemon.json"  # before engine_alive may judge it
  local t0; t0=$(date +%s)
  until kind_docker info >/dev/null 2>&1; do
    engine_alive || { tail -n 30 "$DOCKERD_LOG" >&2; die "dockerd exited (log: $DOCKERD_LOG)"; }
    [ $(( $(date +%s) - t0 )) -lt "$START_TIMEOUT" ] || die "dockerd not ready after ${START_TIMEOUT}s (log: $DOCKERD_LOG)"
    sleep 0.5
  done
  stat -L -c %i "/proc/$(engine_pid)/ns/mnt" > "$KIND_RUN/mntns"
}

# the network kind uses (it reuses one called "kind"): fixed subnet, so PostgreSQL can listen
# on its gateway before any node exists
ensure_kind_network() {
  local subnet
  subnet="$(kind_docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' 2>/dev/null || true)"
  if [ "$subnet" = "$KIND_SUBNET" ]; then return 0; fi
  [ -z "$subnet" ] || kind_docker network rm kind >/dev/null
  kind_docker network create -d=bridge -o com.docker.network.bridge.enable_ip_masquerade=true \
    -o com.docker.network.driver.mtu=1500 --subnet "$KIND_SUBNET" --gateway "$KIND_GATEWAY" kind >/dev/null
}

cmd_up() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  command -v dockerd >/dev/null && [ -x "$DOCKER_CLI" ] || die "docker.io missing: run $0 apt"
  if engine_ready; then
    log "engine already up (pid $(engine_pid), netns $KIND_NETNS)"
  else
    mkdir -p "$KIND_RUN"
    # the host's kernel settings before anything of ours runs (down writes back what changed)
    [ -s "$KIND_RUN/sysctl.before" ] || kind_sysctls > "$KIND_RUN/sysctl.before"
    phase_begin "network namespace $KIND_NETNS"; setup_netns; phase_end
    phase_begin "dockerd (Debian docker.io $(dpkg-query -W -f='${Version}' docker.io))"; start_dockerd; phase_end
    # A run that ended without `down` leaves its containers in the data root, and dockerd
    # restarts them: a new engine starts with images only, as `down` leaves it.
    if [ -n "$(kind_docker ps -aq)" ] || [ -n "$(kind_docker network ls -q --filter type=custom)" ]; then
      warn "removing containers and networks an earlier run left in $KIND_DOCKER_ROOT"
      remove_all_but_images
    fi
  fi
  ensure_kind_network
  log "engine up: DOCKER_HOST=unix://$KIND_DOCKER_SOCK (netns $KIND_NETNS, data root $KIND_DOCKER_ROOT)"
}

# pids in a cgroup subtree of every hierarchy
cgroup_pids() {
  local h
  for h in $(awk '$3=="cgroup" || $3=="cgroup2" {print $2}' /proc/self/mounts); do
    [ -d "$h$CGROUP_PARENT" ] && find "$h$CGROUP_PARENT" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# pids whose mount namespace is the engine's, or whose network namespace is ours
namespace_pids() {
  local mnt="" net="" p
  mnt="$(cat "$KIND_RUN/mntns" 2>/dev/null || true)"
  [ -e "$KIND_NETNS_PATH" ] && net="$(stat -L -c %i "$KIND_NETNS_PATH")"
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [ "$p" = "$$" ] && continue
    if { [ -n "$mnt" ] && [ "$(stat -L -c %i "/proc/$p/ns/mnt" 2>/dev/null)" = "$mnt" ]; } \
       || { [ -n "$net" ] && [ "$(stat -L -c %i "/proc/$p/ns/net" 2>/dev/null)" = "$net" ]; }; then
      echo "$p"
    fi
  done
}

stop_pid() {  # stop_pid PID [SECONDS]
  local p="$1" n=$(( ${2:-10} * 4 ))
  kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null || true
  while [ "$n" -gt 0 ] && kill -0 "$p" 2>/dev/null; do sleep 0.25; n=$((n - 1)); done
  kill -KILL "$p" 2>/dev/null || true
}

# everything in the engine but its images (what the data root keeps between up and down)
remove_all_but_images() {
  local c
  c="$(kind_docker ps -aq)"
  # shellcheck disable=SC2086
  [ -z "$c" ] || kind_docker rm -fv $c >/dev/null
  for c in $(kind_docker network ls -q --filter type=custom); do kind_docker network rm "$c" >/dev/null || true; done
  kind_docker volume prune -f >/dev/null || true
}

cmd_down() {
  local p h
  phase_begin "containers, networks, volumes"
  if engine_ready; then remove_all_but_images; fi
  phase_end
  phase_begin "dockerd and everything it started"
  if engine_alive; then stop_pid "$(engine_pid)" 30; fi
  # containerd, shims and proxies it may have left behind, and any process we started in
  # the namespace (PostgreSQL is stopped by cluster.sh before this)
  for p in $(namespace_pids) $(cgroup_pids); do stop_pid "$p" 5; done
  phase_end
  phase_begin "cgroups, netns, sysctls, state"
  if [ -s "$KIND_RUN/sysctl.before" ]; then kind_sysctls_restore "$KIND_RUN/sysctl.before"; fi
  for h in $(awk '$3=="cgroup" || $3=="cgroup2" {print $2}' /proc/self/mounts); do
    [ -d "$h$CGROUP_PARENT" ] || continue
    find "$h$CGROUP_PARENT" -depth -type d -exec rmdir {} \; 2>/dev/null || warn "cgroup $h$CGROUP_PARENT not fully removed"
  done
  if [ -e "$KIND_NETNS_PATH" ]; then ip netns del "$KIND_NETNS" || warn "ip netns del $KIND_NETNS failed"; fi
  if [ -e "$KIND_RUN/made-run-netns-mount" ] && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
    umount /run/netns 2>/dev/null && rmdir /run/netns 2>/dev/null || true
  fi
  if [ -e "$KIND_RUN/made-lib-modules" ]; then rmdir /lib/modules 2>/dev/null || warn "/lib/modules not empty; left"; fi
  if [ -n "$(awk -v a="$KIND_STATE/" -v b="$KIND_DOCKER_ROOT/" 'index($5, a) == 1 || index($5, b) == 1' /proc/self/mountinfo)" ]; then
    warn "mounts remain below $KIND_STATE or $KIND_DOCKER_ROOT; not deleting the state"
  else
    rm -rf "$KIND_STATE"
    rmdir "$(dirname "$KIND_STATE")" 2>/dev/null || true
  fi
  phase_end
}

cmd_status() {
  local rc=0
  if [ -e "$KIND_NETNS_PATH" ]; then echo "netns $KIND_NETNS: present"; else echo "netns $KIND_NETNS: absent"; rc=1; fi
  if engine_ready; then
    echo "dockerd: running (pid $(engine_pid)), DOCKER_HOST=unix://$KIND_DOCKER_SOCK"
    kind_docker ps -a --format '  {{.Names}}: {{.Status}} ({{.Image}})'
  else echo "dockerd: not running"; rc=1; fi
  return "$rc"
}

cmd_exec() {
  [ "${1:-}" = "--" ] && shift
  [ "$#" -gt 0 ] || die "usage: $0 exec -- CMD..."
  [ -e "$KIND_NETNS_PATH" ] || die "engine is not up (no netns $KIND_NETNS)"
  exec nsenter --net="$KIND_NETNS_PATH" -- env DOCKER_HOST="unix://$KIND_DOCKER_SOCK" \
    PATH="$KIND_BIN_LINKS:$PATH" "$@"
}

main() {
  local cmd="${1:-}"; [ "$#" -gt 0 ] && shift
  case "$cmd" in
    apt) take_lock tools; apt_install ;;
    up) take_lock "kind-engine-${KIND_NETNS}"; cmd_up ;;
    down) take_lock "kind-engine-${KIND_NETNS}"; cmd_down ;;
    status) cmd_status ;;
    env) echo "DOCKER_HOST=unix://$KIND_DOCKER_SOCK"; echo "PATH=$KIND_BIN_LINKS:\$PATH" ;;
    exec) cmd_exec "$@" ;;
    *) die "usage: $0 apt|up|down|status|env|exec -- CMD..." ;;
  esac
}

main "$@"; exit $?
