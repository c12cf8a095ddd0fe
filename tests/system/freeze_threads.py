"""Freeze a process's pipeline: every thread but the main one stopped with ptrace, the main one left running.

    python3 freeze_threads.py PID

Run as root on the box (in the background: a tracer that exits releases its tracees). The agent's main thread
runs the event loop (status file, the watchdog gate); inference, cameras, the output writer and the MQTT link
run in worker threads. With those stopped, no inference step completes, so the gate must stop the
WATCHDOG=1 pings although the process is alive: the freeze is PTRACE_INTERRUPT (the thread stops where it is,
as in a hung native call), not SIGSTOP (which stops the whole process, the gate included).

Prints one line per frozen thread id, then "frozen", then waits until the process is gone (systemd's watchdog
kills it: SIGABRT, and SIGKILL wakes traced threads) and exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time

PTRACE_SEIZE, PTRACE_INTERRUPT = 0x4206, 0x4207
LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
LIBC.ptrace.restype = ctypes.c_long
LIBC.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def ptrace(request: int, tid: int) -> None:
    if LIBC.ptrace(request, tid, None, None) == -1:
        code = ctypes.get_errno()
        raise OSError(code, f"ptrace({request:#x}, {tid}): {os.strerror(code)}")


def main(pid: int) -> int:
    frozen = []
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        if tid == pid:
            continue  # the main thread: the event loop keeps running
        ptrace(PTRACE_SEIZE, tid)
        ptrace(PTRACE_INTERRUPT, tid)
        frozen.append(tid)
        print(tid, flush=True)
    print("frozen", flush=True)
    while os.path.exists(f"/proc/{pid}"):
        try:  # reap the tracees' stop notifications so they stay stopped, and their deaths
            os.waitpid(-1, os.WNOHANG | 0x40000000)  # __WALL
        except ChildProcessError:
            pass
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
