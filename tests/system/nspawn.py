"""A clean Debian box with systemd as PID 1, booted by ``systemd-nspawn -b``, and a root shell into it.

The host has no systemd (``--register=no --keep-unit``). Its cgroups are hybrid: ``SYSTEMD_NSPAWN_UNIFIED_
HIERARCHY=1`` gives the container a cgroup2 tree of its own, where systemd attaches its BPF device programs
(``DevicePolicy=``), and ``--system-call-filter`` lets the container's systemd use ``bpf`` and the keyring calls
(``KeyringMode=``), which nspawn forbids by default. ``--private-network``: the box has its own loopback and
nothing else, so no test reaches the host's network or services.

The root file system is never written: the box boots an overlay of read-only layers (the clean OS, then for
most tests the layer the install left) plus an upper directory of its own, so every test starts from the same
state, and the install runs once on a truly clean OS.

Commands run through ``nsenter`` into every namespace of the container's PID 1: the equivalent of a root
shell on the box (an operator's SSH session), outside the unit under test. ``systemd-run`` is no way in:
the box has no D-Bus, as a minimal Debian has none.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NSPAWN_FILTER = "bpf keyctl add_key request_key"


class BoxError(AssertionError):
    """A command on the box failed, or the box did not come up."""


def _host_cgroups() -> List[Path]:
    """This process's cgroup in each hierarchy nspawn places a container in: the unified one (cgroup2, on its
    own or at ``unified/`` beside the v1 controllers) and, on a hybrid host, the v1 ``name=systemd`` one."""
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if number == "0" and controllers == "":
            v2 = Path("/sys/fs/cgroup/unified")
            root = v2 if (v2 / "cgroup.procs").exists() else Path("/sys/fs/cgroup")
        elif controllers == "name=systemd":
            root = Path("/sys/fs/cgroup/systemd")
        else:
            continue
        if (root / "cgroup.procs").exists():
            found.append(root / path.lstrip("/"))
    return found


def _remove_cgroup(top: Path) -> None:
    for directory, _, _ in os.walk(top, topdown=False):  # the deepest first: only empty cgroups go
        try:
            os.rmdir(directory)
        except OSError:
            pass  # still populated (a process not yet reaped): left for the host to clean


class Box:
    """One booted container.

    Args:
        lowers: read-only layers, bottom first (the root file system first).
        upper: where this boot writes (an empty directory for a clean start).
        binds: ``{host path: box path}``, bound read-only (the checkout, the wheelhouse).
        log: the container's console output goes here.
    """

    def __init__(self, lowers: Sequence[Path], upper: Path, binds: Dict[Path, str], log: Path) -> None:
        self.lowers = list(lowers)
        self.upper = upper
        self.binds = dict(binds)
        self.log = log
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.leader = 0
        self.booted_s = 0.0
        # `--keep-unit` puts the container in <nspawn's own cgroup>/payload: two boxes started from one cgroup (the
        # two test workers of make test-system) would share it, and each box's systemd would kill the other's
        # processes with its own units. So nspawn starts in a cgroup of its own, one per box.
        self.cgroups = [parent / f"evl-box-{os.getpid()}-{id(self):x}" for parent in _host_cgroups()]

    # ------------------------------------------------------------------ life cycle

    def command(self) -> List[str]:
        overlay = ":".join(str(p) for p in [*self.lowers, self.upper]) + ":/"
        cmd = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={self.lowers[0]}",
            f"--overlay={overlay}",
            "--private-network",
            "--register=no",
            "--keep-unit",
            f"--system-call-filter={NSPAWN_FILTER}",
            "--machine=box",
        ]
        cmd += [f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()]
        return [*cmd, "--boot"]

    def start(self, timeout: float = 120.0) -> float:
        """Boot; returns the seconds until ``systemctl is-system-running --wait`` answered. A box that does not
        come up is stopped before the error is raised (no container left behind)."""
        try:
            return self._start(timeout)
        except BaseException:
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait(30)
            for cgroup in self.cgroups:
                _remove_cgroup(cgroup)
            raise

    def _start(self, timeout: float) -> float:
        self.upper.mkdir(parents=True, exist_ok=True)
        # SYSTEMD_NSPAWN_LOCK=0: every box boots from the same read-only lower layer, which nspawn would otherwise
        # lock exclusively (the two test workers of make test-system boot boxes at the same time)
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1", SYSTEMD_NSPAWN_LOCK="0")
        started = time.monotonic()
        with self.log.open("ab") as console:
            for cgroup in self.cgroups:
                cgroup.mkdir(exist_ok=True)
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=self._enter_cgroups,
            )
        self.leader = self._wait_leader(timeout)
        deadline = time.monotonic() + timeout
        state = ""
        # empty, or "offline", until PID 1 has set itself up and listens on its private socket
        while state in ("", "offline") and time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running --wait", check=False, timeout=timeout).stdout.strip()
            if state in ("", "offline"):
                time.sleep(0.1)
        self.booted_s = time.monotonic() - started
        if state not in ("running", "degraded"):
            raise BoxError(f"the box did not boot: {state!r}; console: {self.log}")
        return self.booted_s

    def _wait_leader(self, timeout: float) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BoxError(f"systemd-nspawn exited with {self.process.returncode}; console: {self.log}")
            try:
                children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            except OSError:
                children = []
            for child in children:
                # the container's init: PID 1 in its own PID namespace, running systemd
                status = Path(f"/proc/{child}/status").read_text()
                nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
                comm = Path(f"/proc/{child}/comm").read_text().strip()
                if nspid[-1:] == ["1"] and len(nspid) > 1 and comm == "systemd":
                    return int(child)
            time.sleep(0.05)
        raise BoxError(f"no container init after {timeout} s; console: {self.log}")

    def _enter_cgroups(self) -> None:
        for cgroup in self.cgroups:  # in the child, before exec: nspawn starts there
            (cgroup / "cgroup.procs").write_text("0")

    def stop(self, timeout: float = 60.0) -> None:
        """Shut the box down cleanly (poweroff), SIGKILL nspawn if it does not go."""
        if self.process is not None and self.process.poll() is None:
            self.sh("systemctl poweroff --no-block", check=False, timeout=10)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait(10)
        for cgroup in self.cgroups:
            _remove_cgroup(cgroup)

    def __enter__(self) -> Box:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ a root shell on the box

    def sh(
        self, script: str, check: bool = True, timeout: float = 120.0, input: Optional[str] = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with bash as root on the box (all its namespaces, a clean environment)."""
        cmd = [
            "nsenter",
            f"--target={self.leader}",
            "--all",
            "env",
            "-i",
            f"PATH={PATH}",
            "HOME=/root",
            "LANG=C.UTF-8",
            "SYSTEMD_PAGER=",
            "SYSTEMD_COLORS=0",
            "bash",
            "-c",
            script,
        ]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BoxError(f"timed out after {timeout} s on the box: {script}") from exc
        if check and result.returncode != 0:
            raise BoxError(
                f"on the box: {script}\nexit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def write(self, path: str, text: str, mode: str = "0644", owner: str = "root:root") -> None:
        """Write a file on the box (through the shell, so it lands in the box's overlay)."""
        user, group = owner.split(":", 1)
        self.sh(f"install -D -m {mode} -o {user} -g {group} /dev/stdin {shlex.quote(path)}", input=text)

    def read(self, path: str) -> str:
        return self.sh(f"cat {shlex.quote(path)}").stdout

    # ------------------------------------------------------------------ systemd

    def show(self, unit: str, *props: str) -> Dict[str, str]:
        out = self.sh(f"systemctl show {shlex.quote(unit)} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, since_cursor: str = "") -> str:
        after = f" --after-cursor={shlex.quote(since_cursor)}" if since_cursor else ""
        return self.sh(f"journalctl --no-pager -o cat -u {shlex.quote(unit)}{after}", check=False).stdout

    def cursor(self) -> str:
        out = self.sh("journalctl -n 0 --show-cursor --no-pager", check=False).stdout
        return next((line.split("cursor: ", 1)[1] for line in out.splitlines() if "cursor: " in line), "")

    def wait_for(
        self, script: str, timeout: float, what: str, interval: float = 0.2
    ) -> Tuple[float, subprocess.CompletedProcess[str]]:
        """Poll ``script`` until it exits 0; returns (seconds waited, its result)."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            result = self.sh(script, check=False, timeout=max(5.0, timeout))
            if result.returncode == 0:
                return time.monotonic() - started, result
            if time.monotonic() > deadline:
                raise BoxError(
                    f"timed out after {timeout} s waiting for {what}: {script}\n{result.stdout}{result.stderr}"
                )
            time.sleep(interval)
