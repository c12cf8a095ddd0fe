#!/usr/bin/env bash
# Install (or update) the edge agent on a plain x86-64 box (Debian/Ubuntu).
#
#   sudo deploy/install-x86.sh [--wheelhouse DIR] [SOURCE]
#       SOURCE: wheel file or project dir (default: this checkout)
#       --wheelhouse DIR: pip installs from DIR alone, with no index (an offline plant; see --help)
#
# Idempotent: re-running upgrades the package in place and keeps config, credentials and state.
# Creates: user edge-agent (groups video), GStreamer and python3-gi (apt: RTSP cameras), /opt/edge-agent/venv
# (--system-site-packages for GStreamer's bindings; pip wheels incl. OpenCV headless and ONNX Runtime CPU), the factory model in /opt/edge-agent/models, /etc/edge-agent/config.yaml (from
# `edge-agent config example`, only if absent), /etc/edge-agent/credentials/ and trust/, installs and enables
# systemd/edge-agent.service, installs edge-agent-usb@.service and its udev rule (USB update sticks).
# Tested as a new user runs it, on a clean Debian 12 with systemd as PID 1: tests/system/ (make test-system).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=/opt/edge-agent
VENV=$PREFIX/venv
PYTHON=${PYTHON:-python3}
EXTRAS="[edge]"          # opencv-python-headless + onnxruntime wheels
# the system's GStreamer bindings (python3-gi) for RTSP / GStreamer cameras; the wheels above stay in the venv
VENV_ARGS=(--system-site-packages)

# shellcheck source=deploy/install-lib.sh
. "$HERE/install-lib.sh"

parse_args "$@"
require_root
ensure_packages python3 python3-venv "${GSTREAMER_PACKAGES[@]}"
ensure_user
ensure_venv "$PYTHON" "$VENV" "${VENV_ARGS[@]}"
install_agent "$VENV" "$SOURCE" "$EXTRAS"
install_factory_model
ensure_config
drop_ins=()
[[ -e /dev/nvidiactl ]] && drop_ins+=(nvidia-gpu.conf) # the GPU's device nodes (the unit admits cameras only)
install_unit "$HERE/../systemd" "${drop_ins[@]}"
print_next_steps
