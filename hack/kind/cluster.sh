#!/usr/bin/env bash
# A kind cluster for crontask's e2e tests, built and run entirely on this machine.
#
#   hack/kind/cluster.sh up            tools, images, engine, node image, PostgreSQL, cluster
#                                      (idempotent: a healthy cluster is left as it is)
#   hack/kind/cluster.sh down          delete the cluster, stop PostgreSQL and the engine;
#                                      leaves the host as `up` found it (hack/kind/host-state.sh)
#   hack/kind/cluster.sh status        engine, nodes, PostgreSQL
#   hack/kind/cluster.sh kubeconfig    print the kubeconfig path (server https://127.0.0.1:6443,
#                                      reachable inside the namespace only)
#   hack/kind/cluster.sh database-url  print the PostgreSQL URL pods and tests use
#   hack/kind/cluster.sh load-images   (re)build crontask's images and load them into the nodes
#   hack/kind/cluster.sh logs DIR      `kind export logs`, dockerd's and PostgreSQL's logs
#   hack/kind/cluster.sh exec -- CMD   run CMD inside the namespace with KUBECONFIG,
#                                      DATABASE_URL and PATH (kubectl, helm, kind, docker) set
#
# Everything lives in the network namespace $KIND_NETNS (hack/kind/engine.sh): the engine,
# the kind node (the API server is published on 127.0.0.1:6443 of that namespace), and
# Debian's PostgreSQL listening on the gateway of the engine's "kind" network
# ($KIND_GATEWAY:5432), which pods reach through their node and tests reach directly.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HERE/../lib.sh"
# shellcheck source=hack/kind/lib.sh
source "$HERE/lib.sh"
# shellcheck source=hack/cluster/netns-postgres.sh
source "$HERE/../cluster/netns-postgres.sh"

JOBS_IMAGE="${CRONTASK_JOBS_IMAGE:-crontask-jobs:dev}"
OPERATOR_IMAGE="${CRONTASK_OPERATOR_IMAGE:-crontask-operator:dev}"
PG_DIR="${KIND_STATE}/postgres"
KIND_CONFIG="${KIND_STATE}/kind-config.yaml"
# The API server's audit policy and log, on this host (mounted into the node, and from the
# node into the API server's static pod), so tests read the log as on the local backend.
AUDIT_DIR="${KIND_STATE}/audit"
AUDIT_LOG="${AUDIT_DIR}/log/audit.log"
TOOLS_BIN="$(tools_bin_dir)"

# kind_cmd ARGS...: kind inside the namespace, talking to our engine with Debian's client
kind_cmd() {
  kind_in_ns env PATH="$(kind_path)" DOCKER_HOST="unix://${KIND_DOCKER_SOCK}" kind "$@"
}
kc() { kind_in_ns "$TOOLS_BIN/kubectl" --kubeconfig "$KIND_KUBECONFIG" "$@"; }

