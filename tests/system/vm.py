"""The box in a QEMU virtual machine, for what a container cannot show: udev and a USB stick plugged into an
xHCI controller, and power cuts (the whole machine killed, its page cache with it).

The disk is the same root file system as the container tests plus the layer the session's install wrote, plus a
small test-harness layer (named here: the command channel, a static address on QEMU's user network), made into
an ext4 image without loop mounts (``mkfs.ext4 -d`` over an overlay mount of the layers); every boot writes to a
qcow2 overlay of it. Debian's own kernel boots directly (``-kernel``/``-initrd``) with an initramfs trimmed to
the virtio disk (built once, cached). Software emulation (TCG), one vCPU: this machine's /dev/kvm does not boot
a stock kernel (with QEMU's default CPU it hangs after "Probing EDD"; with ``-cpu host`` QEMU aborts setting
MSR 0x10a), checked in this work, so KVM is not used.

Network: QEMU's user network with ``restrict=on`` (no route out), and two ``guestfwd`` services that reach
sockets of the test's own, never a host port: 10.0.2.100:1883 a site broker (a mosquitto the test runs on a
unix socket), 10.0.2.100:8080 a release server. The broker lives outside the box, as a site broker does, so
what it acknowledged survives the box's power cut.

A power cut is SIGKILL to QEMU: the guest's page cache and any write QEMU had not passed on are lost, what the
guest flushed (fsync, journal commits) is on the image. It does not model a disk that reorders or loses
writes it acknowledged as flushed.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tests.system import images

GUEST_IP = "10.0.2.15"
SERVICES_IP = "10.0.2.100"  # the broker and the release server, as the box sees them
CHANNEL_UNIT = """\
# tests/system harness (not the product): the host's commands over a virtio-serial port
[Unit]
Description=edge-vision-loop system tests: command channel
DefaultDependencies=no
After=systemd-udevd.service
Before=sysinit.target

[Service]
ExecStart=/usr/bin/python3 /usr/local/lib/evl-test/guest_channel.py
Restart=always
RestartSec=0.2

[Install]
WantedBy=sysinit.target
"""
NETWORK = f"""\
# tests/system harness: QEMU's user network, static (no DHCP client in a minimal Debian)
[Match]
Name=en* eth*

