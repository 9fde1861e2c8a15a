#!/usr/bin/env bash
# Helm's own engine for the chart tests, without a helm binary: PyPI's helm-python-sdk
# (Helm v4's Go SDK as a shared library) in a virtualenv in the cache directory.
#
#   e2e/helm.sh lint|render|install|uninstall ...   (see e2e/helm.py)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=helm
# shellcheck source=lib.sh
source "$REPO/e2e/lib.sh"
CACHE_DIR=${EVENTSCALE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/eventscale}
VENV=$CACHE_DIR/helm-venv
HELM_PIP=helm-python-sdk==0.2.2

if ! "$VENV/bin/python" -c 'import helm_python' >/dev/null 2>&1; then
  mkdir -p "$CACHE_DIR"
  exec 9>"$CACHE_DIR/.helm-venv.lock"
  flock -w 600 9 || die "another e2e/helm.sh has been installing $VENV for 10 minutes"
  if ! "$VENV/bin/python" -c 'import helm_python' >/dev/null 2>&1; then
    log "installing $HELM_PIP into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
    "$VENV/bin/pip" install --quiet "$HELM_PIP" >&2 || die "pip install $HELM_PIP failed"
  fi
  exec 9>&-
fi
exec "$VENV/bin/python" "$REPO/e2e/helm.py" "$@"
