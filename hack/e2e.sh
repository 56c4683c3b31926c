#!/usr/bin/env bash
# The cluster tier: bring up the chosen Kubernetes backend (hack/cluster/e2e-env.sh), run the
# operator's cluster tests, the e2e suite and, on the local backend, last, the chaos tier against
# it (pytest arguments pass through: `hack/e2e.sh -k chaos`), keep component logs when a test
# fails, and take a local cluster down again unless CRONTASK_E2E_KEEP=1.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

artifacts="$repo/.artifacts/e2e"
rm -rf "$artifacts"; mkdir -p "$artifacts"
envfile="$artifacts/env.sh"

start=$(date +%s)
echo "e2e: bringing up the backend (${CRONTASK_E2E_BACKEND:-auto})"
CRONTASK_E2E_ENV_FILE="$envfile" ./hack/cluster/e2e-env.sh >/dev/null
# shellcheck disable=SC1090
source "$envfile"
echo "e2e: backend $CRONTASK_E2E_BACKEND ready in $(( $(date +%s) - start ))s"

teardown() {
  if [ "$CRONTASK_E2E_BACKEND" = local ] && [ "${CRONTASK_E2E_KEEP:-0}" != 1 ]; then
    echo "e2e: taking the local cluster down (CRONTASK_E2E_KEEP=1 keeps it)"
    ./hack/cluster/cluster.sh down || echo "e2e: cluster down failed" >&2
  fi
}
trap teardown EXIT

suites=(tests/cluster tests/e2e)
# The chaos tier kills and restarts the cluster's processes on this machine: local only.
if [ "$CRONTASK_E2E_BACKEND" = local ]; then suites+=(tests/chaos); fi

rc=0
# shellcheck disable=SC2086
$CRONTASK_E2E_EXEC env CRONTASK_E2E=1 CRONTASK_E2E_ARTIFACTS="$artifacts" \
  "$repo/.venv/bin/python" -m pytest -m "e2e or chaos" "${suites[@]}" "$@" || rc=$?
if [ "$rc" -ne 0 ] && [ "$CRONTASK_E2E_BACKEND" = local ]; then
  ./hack/cluster/cluster.sh logs "$artifacts/cluster-logs" >/dev/null 2>&1 || true
  echo "e2e: component logs kept in $artifacts/cluster-logs" >&2
fi
exit "$rc"
