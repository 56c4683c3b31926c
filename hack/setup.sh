#!/usr/bin/env bash
# Installs everything the tests and the demo need on a fresh Debian 12 machine, idempotently:
# Debian's PostgreSQL server, a virtualenv in .venv with every Python package pinned by
# constraints.txt. A second run changes nothing and takes seconds (pip's cache is reused).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

start=$(date +%s)
need=()
for pkg in postgresql-15 postgresql-contrib; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "setup: installing Debian packages: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: installing Debian packages needs root (sudo $0)" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.crontask-installed
want=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing pinned Python packages into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt "pip==25.3" setuptools wheel
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[jobs,operator,dev]"
  echo "$want" > "$stamp"
fi
echo "setup: ready in $(( $(date +%s) - start ))s"
