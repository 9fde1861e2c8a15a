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

ensure_venv "$VENV" "$HELM_PIP" "$VENV/bin/python" -c 'import helm_python'
exec "$VENV/bin/python" "$REPO/e2e/helm.py" "$@"
