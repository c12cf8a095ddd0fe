"""Native libraries' stderr inside the JSON log stream, and `edge-agent run --check` on the model file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.observability.native_stderr import wrap_line
from tests.agent.daemon.helpers import config_dict, synthetic_camera, write_config

PROBE = textwrap.dedent(
    """
    import ctypes, os, sys, structlog
    from agent.observability.logs import setup_logging
    from agent.observability.native_stderr import capture_native_stderr
    setup_logging("info", "json")
    native = capture_native_stderr()
    structlog.get_logger().info("ours", n=1)
    os.write(2, b"[h264 @ 0x55d0c8] error while decoding MB 12 7, bytestream -5\\n")   # what FFmpeg does
    libc = ctypes.CDLL(None)
    libc.dprintf(2, b"GStreamer-CRITICAL **: gst_element_set_state: assertion failed\\n")   # from C itself
    print("a plain print to stderr", file=sys.stderr, flush=True)
    os.write(2, b"no newline at the end")
    native.close()
    print("after close", file=sys.stderr, flush=True)
    """
)


def test_every_stderr_line_is_json_native_output_included() -> None:
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    lines = run.stderr.decode().splitlines()
    records = [json.loads(line) for line in lines[:-1]]  # every line before the restore parses (jq would)
    assert lines[-1] == "after close"  # fd 2 is the original stderr again
    events = [r.get("event") for r in records]
    assert "ours" in events
    native = [r["line"] for r in records if r.get("event") == "native_output"]
    assert any("[h264 @ 0x55d0c8] error while decoding" in n for n in native)
    assert any("GStreamer-CRITICAL" in n for n in native)
    assert "a plain print to stderr" in native and "no newline at the end" in native
    assert all(
        r["logger"] == "native" and r["level"] == "warning" for r in records if r.get("event") == "native_output"
    )


@pytest.mark.parametrize(
    "line, passes",
    [(b'{"event": "x", "level": "info"}\n', True), (b"{not json}\n", False), (b"[rtsp @ 0x1] 401\n", False)],
)
def test_wrap_line(line: bytes, passes: bool) -> None:
    out = wrap_line(line)
    assert out.endswith(b"\n") and isinstance(json.loads(out), dict)
    assert (out == line) is passes


def test_run_check_fails_on_a_missing_or_broken_model(tmp_path: Path, daemon_model: Path) -> None:
    def check(model: Path) -> subprocess.CompletedProcess:
        cfg = write_config(tmp_path / "c.yaml", config_dict(tmp_path, 1883, model, [synthetic_camera("cam1")]))
        command = [sys.executable, "-m", "agent.cli", "run", "--check", "--config", str(cfg)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    ok = check(daemon_model)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    missing = check(tmp_path / "nope.onnx")
    assert missing.returncode == 2 and "nope.onnx: model file not found" in missing.stdout
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    result = check(broken)
    assert result.returncode == 2 and "model.path:" in result.stdout


DYING = textwrap.dedent(
    """
    import os, sys, time
    from agent.observability.logs import setup_logging
    from agent.observability.native_stderr import capture_native_stderr
    setup_logging("info", "json")      # the worker's death is logged (to stderr, as the daemon's is)
    native = capture_native_stderr()
    os.write(2, b"wrapped\\n")
    time.sleep(0.3)
    os.close(native.original)          # the stderr the thread writes to is gone under it
    os.write(2, b"this line kills the thread\\n")
    native._worker.join(5)
    print(type(native.failure).__name__, flush=True)
    for _ in range(2000):              # 2 MB: would block on a full pipe nobody reads
        os.write(2, b"x" * 1000 + b"\\n")
    print("not blocked", flush=True)
    native.close()
    """
)


def test_a_dying_capture_thread_never_blocks_stderr_and_is_reported(tmp_path: Path, daemon_model: Path) -> None:
    run = subprocess.run([sys.executable, "-c", DYING], capture_output=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert run.stdout.decode().splitlines() == ["OSError", "not blocked"]
    assert json.loads(run.stderr.decode().splitlines()[0])["line"] == "wrapped"

    from agent.config import load_config
    from agent.daemon import Daemon
    from agent.threads import BEST_EFFORT, Supervisor, Worker

    supervisor = Supervisor()  # what run_daemon shares between the capture and the daemon

    def dies() -> None:
        raise OSError(9, "Bad file descriptor")

    worker = Worker("native-stderr", dies, BEST_EFFORT, supervisor).start()
    assert worker.join(5)
    cfg = write_config(tmp_path / "c.yaml", config_dict(tmp_path, 1883, daemon_model, [synthetic_camera("cam1")]))
    daemon = Daemon(load_config(cfg, environ={}), cfg, install_signal_handlers=False, supervisor=supervisor)
    problems = daemon.status_document()["problems"]
    assert any(p.startswith("thread native-stderr died: OSError: [Errno 9] Bad file descriptor") for p in problems)
