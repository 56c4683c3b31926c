#!/usr/bin/env bash
# Smoke test of the local cluster (hack/cluster/cluster.sh up first):
#  1. the node is Ready;
#  2. in a namespace enforcing the "restricted" Pod Security level, a Pod of the jobs
#     image (imagePullPolicy Never, non-root, read-only root, no capabilities, seccomp
#     RuntimeDefault) reaches the apiserver through the `kubernetes` Service IP (an
#     authenticated GET /version with its service-account token) and PostgreSQL (a
#     psycopg login with DATABASE_URL from a Secret);
#  3. a CronJob made with `kubectl create cronjob` runs: `kubectl create job --from`
#     completes, and the CronJob controller schedules a Job by itself;
#  4. deleting the CronJob garbage-collects its Jobs and their Pods (ownerReferences).
# Usage: hack/cluster/smoke.sh   (runs itself inside the cluster's netns)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "${1:-}" != --inside ]; then
  exec "$HERE/cluster.sh" exec -- bash "$HERE/smoke.sh" --inside
fi

JOBS_IMAGE="${CRONTASK_JOBS_IMAGE:-crontask-jobs:dev}"
NS_R=crontask-smoke-restricted
NS_B=crontask-smoke-batch
T0=$(date +%s)
step() { printf '[%s +%ss] %s\n' "$(date +%T)" "$(( $(date +%s) - T0 ))" "$*"; }
cleanup() { kubectl delete ns "$NS_R" "$NS_B" --ignore-not-found --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "1. node Ready"
kubectl wait --for=condition=Ready node --all --timeout=60s
kubectl get nodes -o wide
kubectl version

step "2. restricted namespace, jobs image pod -> apiserver (Service IP) + PostgreSQL"
kubectl delete ns "$NS_R" "$NS_B" --ignore-not-found --wait=true >/dev/null
kubectl create ns "$NS_R"
kubectl label ns "$NS_R" pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest
kubectl -n "$NS_R" create secret generic db --from-literal=DATABASE_URL="$DATABASE_URL"
kubectl -n "$NS_R" create rolebinding sa-view --clusterrole=view --serviceaccount="$NS_R:default" >/dev/null
cat <<EOF | kubectl apply -f -
apiVersion: v1
kind: Pod
metadata: {name: probe, namespace: $NS_R}
spec:
  restartPolicy: Never
  automountServiceAccountToken: true
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: probe
    image: $JOBS_IMAGE
    imagePullPolicy: Never
    envFrom: [{secretRef: {name: db}}]
    command: ["python3", "-c"]
    args:
    - |
      import json, os, socket, ssl, urllib.request
      host, port = os.environ["KUBERNETES_SERVICE_HOST"], int(os.environ["KUBERNETES_SERVICE_PORT"])
      socket.create_connection((host, port), timeout=5).close()
      sa = "/var/run/secrets/kubernetes.io/serviceaccount"
      ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
      req = urllib.request.Request(f"https://{host}:{port}/version",
                                   headers={"Authorization": "Bearer " + open(f"{sa}/token").read()})
      v = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
      print("apiserver via Service", host, "->", v["gitVersion"])
      req = urllib.request.Request(f"https://{host}:{port}/api/v1/namespaces/{open(f'{sa}/namespace').read()}/pods",
                                   headers={"Authorization": "Bearer " + open(f"{sa}/token").read()})
      print("pods visible to the SA:", [p["metadata"]["name"] for p in json.load(urllib.request.urlopen(req, context=ctx))["items"]])
      import psycopg
      url = os.environ["DATABASE_URL"]
      with psycopg.connect(url, connect_timeout=5) as c:
          print("postgres:", c.execute("select current_user, version()").fetchone()[1].split(",")[0])
      open("/tmp/ok", "w").write("writable /tmp")
      try:
          open("/opt/crontask/x", "w")
          raise SystemExit("root filesystem is writable!")
      except OSError as e:
          print("read-only root as expected:", e.strerror)
      print("uid", os.getuid(), "PROBE-OK")
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
    volumeMounts: [{name: tmp, mountPath: /tmp}]
  volumes: [{name: tmp, emptyDir: {}}]
EOF
kubectl -n "$NS_R" wait --for=jsonpath='{.status.phase}'=Succeeded pod/probe --timeout=120s \
  || { kubectl -n "$NS_R" describe pod probe; kubectl -n "$NS_R" logs probe || true; exit 1; }
kubectl -n "$NS_R" logs probe
kubectl -n "$NS_R" logs probe | grep -q PROBE-OK

step "3. CronJob: create job --from completes; the controller schedules one itself"
kubectl create ns "$NS_B"
kubectl -n "$NS_B" create cronjob hello --image="$JOBS_IMAGE" --schedule='*/1 * * * *' \
  -- python3 -c 'import datetime; print("hello from a CronJob at", datetime.datetime.now())'
kubectl -n "$NS_B" create job manual --from=cronjob/hello
kubectl -n "$NS_B" wait --for=condition=complete job/manual --timeout=120s \
  || { kubectl -n "$NS_B" describe job manual; kubectl -n "$NS_B" describe pods; exit 1; }
kubectl -n "$NS_B" logs job/manual
step "   waiting (<= 90 s) for the CronJob controller to run a scheduled Job"
for _ in $(seq 1 90); do
  n=$(kubectl -n "$NS_B" get jobs -o json | python3 -c 'import json,sys; print(sum(1 for j in json.load(sys.stdin)["items"] if j["metadata"]["name"].startswith("hello-") and j.get("status",{}).get("succeeded")))')
  [ "$n" -ge 1 ] && break
  sleep 1
done
[ "$n" -ge 1 ] || { kubectl -n "$NS_B" get cronjob,jobs,pods -o wide; echo "no scheduled Job completed"; exit 1; }
kubectl -n "$NS_B" get cronjob,jobs,pods
kubectl -n "$NS_B" get jobs -o jsonpath='{range .items[*]}{.metadata.name} owner={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}{"\n"}{end}'

step "4. delete the CronJob: the garbage collector removes its Jobs and Pods"
echo "before: $(kubectl -n "$NS_B" get jobs -o name | wc -l) jobs, $(kubectl -n "$NS_B" get pods -o name | wc -l) pods"
kubectl -n "$NS_B" delete cronjob hello
for _ in $(seq 1 60); do
  left=$(kubectl -n "$NS_B" get jobs,pods -o name | wc -l)
  [ "$left" -eq 0 ] && break
  sleep 1
done
kubectl -n "$NS_B" get jobs,pods
[ "$left" -eq 0 ] || { echo "garbage collection left $left objects"; exit 1; }

step "SMOKE OK"
