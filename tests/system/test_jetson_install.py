"""The Jetson install path, as far as an x86 container can take it: `deploy/install-jetson.sh` on a clean Debian 12
with systemd as PID 1, with JetPack's pieces stubbed (tests/system/images.py names each stub: the L4T release
file, python3-libnvinfer's `tensorrt` module, onnxruntime-gpu stood in for by the CPU wheel), to the point where
the shipped unit plus its Jetson drop-in runs the agent on ONNX Runtime.

What only a real Jetson can show (TensorRT engines, CSI capture through nvargus-daemon, the hardware decoders,
the nvhost/nvgpu device nodes, JetPack's Python 3.8 / 3.10) is listed in docs/OPERATIONS.md §1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.system import images
from tests.system.conftest import SRC, USE_PLANT_MIRROR, WHEELHOUSE, box_binds
from tests.system.nspawn import Box

INSTALL = f"cd {SRC} && deploy/install-jetson.sh --wheelhouse {WHEELHOUSE}"
VENV_PYTHON = "/opt/edge-agent/venv/bin/python"
# stand-in for nvargus-daemon's socket: a listener the agent's private /tmp must reach through the drop-in
ARGUS_STAND_IN = (
    "import os, socket, time\n"
    "s = socket.socket(socket.AF_UNIX); s.bind('/tmp/argus_socket'); os.chmod('/tmp/argus_socket', 0o666)\n"
    "s.listen(4)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'argus stand-in'); c.close()\n"
)


@pytest.fixture
def jetson_box(rootfs: Path, wheelhouse: Path, apt_mirror: Path, tmp_path: Path) -> Iterator[Box]:
    layer = images.build_jetson_layer(wheelhouse)
    box = Box([rootfs, layer], tmp_path / "upper", box_binds(wheelhouse, apt_mirror), tmp_path / "console.log")
    box.start()
    try:
        yield box
    finally:
        try:
            (tmp_path / "journal.txt").write_text(box.sh("journalctl --no-pager -n 300", check=False).stdout)
        finally:
            box.stop()


def test_install_jetson_runs_the_agent_on_onnx_runtime(jetson_box: Box) -> None:
    box = jetson_box
    box.sh(USE_PLANT_MIRROR)
    out = box.sh(INSTALL + " 2>&1", timeout=900).stdout
    # the script's own check: JetPack's TensorRT (stub) and GStreamer's bindings are what the venv imports, and it
    # says that this box's GStreamer has no nvv4l2decoder (JetPack's plugins are not among the stubs)
    assert f"TensorRT {images.TENSORRT_STUB_VERSION} | GStreamer 1." in out and "decoders: avdec_h264" in out, out
    assert "warning: no nvv4l2decoder: RTSP cameras will decode on the CPU" in out, out
    assert "edge-agent installed" in out
    where = box.sh(f"{VENV_PYTHON} -c 'import cv2, onnxruntime; print(cv2.__file__); print(onnxruntime.__file__)'")
    cv2_file, ort_file = where.stdout.split()
    assert cv2_file.startswith("/usr/lib/python3/dist-packages/"), "a pip OpenCV wheel would shadow JetPack's"
    assert ort_file.startswith("/usr/lib/python3/dist-packages/"), "onnxruntime-gpu (stand-in) from the system"
    assert "opencv" not in box.sh(f"{VENV_PYTHON} -m pip list --local --format=freeze").stdout.lower()
    drop_ins = box.show("edge-agent.service", "DropInPaths")
    assert drop_ins["DropInPaths"] == "/etc/systemd/system/edge-agent.service.d/jetson.conf", drop_ins
    # (systemd keeps only the nodes that exist in DeviceAllow=: on this x86 container, none of the Jetson's)
    assert "DeviceAllow=/dev/nvmap rw" in box.sh("systemctl cat edge-agent.service").stdout
    # the operator's step 5, with the Argus daemon's socket standing in
    box.sh(f'setsid python3 -c "{ARGUS_STAND_IN}" > /dev/null 2>&1 < /dev/null &')
    box.wait_for("test -S /tmp/argus_socket", 10, "the Argus socket stand-in")
    box.sh("systemctl restart edge-agent")
    pid = int(box.show("edge-agent.service", "MainPID")["MainPID"])
    deadline = time.monotonic() + 60
    while True:
        document = json.loads(box.sh("cat /var/lib/edge-agent/status.json", check=False).stdout or "{}")
        if (document.get("inference") or {}).get("frames", 0) >= 5:
            break
        assert time.monotonic() < deadline, document
        time.sleep(0.5)
    journal = box.sh(f"journalctl --no-pager -o cat _PID={pid}").stdout
    loaded = [json.loads(line) for line in journal.splitlines() if '"model_loaded"' in line]
    assert loaded and "onnxruntime" in json.dumps(loaded[0]).lower(), journal[-2000:]
    # the socket reaches the unit's private /tmp, and the agent's user can connect to it
    connect = (
        f"nsenter -t {pid} -m setpriv --reuid=edge-agent --regid=edge-agent --clear-groups {VENV_PYTHON} -c "
        "\"import socket; s = socket.socket(socket.AF_UNIX); s.connect('/tmp/argus_socket'); print(s.recv(64))\""
    )
    assert "argus stand-in" in box.sh(connect).stdout
