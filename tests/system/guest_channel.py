"""Test harness inside the QEMU box (not part of the product): runs the host's commands, as root, read from a
virtio-serial port, and answers each with its exit status and output. Standard library only.

Installed into the VM image by tests/system/vm.py as /usr/local/lib/evl-test/guest_channel.py, started by
evl-test-channel.service. One JSON object per line each way::

    host -> guest  {"id": 7, "script": "systemctl is-active edge-agent", "timeout": 60}
    guest -> host  {"id": 7, "rc": 0, "stdout": "active\\n", "stderr": ""}

The host may go away (a power cut of the whole VM is the point of the tests, and a restored VM finds a new
host end): every read or write error reopens the port.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

PORT = "/dev/virtio-ports/evl.channel"
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


def serve(fd: int) -> None:
    lock = threading.Lock()

    def answer(request: dict) -> None:
        try:
            done = subprocess.run(
                ["bash", "-c", request["script"]],
                capture_output=True,
                text=True,
                env=ENV,
                timeout=float(request.get("timeout", 120)),
                check=False,
            )
            reply = {"id": request["id"], "rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        except subprocess.TimeoutExpired:
            reply = {"id": request["id"], "rc": 124, "stdout": "", "stderr": "timed out on the guest"}
        data = (json.dumps(reply) + "\n").encode()
        with lock:
            while data:
                data = data[os.write(fd, data) :]

    buffer = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:  # no host connected: wait for one
            time.sleep(0.05)
            continue
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                threading.Thread(target=answer, args=(json.loads(line),), daemon=True).start()


def main() -> None:
    while True:
        try:
            fd = os.open(PORT, os.O_RDWR)
        except OSError:
            time.sleep(0.1)
            continue
        try:
            serve(fd)
        except OSError:
            time.sleep(0.1)
        finally:
            os.close(fd)


if __name__ == "__main__":
    main()
