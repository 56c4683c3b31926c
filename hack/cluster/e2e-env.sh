#!/usr/bin/env bash
# Bring up the Kubernetes backend for the e2e suite and print what the suite needs as
# shell assignments (eval-able, also written to $CRONTASK_E2E_ENV_FILE when set):
#   KUBECONFIG, CRONTASK_JOBS_IMAGE, CRONTASK_OPERATOR_IMAGE, DATABASE_URL,
#   CRONTASK_E2E_BACKEND, CRONTASK_E2E_EXEC (prefix to run a command where the
#   cluster's addresses are reachable; empty when they are reachable from here)
#
#   eval "$(hack/cluster/e2e-env.sh)"
#   $CRONTASK_E2E_EXEC pytest -m e2e tests/e2e
#
# CRONTASK_E2E_BACKEND:
#   local       hack/tools.sh + hack/images.sh + hack/cluster/cluster.sh up: a real node built
#               from upstream binaries, in a network namespace here.
#   kind        hack/kind/cluster.sh up: a kind cluster on Debian's Docker engine, run by the
#               project in a network namespace of its own, every image built here (no
#               registry). PostgreSQL runs in that namespace too.
#   kubeconfig  an existing cluster: KUBECONFIG must be set, images must already be
#               available to its nodes (CRONTASK_JOBS_IMAGE / CRONTASK_OPERATOR_IMAGE), and
#               DATABASE_URL should name a PostgreSQL its pods reach; without it a throwaway
#               PostgreSQL ($CRONTASK_E2E_POSTGRES_IMAGE, default postgres:15, pulled by the
#               cluster) is deployed in namespace crontask-e2e-db and its in-cluster URL
#               exported (pods can use it; a test process outside the cluster cannot).
#   Unset: kind when this host has a Docker engine of its own (`docker info` answers) and a
#   `kind` on PATH, the tools of a user who runs kind; local otherwise. (The kind backend
#   never uses that engine: it starts its own, isolated one.)
#   `hack/cluster/e2e-env.sh --backend` prints the choice and starts nothing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$HERE/../lib.sh"

JOBS_IMAGE="${CRONTASK_JOBS_IMAGE:-crontask-jobs:dev}"
OPERATOR_IMAGE="${CRONTASK_OPERATOR_IMAGE:-crontask-operator:dev}"

default_backend() {
  if command -v kind >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 \
     && timeout 20 docker info >/dev/null 2>&1; then
    echo kind
  else
    echo local
  fi
}

# deploy_postgres KUBECONFIG: a throwaway PostgreSQL in the cluster (for kubeconfig when
# DATABASE_URL is not given); prints the in-cluster DATABASE_URL. Needs the image to be
# pullable by the cluster, so it is not used on the build machine (no registry).
deploy_postgres() {
  local kc="$1" ns=crontask-e2e-db pw image="${CRONTASK_E2E_POSTGRES_IMAGE:-postgres:15}"
  kubectl --kubeconfig "$kc" create namespace "$ns" --dry-run=client -o yaml \
    | kubectl --kubeconfig "$kc" apply -f - >&2
  if ! kubectl --kubeconfig "$kc" -n "$ns" get secret crontask-db >/dev/null 2>&1; then
    kubectl --kubeconfig "$kc" -n "$ns" create secret generic crontask-db \
      --from-literal=password="$(openssl rand -hex 16)" >&2
  fi
  pw="$(kubectl --kubeconfig "$kc" -n "$ns" get secret crontask-db -o jsonpath='{.data.password}' | base64 -d)"
  kubectl --kubeconfig "$kc" -n "$ns" apply -f - >&2 <<MANIFEST
apiVersion: apps/v1
kind: Deployment
metadata: {name: crontask-db}
spec:
  replicas: 1
  selector: {matchLabels: {app: crontask-db}}
  template:
    metadata: {labels: {app: crontask-db}}
    spec:
      containers:
      - name: postgres
        image: ${image}
        env:
        - {name: POSTGRES_USER, value: crontask}
        - {name: POSTGRES_DB, value: crontask}
        - {name: POSTGRES_INITDB_ARGS, value: "--auth-host=scram-sha-256"}
        - name: POSTGRES_PASSWORD
          valueFrom: {secretKeyRef: {name: crontask-db, key: password}}
        ports: [{containerPort: 5432}]
        readinessProbe:
          exec: {command: [pg_isready, -U, crontask, -d, crontask]}
          periodSeconds: 2
        volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: crontask-db}
spec:
  selector: {app: crontask-db}
  ports: [{port: 5432, targetPort: 5432}]
MANIFEST
  kubectl --kubeconfig "$kc" -n "$ns" rollout status deploy/crontask-db --timeout=300s >&2
  echo "postgresql://crontask:${pw}@crontask-db.${ns}.svc.cluster.local:5432/crontask"
}

BACKEND="${CRONTASK_E2E_BACKEND:-$(default_backend)}"
if [ "${1:-}" = --backend ]; then echo "$BACKEND"; exit 0; fi
out=()

case "$BACKEND" in
  local)
    "$CRONTASK_ROOT/hack/tools.sh" >&2
    CRONTASK_JOBS_IMAGE="$JOBS_IMAGE" CRONTASK_OPERATOR_IMAGE="$OPERATOR_IMAGE" \
      "$CRONTASK_ROOT/hack/images.sh" >&2
    "$HERE/cluster.sh" up >&2
    # import again in case images changed while the cluster was already up
    CRONTASK_JOBS_IMAGE="$JOBS_IMAGE" CRONTASK_OPERATOR_IMAGE="$OPERATOR_IMAGE" \
      "$CRONTASK_ROOT/hack/images.sh" import >&2
    out+=("KUBECONFIG=$("$HERE/cluster.sh" kubeconfig)")
    out+=("DATABASE_URL=${DATABASE_URL:-$("$HERE/cluster.sh" database-url)}")
    out+=("CRONTASK_E2E_EXEC=$HERE/cluster.sh exec --")
    ;;
  kind)
    "$CRONTASK_ROOT/hack/kind/cluster.sh" up >&2
    out+=("KUBECONFIG=$("$CRONTASK_ROOT/hack/kind/cluster.sh" kubeconfig)")
    out+=("DATABASE_URL=${DATABASE_URL:-$("$CRONTASK_ROOT/hack/kind/cluster.sh" database-url)}")
    out+=("CRONTASK_E2E_EXEC=$CRONTASK_ROOT/hack/kind/cluster.sh exec --")
    ;;
  kubeconfig)
    [ -n "${KUBECONFIG:-}" ] || die "backend kubeconfig: set KUBECONFIG"
    db="${DATABASE_URL:-$(deploy_postgres "$KUBECONFIG")}"
    out+=("KUBECONFIG=$KUBECONFIG" "DATABASE_URL=$db" "CRONTASK_E2E_EXEC=")
    ;;
  *) die "CRONTASK_E2E_BACKEND must be local, kind or kubeconfig (got $BACKEND)" ;;
esac

out+=("CRONTASK_E2E_BACKEND=$BACKEND" "CRONTASK_JOBS_IMAGE=$JOBS_IMAGE" "CRONTASK_OPERATOR_IMAGE=$OPERATOR_IMAGE")
for line in "${out[@]}"; do printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"; done | tee "${CRONTASK_E2E_ENV_FILE:-/dev/null}"
