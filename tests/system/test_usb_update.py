"""A USB stick through udev, in the QEMU box: an offline bundle on a FAT32 stick, hot-plugged on the xHCI bus
(QMP device_add usb-storage), udev starts edge-agent-usb@sda1 from the shipped rule, the release is verified
and installed, the stick is unmounted, the agent runs the new model. What a real USB controller adds (power,
timing, a stick pulled halfway) is not shown here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict

from tests.system import vm as vmlib
from tests.system.conftest import NEW_RELEASE, Releases, record_figure
from tests.system.vm import VM

USB_UNIT = "edge-agent-usb@sda1.service"
HOW = "make test-system (tests/system/test_usb_update.py), QEMU TCG, 1 vCPU, on 2 shared cores"


def stick_files(bundle: Path) -> Dict[str, Path]:
    return {f"edge-ota/{bundle.name}/{p.relative_to(bundle)}": p for p in bundle.rglob("*") if p.is_file()}


def serving(box: VM) -> dict:
    out = box.sh("cat /var/lib/edge-agent/status.json", check=False).stdout
    return (json.loads(out) if out.strip() else {}).get("model") or {}


def wait_unit_done(box: VM, unit: str, timeout: float) -> Dict[str, str]:
    """Wait for a oneshot unit started by udev to have run and ended; its state, result and exit status."""
    box.wait_for(
        f'test "$(systemctl show -p ExecMainExitTimestampMonotonic --value {unit})" -gt 0 && '
        f'test "$(systemctl show -p ActiveState --value {unit})" != activating',
        timeout,
        f"{unit} to run and end",
        interval=1.0,
    )
    out = box.sh(f"systemctl show -p ActiveState -p Result -p ExecMainStatus {unit}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_a_usb_stick_installs_the_release_and_the_agent_runs_it(box_vm: VM, releases: Releases, tmp_path: Path) -> None:
    box = box_vm
    before = serving(box)
    assert before.get("version") != NEW_RELEASE, before
    stick = vmlib.usb_stick(tmp_path / "stick.img", stick_files(releases.usb_bundle))
    plugged = time.monotonic()
    box.plug_usb(stick)
    shown = wait_unit_done(box, USB_UNIT, 600)
    installed_s = time.monotonic() - plugged
    journal = box.sh(f"journalctl --no-pager -o cat -u {USB_UNIT}").stdout
    assert shown["Result"] == "success" and shown["ExecMainStatus"] == "0", (shown, journal[-4000:])
    assert f"installing edge-ota/{releases.usb_bundle.name}/ from /dev/sda1" in journal, journal[-4000:]
    assert "unmounted /dev/sda1" in journal, journal[-4000:]
    # nothing on the box has the stick mounted (the mount lived in the unit's namespace, gone with it)
    assert "sda" not in box.sh("cat /proc/self/mountinfo").stdout
    status = json.loads(box.sh("/opt/edge-agent/venv/bin/edge-agent ota status --json").stdout)
    assert status["active"]["version"] == NEW_RELEASE, status
    # the running agent takes the new model up by itself
    deadline = time.monotonic() + 300
    while serving(box).get("sha256") != releases.model_sha256[NEW_RELEASE]:
        assert time.monotonic() < deadline, (serving(box), box.sh("journalctl -u edge-agent -o cat -n 40").stdout)
        time.sleep(2)
    running_s = time.monotonic() - plugged
    record_figure(
        "usb_install_s",
        installed_s,
        "s",
        f"{HOW}: stick plugged to edge-agent-usb@ done (verified, health-checked, switched)",
    )
    record_figure("usb_to_new_model_s", running_s, "s", f"{HOW}: stick plugged to the agent serving the new model")
