#!/usr/bin/env bash
# The cluster tier: bring up the chosen Kubernetes backend (hack/cluster/e2e-env.sh), run the
# operator's cluster tests and the e2e suite against it and, on the local backend, last, the
# chaos tier; keep component logs when a test fails, and take the cluster down again unless
# CRONTASK_E2E_KEEP=1.
#   hack/e2e.sh [pytest args]                       the default backend (see e2e-env.sh)
#   CRONTASK_E2E_BACKEND=kind hack/e2e.sh           the same tests on a kind cluster
# With the kind backend, the host's state (iptables rules, mounts, links, routes, sysctls,
# processes: hack/kind/host-state.sh) is recorded before `up` and must be the same after
# `down`, or the run fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

backend="${CRONTASK_E2E_BACKEND:-$(./hack/cluster/e2e-env.sh --backend)}"
export CRONTASK_E2E_BACKEND="$backend"
if [ "$backend" = local ]; then artifacts="$repo/.artifacts/e2e"; else artifacts="$repo/.artifacts/e2e-$backend"; fi
rm -rf "$artifacts"; mkdir -p "$artifacts"
envfile="$artifacts/env.sh"
keep="${CRONTASK_E2E_KEEP:-0}"

case "$backend" in
  local) cluster=./hack/cluster/cluster.sh ;;
  kind) cluster=./hack/kind/cluster.sh ;;
  *) cluster="" ;;
esac

# kind: remember the host as it is, when nothing of ours runs yet and we will take it down
host_before=""
if [ "$backend" = kind ] && [ "$keep" != 1 ] && ! ./hack/kind/engine.sh status >/dev/null 2>&1; then
  host_before="$artifacts/host-before.txt"
  ./hack/kind/host-state.sh snapshot "$host_before"
fi

torn_down=0
teardown() {
  [ "$torn_down" = 0 ] || return 0
  torn_down=1
  if [ -n "$cluster" ] && [ "$keep" != 1 ]; then
    echo "e2e: taking the $backend cluster down (CRONTASK_E2E_KEEP=1 keeps it)"
    "$cluster" down || { echo "e2e: cluster down failed" >&2; return 1; }
    if [ -n "$host_before" ]; then
      ./hack/kind/host-state.sh compare "$host_before" || return 1
    fi
  fi
}
trap teardown EXIT

start=$(date +%s)
echo "e2e: bringing up the backend ($backend)"
CRONTASK_E2E_ENV_FILE="$envfile" ./hack/cluster/e2e-env.sh >/dev/null
# shellcheck disable=SC1090
source "$envfile"
echo "e2e: backend $CRONTASK_E2E_BACKEND ready in $(( $(date +%s) - start ))s"

# suite ARGS...: one pytest run where the cluster is reachable
suite() {
  echo "e2e: pytest $*"
  # shellcheck disable=SC2086
  $CRONTASK_E2E_EXEC env CRONTASK_E2E=1 CRONTASK_E2E_ARTIFACTS="$artifacts" \
    "$repo/.venv/bin/python" -m pytest "$@"
}

rc=0
# every backend runs the same cluster and e2e suites; the chaos tier kills and restarts the
# cluster's processes on this machine, so it runs on the local backend only (one pytest session)
suites=(tests/cluster tests/e2e)
case "$backend" in
  local) suites+=(tests/chaos) ;;
  *) ;;
esac
suite -m "e2e or chaos" "${suites[@]}" "$@" || rc=$?
if [ "$rc" -ne 0 ] && [ -n "$cluster" ]; then
  "$cluster" logs "$artifacts/cluster-logs" >/dev/null 2>&1 || true
  echo "e2e: component logs kept in $artifacts/cluster-logs" >&2
fi
teardown || rc=1
exit "$rc"
