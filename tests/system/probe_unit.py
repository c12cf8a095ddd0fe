"""Runs on the box in place of the agent (a drop-in replaces ExecStart= alone; every other line of the shipped
unit stays in force) and tries what each hardening directive forbids. Standard library only; Python 3.8+.

    python3 probe_unit.py OUT.json [--notify]

Each check records what happened (``ok`` or the errno name) rather than a verdict: the test compares the run
inside the unit with the same probe run as the same user outside it (``setpriv``), so a refusal is credited
to the unit only where the user alone would have been allowed (or the test says why it cannot tell).
``--notify``: send READY=1 to $NOTIFY_SOCKET (the unit is Type=notify) before exiting 0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import mmap
import os
import socket
import sys
from typing import Any, Callable, Dict

LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
LIBC.syscall.restype = ctypes.c_long

# x86-64 system call numbers (the box and the VM are x86-64)
SYS_PTRACE, SYS_ADJTIMEX, SYS_PERSONALITY, SYS_SETPRIORITY = 101, 159, 135, 141
SYS_UNSHARE, SYS_KEYCTL = 272, 250
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
PTRACE_TRACEME = 0
PER_LINUX32 = 0x0008
KEYCTL_GET_KEYRING_ID, KEYCTL_DESCRIBE = 0, 6
KEY_SPEC_SESSION_KEYRING = -3


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def attempt(action: Callable[[], Any]) -> str:
    """``ok`` (with a value when the action returns one), or the errno name of the refusal."""
    try:
        value = action()
    except OSError as exc:
        return _errno_name(exc.errno or 0)
    return "ok" if value is None else f"ok:{value}"


def raw_syscall(number: int, *args: int) -> Callable[[], None]:
    def call() -> None:
        ctypes.set_errno(0)
        result = LIBC.syscall(number, *[ctypes.c_long(a) for a in args])
        if result == -1:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return call


TIMEX = ctypes.create_string_buffer(512)  # struct timex, modes 0: a read, allowed to anyone but for @clock


def in_child(action: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``action`` in a forked child (it may change the process: a new namespace, a tracer, a persona);
    its errno comes back as the child's exit status."""

    def run() -> Any:
        pid = os.fork()
        if pid == 0:
            try:
                action()
            except OSError as exc:
                os._exit(exc.errno or 255)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
        if code:
            raise OSError(code, os.strerror(code))
        return None

    return run


