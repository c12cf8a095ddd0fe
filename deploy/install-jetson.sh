#!/usr/bin/env bash
# Install (or update) the edge agent on an NVIDIA Jetson (JetPack 5: Python 3.8; JetPack 6: Python 3.10).
#
#   sudo deploy/install-jetson.sh [--wheelhouse DIR] [SOURCE]
#       SOURCE: wheel file or project dir (default: this checkout)
#       --wheelhouse DIR: pip installs from DIR alone, with no index (an offline plant; see --help)
#
# The virtualenv is created with --system-site-packages so the agent sees JetPack's own builds: TensorRT
# (python3-libnvinfer), GStreamer's bindings (python3-gi; JetPack's plugins bring nvv4l2decoder for RTSP and
# nvarguscamerasrc for CSI cameras), OpenCV and, if installed, onnxruntime-gpu. Therefore the package is
# installed WITHOUT the opencv/ort extras: a pip OpenCV wheel would shadow JetPack's build. The install ends by
# checking, as the agent sees them, TensorRT and GStreamer (and says whether nvv4l2decoder is there).
# Idempotent: re-running upgrades the package and keeps config, credentials and state.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=/opt/edge-agent
VENV=$PREFIX/venv
PYTHON=${PYTHON:-/usr/bin/python3}
EXTRAS=""
VENV_ARGS=(--system-site-packages)

# shellcheck source=deploy/install-lib.sh
. "$HERE/install-lib.sh"

parse_args "$@"
require_root
if [[ ! -e /etc/nv_tegra_release ]]; then
    echo "install-jetson: /etc/nv_tegra_release missing; this is not a Jetson (use install-x86.sh)" >&2
    exit 1
fi
ensure_packages python3 python3-venv python3-libnvinfer python3-opencv "${GSTREAMER_PACKAGES[@]}"
ensure_user
ensure_venv "$PYTHON" "$VENV" "${VENV_ARGS[@]}"
install_agent "$VENV" "$SOURCE" "$EXTRAS"
# The system builds must be the ones the venv imports: JetPack's TensorRT, and GStreamer with its bindings
# (cameras: RTSP through nvv4l2decoder, CSI through nvarguscamerasrc) as the agent itself finds them.
"$VENV/bin/python" - <<'PY'
import tensorrt
from agent.sources.gst import environment_summary
from agent.sources.errors import SourceConfigError
try:
    gst = environment_summary()
except SourceConfigError as exc:
    raise SystemExit(f"GStreamer is not usable from the venv: {exc}")
print("TensorRT", tensorrt.__version__, "|", gst["gstreamer"], "| decoders:", ", ".join(gst["decoders"]) or "none")
if "nvv4l2decoder" not in gst["decoders"]:
    print("warning: no nvv4l2decoder: RTSP cameras will decode on the CPU (JetPack's GStreamer plugins missing?)")
PY
install_factory_model
ensure_config
install_unit "$HERE/../systemd" jetson.conf # the GPU, ISP/CSI and codec device nodes; the Argus socket
print_next_steps
