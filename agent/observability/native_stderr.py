"""What C libraries write to stderr, as structured log lines.

FFmpeg (``[h264 @ 0x…] error while decoding MB …``), GStreamer, OpenCV, ONNX Runtime and TensorRT write to
file descriptor 2 directly, between the daemon's JSON lines: ``journalctl -o cat | jq .`` then stops at the
first of them. :func:`capture_native_stderr` makes fd 2 a pipe read by the ``native-stderr`` thread, which
passes JSON lines through unchanged and wraps every other line as ``{"event": "native_output", "line": …}``,
both written to the original stderr. If that thread ever fails, fd 2 is pointed back at the original stderr
first (or at /dev/null if that is gone): a full pipe must never block a library's write (and with it
inference).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from typing import Optional

from agent.threads import BEST_EFFORT, Supervisor, Worker

__all__ = ["NativeStderr", "capture_native_stderr", "wrap_line"]

MAX_LINE = 8192


def wrap_line(line: bytes) -> bytes:
    """One stderr line as one JSON line (pure): a JSON object passes unchanged, anything else is wrapped."""
    text = line.rstrip(b"\r\n")
    stripped = text.strip()
    if stripped.startswith(b"{") and stripped.endswith(b"}"):
        try:
            if isinstance(json.loads(stripped), dict):
                return stripped + b"\n"
        except ValueError:
            pass
    record = {
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        "level": "warning",
        "logger": "native",
        "event": "native_output",
        "line": text[:MAX_LINE].decode("utf-8", "replace"),
    }
    return json.dumps(record).encode() + b"\n"


class NativeStderr:
    """The running capture; :meth:`close` restores fd 2 and drains what is left."""

    def __init__(self, original: int, read_end: int, supervisor: Optional[Supervisor] = None) -> None:
        self.original = original
        self._read = read_end
        self.lines = 0
        self.failure: Optional[BaseException] = None
        # reported, not restarted: when it dies, fd 2 goes back to the original stderr (unwrapped output)
        self._worker = Worker("native-stderr", self._run, BEST_EFFORT, supervisor).start()

    def _run(self) -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(self._read, 65536)
                if not chunk:
                    break
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    self._emit(line)
                if len(pending) > MAX_LINE:  # a library that never ends its line
                    self._emit(pending)
                    pending = b""
            if pending:
                self._emit(pending)
        except BaseException as exc:
            self.failure = exc  # the supervisor reports the death; the daemon lists it among its problems
            _unblock_fd2(self.original)
            raise

    def _emit(self, line: bytes) -> None:
        if not line.strip():
            return
        self.lines += 1
        os.write(self.original, wrap_line(line))

    def close(self, timeout: float = 2.0) -> None:
        """Point fd 2 back at the original stderr, let the thread drain the pipe, and stop it."""
        _unblock_fd2(self.original)  # closes the pipe's last write end (fd 2 held it): the reader sees EOF
        self._worker.join(timeout)
        with contextlib.suppress(OSError):  # already gone if the thread failed on it
            os.close(self._read)


def _unblock_fd2(original: int) -> None:
    """Point fd 2 back at the original stderr, or at /dev/null when that is gone: nothing may ever block on a
    pipe nobody reads."""
    try:
        os.dup2(original, 2)
    except OSError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)


def capture_native_stderr(supervisor: Optional[Supervisor] = None) -> NativeStderr:
    """Route fd 2 through the ``native-stderr`` thread (call once, in the daemon's process entry point)."""
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    return NativeStderr(original, read_end, supervisor)