def create_file(directory: str) -> Callable[[], None]:
    def create() -> None:
        path = os.path.join(directory, f".probe-{os.getpid()}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(path)

    return create


def read_only_mount(path: str) -> Callable[[], bool]:
    return lambda: bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def open_device(path: str) -> Callable[[], None]:
    def open_it() -> None:
        os.close(os.open(path, os.O_RDWR))

    return open_it


def listing(path: str) -> Callable[[], int]:
    return lambda: len(os.listdir(path))


def setuid_bit(directory: str) -> Callable[[], None]:
    def chmod() -> None:
        path = os.path.join(directory, f".probe-suid-{os.getpid()}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        try:
            os.chmod(path, 0o4700)
        finally:
            os.unlink(path)

    return chmod


def new_file_mode(directory: str) -> Callable[[], str]:
    def mode() -> str:
        path = os.path.join(directory, f".probe-umask-{os.getpid()}")
        with open(path, "w") as handle:  # default mode 0666 & ~umask
            handle.write("x")
        try:
            return oct(os.stat(path).st_mode & 0o777)
        finally:
            os.unlink(path)

    return mode


def status_field(name: str) -> str:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return "?"


def session_keyring() -> str:
    LIBC.syscall.argtypes = None
    serial = LIBC.syscall(
        ctypes.c_long(SYS_KEYCTL),
        ctypes.c_long(KEYCTL_GET_KEYRING_ID),
        ctypes.c_long(KEY_SPEC_SESSION_KEYRING),
        ctypes.c_long(0),
    )
    if serial == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    buffer = ctypes.create_string_buffer(256)
    size = LIBC.syscall(
        ctypes.c_long(SYS_KEYCTL), ctypes.c_long(KEYCTL_DESCRIBE), ctypes.c_long(serial), buffer, ctypes.c_long(256)
    )
    if size == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    # "type;uid;gid;perm;description": a private session keyring is "_ses" (not the user's "_uid_ses.<uid>")
    return buffer.value.decode().split(";")[-1]


def wx_mapping() -> None:
    mapping = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    mapping.close()


def probe() -> Dict[str, str]:
    state = os.environ.get("STATE_DIRECTORY", "/var/lib/edge-agent")
    checks: Dict[str, Callable[[], Any]] = {
        # ---- file system (ProtectSystem=strict, ReadWritePaths=, no ConfigurationDirectory=)
        "write /var/lib/edge-agent": create_file(state),
        "write /etc/edge-agent": create_file("/etc/edge-agent"),
        "ro-mount /etc/edge-agent": read_only_mount("/etc/edge-agent"),
        "ro-mount /etc": read_only_mount("/etc"),
        "ro-mount /usr": read_only_mount("/usr"),
        "ro-mount /opt/edge-agent": read_only_mount("/opt/edge-agent"),
        "ro-mount /var/tmp": read_only_mount("/var/tmp"),
        "write /var/tmp": create_file("/var/tmp"),
        "write /run": create_file("/run"),
        "write /run/lock": create_file("/run/lock"),
        "write /dev/shm": create_file("/dev/shm"),
        "write /dev/mqueue": create_file("/dev/mqueue"),
        "write /tmp": create_file("/tmp"),
        "tmp namespace": lambda: os.stat("/tmp").st_ino,
        # ---- ProtectHome=
        "list /root": listing("/root"),
        "list /home": listing("/home"),
        # ---- /proc (ProtectProc=invisible; /proc/cpuinfo readable: no ProcSubset=pid)
        "see /proc/1": lambda: "visible" if os.path.exists("/proc/1/status") else "hidden",
        "read /proc/cpuinfo": lambda: "flags" if "flags" in open("/proc/cpuinfo").read() else "no-flags",
        "ro-mount /proc/sys": read_only_mount("/proc/sys"),
        "ro-mount /sys/fs/cgroup": read_only_mount("/sys/fs/cgroup"),
        # ---- devices (DevicePolicy=closed + DeviceAllow=; ProtectKernelLogs=)
        "open /dev/null": open_device("/dev/null"),
        "open /dev/net/tun": open_device("/dev/net/tun"),
        "open /dev/kmsg": open_device("/dev/kmsg"),
        # ---- credentials of the process (CapabilityBoundingSet=, NoNewPrivileges=)
        "CapBnd": lambda: status_field("CapBnd"),
        "CapEff": lambda: status_field("CapEff"),
        "NoNewPrivs": lambda: status_field("NoNewPrivs"),
        "Seccomp": lambda: status_field("Seccomp"),
        # ---- system calls (SystemCallFilter=, LockPersonality=, RestrictNamespaces=, RestrictSUIDSGID=)
        "adjtimex read (@clock)": in_child(raw_syscall(SYS_ADJTIMEX, ctypes.addressof(TIMEX))),
        "setpriority +1 (@resources)": in_child(raw_syscall(SYS_SETPRIORITY, 0, 0, 19)),
        "ptrace TRACEME (@debug)": in_child(raw_syscall(SYS_PTRACE, PTRACE_TRACEME, 0, 0, 0)),
        "personality PER_LINUX32": in_child(raw_syscall(SYS_PERSONALITY, PER_LINUX32)),
        "unshare user namespace": in_child(raw_syscall(SYS_UNSHARE, CLONE_NEWUSER)),
        "unshare mount namespace": in_child(raw_syscall(SYS_UNSHARE, CLONE_NEWNS)),
        "setuid bit on own file": setuid_bit(state),
        "new file mode (UMask=)": new_file_mode(state),
        "write+exec mapping": wx_mapping,
        # ---- address families (RestrictAddressFamilies=)
        "socket AF_INET": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(),
        "socket AF_NETLINK": lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close(),
        "socket AF_PACKET": lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0).close(),
        # ---- KeyringMode=private
        "session keyring": session_keyring,
        # ---- ProtectHostname=: a UTS namespace of its own
        "uts namespace": lambda: os.readlink("/proc/self/ns/uts"),
    }
    return {name: attempt(check) for name, check in checks.items()}


def main(argv: list) -> int:
    out = argv[1]
    results = probe()
    results["uid"] = str(os.getuid())
    with open(out + ".tmp", "w") as handle:
        json.dump(results, handle, indent=1, sort_keys=True)
    os.replace(out + ".tmp", out)
    print(json.dumps(results, sort_keys=True), flush=True)
    if "--notify" in argv and os.environ.get("NOTIFY_SOCKET"):
        address = os.environ["NOTIFY_SOCKET"]
        address = "\0" + address[1:] if address.startswith("@") else address
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.sendto(b"READY=1", address)
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
