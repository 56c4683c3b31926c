#!/usr/bin/env bash
# A real single-node Kubernetes for crontask's e2e tests, from upstream binaries, on
# this host, modelled on kubernetes/hack/local-up-cluster.sh.
#
#   hack/cluster/cluster.sh up            start (idempotent; repairs dead components)
#   hack/cluster/cluster.sh down          stop and remove everything `up` made
#   hack/cluster/cluster.sh status        component and node status
#   hack/cluster/cluster.sh kubeconfig    print the admin kubeconfig path
#   hack/cluster/cluster.sh database-url  print the PostgreSQL URL for pods
#   hack/cluster/cluster.sh logs DIR      copy every component log into DIR
#   hack/cluster/cluster.sh restart NAME [--kill]
#                                         stop one component (SIGTERM, or SIGKILL with --kill)
#                                         and start it again as `up` does (the chaos tier)
#   hack/cluster/cluster.sh exec -- CMD   run CMD inside the cluster's network namespace
#                                         with KUBECONFIG, DATABASE_URL and PATH set
#
# Layout. Everything (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kube-proxy, containerd and a PostgreSQL server) runs inside the network
# namespace $NETNS (default "crontask") that this script creates. It has a loopback,
# a veth pair whose both ends stay inside (node0 carries the node address $NODE_IP),
# the pods' bridge cni0 (made by the CNI bridge plugin), and NO link to the host: the
# default route is a blackhole, so no packet can leave the machine. Processes
# are started with `nsenter --net=` (not `ip netns exec`, which also unshares the mount
# namespace: kubelet and containerd must see each other's mounts).
# State (PKI, kubeconfigs, etcd, containerd root/state, kubelet root, postgres data,
# logs, pid files) lives in $CRONTASK_CLUSTER_STATE (default /var/lib/crontask/cluster)
# and is removed by `down`. Files written there that tests use:
#   admin.kubeconfig   (server https://$NODE_IP:6443, reachable inside the netns only)
#   database-url       postgresql://crontask:<generated>@$NODE_IP:5432/crontask
#   env                shell lines: KUBECONFIG=..., DATABASE_URL=..., NODE_IP=...
#
# Versions, and why:
# - Kubernetes v1.34.4: the host has cgroup v1 (hybrid). 1.34 still runs on cgroup v1
#   without opt-out; from 1.35 the kubelet refuses cgroup v1 unless failCgroupV1: false
#   (KEP-5573). 1.34 still supports containerd 1.6/1.7 (containerd 1.x support is
#   deprecated, removal planned for 1.38), and Debian 12's containerd is 1.6.20.
# - containerd 1.6.20 + runc 1.1.5 from Debian: the only container runtime available
#   here; CRI v1 is served by containerd >= 1.6, which kubelet >= 1.26 requires.
# - etcd v3.6.16 (built from its Go module): Kubernetes >= 1.31 needs etcd >= 3.4.29 /
#   3.5.11 (and 3.4.31 / 3.5.13 for RequestWatchProgress); Debian's 3.4.23 is too old.
#   kubeadm pairs 1.34 with etcd 3.6.x; 3.6.16 is the newest 3.6 patch at pinning time.
# - helm v3.19.5: newest 3.x built against k8s 0.34 libraries (3.20+ moved to 0.35+),
#   builds with go 1.26.
# - cgroupDriver cgroupfs: PID 1 is not systemd. Pods live under cgroupRoot /$NETNS (/crontask)
#   in every v1 hierarchy, so cleanup touches only our cgroups.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HERE/../lib.sh"
# shellcheck source=hack/cluster/netns-postgres.sh
source "$HERE/netns-postgres.sh"

