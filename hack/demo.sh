#!/usr/bin/env bash
# The main job, on a fresh machine: a single-node Kubernetes, the chart installed with locally
# built images, the example CronTasks applied, demo data seeded with plain SQL, one run of each
# task started by hand, and the outcome as `kubectl get ct` and `kubectl describe ct` show it.
# The cluster is kind when this host already has a Docker engine and kind of its own (a kind
# user's machine), the local backend otherwise; CRONTASK_E2E_BACKEND=kind|local chooses (see
# hack/cluster/e2e-env.sh). It stays up afterwards:
#   hack/cluster/cluster.sh exec -- kubectl get ct -n crontask-demo     (kind: hack/kind/cluster.sh)
#   hack/cluster/cluster.sh down
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

ns=${CRONTASK_DEMO_NAMESPACE:-crontask-demo}
start=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - start ))s] $*"; }

step "set-up (Debian packages, Python virtualenv)"
./hack/setup.sh

step "cluster (backend $(./hack/cluster/e2e-env.sh --backend)), tools and images (the first run builds Kubernetes from source: tens of minutes)"
mkdir -p .artifacts
envfile=.artifacts/demo-env.sh
CRONTASK_E2E_ENV_FILE="$envfile" ./hack/cluster/e2e-env.sh >/dev/null
# shellcheck disable=SC1090
source "$envfile"
case "$CRONTASK_E2E_BACKEND" in
  kind) cluster_cmd=hack/kind/cluster.sh ;;
  *) cluster_cmd=hack/cluster/cluster.sh ;;
esac

# Everything below talks to the cluster, which may only be reachable inside its network namespace.
# shellcheck disable=SC2086
exec $CRONTASK_E2E_EXEC env DEMO_NS="$ns" DEMO_REPO="$repo" DEMO_START="$start" DEMO_CLUSTER="$cluster_cmd" \
  CRONTASK_JOBS_IMAGE="$CRONTASK_JOBS_IMAGE" CRONTASK_OPERATOR_IMAGE="$CRONTASK_OPERATOR_IMAGE" \
  bash "$repo/hack/demo-steps.sh"