cluster_exists() { kind_cmd get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"; }
node_ready() {
  [ -s "$KIND_KUBECONFIG" ] && kc wait --for=condition=Ready node --all --timeout=5s >/dev/null 2>&1
}

write_kind_config() {
  local node_image="$1"
  {
    cat <<EOF
# written by hack/kind/cluster.sh
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: ${KIND_CLUSTER_NAME}
networking:
  # published on the loopback of the cluster's network namespace, nowhere else
  apiServerAddress: 127.0.0.1
  apiServerPort: 6443
  podSubnet: ${KIND_POD_SUBNET}
nodes:
- role: control-plane
  image: ${node_image}
  extraMounts:
  - {hostPath: "${AUDIT_DIR}/policy", containerPath: /etc/crontask-audit, readOnly: true}
  - {hostPath: "${AUDIT_DIR}/log", containerPath: /var/log/crontask-audit}
# The local backend's API server settings the tests rely on: the audit log (RBAC derived from
# it) and OwnerReferencesPermissionEnforcement (blockOwnerDeletion needs crontasks/finalizers).
# kind 0.33 writes kubeadm's v1beta3 ClusterConfiguration for Kubernetes 1.34 (extraArgs a map).
kubeadmConfigPatches:
- |
  kind: ClusterConfiguration
  apiServer:
    extraArgs:
      enable-admission-plugins: NodeRestriction,OwnerReferencesPermissionEnforcement
      audit-policy-file: /etc/crontask-audit/audit-policy.yaml
      audit-log-path: /var/log/crontask-audit/audit.log
      audit-log-maxsize: "200"
      audit-log-maxbackup: "1"
    extraVolumes:
    - {name: audit-policy, hostPath: /etc/crontask-audit, mountPath: /etc/crontask-audit,
       readOnly: true, pathType: Directory}
    - {name: audit-log, hostPath: /var/log/crontask-audit, mountPath: /var/log/crontask-audit,
       pathType: DirectoryOrCreate}
EOF
    if host_lacks_sys_resource; then
      # Without CAP_SYS_RESOURCE nothing may lower an oom_score_adj: containerd must keep pods
      # at or above its own, as kind does for rootless nodes (its entrypoint sets this there).
      cat <<'EOF'
containerdConfigPatches:
- |-
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true
EOF
    fi
  } > "$KIND_CONFIG"
}

load_images() {
  local ref a
  CRONTASK_JOBS_IMAGE="$JOBS_IMAGE" CRONTASK_OPERATOR_IMAGE="$OPERATOR_IMAGE" \
    "$CRONTASK_ROOT/hack/images.sh" project >&2
  for a in jobs operator; do
    local archive="${CRONTASK_CACHE}/images/archives/${a}.oci.tar"
    ref="$(cat "$archive.ref")"
    log "kind load image-archive $(basename "$archive") ($ref)"
    kind_cmd load image-archive --name "$KIND_CLUSTER_NAME" "$archive" >&2
  done
}

start_postgres() {
  # samehost: the tests, inside the namespace, connect from one of its own addresses
  netns_pg_start "$KIND_NETNS_PATH" "$PG_DIR" "$KIND_LOGS" "$KIND_GATEWAY" samehost "$KIND_SUBNET" "$KIND_POD_SUBNET" \
    || { tail -n 20 "$KIND_LOGS/postgres.log" "$KIND_LOGS/postgres-init.log" >&2 2>/dev/null; die "PostgreSQL did not start"; }
}

healthy() {
  [ -e "$KIND_NETNS_PATH" ] && kind_docker info >/dev/null 2>&1 && cluster_exists && node_ready \
    && netns_pg_running "$KIND_NETNS_PATH" "$PG_DIR"
}

cmd_up() {
  local t0 node_image
  t0=$(date +%s)
  [ "$(id -u)" = 0 ] || die "must run as root"
  if healthy; then
    log "kind cluster $KIND_CLUSTER_NAME already up and healthy"
  else
    phase_begin "tools (hack/tools.sh, hack/kind/engine.sh apt)"
    "$CRONTASK_ROOT/hack/tools.sh" >&2
    "$HERE/engine.sh" apt >&2
    phase_end
    phase_begin "kind artefacts (hack/kind/build.sh images)"; "$HERE/build.sh" images >&2; phase_end
    phase_begin "engine (hack/kind/engine.sh up)"; "$HERE/engine.sh" up >&2; phase_end
    phase_begin "node image (hack/kind/build.sh node)"; "$HERE/build.sh" node >&2; phase_end
    node_image="$("$HERE/build.sh" names | sed -n 's/^NODE_IMAGE=//p')"
    phase_begin "postgresql on ${KIND_GATEWAY}"; start_postgres; phase_end
    if ! cluster_exists; then
      # a new cluster starts a new audit log: no request of an earlier cluster's operator
      rm -rf "$AUDIT_DIR"
      mkdir -p "$AUDIT_DIR/policy" "$AUDIT_DIR/log"
      cp "$CRONTASK_ROOT/hack/cluster/audit-policy.yaml" "$AUDIT_DIR/policy/audit-policy.yaml"
      write_kind_config "$node_image"
      phase_begin "kind create cluster ($node_image)"
      kind_cmd create cluster --config "$KIND_CONFIG" --kubeconfig "$KIND_KUBECONFIG" --wait 5m >&2 \
        || die "kind create cluster failed: hack/kind/cluster.sh logs DIR keeps the node's logs"
      phase_end
    fi
    phase_begin "node Ready"
    local _
    for _ in $(seq 1 120); do node_ready && break; sleep 1; done
    node_ready || die "node not Ready"
    phase_end
  fi
  phase_begin "crontask images into the node"; load_images; phase_end
  phase_summary
  log "kind cluster up in $(( $(date +%s) - t0 ))s: KUBECONFIG=$KIND_KUBECONFIG (use hack/kind/cluster.sh exec --)"
}

cmd_down() {
  local t0; t0=$(date +%s)
  if [ -e "$KIND_NETNS_PATH" ] && kind_docker info >/dev/null 2>&1 && cluster_exists; then
    phase_begin "kind delete cluster"; kind_cmd delete cluster --name "$KIND_CLUSTER_NAME" --kubeconfig "$KIND_KUBECONFIG" >&2 || true; phase_end
  fi
  phase_begin "postgresql"; netns_pg_stop "$KIND_NETNS_PATH" "$PG_DIR"; phase_end
  "$HERE/engine.sh" down >&2
  log "kind backend down in $(( $(date +%s) - t0 ))s"
}

cmd_status() {
  "$HERE/engine.sh" status || return 1
  if netns_pg_running "$KIND_NETNS_PATH" "$PG_DIR"; then echo "postgresql: running on ${KIND_GATEWAY}"; else echo "postgresql: not running"; fi
  cluster_exists && kc get nodes -o wide
}

cmd_logs() {
  local dest="${1:?usage: cluster.sh logs DIR}"
  mkdir -p "$dest"
  [ -d "$KIND_LOGS" ] && cp -a "$KIND_LOGS"/. "$dest"/
  if [ -e "$KIND_NETNS_PATH" ] && kind_docker info >/dev/null 2>&1 && cluster_exists; then
    kind_cmd export logs --name "$KIND_CLUSTER_NAME" "$dest/kind" >/dev/null 2>&1 || true
    kc get all,events -A -o wide > "$dest/cluster-resources.txt" 2>&1 || true
  fi
  log "logs copied to $dest"
}

cmd_exec() {
  [ "${1:-}" = "--" ] && shift
  [ "$#" -gt 0 ] || die "usage: $0 exec -- CMD..."
  [ -e "$KIND_NETNS_PATH" ] || die "kind backend is not up (no netns $KIND_NETNS)"
  local dburl=""
  [ -s "$PG_DIR/database-url" ] && dburl="$(cat "$PG_DIR/database-url")"
  exec nsenter --net="$KIND_NETNS_PATH" -- env KUBECONFIG="$KIND_KUBECONFIG" DATABASE_URL="$dburl" \
    CRONTASK_E2E_DATABASE_URL="$dburl" DOCKER_HOST="unix://${KIND_DOCKER_SOCK}" \
    CRONTASK_AUDIT_LOG="$AUDIT_LOG" \
    PATH="$TOOLS_BIN:$(kind_path)" "$@"
}

main() {
  local cmd="${1:-}"; [ "$#" -gt 0 ] && shift
  case "$cmd" in
    up) take_lock "kind-cluster-${KIND_NETNS}"; cmd_up ;;
    down) take_lock "kind-cluster-${KIND_NETNS}"; cmd_down ;;
    status) cmd_status ;;
    kubeconfig) echo "$KIND_KUBECONFIG" ;;
    database-url) cat "$PG_DIR/database-url" ;;
    load-images) load_images ;;
    logs) cmd_logs "$@" ;;
    exec) cmd_exec "$@" ;;
    *) die "usage: $0 up|down|status|kubeconfig|database-url|load-images|logs DIR|exec -- CMD..." ;;
  esac
}

main "$@"; exit $?