[Network]
Address={GUEST_IP}/24
Gateway=10.0.2.2
"""
KERNEL_ARGS = "root=/dev/vda rw console=ttyS0 quiet loglevel=1 panic=-1 mitigations=off systemd.show_status=0"
VM_RECIPE = 1


class VMError(AssertionError):
    """The VM or a command in it failed."""


# ---------------------------------------------------------------------------------------------- the image


def boot_files(rootfs: Path) -> Dict[str, Path]:
    """Debian's kernel from the root file system and an initramfs trimmed to what mounts the virtio disk
    (the stock one, MODULES=most, took 19 s to reach the root file system under TCG, this one 10 s)."""
    cache = images.cache_dir() / f"vm-boot-{images.rootfs_key()}-{VM_RECIPE}"
    kernel = cache / "vmlinuz"
    initrd = cache / "initrd.vm"
    if not initrd.exists():
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy(next((rootfs / "boot").glob("vmlinuz-*")), kernel)
        with tempfile.TemporaryDirectory(dir=images.cache_dir(), prefix="initrd-") as tmp:
            upper = Path(tmp) / "upper"
            upper.mkdir()
            script = (
                'printf "virtio_pci\\nvirtio_blk\\next4\\ncrc32c_generic\\n" > /etc/initramfs-tools/modules && '
                "echo MODULES=list > /etc/initramfs-tools/conf.d/evl-vm.conf && "
                'mkinitramfs -o /out/initrd.vm "$(ls /lib/modules)"'
            )
            subprocess.run(
                [
                    "systemd-nspawn",
                    "--quiet",
                    f"--directory={rootfs}",
                    f"--overlay={rootfs}:{upper}:/",
                    "--register=no",
                    "--keep-unit",
                    f"--bind={cache}:/out",
                    "bash",
                    "-c",
                    script,
                ],
                check=True,
                capture_output=True,
            )
    return {"kernel": kernel, "initrd": initrd}


def harness_layer(directory: Path) -> Path:
    """The VM-only additions: the command channel and the network address (see the module docstring)."""
    lib = directory / "usr" / "local" / "lib" / "evl-test"
    lib.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("guest_channel.py"), lib / "guest_channel.py")
    units = directory / "etc" / "systemd" / "system"
    (units / "sysinit.target.wants").mkdir(parents=True)
    (units / "evl-test-channel.service").write_text(CHANNEL_UNIT)
    (units / "sysinit.target.wants" / "evl-test-channel.service").symlink_to("../evl-test-channel.service")
    (units / "multi-user.target.wants").mkdir(parents=True)
    (units / "multi-user.target.wants" / "systemd-networkd.service").symlink_to(
        "/lib/systemd/system/systemd-networkd.service"
    )
    network = directory / "etc" / "systemd" / "network"
    network.mkdir(parents=True)
    (network / "20-qemu-user.network").write_text(NETWORK)
    return directory


def build_disk(layers: Sequence[Path], out: Path, size: str = "4G") -> Path:
    """An ext4 image of the layers (top first, as overlayfs lists them) merged, without a loop device."""
    with tempfile.TemporaryDirectory(prefix="evl-vm-merge-") as tmp:
        merged = Path(tmp) / "merged"
        work = Path(tmp) / "work"
        merged.mkdir()
        work.mkdir()
        lower = ":".join(str(p) for p in layers)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lower}", str(merged)], check=True)
        try:
            subprocess.run(
                ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(merged), str(out), size],
                check=True,
                capture_output=True,
            )
        finally:
            subprocess.run(["umount", str(merged)], check=True)
    return out


def usb_stick(out: Path, files: Dict[str, Path], size_mb: int = 64) -> Path:
    """A USB stick image: an MBR with one FAT32 partition holding ``files`` ({path on the stick: host path}),
    written with mkfs.fat and mtools at the partition's offset (no loop device, no mount)."""
    sectors = size_mb * 1024 * 1024 // 512
    # one primary partition, type 0x0c (FAT32, LBA), from sector 2048 to the end; CHS fields unused (0xfeffff)
    entry = struct.pack("<B3sB3sII", 0x00, b"\xfe\xff\xff", 0x0C, b"\xfe\xff\xff", 2048, sectors - 2048)
    mbr = bytearray(512)
    mbr[446 : 446 + 16] = entry
    mbr[510:512] = b"\x55\xaa"
    with out.open("wb") as handle:
        handle.write(mbr)
        handle.truncate(sectors * 512)
    subprocess.run(
        ["mkfs.fat", "-F", "32", "-n", "EDGE-OTA", "--offset", "2048", str(out), str((sectors - 2048) // 2)],
        check=True,
        capture_output=True,
    )
    image = f"{out}@@{2048 * 512}"
    made = set()
    for inside, source in sorted(files.items()):
        parts = Path(inside).parts
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in made:
                subprocess.run(["mmd", "-i", image, f"::/{folder}"], check=True, capture_output=True)
                made.add(folder)
        subprocess.run(["mcopy", "-i", image, str(source), f"::/{inside}"], check=True, capture_output=True)
    return out


# ---------------------------------------------------------------------------------------------- the machine


class VM:
    """One QEMU machine over ``base`` (a qcow2 overlay of it per instance), see the module docstring.

    Args:
        base: the disk image (raw) the overlay is made over.
        boot: ``boot_files()``.
        workdir: the overlay, sockets and the console log go here.
        services: ``{guest port: unix socket path}`` reached at 10.0.2.100 from the guest.
    """

    def __init__(self, base: Path, boot: Dict[str, Path], workdir: Path, services: Dict[int, Path]) -> None:
        self.base = base
        self.boot = boot
        self.workdir = workdir
        self.services = services
        self.disk = workdir / "disk.qcow2"
        self.console = workdir / "console.log"
        self.process: Optional[subprocess.Popen[bytes]] = None
        self._qmp: Optional[socket.socket] = None
        self._qmp_file: Any = None
        self._channel: Optional[socket.socket] = None
        self._channel_file: Any = None
        self._next_id = 0
        self.boots = 0
        self.recorder_mark = 0  # the site recorder's position when this machine's story began (the tests)
        workdir.mkdir(parents=True, exist_ok=True)
        if not self.disk.exists():
            backing = "qcow2" if base.suffix == ".qcow2" else "raw"
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", backing, "-b", str(base), str(self.disk)], check=True
            )

    def command(self) -> List[str]:
        forwards = ",".join(
            f"guestfwd=tcp:{SERVICES_IP}:{port}-cmd:socat STDIO UNIX-CONNECT:{path}"
            for port, path in sorted(self.services.items())
        )
        netdev = "user,id=net0,restrict=on" + (f",{forwards}" if forwards else "")
        return [
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-m",
            "2048",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-kernel",
            str(self.boot["kernel"]),
            "-initrd",
            str(self.boot["initrd"]),
            "-append",
            KERNEL_ARGS,
            "-drive",
            f"file={self.disk},if=virtio,format=qcow2,cache=writeback,discard=unmap",
            "-netdev",
            netdev,
            "-device",
            "virtio-net-pci,netdev=net0",
            "-device",
            "qemu-xhci,id=xhci",
            "-chardev",
            f"socket,id=channel,path={self.workdir / 'channel.sock'},server=on,wait=off",
            "-device",
            "virtio-serial-pci",
            "-device",
            "virtserialport,chardev=channel,name=evl.channel",
            "-qmp",
            f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
            "-serial",
            f"file:{self.console}.{self.boots}",
        ]

    def start(self, timeout: float = 300.0, incoming: Optional[Path] = None, usb_stick: Optional[Path] = None) -> float:
        """Power on (or, with ``incoming``, resume the machine :meth:`save_state` saved there, over the same
        disk); returns the seconds until the command channel answered."""
        try:
            return self._start(timeout, incoming, usb_stick)
        except BaseException:
            if self.process is not None and self.process.poll() is None:
                self.power_cut()  # nothing left running behind a failed start
            raise

    def _start(self, timeout: float, incoming: Optional[Path], usb_stick: Optional[Path]) -> float:
        for name in ("channel.sock", "qmp.sock"):
            (self.workdir / name).unlink(missing_ok=True)
        started = time.monotonic()
        resume = ["-incoming", f"exec:cat {incoming}"] if incoming is not None else []
        if usb_stick is not None:  # plugged in already when the power comes on (udev sees it at coldplug)
            resume += [
                "-blockdev",
                f"driver=raw,node-name=stick,read-only=on,file.driver=file,file.filename={usb_stick}",
                "-device",
                "usb-storage,bus=xhci.0,drive=stick,id=stick-dev,removable=on",
            ]
        self.process = subprocess.Popen(
            self.command() + resume,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "qemu.stderr").open("ab"),
        )
        self.boots += 1
        self._connect_qmp(timeout)
        if incoming is not None:  # the machine was saved paused: it stays paused once loaded, until told
            deadline = time.monotonic() + timeout
            while (self.qmp("query-status") or {}).get("status") == "inmigrate":
                if time.monotonic() > deadline:
                    raise VMError(f"the saved machine did not load in {timeout} s")
                time.sleep(0.1)
            self.qmp("cont")
        self._connect_channel(timeout)
        self.sh("true", timeout=timeout)
        return time.monotonic() - started

    def _wait_socket(self, path: Path, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise VMError(f"QEMU exited {self.process.returncode}: {(self.workdir / 'qemu.stderr').read_text()}")
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(path))
                return sock
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise VMError(f"no {path.name} after {timeout} s") from None
                time.sleep(0.05)

    def _connect_qmp(self, timeout: float) -> None:
        self._qmp = self._wait_socket(self.workdir / "qmp.sock", timeout)
        self._qmp_file = self._qmp.makefile("rw")
        json.loads(self._qmp_file.readline())  # greeting
        self.qmp("qmp_capabilities")

    def _connect_channel(self, timeout: float) -> None:
        self._channel = self._wait_socket(self.workdir / "channel.sock", timeout)
        self._channel_file = self._channel.makefile("rw")

    def qmp(self, command: str, **arguments: Any) -> Any:
        assert self._qmp_file is not None
        self._qmp_file.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
        self._qmp_file.flush()
        while True:
            reply = json.loads(self._qmp_file.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise VMError(f"QMP {command}: {reply['error']}")
            return reply.get("return")

    # ------------------------------------------------------------------ commands in the guest

    def sh(self, script: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with bash as root in the guest (through the harness's command channel)."""
        assert self._channel is not None and self._channel_file is not None
        self._next_id += 1
        request = {"id": self._next_id, "script": script, "timeout": timeout}
        self._channel.settimeout(timeout + 30)
        deadline = time.monotonic() + timeout + 30
        self._channel_file.write(json.dumps(request) + "\n")
        self._channel_file.flush()
        while True:
            try:
                line = self._channel_file.readline()
            except (TimeoutError, OSError) as exc:
                raise VMError(f"no answer from the guest in {timeout} s: {script}") from exc
            if not line:
                raise VMError(f"the guest's channel closed during: {script}")
            reply = json.loads(line)
            if reply.get("id") == self._next_id:
                break
            if time.monotonic() > deadline:
                raise VMError(f"no answer from the guest in {timeout} s: {script}")
        result = subprocess.CompletedProcess(script, reply["rc"], reply["stdout"], reply["stderr"])
        if check and result.returncode != 0:
            raise VMError(f"in the VM: {script}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def wait_for(self, script: str, timeout: float, what: str, interval: float = 0.5) -> float:
        started = time.monotonic()
        while True:
            result = self.sh(script, check=False, timeout=max(30.0, timeout))
            if result.returncode == 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise VMError(
                    f"timed out after {timeout} s waiting for {what}: {script}\n{result.stdout}{result.stderr}"
                )
            time.sleep(interval)

    # ------------------------------------------------------------------ devices and power

    def plug_usb(self, image: Path, node: str = "stick") -> None:
        """Hot-plug ``image`` as a USB mass-storage device on the xHCI controller (QMP device_add)."""
        self.qmp(
            "blockdev-add",
            driver="raw",
            **{"node-name": node},
            file={"driver": "file", "filename": str(image)},
            **{"read-only": True},
        )
        self.qmp("device_add", driver="usb-storage", bus="xhci.0", drive=node, id=f"{node}-dev", removable=True)

    def unplug_usb(self, node: str = "stick") -> None:
        self.qmp("device_del", id=f"{node}-dev")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the guest acknowledges the removal; then the block node can go
            try:
                self.qmp("blockdev-del", **{"node-name": node})
                return
            except VMError:
                time.sleep(0.2)
        raise VMError("the USB stick did not go away")

    def save_state(self, path: Path, timeout: float = 300.0) -> None:
        """Pause the running machine and save its memory and devices to ``path`` (QMP migrate), then end QEMU.
        The disk stays as it was at that instant: machines resumed from ``path`` run over it unchanged (a qcow2
        overlay each)."""
        self.qmp("stop")
        self.qmp("migrate", uri=f"exec:cat > {path}")
        deadline = time.monotonic() + timeout
        while True:
            status = (self.qmp("query-migrate") or {}).get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                raise VMError(f"saving the machine failed: {status}")
            time.sleep(0.2)
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)  # paused and saved: nothing of it is left to lose
        self.process.wait(60)
        self._close_sockets()

    def power_cut(self) -> None:
        """Pull the plug: SIGKILL to QEMU, nothing shut down, nothing flushed by the guest."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._close_sockets()

    def stop(self) -> None:
        """A clean shutdown (poweroff in the guest), or SIGKILL when it does not come."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.sh("systemctl poweroff --no-block", check=False, timeout=10)
            self.process.wait(120)
        except (VMError, subprocess.TimeoutExpired):
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for handle in (self._channel_file, self._qmp_file, self._channel, self._qmp):
            if handle is not None:
                try:
                    handle.close()
                except OSError:
                    pass
        self._channel = self._qmp = self._channel_file = self._qmp_file = None

    def console_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("console.log.*")) if p.is_file())