NETNS="${CRONTASK_NETNS:-crontask}"
NETNS_PATH="/run/netns/${NETNS}"
STATE="${CRONTASK_CLUSTER_STATE:-/var/lib/crontask/cluster}"
NODE_NAME="${CRONTASK_NODE_NAME:-crontask-node}"
NODE_IP="${CRONTASK_NODE_IP:-10.199.0.1}"
NODE_CIDR_PREFIX=24
POD_CIDR="${CRONTASK_POD_CIDR:-10.200.0.0/24}"
POD_GW="${POD_CIDR%.*}.1"
SERVICE_CIDR="${CRONTASK_SERVICE_CIDR:-10.201.0.0/24}"
KUBERNETES_SVC_IP="${SERVICE_CIDR%.*}.1"
PAUSE_IMAGE="${CRONTASK_PAUSE_IMAGE:-localhost/crontask-pause:3.10.1}"
# Derived from the netns name, so that clusters with different CRONTASK_NETNS and
# CRONTASK_CLUSTER_STATE can run side by side without touching each other's pods.
CNI_NETWORK="${NETNS}-pods"
CGROUP_ROOT="${NETNS}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
# CRONTASK_RUNC: OCI runtime binary for containerd (default runc; e.g. a debug wrapper)
START_TIMEOUT="${CRONTASK_START_TIMEOUT:-120}"

PKI="$STATE/pki"
LOGS="$STATE/logs"
RUN="$STATE/run"
CTRD_SOCK="$STATE/containerd/containerd.sock"
ADMIN_KUBECONFIG="$STATE/admin.kubeconfig"
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

BIN_DIR="$(tools_bin_dir)"
export PATH="$BIN_DIR:$PATH"

# write_if_changed FILE < CONTENT: replace FILE atomically, and only when its content
# differs (kube-proxy exits when its config file changes, even to the same content).
write_if_changed() {
  local f="$1" tmp
  tmp="$(mktemp "$f.XXXXXX")"
  cat > "$tmp"
  if cmp -s "$tmp" "$f"; then rm -f "$tmp"; else chmod 644 "$tmp"; mv -f "$tmp" "$f"; fi
}

in_ns() { nsenter --net="$NETNS_PATH" -- "$@"; }
kc() { in_ns kubectl --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

pid_of() { cat "$RUN/$1.pid" 2>/dev/null || true; }
alive() {
  local p; p="$(pid_of "$1")"
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && grep -qF -- "$STATE" "/proc/$p/cmdline" 2>/dev/null
}

fail_component() {  # fail_component NAME MESSAGE
  local name="$1" f="$LOGS/$1.log"
  printf '\n[%s] ERROR: component %s failed: %s\n' "$(_ct_ts)" "$name" "$2" >&2
  if [ -f "$f" ]; then
    # only this start's output: the log is appended to across restarts
    printf -- '----- last 40 lines of %s (this start) -----\n' "$f" >&2
    awk '/^===== .* start /{n=0; delete b} {b[n++]=$0} END{s=(n>40)?n-40:0; for(i=s;i<n;i++) print b[i]}' "$f" >&2
    printf -- '-----\n' >&2
  fi
  exit 1
}

# start NAME CMD... : start CMD in the netns in the background (new session), log to
# $LOGS/NAME.log, pid in $RUN/NAME.pid. No-op when it is already running.
start() {
  local name="$1"; shift
  if alive "$name"; then log "$name already running (pid $(pid_of "$name"))"; return 0; fi
  mkdir -p "$LOGS" "$RUN"
  printf '\n===== %s start %s\n%s\n' "$name" "$(date -Is)" "$*" >> "$LOGS/$name.log"
  setsid nsenter --net="$NETNS_PATH" -- "$@" >> "$LOGS/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$RUN/$name.pid"
  # alive() must not take a component not yet exec'd for one that exited (seen once, on
  # kube-proxy, with nothing in its log)
  wait_exec $! "$STATE"
}

wait_for() {  # wait_for NAME DESCRIPTION CMD... : poll CMD until it succeeds
  local name="$1" what="$2" t0; shift 2
  t0=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    if [ "$name" != - ] && [ -f "$RUN/$name.pid" ] && ! alive "$name"; then
      fail_component "$name" "process exited while waiting for: $what"
    fi
    if [ $(( $(date +%s) - t0 )) -ge "$START_TIMEOUT" ]; then
      fail_component "$name" "timed out after ${START_TIMEOUT}s waiting for: $what"
    fi
    sleep 0.5
  done
}

# ---- network namespace -------------------------------------------------------------
setup_netns() {
  if [ ! -e "$NETNS_PATH" ]; then
    # `ip netns add` turns /run/netns into a (shared) bind mount the first time; note
    # whether we caused that, so `down` can undo it.
    if ! mountpoint -q /run/netns 2>/dev/null; then : > "$RUN/made-run-netns-mount"; fi
    ip netns add "$NETNS"
  fi
  in_ns ip link set lo up
  # The node address sits on one end of a veth pair whose other end is also inside the
  # netns (this kernel has no "dummy" link type): a real, non-loopback interface that
  # leads nowhere.
  if ! in_ns ip link show node0 >/dev/null 2>&1; then
    in_ns ip link add node0 type veth peer name node0-peer
  fi
  in_ns ip link set node0-peer up
  in_ns ip link set node0 up
  in_ns ip addr replace "${NODE_IP}/${NODE_CIDR_PREFIX}" dev node0
  # Everything not inside the netns is dropped by a blackhole default route (components
  # get explicit addresses, so none needs a gateway): nothing can leave the machine.
  in_ns ip route replace blackhole default
  in_ns sysctl -qw net.ipv4.ip_forward=1
  in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  # nothing outside the netns is reachable: assert there is no other interface
  local ifs
  ifs="$(in_ns ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -vxE 'lo|node0|node0-peer|cni0|veth.*' || true)"
  [ -z "$ifs" ] || die "unexpected interfaces in netns $NETNS: $ifs"
}

# ---- PKI ------------------------------------------------------------------------------
# sign NAME CN [O] [SAN] [serverAuth|clientAuth|both]
sign() {
  local name="$1" cn="$2" o="${3:-}" san="${4:-}" usage="${5:-clientAuth}" subj eku ext
  [ -s "$PKI/$name.crt" ] && return 0
  subj="/CN=${cn}"; [ -n "$o" ] && subj="/O=${o}${subj}"
  case "$usage" in
    serverAuth) eku=serverAuth ;; clientAuth) eku=clientAuth ;; both) eku="serverAuth,clientAuth" ;;
  esac
  ext="$PKI/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=${eku}"
    [ -n "$san" ] && echo "subjectAltName=${san}"
  } > "$ext"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

