#!/usr/bin/env bash
# The part of hack/demo.sh that runs where the cluster is reachable (KUBECONFIG and
# DATABASE_URL set). Idempotent: running the demo again reinstalls and reruns.
set -euo pipefail
cd "$DEMO_REPO"
ns=$DEMO_NS
step() { echo; echo "=== [$(( $(date +%s) - DEMO_START ))s] $*"; }
image_args() {
  local component=$1 image=$2
  echo "--set $component.image.repository=${image%:*} --set $component.image.tag=${image##*:}"
}

step "namespace $ns, restricted Pod Security, and the database Secret"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace "$ns" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
kubectl create secret generic crontask-database -n "$ns" --from-literal=url="$DATABASE_URL" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "Secret crontask-database holds the database URL (never printed)"

step "helm upgrade --install crontask (migrations run as a pre-install hook)"
# shellcheck disable=SC2046
helm upgrade --install crontask charts/crontask -n "$ns" --wait --timeout 300s \
  $(image_args operator "$CRONTASK_OPERATOR_IMAGE") $(image_args jobs "$CRONTASK_JOBS_IMAGE") \
  --set operator.image.pullPolicy=Never --set jobs.image.pullPolicy=Never \
  --set "watch.namespaces={$ns}"
kubectl get deploy,pods -n "$ns"

step "demo data: users, stuck and idle conversations (plain SQL)"
psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f hack/demo-seed.sql
psql "$DATABASE_URL" -c "SELECT status, count(*) FROM conversations GROUP BY status ORDER BY 1"

step "kubectl apply -f examples/"
kubectl apply -n "$ns" -f examples/
for ct in recover decay process; do
  kubectl wait -n "$ns" "crontask/$ct" --for=condition=Ready --timeout=120s >/dev/null
done
kubectl get ct -n "$ns"
kubectl get cronjobs -n "$ns"

step "one run of each task, started by hand"
for ct in recover decay process; do
  cj=$(kubectl get ct "$ct" -n "$ns" -o jsonpath='{.status.cronJobName}')
  job="$ct-demo-$(date +%s)"
  kubectl create job "$job" -n "$ns" --from="cronjob/$cj" >/dev/null
  echo -n "$job: "
  for _ in $(seq 1 180); do
    seen=$(kubectl get ct "$ct" -n "$ns" -o jsonpath='{.status.lastRun.jobName}')
    [ "$seen" = "$job" ] && break
    sleep 1
  done
  kubectl get ct "$ct" -n "$ns" -o jsonpath='{.status.lastRun.outcome}{" "}{.status.lastRun.counts}{"\n"}'
done

step "kubectl get ct"
kubectl get ct -n "$ns"

step "kubectl describe ct process (the summarise stage failed for the conversation with no messages)"
kubectl describe ct process -n "$ns" | sed -n '/^Status:/,$p'

step "the full record in PostgreSQL: job_executions"
psql "$DATABASE_URL" -c "SELECT job_name, status, completed_at - started_at AS took,
  jsonb_path_query_first(result, '$.stage_errors') AS stage_errors FROM job_executions ORDER BY started_at"

echo
cluster=${DEMO_CLUSTER:-hack/cluster/cluster.sh}
echo "The cluster is still up. Look around with:"
echo "  $cluster exec -- kubectl get ct -n $ns"
echo "and take it down with: $cluster down"
