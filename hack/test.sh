#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, static checks, then the unit, database,
# fault and cluster (e2e) tiers in that order. Each phase prints its duration.
#   hack/test.sh              all tiers
#   hack/test.sh unit db      only those tiers (static checks run with any selection)
# Environment: DATABASE_URL to use an existing PostgreSQL for the db tier (default: a throwaway
# server the fixtures start; the fault tier always starts, restarts and stops its own);
# CRONTASK_E2E_BACKEND=local|kind|kubeconfig (see hack/cluster/).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

tiers=("$@")
((${#tiers[@]})) || tiers=(unit db faults e2e)
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
if [[ " ${tiers[*]} " == *" e2e "* ]]; then
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
    e2e) phase e2e ./hack/e2e.sh ;;
    *) echo "unknown tier: $tier (unit, db, faults, e2e)" >&2; exit 2 ;;
  esac
done

echo "=== summary"
printf '%s\n' "${summary[@]}"
echo "total    $(( $(date +%s) - suite_start ))s"
