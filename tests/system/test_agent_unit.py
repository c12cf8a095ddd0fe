"""The agent as installed: `deploy/install-x86.sh` on a clean Debian 12 with systemd as PID 1, the shipped unit
unchanged (a drop-in only where a test says so), an operator's root shell for everything else.

Figures measured here go to runs/system/figures.json (docs/BENCHMARKS.md, "The box as installed").
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.system.conftest import SRC, Install, record_figure
from tests.system.nspawn import Box

AGENT = "/opt/edge-agent/venv/bin/edge-agent"
CONFIG = "/etc/edge-agent/config.yaml"
STATUS = "/var/lib/edge-agent/status.json"
UNIT = "edge-agent.service"
HOW = "make test-system (tests/system/test_agent_unit.py), systemd-nspawn on 2 shared cores"


def status(box: Box) -> dict:
    return json.loads(box.read(STATUS))


def main_pid(box: Box) -> int:
    return int(box.show(UNIT, "MainPID")["MainPID"])


def wait_active(box: Box, timeout: float = 120.0, other_than: int = 0) -> int:
    """Wait for the unit to be active (READY=1 received) with a main process other than ``other_than``."""
    script = (
        f'test "$(systemctl is-active {UNIT})" = active && '
        f'pid=$(systemctl show -p MainPID --value {UNIT}) && test "$pid" != 0 && test "$pid" != {other_than}'
    )
    box.wait_for(script, timeout, f"{UNIT} active (READY=1)")
    return main_pid(box)


def monotonic_us(box: Box, unit: str, prop: str) -> int:
    return int(box.show(unit, prop)[prop])


def box_now_us(box: Box) -> int:
    """CLOCK_MONOTONIC in µs, the clock of systemd's *TimestampMonotonic properties."""
    return int(box.sh("python3 -c 'import time; print(time.monotonic_ns() // 1000)'").stdout)


def wait_frames(box: Box, at_least: int, timeout: float = 60.0) -> dict:
    """Wait until the daemon's status file says it ran ``at_least`` frames through the model."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            document = status(box)
        except (AssertionError, ValueError):
            document = {}
        frames = int((document.get("inference") or {}).get("frames", 0) or 0)
        if frames >= at_least:
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"the agent ran {frames} frames in {timeout} s (wanted {at_least}): {document}")
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------- the install


def test_the_install_writes_a_commented_valid_config_and_says_what_to_do(installed: Install, box: Box) -> None:
    out = installed.output
    assert "edge-agent installed" in out, out
    for step in (
        "edit /etc/edge-agent/config.yaml",
        "/etc/edge-agent/credentials/NAME",
        "trust/root.json",
        f"{AGENT} run --check --config {CONFIG}",
        "systemctl restart edge-agent",
    ):
        assert step in out, (step, out)
    text = box.read(CONFIG)
    assert text.startswith("# edge-agent configuration"), text[:200]
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) > 20 and "mqtt:" in text and "cameras:" in text
    assert box.sh(f"stat -c '%U:%G %a' {CONFIG} /etc/edge-agent /etc/edge-agent/credentials").stdout.split() == [
        "root:edge-agent",
        "640",
        "root:edge-agent",
        "750",
        "root:root",
        "700",
    ]
    assert box.sh(f"{AGENT} run --check --config {CONFIG}").stdout.strip() == f"{CONFIG}: ok"
    # RTSP cameras read through the system's GStreamer (apt) seen by the venv (--system-site-packages)
    gst = "from agent.sources.gst import gst_available; print(gst_available())"
    assert box.sh(f"/opt/edge-agent/venv/bin/python -c '{gst}'").stdout.strip() == "True"
    record_figure("install_x86_s", installed.seconds, "s", f"{HOW}: {installed.command}, offline")


def test_a_fresh_box_runs_the_agent_at_boot(box: Box) -> None:
    """Enabled by the install, the agent comes up at boot on the example configuration: the factory model,
    the synthetic demo camera, the box's own mosquitto on localhost:1883."""
    wait_active(box)
    ready = monotonic_us(box, UNIT, "ActiveEnterTimestampMonotonic")
    # the manager's own start: PID 1 exec'd in the container
    userspace = int(box.sh("systemctl show -p UserspaceTimestampMonotonic --value").stdout)
    document = wait_frames(box, 10)
    assert document["state"] == "running" and document["mqtt"]["connected"], document["mqtt"]
    assert document["watchdog"]["enabled"], document["watchdog"]
    assert box.sh(f"{AGENT} status", check=False).returncode == 0
    record_figure("boot_to_ready_s", (ready - userspace) / 1e6, "s", f"{HOW}: systemd (PID 1) start to READY=1")


