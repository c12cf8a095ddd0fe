#!/usr/bin/env bash
# Install (or update) the edge agent on a plain x86-64 box (Debian/Ubuntu).
#
#   sudo deploy/install-x86.sh [SOURCE]      SOURCE: wheel file or project dir (default: this checkout)
#
# Idempotent: re-running upgrades the package in place and keeps config, credentials and state.
# Creates: user edge-agent (groups video), /opt/edge-agent/venv (pip wheels incl. OpenCV headless and
# ONNX Runtime CPU), /etc/edge-agent/config.yaml (example, only if absent), /etc/edge-agent/credentials/,
# and installs + enables systemd/edge-agent.service.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE=${1:-$(dirname "$HERE")}
PREFIX=/opt/edge-agent
VENV=$PREFIX/venv
PYTHON=${PYTHON:-python3}
EXTRAS="[edge]"          # opencv-python-headless + onnxruntime wheels
VENV_ARGS=()

# shellcheck source=deploy/install-lib.sh
. "$HERE/install-lib.sh"

require_root
ensure_packages python3 python3-venv
ensure_user
ensure_venv "$PYTHON" "$VENV" "${VENV_ARGS[@]}"
install_agent "$VENV" "$SOURCE" "$EXTRAS"
ensure_config
install_unit "$HERE/../systemd/edge-agent.service"
echo "edge-agent installed: edit /etc/edge-agent/config.yaml, put secrets in /etc/edge-agent/credentials/,"
echo "then: systemctl restart edge-agent && journalctl -u edge-agent -f"
