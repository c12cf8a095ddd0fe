"""A network namespace the test makes for a camera, joined to this one by a veth pair, with loss and jitter.

    with CameraNetwork(loss_percent=3, rate_mbit=40, queue_ms=40) as net:
        server = RtspServer(tmp, clips, address=net.camera_ip, netns=net.name)
        ...                                  # the agent reaches rtsp://{net.camera_ip}:PORT/...

Traffic never leaves the two ends of that veth pair. Loss and jitter are applied to what the camera sends:

- loss: nftables drops that share of the camera's UDP packets at random (``numgen random``);
- jitter: a token-bucket queue (``tc qdisc tbf``) at ``rate_mbit`` holding at most ``queue_ms``: a keyframe's
  burst of packets waits in it, so packets arrive later by a varying amount, and a burst beyond the queue is
  dropped, as on a congested camera network.

``tc netem`` would be the usual tool; this machine's kernel is built without it (``CONFIG_NET_SCH_NETEM`` is
not set), so the loss comes from nftables and the jitter from a real queue. Needs root, ``ip`` (iproute2),
``nft`` (nftables) and ``tc``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from typing import List, Optional

_COUNTER = itertools.count()


def missing_tools() -> Optional[str]:
    if os.geteuid() != 0:
        return "network namespaces need root"
    absent = [tool for tool in ("ip", "nft", "tc") if shutil.which(tool) is None]
    return f"missing {', '.join(absent)} (apt: iproute2 nftables)" if absent else None


def _run(*command: str) -> None:
    subprocess.run(list(command), check=True, capture_output=True, text=True, timeout=30)


class CameraNetwork:
    """See the module docstring. ``loss_percent`` 0 and ``rate_mbit`` None: a clean link."""

    def __init__(self, loss_percent: float = 0.0, rate_mbit: Optional[float] = None, queue_ms: float = 40.0) -> None:
        index = (os.getpid() * 7 + next(_COUNTER)) % 250 + 1
        self.name = f"evl-cam-{os.getpid()}-{index}"
        self._host_if = f"evlh{os.getpid() % 10000}x{index}"[:15]
        self._cam_if = f"evlc{os.getpid() % 10000}x{index}"[:15]
        self.host_ip = f"10.233.{index}.1"
        self.camera_ip = f"10.233.{index}.2"
        self.loss_percent = loss_percent
        self.rate_mbit = rate_mbit
        self.queue_ms = queue_ms
        self._made: List[str] = []

    def __enter__(self) -> CameraNetwork:
        try:
            _run("ip", "netns", "add", self.name)
            self._made.append("netns")
            _run("ip", "link", "add", self._host_if, "type", "veth", "peer", "name", self._cam_if)
            self._made.append("link")
            _run("ip", "link", "set", self._cam_if, "netns", self.name)
            _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self._host_if)
            _run("ip", "link", "set", self._host_if, "up")
            ns = ["ip", "netns", "exec", self.name]
            _run(*ns, "ip", "addr", "add", f"{self.camera_ip}/30", "dev", self._cam_if)
            _run(*ns, "ip", "link", "set", self._cam_if, "up")
            _run(*ns, "ip", "link", "set", "lo", "up")
            if self.loss_percent > 0:
                per_mille = int(round(self.loss_percent * 10))
                rules = (
                    "table inet evl {\n  chain out {\n    type filter hook output priority 0;\n"
                    f"    ip daddr {self.host_ip} meta l4proto udp numgen random mod 1000 < {per_mille} drop\n"
                    "  }\n}\n"
                )
                subprocess.run([*ns, "nft", "-f", "-"], input=rules, check=True, capture_output=True, text=True)
            if self.rate_mbit:
                _run(
                    *ns,
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    self._cam_if,
                    "root",
                    "tbf",
                    "rate",
                    f"{self.rate_mbit}mbit",
                    "burst",
                    "16kb",
                    "latency",
                    f"{int(self.queue_ms)}ms",
                )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if "link" in self._made:
            subprocess.run(["ip", "link", "del", self._host_if], check=False, capture_output=True, timeout=30)
        if "netns" in self._made:
            subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True, timeout=30)
        self._made = []

    def __exit__(self, *exc: object) -> None:
        self.close()
