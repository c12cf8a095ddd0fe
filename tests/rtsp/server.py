"""A real RTSP server for tests and benchmarks: GStreamer's gst-rtsp-server in a process of its own.

    server = RtspServer(tmp_path, {"/cam1": clip, "/cam1/sub": sub_clip}, user="op", password="pw")
    server.start()
    server.url("/cam1")                  # rtsp://op:pw@127.0.0.1:PORT/cam1
    server.freeze() / server.thaw()      # SIGSTOP / SIGCONT: TCP stays open, no data (a frozen camera)
    server.stop(); server.start()        # a restart on the same port (a camera reboot when apart)
    server.serve({"/cam1": other_clip})  # what a mount plays from the next start on (codec / size changes)
    server.close()

The server runs under Debian's own ``python3`` with python3-gi (not a project virtualenv: the bindings come
from apt). Set-up: ``apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad ffmpeg`` (``make setup`` does).
``netns``: run it inside a network namespace (tests/rtsp/netns.py), for UDP with loss and jitter.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional
from urllib.parse import quote

from tests.agent.broker import free_port, wait_port
from tests.rtsp.clips import Clip

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")


@functools.lru_cache(maxsize=None)
def missing_packages() -> Optional[str]:
    """Why the server cannot run here (a sentence), or None (asked once per process)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); gi.require_version('Gst', '1.0'); "
        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
        "missing = [e for e in ('h264parse', 'h265parse', 'rtph264pay', 'rtph265pay', 'appsrc') "
        "if Gst.ElementFactory.find(e) is None]; print(','.join(missing))"
    )
    result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        return "GStreamer's RTSP server bindings are missing (apt: gir1.2-gst-rtsp-server-1.0 python3-gi)"
    if result.stdout.strip():
        return f"GStreamer elements missing: {result.stdout.strip()} (apt: gstreamer1.0-plugins-bad/good)"
    return None


class RtspServer:
    """One gst-rtsp-server process under test control (see the module docstring)."""

    def __init__(
        self,
        workdir: Path,
        mounts: Mapping[str, Clip],
        *,
        port: Optional[int] = None,
        address: str = "127.0.0.1",
        user: Optional[str] = None,
        password: Optional[str] = None,
        epoch: Optional[float] = None,
        netns: Optional[str] = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mounts: Dict[str, Clip] = dict(mounts)
        self.address = address
        self.port = port or free_port()
        self.user = user
        self.password = password
        self.epoch = epoch if epoch is not None else time.time()
        self.netns = netns
        self.process: Optional[subprocess.Popen] = None
        self.starts = 0
        self._log = self.workdir / "rtsp-server.log"

    # ------------------------------------------------------------------------------------------- urls

    def url(self, mount: str, user: Optional[str] = None, password: Optional[str] = None) -> str:
        """The mount's URL, with this server's credentials unless others are given ("" for none)."""
        user = self.user if user is None else user
        password = self.password if password is None else password
        credentials = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user else ""
        return f"rtsp://{credentials}{self.address}:{self.port}{mount}"

    def due_time(self, mount: str, loop_index: int, near: float) -> float:
        """When loop frame ``loop_index`` of ``mount`` was due, in the cycle nearest to wall time ``near``."""
        clip = self.mounts[mount]
        fps, count = float(clip.spec.fps), clip.frames
        cycle = round(((near - self.epoch) * fps - loop_index) / count)
        return self.epoch + (cycle * count + loop_index) / fps

    # -------------------------------------------------------------------------------------- life cycle

    def serve(self, mounts: Mapping[str, Clip]) -> None:
        """Replace what the mounts play; takes effect at the next :meth:`start`."""
        self.mounts = dict(mounts)

    def start(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the RTSP server is running already")
        config = self.workdir / "rtsp-server.json"
        ready = self.workdir / "rtsp-server.ready.json"
        ready.unlink(missing_ok=True)
        config.write_text(
            json.dumps(
                {
                    "address": self.address,
                    "port": self.port,
                    "user": self.user,
                    "password": self.password,
                    "epoch": self.epoch,
                    "ready_file": str(ready),
                    "mounts": [
                        {"path": path, "clip": str(clip.path), "codec": clip.spec.codec, "fps": clip.spec.fps}
                        for path, clip in self.mounts.items()
                    ],
                }
            )
        )
        command: List[str] = [SYSTEM_PYTHON, str(SCRIPT), str(config)]
        if self.netns:
            command = ["ip", "netns", "exec", self.netns, *command]
        log = self._log.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"the RTSP server exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the RTSP server did not get ready in {timeout} s: {self.log_tail()}")
            time.sleep(0.05)
        wait_port(self.port, timeout=5.0, host=self.address)  # a namespace's address is reachable from here
        self.starts += 1

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (SIGKILL after ``timeout``); every client's connection closes."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything (a camera that loses power)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing more arrives (a hung camera)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