def test_ready_and_the_state_directory(box: Box) -> None:
    wait_active(box)
    before = main_pid(box)
    started = time.monotonic()
    box.sh(f"systemctl restart {UNIT}")  # returns once READY=1 arrived (Type=notify)
    restart_s = time.monotonic() - started
    pid = wait_active(box, other_than=before)
    exec_us = monotonic_us(box, UNIT, "ExecMainStartTimestampMonotonic")
    ready_us = monotonic_us(box, UNIT, "ActiveEnterTimestampMonotonic")
    wait_frames(box, 5)
    listing = box.sh("stat -c '%U:%G %a %n' /var/lib/edge-agent /var/lib/edge-agent/*").stdout
    assert re.search(r"^edge-agent:edge-agent 750 /var/lib/edge-agent$", listing, re.M), listing
    assert re.search(r"^edge-agent:edge-agent 600 /var/lib/edge-agent/status\.json$", listing, re.M), listing
    assert re.search(r"^edge-agent:edge-agent \d+ /var/lib/edge-agent/spool\.sqlite3$", listing, re.M), listing
    journal = box.sh(f"journalctl --no-pager -o cat _PID={pid}", check=False).stdout
    assert "daemon_ready" in journal, journal[-2000:]
    # ONNX Runtime reads the CPU's features from /proc/cpuinfo: no ProcSubset=pid to hide it
    assert "cpuinfo" not in journal, journal
    # no journal noise for device nodes an x86 box lacks (the GPU nodes are drop-ins where they exist)
    assert "Couldn't stat device" not in box.journal(UNIT)
    record_figure("start_to_ready_s", (ready_us - exec_us) / 1e6, "s", f"{HOW}: exec of ExecStart to READY=1")
    assert restart_s < 60


def test_sigkill_restarts_the_agent(box: Box) -> None:
    before = wait_active(box)
    wait_frames(box, 5)
    killed_us = int(
        box.sh(f"python3 -c 'import os, time; t = time.monotonic_ns() // 1000; os.kill({before}, 9); print(t)'").stdout
    )
    after = wait_active(box, timeout=60, other_than=before)
    ready_us = monotonic_us(box, UNIT, "ActiveEnterTimestampMonotonic")
    assert after != before
    assert int(box.show(UNIT, "NRestarts")["NRestarts"]) == 1
    journal = box.journal(UNIT)
    assert "status=9/KILL" in journal, journal[-2000:]
    record_figure("sigkill_to_ready_s", (ready_us - killed_us) / 1e6, "s", f"{HOW}: SIGKILL to READY=1 (RestartSec=5)")


WATCHDOG_DROP_IN = """\
# tests/system: a short watchdog, so that a frozen pipeline is noticed within seconds (the unit says 30)
[Service]
WatchdogSec=4
"""


def test_a_frozen_pipeline_is_restarted_by_the_watchdog(box: Box) -> None:
    box.write("/etc/systemd/system/edge-agent.service.d/watchdog.conf", WATCHDOG_DROP_IN)
    box.sh(f"systemctl daemon-reload && systemctl restart {UNIT}")
    before = wait_active(box)
    document = wait_frames(box, 5)
    pings = document["watchdog"]["pings"]
    # freeze every thread but the event loop's: inference stops, the process lives on
    freeze = f"setsid python3 {SRC}/tests/system/freeze_threads.py {before} > /run/freeze.log 2>&1 < /dev/null &"
    frozen_us = box_now_us(box)
    box.sh(freeze)
    box.wait_for("grep -q frozen /run/freeze.log", 10, "the pipeline's threads frozen")
    after = wait_active(box, timeout=60, other_than=before)
    ready_us = monotonic_us(box, UNIT, "ActiveEnterTimestampMonotonic")
    journal = box.journal(UNIT)
    assert "Watchdog timeout" in journal, journal[-3000:]
    assert after != before and pings > 0
    record_figure(
        "watchdog_freeze_to_ready_s",
        (ready_us - frozen_us) / 1e6,
        "s",
        f"{HOW}: pipeline threads frozen (ptrace) to READY=1 again, WatchdogSec=4 (drop-in), RestartSec=5",
    )