kubeconfig() {  # kubeconfig FILE CERTNAME USER
  local f="$1" cert="$2" user="$3"
  [ -s "$f" ] && return 0
  cat > "$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: crontask
  cluster:
    server: https://${NODE_IP}:6443
    certificate-authority: ${PKI}/ca.crt
users:
- name: ${user}
  user:
    client-certificate: ${PKI}/${cert}.crt
    client-key: ${PKI}/${cert}.key
contexts:
- name: crontask
  context: {cluster: crontask, user: ${user}, namespace: default}
current-context: crontask
EOF
  chmod 600 "$f"
}

setup_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  if [ ! -s "$PKI/ca.crt" ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=crontask-local-ca" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  sign apiserver kube-apiserver "" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:${NODE_IP},IP:${KUBERNETES_SVC_IP}" serverAuth
  sign apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" clientAuth
  sign admin crontask-admin system:masters "" clientAuth
  sign controller-manager system:kube-controller-manager "" "" clientAuth
  sign scheduler system:kube-scheduler "" "" clientAuth
  sign kubelet-client "system:node:${NODE_NAME}" system:nodes "" clientAuth
  sign kubelet-serving "system:node:${NODE_NAME}" system:nodes "DNS:${NODE_NAME},IP:${NODE_IP}" serverAuth
  sign kube-proxy system:kube-proxy "" "" clientAuth
  if [ ! -s "$PKI/sa.key" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  kubeconfig "$ADMIN_KUBECONFIG" admin crontask-admin
  kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager system:kube-controller-manager
  kubeconfig "$STATE/scheduler.kubeconfig" scheduler system:kube-scheduler
  kubeconfig "$STATE/kubelet.kubeconfig" kubelet-client "system:node:${NODE_NAME}"
  kubeconfig "$STATE/kube-proxy.kubeconfig" kube-proxy system:kube-proxy
}

# ---- containerd ------------------------------------------------------------------------
write_containerd_config() {
  mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/cni/ipam"
  write_if_changed "$STATE/containerd/config.toml" <<EOF
# containerd for the crontask local cluster only: own root, state, socket and CNI
# config, so any host containerd is left alone.
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
oom_score = 0

[grpc]
  address = "$CTRD_SOCK"

[ttrpc]
  address = "$STATE/containerd/containerd.sock.ttrpc"

[debug]
  address = "$STATE/containerd/debug.sock"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # root here lacks CAP_SYS_RESOURCE, so nothing may lower its oom_score_adj below
  # containerd's (0): without this, runc fails on the sandbox's -998 ("can't get final
  # child's PID from pipe").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/runc"
        BinaryName = "${CRONTASK_RUNC:-runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
EOF
  # bridge + host-local (+ portmap) for pods; containerd adds the loopback plugin for lo
  # itself. host-local keeps its leases under the state dir.
  write_if_changed "$STATE/cni/net.d/10-crontask.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "${CNI_NETWORK}",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "${POD_CIDR}", "gateway": "${POD_GW}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

ctr_() { ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }

start_containerd() {
  write_containerd_config
  start containerd containerd --config "$STATE/containerd/config.toml"
  wait_for containerd "containerd socket" ctr --address "$CTRD_SOCK" version
}

import_images() {
  "$CRONTASK_ROOT/hack/images.sh" pause >/dev/null
  CONTAINERD_ADDRESS="$CTRD_SOCK" "$CRONTASK_ROOT/hack/images.sh" import
  local imgs; imgs="$(ctr_ images ls -q)"
  grep -qxF "$PAUSE_IMAGE" <<<"$imgs" || die "pause image $PAUSE_IMAGE not in containerd"
}

# ---- etcd + control plane ----------------------------------------------------------------
start_etcd() {
  mkdir -p "$STATE/etcd"; chmod 700 "$STATE/etcd"
  start etcd etcd --name crontask --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster crontask=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --unsafe-no-fsync --log-level warn
  wait_for etcd "etcd /health" in_ns etcdctl --endpoints http://127.0.0.1:2379 endpoint health
}

# The API server's audit log (policy in audit-policy.yaml, which the kind backend uses too), so
# a test can derive the RBAC rules the operator really uses.
write_audit_policy() {
  write_if_changed "$STATE/audit-policy.yaml" < "$HERE/audit-policy.yaml"
}

start_apiserver() {
  write_audit_policy
  start kube-apiserver kube-apiserver \
    --audit-policy-file="$STATE/audit-policy.yaml" --audit-log-path="$LOGS/audit.log" \
    --audit-log-maxsize=200 --audit-log-maxbackup=1 \
    --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port=6443 \
    --etcd-servers=http://127.0.0.1:2379 \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,NodeRestriction,OwnerReferencesPermissionEnforcement,PodSecurity,Priority,RuntimeClass,ResourceQuota,StorageObjectInUseProtection,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,CertificateApproval,CertificateSigning,CertificateSubjectRestriction,TaintNodesByCondition \
    --allow-privileged=false --profiling=false --enable-priority-and-fairness=true \
    --event-ttl=1h --v=1
  wait_for kube-apiserver "apiserver /readyz" kc get --raw /readyz
}

start_controller_manager() {
  start kube-controller-manager kube-controller-manager \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --controllers='*' --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=10257 --profiling=false --v=1
}

start_scheduler() {
  write_if_changed "$STATE/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $STATE/scheduler.kubeconfig
leaderElection:
  leaderElect: false
EOF
  start kube-scheduler kube-scheduler --config="$STATE/scheduler.yaml" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --v=1
}

# ---- node ----------------------------------------------------------------------------------
cgroup_hierarchies() {  # v1 hierarchies (and, with "all", the hybrid's cgroup2 too)
  if [ "${1:-}" = all ]; then
    awk '$3=="cgroup" || $3=="cgroup2" {print $2}' /proc/self/mounts
  else
    awk '$3=="cgroup"{print $2}' /proc/self/mounts
  fi
}

start_kubelet() {
  local h
  # cgroupRoot must exist in every v1 hierarchy before the kubelet starts.
  for h in $(cgroup_hierarchies); do mkdir -p "$h/$CGROUP_ROOT"; done
  mkdir -p "$STATE/kubelet"
  printf '# no cluster DNS here: pods use addresses\noptions ndots:1\n' | write_if_changed "$STATE/resolv.conf"
  write_if_changed "$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${PKI}/ca.crt}
authorization:
  mode: Webhook
tlsCertFile: ${PKI}/kubelet-serving.crt
tlsPrivateKeyFile: ${PKI}/kubelet-serving.key
rotateCertificates: false
serverTLSBootstrap: false
containerRuntimeEndpoint: unix://${CTRD_SOCK}
imageServiceEndpoint: unix://${CTRD_SOCK}
cgroupDriver: cgroupfs
cgroupRoot: /${CGROUP_ROOT}
failSwapOn: false
# images are imported, never pulled: keep image GC from removing them
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
resolvConf: ${STATE}/resolv.conf
# container logs under the state dir (the kubelet still symlinks them from the fixed
# /var/log/containers, which down cleans)
podLogsDir: ${STATE}/pod-logs
clusterDomain: cluster.local
maxPods: 50
serializeImagePulls: false
registerNode: true
hairpinMode: hairpin-veth
localStorageCapacityIsolation: true
protectKernelDefaults: false
makeIPTablesUtilChains: false
EOF
  start kubelet kubelet --config="$STATE/kubelet.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --oom-score-adj=0 --v=1
  wait_for kubelet "kubelet /healthz" in_ns curl -fsS http://127.0.0.1:10248/healthz
}

start_kube_proxy() {
  write_if_changed "$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $STATE/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: ${NODE_NAME}
clusterCIDR: ${POD_CIDR}
bindAddress: ${NODE_IP}
oomScoreAdj: 0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# leave host-wide conntrack sysctls alone (read-only inside a netns)
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  start kube-proxy kube-proxy --config="$STATE/kube-proxy.yaml" --v=1
  wait_for kube-proxy "kube-proxy /healthz" in_ns curl -fsS http://127.0.0.1:10256/healthz
}

node_ready() {
  [ "$(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

default_sa_ready() { kc -n default get serviceaccount default; }

# ---- PostgreSQL (hack/cluster/netns-postgres.sh) ------------------------------------------------
start_postgres() {
  netns_pg_start "$NETNS_PATH" "$STATE/postgres" "$LOGS" "$NODE_IP" "$POD_CIDR" "${NODE_IP}/32" \
    || fail_component postgres "PostgreSQL did not start (see $LOGS/postgres-init.log)"
  head -1 "$STATE/postgres/data/postmaster.pid" > "$RUN/postgres.pid"
  install -m 600 "$STATE/postgres/database-url" "$STATE/database-url"
}

write_env() {
  cat > "$STATE/env" <<EOF
KUBECONFIG=$ADMIN_KUBECONFIG
DATABASE_URL=$(cat "$STATE/database-url")
NODE_IP=$NODE_IP
KUBERNETES_SERVICE_IP=$KUBERNETES_SVC_IP
POD_CIDR=$POD_CIDR
CRONTASK_NETNS=$NETNS
CRONTASK_TOOLS_BIN=$BIN_DIR
CONTAINERD_ADDRESS=$CTRD_SOCK
CRONTASK_AUDIT_LOG=$LOGS/audit.log
EOF
  chmod 600 "$STATE/env"
}

# ---- commands -------------------------------------------------------------------------------
healthy() {
  [ -e "$NETNS_PATH" ] || return 1
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  [ -s "$STATE/database-url" ] || return 1
  in_ns runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STATE/postgres/data" status >/dev/null 2>&1 || return 1
  kc get --raw /readyz >/dev/null 2>&1 && node_ready
}

cmd_up() {
  local t0; t0=$(date +%s.%N)
  if healthy; then
    log "cluster already up and healthy"
    echo "KUBECONFIG=$ADMIN_KUBECONFIG"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "must run as root"
  [ -x "$BIN_DIR/kubelet" ] || die "binaries missing in $BIN_DIR: run hack/tools.sh first"
  local cmd
  for cmd in containerd runc nsenter iptables conntrack openssl "$PG_BIN/initdb" /usr/lib/cni/bridge; do
    command -v "$cmd" >/dev/null || die "$cmd missing: run hack/tools.sh apt"
  done
  mkdir -p "$STATE" "$LOGS" "$RUN"; chmod 755 "$STATE"
  phase_begin "network namespace $NETNS"; setup_netns; phase_end
  phase_begin "pki + kubeconfigs"; setup_pki; phase_end
  phase_begin "containerd"; start_containerd; phase_end
  phase_begin "images (pause + built archives)"; import_images; phase_end
  phase_begin "etcd"; start_etcd; phase_end
  phase_begin "postgresql"; start_postgres; phase_end
  phase_begin "kube-apiserver"; start_apiserver; phase_end
  phase_begin "controller-manager + scheduler"
  start_controller_manager; start_scheduler
  wait_for kube-controller-manager "controller-manager /healthz" in_ns curl -fsSk https://127.0.0.1:10257/healthz
  wait_for kube-scheduler "scheduler /healthz" in_ns curl -fsSk https://127.0.0.1:10259/healthz
  phase_end
  phase_begin "kubelet"; start_kubelet; phase_end
  phase_begin "kube-proxy"; start_kube_proxy; phase_end
  phase_begin "node Ready + default service account"
  wait_for kubelet "node $NODE_NAME Ready" node_ready
  wait_for kube-controller-manager "default service account" default_sa_ready
  phase_end
  write_env
  phase_summary
  log "cluster up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"
  echo "KUBECONFIG=$ADMIN_KUBECONFIG"
}

# pids of processes in our cgroup subtree (containers, pause)
cgroup_pids() {
  local h
  for h in $(cgroup_hierarchies all); do
    [ -d "$h/$CGROUP_ROOT" ] && find "$h/$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# pids whose command line mentions our state dir (containerd shims use our socket path)
state_pids() {
  local p
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [ "$p" = "$$" ] && continue
    tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$STATE/" && echo "$p"
  done
}

stop_pid() {  # stop_pid NAME PID
  local name="$1" p="$2"
  kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.25; done
  warn "$name (pid $p) did not stop on TERM; killing"
  kill -KILL "$p" 2>/dev/null || true
}

cmd_down() {
  local t0 c p ino nsinodes="" m
  t0=$(date +%s.%N)
  phase_begin "stop kubelet + kube-proxy + control plane"
  if alive kubelet; then stop_pid kubelet "$(pid_of kubelet)"; fi
  for c in kube-proxy kube-scheduler kube-controller-manager kube-apiserver; do
    if alive "$c"; then kill -TERM "$(pid_of "$c")" 2>/dev/null || true; fi
  done
  for c in kube-proxy kube-scheduler kube-controller-manager kube-apiserver; do
    if alive "$c"; then stop_pid "$c" "$(pid_of "$c")"; fi
  done
  phase_end
  phase_begin "stop containers"
  # remember the pods' network namespaces (bind-mounted by containerd under /run/netns)
  for p in $(cgroup_pids); do
    ino="$(stat -L -c %i "/proc/$p/ns/net" 2>/dev/null || true)"; [ -n "$ino" ] && nsinodes+=" $ino"
  done
  if alive containerd; then
    for c in $(ctr_ tasks ls -q 2>/dev/null || true); do
      ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
    done
    sleep 1
    for c in $(ctr_ tasks ls -q 2>/dev/null || true); do ctr_ tasks delete -f "$c" >/dev/null 2>&1 || true; done
  fi
  for p in $(cgroup_pids); do kill -KILL "$p" 2>/dev/null || true; done
  phase_end
  phase_begin "stop containerd, etcd, postgresql"
  if alive containerd; then stop_pid containerd "$(pid_of containerd)"; fi
  if [ -s "$STATE/postgres/data/PG_VERSION" ] && [ -e "$NETNS_PATH" ]; then
    in_ns runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STATE/postgres/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if alive postgres; then stop_pid postgres "$(pid_of postgres)"; fi
  if alive etcd; then stop_pid etcd "$(pid_of etcd)"; fi
  # leftovers: shims and anything else started with our state dir on its command line
  for p in $(state_pids); do stop_pid "leftover $(tr '\0' ' ' < /proc/"$p"/cmdline 2>/dev/null | cut -c1-60)" "$p"; done
  phase_end
  phase_begin "unmount + remove netns, cgroups, state"
  # pod netns bind mounts made by containerd's CRI under /run/netns (cni-*), ours only
  for m in /run/netns/cni-*; do
    [ -e "$m" ] || continue
    ino="$(stat -L -c %i "$m" 2>/dev/null || true)"
    if [ -n "$ino" ] && [[ " $nsinodes " == *" $ino "* ]]; then
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
      rm -f "$m"
    fi
  done
  # every mount below the state dir (kubelet volumes, overlay rootfs, shm), deepest first
  for m in $(awk -v s="$STATE/" 'index($5, s) == 1 {print $5}' /proc/self/mountinfo | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || warn "could not unmount $m"
  done
  if [ -e "$NETNS_PATH" ]; then ip netns del "$NETNS" || warn "ip netns del $NETNS failed"; fi
  if [ -e "$RUN/made-run-netns-mount" ] && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
    umount /run/netns 2>/dev/null && rmdir /run/netns 2>/dev/null || true
  fi
  local h d
  for h in $(cgroup_hierarchies all); do
    [ -d "$h/$CGROUP_ROOT" ] || continue
    find "$h/$CGROUP_ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null || warn "cgroup $h/$CGROUP_ROOT not fully removed"
  done
  # pods of ours that logged to the kubelet's default /var/log/pods (older state dirs)
  if [ -d "$STATE/kubelet/pods" ] && [ -d /var/log/pods ]; then
    for d in "$STATE"/kubelet/pods/*; do
      [ -e "$d" ] || continue
      rm -rf /var/log/pods/*_"$(basename "$d")"
      find /var/log/containers -maxdepth 1 -type l -lname "/var/log/pods/*_$(basename "$d")/*" -delete 2>/dev/null || true
    done
  fi
  # the kubelet's fixed /var/log/containers symlinks into our pod log dir
  find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete 2>/dev/null || true
  rmdir /var/log/containers /var/log/pods 2>/dev/null || true
  # libcni's result cache lives in /var/lib/cni regardless of our config: entries are
  # <network>-<sandbox id>-<ifname>, for our network and containerd's loopback one
  rm -f /var/lib/cni/results/"${CNI_NETWORK}"-* 2>/dev/null || true
  for d in "$STATE"/containerd/root/io.containerd.grpc.v1.cri/sandboxes/*; do
    [ -e "$d" ] || continue
    rm -f "/var/lib/cni/results/cni-loopback-$(basename "$d")-lo"
  done
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  # containerd 1.6 shims put their sockets under /run/containerd/s/<sha256(addr/ns/id)>
  if [ -d "$STATE/containerd/state/io.containerd.runtime.v2.task/k8s.io" ]; then
    for d in "$STATE"/containerd/state/io.containerd.runtime.v2.task/k8s.io/*; do
      [ -e "$d" ] || continue
      rm -f "/run/containerd/s/$(printf '%s' "$CTRD_SOCK/k8s.io/$(basename "$d")" | sha256sum | cut -d' ' -f1)"
    done
  fi
  # ctr and the shims use fixed dirs under /run/containerd; remove them when empty
  rmdir /run/containerd/s /run/containerd/fifo /run/containerd/runc/k8s.io /run/containerd/runc \
    /run/containerd 2>/dev/null || true
  if [ -d "$STATE" ]; then
    if [ -n "$(awk -v s="$STATE/" 'index($5, s) == 1' /proc/self/mountinfo)" ]; then
      warn "mounts remain below $STATE; not deleting it"
    else
      rm -rf "$STATE"
      rmdir "$(dirname "$STATE")" 2>/dev/null || true
    fi
  fi
  phase_end
  phase_summary
  log "cluster down in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"
}

cmd_status() {
  local c rc=0
  [ -e "$NETNS_PATH" ] && echo "netns $NETNS: present" || { echo "netns $NETNS: absent"; rc=1; }
  for c in "${COMPONENTS[@]}"; do
    if alive "$c"; then echo "$c: running (pid $(pid_of "$c"))"; else echo "$c: not running"; rc=1; fi
  done
  if [ -e "$NETNS_PATH" ] && [ -d "$STATE/postgres/data" ] && \
     in_ns runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STATE/postgres/data" status >/dev/null 2>&1; then
    echo "postgresql: running"
  else echo "postgresql: not running"; rc=1; fi
  if [ "$rc" = 0 ]; then kc get nodes -o wide || rc=1; fi
  return "$rc"
}

cmd_logs() {
  local dest="${1:?usage: cluster.sh logs DIR}"
  mkdir -p "$dest"
  [ -d "$LOGS" ] || { warn "no logs in $LOGS"; return 0; }
  cp -a "$LOGS"/. "$dest"/
  # container logs written by the kubelet
  if [ -d "$STATE/pod-logs" ]; then mkdir -p "$dest/pods"; cp -a "$STATE/pod-logs"/. "$dest/pods"/; fi
  if [ -e "$NETNS_PATH" ] && [ -s "$ADMIN_KUBECONFIG" ] && kc get --raw /readyz >/dev/null 2>&1; then
    kc get all,events -A -o wide > "$dest/cluster-resources.txt" 2>&1 || true
  fi
  log "logs copied to $dest"
}

# restart NAME [--kill]: one component down and up again, everything else untouched (what a
# crash, an upgrade or an OOM kill of that component looks like to the rest of the cluster).
cmd_restart() {
  local name="${1:-}" how="${2:-}" p
  case "$name" in
    etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy) ;;
    *) die "usage: cluster.sh restart etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy [--kill]" ;;
  esac
  alive "$name" || die "$name is not running"
  p="$(pid_of "$name")"
  log "restarting $name (pid $p, ${how:---term})"
  if [ "$how" = --kill ]; then kill -KILL "$p"; else stop_pid "$name" "$p"; fi
  while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
  case "$name" in
    etcd) start_etcd ;;
    kube-apiserver) start_apiserver ;;
    kube-controller-manager)
      start_controller_manager
      wait_for "$name" "controller-manager /healthz" in_ns curl -fsSk https://127.0.0.1:10257/healthz ;;
    kube-scheduler)
      start_scheduler
      wait_for "$name" "scheduler /healthz" in_ns curl -fsSk https://127.0.0.1:10259/healthz ;;
    kubelet) start_kubelet ;;
    kube-proxy) start_kube_proxy ;;
  esac
  log "$name is back (pid $(pid_of "$name"))"
}

cmd_exec() {
  [ "${1:-}" = "--" ] && shift
  [ "$#" -gt 0 ] || die "usage: cluster.sh exec -- CMD..."
  [ -e "$NETNS_PATH" ] || die "cluster is not up (no netns $NETNS)"
  local dburl=""
  [ -s "$STATE/database-url" ] && dburl="$(cat "$STATE/database-url")"
  exec nsenter --net="$NETNS_PATH" -- env KUBECONFIG="$ADMIN_KUBECONFIG" DATABASE_URL="$dburl" \
    CRONTASK_E2E_DATABASE_URL="$dburl" CONTAINERD_ADDRESS="$CTRD_SOCK" \
    CRONTASK_AUDIT_LOG="$LOGS/audit.log" PATH="$BIN_DIR:$PATH" "$@"
}

main() {
  local cmd="${1:-}"; [ "$#" -gt 0 ] && shift
  case "$cmd" in
    up) take_lock cluster; cmd_up ;;
    down) take_lock cluster; cmd_down ;;
    status) cmd_status ;;
    kubeconfig) echo "$ADMIN_KUBECONFIG" ;;
    database-url) cat "$STATE/database-url" ;;
    env) cat "$STATE/env" ;;
    logs) cmd_logs "$@" ;;
    exec) cmd_exec "$@" ;;
    restart) cmd_restart "$@" ;;
    *) die "usage: $0 up|down|status|kubeconfig|database-url|env|logs DIR|restart NAME [--kill]|exec -- CMD..." ;;
  esac
}

main "$@"; exit $?
