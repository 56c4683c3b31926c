#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, static checks, then the unit, database,
# fault and cluster tiers in that order: the cluster tier (e2e) on the local backend, then again
# on a kind cluster (e2e-kind), then two more kind up/down cycles that must leave the host as
# they found it (kind-host). Each phase prints its duration.
#   hack/test.sh              all tiers
#   hack/test.sh unit db      only those tiers (static checks run with any selection)
# Environment: DATABASE_URL to use an existing PostgreSQL for the db tier (default: a throwaway
# server the fixtures start; the fault tier always starts, restarts and stops its own);
# CRONTASK_E2E_BACKEND=local|kind|kubeconfig for the e2e tier (default local here; see
# hack/cluster/).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

tiers=("$@")
((${#tiers[@]})) || tiers=(unit db faults e2e e2e-kind kind-host)
suite_start=$(date +%s)
summary=()

phase() {
  local name=$1; shift
  local start; start=$(date +%s)
  echo "=== [$name] starting"
  "$@"
  local took=$(( $(date +%s) - start ))
  summary+=("$(printf '%-8s %5ss' "$name" "$took")")
  echo "=== [$name] done in ${took}s"
}

# pytest exits 5 when a selection collects nothing; a tier with no test is a failure here.
run_pytest() {
  .venv/bin/python -m pytest "$@"
}

static_checks() {
  .venv/bin/ruff check .
  .venv/bin/mypy
  .venv/bin/lint-imports
}

phase setup ./hack/setup.sh
# The cluster tier needs Kubernetes, etcd and helm built from source (cached after the first
# run); build them first so the unit tier's chart tests (helm lint/template) run too.
if [[ " ${tiers[*]} " == *" e2e"* || " ${tiers[*]} " == *" kind-host "* ]]; then
  phase tools ./hack/tools.sh
elif [[ " ${tiers[*]} " == *" unit "* ]]; then
  # promtool and the Prometheus Operator CRDs for the unit tier's alerting checks (cold: a few
  # minutes of Go build; warm: a second)
  phase tools ./hack/tools.sh monitoring
fi
phase static static_checks
for tier in "${tiers[@]}"; do
  case "$tier" in
    unit) phase unit run_pytest tests/unit ;;
    db) phase db run_pytest -m db tests/db ;;
    faults) phase faults run_pytest -m faults tests/faults ;;
    e2e) phase e2e env CRONTASK_E2E_BACKEND="${CRONTASK_E2E_BACKEND:-local}" ./hack/e2e.sh ;;
    e2e-kind)
      # everything kind needs, built here and cached (hack/kind/build.sh prints each build's time)
      phase kind-build sh -c './hack/kind/engine.sh apt && ./hack/kind/build.sh images'
      phase e2e-kind env CRONTASK_E2E_BACKEND=kind ./hack/e2e.sh ;;
    kind-host) phase kind-host ./hack/kind/host-state.sh cycles 2 ;;
    *) echo "unknown tier: $tier (unit, db, faults, e2e, e2e-kind, kind-host)" >&2; exit 2 ;;
  esac
done

echo "=== summary"
printf '%s\n' "${summary[@]}"
echo "total    $(( $(date +%s) - suite_start ))s"