def test_reload_applies_a_config_change(box: Box) -> None:
    pid = wait_active(box)
    wait_frames(box, 3)
    text = box.read(CONFIG)
    extra = (
        "  - name: demo-2\n    fps_limit: 2\n"
        "    source: {type: synthetic, domain: factory, seed: 2, width: 640, height: 360, fps: 2}\n"
    )
    changed = text.replace("\nspool:", extra + "\nspool:", 1)
    assert changed != text
    box.write(CONFIG, changed, mode="0640", owner="root:edge-agent")
    box.sh(f"systemctl reload {UNIT}")
    box.wait_for(f"grep -q '\"reloads\": 1' {STATUS}", 30, "the reload applied")
    deadline = time.monotonic() + 30
    while (status(box)["cameras"].get("demo-2") or {}).get("processed", 0) == 0:  # the new camera runs
        assert time.monotonic() < deadline, status(box)["cameras"]
        time.sleep(0.5)
    assert main_pid(box) == pid  # applied in place, no restart


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_a_missing_credential_is_named_and_not_retried(box: Box, how: str) -> None:
    """The configuration names a password the operator has not put in place yet: the unit starts (no
    243/CREDENTIALS), the agent says which file to write, and systemd does not restart it in a loop."""
    wait_active(box)
    text = (
        box.read(CONFIG)
        .replace("  # username: box-017", "  username: box-017")
        .replace("  # password_file: mqtt-password", "  password_file: mqtt-password")
    )
    box.write(CONFIG, text, mode="0640", owner="root:edge-agent")
    if how == "empty":
        box.write("/etc/edge-agent/credentials/mqtt-password", "\n", mode="0600")
    cursor = box.cursor()
    box.sh(f"systemctl restart {UNIT}", check=False)
    time.sleep(12)  # RestartSec=5: two restarts would have happened by now
    shown = box.show(UNIT, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert shown["ActiveState"] == "failed" and shown["ExecMainStatus"] == "2", shown
    assert shown["NRestarts"] == "0", shown
    journal = box.journal(UNIT, cursor)
    assert "243/CREDENTIALS" not in journal
    assert "credential mqtt-password is empty" in journal and "/etc/edge-agent/credentials/mqtt-password" in journal, (
        journal[-3000:]
    )
    # what the message says to do is enough
    box.write("/etc/edge-agent/credentials/mqtt-password", "s3cret\n", mode="0600")
    box.sh(f"systemctl restart {UNIT}")
    wait_active(box)


# --------------------------------------------------------------------------------------------- hardening

PROBE_DROP_IN = f"""\
# tests/system: the shipped unit with ExecStart= alone replaced by the probe (every other line in force)
[Service]
ExecStart=
ExecStart=/opt/edge-agent/venv/bin/python {SRC}/tests/system/probe_unit.py /var/lib/edge-agent/probe.json --notify
"""

# What the probe must meet inside the unit, with the directive that makes it so. Each refusal is also checked
# against the same probe run as the same user outside the unit, which must have been allowed (or refused for
# another reason, shown by another errno or mount flag), so the refusal is the unit's doing.
HARDENED = {
    "write /var/lib/edge-agent": ("ok", "StateDirectory= + ReadWritePaths=: the one writable place"),
    "write /etc/edge-agent": ("EROFS", "ProtectSystem=strict and no ConfigurationDirectory= (defect 5)"),
    "ro-mount /etc/edge-agent": ("ok:True", "the configuration and trust roots on a read-only mount"),
    "ro-mount /etc": ("ok:True", "ProtectSystem=strict"),
    "ro-mount /usr": ("ok:True", "ProtectSystem=strict"),
    "ro-mount /opt/edge-agent": ("ok:True", "ProtectSystem=strict: the venv cannot be changed by the agent"),
    "write /run/lock": ("EROFS", "ReadOnlyPaths=/run (defect 5: world-writable /run/lock)"),
    "write /dev/shm": ("EROFS", "ReadOnlyPaths=/dev/shm (defect 5)"),
    "write /dev/mqueue": ("EROFS", "ReadOnlyPaths=/dev/mqueue, PrivateIPC= (defect 5)"),
    "list /home": ("EACCES", "ProtectHome=true"),
    "see /proc/1": ("ok:hidden", "ProtectProc=invisible"),
    "read /proc/cpuinfo": ("ok:flags", "no ProcSubset=pid: ONNX Runtime reads the CPU's features (defect 4)"),
    "ro-mount /sys/fs/cgroup": ("ok:True", "ProtectControlGroups=true"),
    "open /dev/null": ("ok", "DevicePolicy=closed keeps the pseudo devices"),
    "open /dev/net/tun": ("EPERM", "DevicePolicy=closed: a device node not in DeviceAllow="),
    "CapBnd": ("ok:0000000000000000", "CapabilityBoundingSet="),
    "NoNewPrivs": ("ok:1", "NoNewPrivileges=true"),
    "Seccomp": ("ok:2", "SystemCallFilter= (a filter is loaded)"),
    "adjtimex read (@clock)": ("EPERM", "SystemCallFilter=~@clock, ProtectClock="),
    "setpriority +1 (@resources)": ("EPERM", "SystemCallFilter=~@resources"),
    "ptrace TRACEME (@debug)": ("EPERM", "SystemCallFilter=~@debug"),
    "personality PER_LINUX32": ("EPERM", "LockPersonality=true"),
    "unshare user namespace": ("EPERM", "RestrictNamespaces=true"),
    "setuid bit on own file": ("EPERM", "RestrictSUIDSGID=true"),
    "new file mode (UMask=)": ("ok:0o600", "UMask=0077"),
    "socket AF_PACKET": ("EAFNOSUPPORT", "RestrictAddressFamilies="),
    "socket AF_INET": ("ok", "RestrictAddressFamilies= keeps IP (the broker, RTSP cameras)"),
    "socket AF_NETLINK": ("ok", "RestrictAddressFamilies= keeps netlink (udev hot-plug)"),
    "session keyring": ("ok:_ses", "KeyringMode=private: not linked to the user's keyring"),
    "write+exec mapping": ("ok", "MemoryDenyWriteExecute=false on purpose (ONNX Runtime / TensorRT JIT)"),
}
# The same outside the unit (these would hold for the user anyway, so they prove nothing about the unit):
NOT_THE_UNITS_DOING = {
    "open /dev/null",
    "read /proc/cpuinfo",
    "socket AF_INET",
    "socket AF_NETLINK",
    "write /var/lib/edge-agent",
    "write+exec mapping",
}
# What a container cannot show (the QEMU box runs the probe too): nspawn mounts /proc/sys read-only for
# everything in it (ProtectKernelTunables=) and gives no /dev/kmsg (ProtectKernelLogs=).


def test_every_hardening_directive_is_in_force(box: Box) -> None:
    wait_active(box)
    box.write("/etc/systemd/system/edge-agent.service.d/probe.conf", PROBE_DROP_IN)
    box.sh(f"systemctl daemon-reload && systemctl restart {UNIT}")
    box.wait_for("test -s /var/lib/edge-agent/probe.json", 60, "the probe's results")
    inside = json.loads(box.read("/var/lib/edge-agent/probe.json"))
    box.sh(
        f"setpriv --reuid=edge-agent --regid=edge-agent --init-groups /opt/edge-agent/venv/bin/python "
        f"{SRC}/tests/system/probe_unit.py /tmp/probe-outside.json"
    )
    outside = json.loads(box.read("/tmp/probe-outside.json"))
    wrong = {name: (inside.get(name), want, why) for name, (want, why) in HARDENED.items() if inside.get(name) != want}
    assert not wrong, wrong
    not_credited = {
        name: outside.get(name)
        for name in HARDENED
        if name not in NOT_THE_UNITS_DOING and outside.get(name) == inside.get(name)
    }
    assert not not_credited, f"refused outside the unit as well, so the unit's part is not shown: {not_credited}"
    assert inside["tmp namespace"] != outside["tmp namespace"], "PrivateTmp=true"
    assert inside["uts namespace"] != outside["uts namespace"], "ProtectHostname=true"
    # the probe ran as the unit says: its user, and the unit went on to be inactive (exit 0, no restart)
    assert inside["uid"] == box.sh("id -u edge-agent").stdout.strip()
