"""systemd/edge-agent.service: `systemd-analyze verify` passes and the offline security exposure is <= 2.5.

systemd itself cannot run in this container; `systemd-analyze` works offline on unit files.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edge-agent.service"
EXEC = "/opt/edge-agent/venv/bin/edge-agent"
ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(
    ANALYZE is None,
    reason="SKIPPED LOUDLY: systemd-analyze is not installed; `apt-get install -y systemd` provides it",
)


def _run(*args: str) -> subprocess.CompletedProcess:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=120, check=False)


def test_unit_verifies(tmp_path: Path) -> None:
    # As shipped: the only complaint allowed is that the agent is not installed on this machine.
    shipped = _run("verify", str(UNIT))
    complaints = [line for line in (shipped.stdout + shipped.stderr).splitlines() if line.strip()]
    assert all(f"Command {EXEC} is not executable" in line for line in complaints), complaints
    # With ExecStart pointing at an executable that exists, verify must pass with nothing to say.
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(EXEC, "/bin/true"))
    result = _run("verify", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_drop_ins_verify_with_the_unit(tmp_path: Path) -> None:
    """The unit with each shipped drop-in (systemd/edge-agent.service.d/) passes `systemd-analyze verify`."""
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(EXEC, "/bin/true"))
    for drop_in in sorted((UNIT.parent / "edge-agent.service.d").glob("*.conf")):
        combined = tmp_path / f"with-{drop_in.stem}" / UNIT.name
        combined.parent.mkdir()
        # a drop-in's [Service] lines appended to the unit: what systemd merges
        combined.write_text(copy.read_text() + "\n" + drop_in.read_text())
        result = _run("verify", str(combined))
        assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (drop_in, result.stderr)


def _exposure(unit: Path) -> float:
    """`systemd-analyze security --offline`'s overall exposure of a unit file (0 safest, 10 worst)."""
    result = _run("security", "--offline=true", "--no-pager", str(unit))
    match = re.search(r"Overall exposure level for \S+\.service:\s*([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_security_exposure_is_at_most_2_5() -> None:
    assert _exposure(UNIT) <= 2.5


def test_unit_has_the_required_settings() -> None:
    text = UNIT.read_text()
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        f"ExecStart={EXEC} run --config /etc/edge-agent/config.yaml",
        "User=edge-agent",
        "SupplementaryGroups=video",
        "StateDirectory=edge-agent",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/edge-agent",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "ProtectHome=true",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "DeviceAllow=char-video4linux rw",
    ]:
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    # GPU nodes live in drop-ins the install scripts add where the box has them (no journal noise elsewhere)
    assert not re.search(r"^DeviceAllow=/dev/nv", text, re.M)
    jetson = (UNIT.parent / "edge-agent.service.d" / "jetson.conf").read_text()
    for node in ("/dev/nvmap", "/dev/nvhost-ctrl-gpu", "/dev/nvgpu/igpu0/ctrl", "/dev/nvhost-nvcsi"):
        assert re.search(rf"^DeviceAllow={re.escape(node)} rw$", jetson, re.M), node
    assert re.search(r"^BindPaths=-/tmp/argus_socket$", jetson, re.M)
    assert "jetson.conf" in (ROOT / "deploy" / "install-jetson.sh").read_text()
    gpu = (UNIT.parent / "edge-agent.service.d" / "nvidia-gpu.conf").read_text()
    assert re.search(r"^DeviceAllow=/dev/nvidiactl rw$", gpu, re.M)
    assert "nvidia-gpu.conf" in (ROOT / "deploy" / "install-x86.sh").read_text()
    assert re.search(r"^StartLimitBurst=\d+$", text, re.M) and re.search(r"^StartLimitIntervalSec=\d+$", text, re.M)
    assert re.search(r"^LoadCredential=mqtt-password:", text, re.M)


def test_unit_fixes_from_the_installed_box() -> None:
    """What booting the unit under a real systemd showed (issue 31; tests/system/test_agent_unit.py runs it)."""
    text = UNIT.read_text()
    # a missing credential file: SetCredential= is the fallback, so no 243/CREDENTIALS restart storm ...
    loaded = re.findall(r"^LoadCredential=([^:]+):", text, re.M)
    assert loaded and all(re.search(rf"^SetCredential={re.escape(name)}:\S", text, re.M) for name in loaded)
    # ... and the agent's exit code for an unusable configuration is not restarted
    from agent.daemon import EXIT_CONFIG

    assert re.search(rf"^RestartPreventExitStatus={EXIT_CONFIG}$", text, re.M)
    # /etc/edge-agent stays read-only to the agent; /proc/cpuinfo stays visible to ONNX Runtime
    assert not re.search(r"^ConfigurationDirectory=", text, re.M)
    assert not re.search(r"^ProcSubset=pid", text, re.M)
    assert re.search(r"^ReadOnlyPaths=/run /dev/shm -/dev/mqueue$", text, re.M)
    assert re.search(r"^PrivateIPC=true$", text, re.M)
    # a minimal Debian has no /bin/kill (procps): reload through the shell's builtin
    reload = re.search(r"^ExecReload=(.*)$", text, re.M).group(1)
    assert reload.startswith("/bin/sh -c ") and "/bin/kill" not in reload


CLOUD_UNIT = ROOT / "systemd" / "edge-trainer-ingest@.service"
CLOUD_EXEC = "/opt/edge-trainer/venv/bin/edge-trainer"


def test_cloud_ingest_unit_verifies(tmp_path: Path) -> None:
    shipped = _run("verify", str(CLOUD_UNIT))
    complaints = [line for line in (shipped.stdout + shipped.stderr).splitlines() if line.strip()]
    assert all(f"Command {CLOUD_EXEC} is not executable" in line for line in complaints), complaints
    _verifies_silently(CLOUD_UNIT, tmp_path)


def _verifies_silently(unit: Path, tmp_path: Path) -> None:
    """A copy of ``unit`` (its ExecStart pointing at /bin/true) passes `systemd-analyze verify` with nothing to say."""
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(CLOUD_EXEC, "/bin/true"))
    result = _run("verify", str(copy))
    assert (result.stdout + result.stderr).strip() == "" and result.returncode == 0, result.stdout + result.stderr


def test_cloud_ingest_unit_security_exposure_is_at_most_2_0() -> None:
    assert _exposure(CLOUD_UNIT) <= 2.0


def test_cloud_ingest_unit_has_the_required_settings() -> None:
    text = CLOUD_UNIT.read_text()
    for line in [
        "Type=notify",
        "WatchdogSec=60",
        "Restart=on-failure",
        f"ExecStart={CLOUD_EXEC} serve --config /etc/edge-trainer/trainer.yaml",
        "Environment=EDGE_TRAINER__INGEST__BROKER__CLIENT_ID=edge-ingest-%i",
        "User=edge-trainer",
        "StateDirectory=edge-trainer",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/edge-trainer",
        "PrivateDevices=true",
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute=true",
    ]:
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    # the stop timeout leaves room for the drain (ingest.drain_timeout_s, 20 s by default; read from the source
    # because this test also runs on the agent's Python 3.8, where the trainer does not import)
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1))
    source = (ROOT / "trainer" / "ingest" / "config.py").read_text()
    drain = float(re.search(r"drain_timeout_s: float = Field\(\s*default=([0-9.]+)", source).group(1))
    assert stop > drain + 10


CONSOLE_UNIT = ROOT / "systemd" / "edge-trainer-console.service"


def test_console_unit_verifies_and_is_confined(tmp_path: Path) -> None:
    _verifies_silently(CONSOLE_UNIT, tmp_path)
    assert _exposure(CONSOLE_UNIT) <= 2.0
    text = CONSOLE_UNIT.read_text()
    assert re.search(
        rf"^ExecStart={re.escape(CLOUD_EXEC)} console --config /etc/edge-trainer/trainer.yaml$", text, re.M
    )
    assert re.search(r"^LoadCredential=console-password:/etc/edge-trainer/credentials/console-password$", text, re.M)
    install = (ROOT / "deploy" / "install-cloud.sh").read_text()
    assert "console-password" in install and "edge-trainer-console.service" in install


REFRESH_UNIT = ROOT / "systemd" / "edge-trainer-repo-refresh.service"
REFRESH_TIMER = ROOT / "systemd" / "edge-trainer-repo-refresh.timer"


def test_repo_refresh_units_verify(tmp_path: Path) -> None:
    _verifies_silently(REFRESH_UNIT, tmp_path)
    _verifies_silently(REFRESH_TIMER, tmp_path)  # its service, copied beside it just before, resolves


def test_repo_refresh_service_security_exposure_is_at_most_1_0() -> None:
    assert _exposure(REFRESH_UNIT) <= 1.0  # no network at all: it only signs files


def test_repo_refresh_runs_every_6_hours_well_inside_the_timestamp_life() -> None:
    """The timer's schedule as systemd computes it: 4 a day, so 3 may fail inside the timestamp's 1-day life
    (tests/agent/ota/test_refresh.py simulates that week with this cadence)."""
    timer = REFRESH_TIMER.read_text()
    spec = re.search(r"^OnCalendar=(.+)$", timer, re.M)
    assert spec and re.search(r"^Persistent=true$", timer, re.M)
    result = _run("calendar", "--iterations=5", spec.group(1))
    assert result.returncode == 0, result.stderr
    stamps = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", result.stdout)
    times = [dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S") for s in stamps]
    assert len(times) == 5
    assert {b - a for a, b in zip(times, times[1:])} == {dt.timedelta(hours=6)}
    service = REFRESH_UNIT.read_text()
    assert re.search(
        rf"^ExecStart={re.escape(CLOUD_EXEC)} repo refresh --repo \S+ --keys \S+ --metrics-file", service, re.M
    )
    assert re.search(rf"^ExecStartPost={re.escape(CLOUD_EXEC)} repo check --repo \S+ --within 12h$", service, re.M)


CRL_UNIT = ROOT / "systemd" / "edge-trainer-crl-refresh.service"
CRL_TIMER = ROOT / "systemd" / "edge-trainer-crl-refresh.timer"


def test_crl_refresh_units_verify(tmp_path: Path) -> None:
    _verifies_silently(CRL_UNIT, tmp_path)
    _verifies_silently(CRL_TIMER, tmp_path)


def test_crl_refresh_service_security_exposure_is_at_most_1_5() -> None:
    assert _exposure(CRL_UNIT) <= 1.5  # root (the CA key is root's), but no network and one writable directory


def test_crl_refresh_runs_well_inside_the_crl_life() -> None:
    """Weekly against the CRL's 30 days (read from the source: this test also runs on Python 3.8)."""
    timer = CRL_TIMER.read_text()
    spec = re.search(r"^OnCalendar=(.+)$", timer, re.M)
    assert spec and re.search(r"^Persistent=true$", timer, re.M)
    result = _run("calendar", "--iterations=4", spec.group(1))
    stamps = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", result.stdout)
    times = [dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S") for s in stamps]
    gaps = {b - a for a, b in zip(times, times[1:])}
    crl_days = int(
        re.search(r"^CRL_DAYS = (\d+)", (ROOT / "trainer" / "devices" / "pki.py").read_text(), re.M).group(1)
    )
    assert gaps == {dt.timedelta(days=7)} and crl_days >= 3 * 7 + 7
    service = CRL_UNIT.read_text()
    assert re.search(rf"^ExecStart={re.escape(CLOUD_EXEC)} devices crl --pki /etc/mosquitto/edge$", service, re.M)
    # the broker is signalled by systemd itself: Debian's mosquitto.service reloads through /bin/kill (procps),
    # absent from a minimal Debian, where `systemctl try-reload-or-restart mosquitto` failed the refresh
    post = re.search(r"^ExecStartPost=\+(.*)$", service, re.M).group(1)
    assert "--signal=HUP mosquitto.service" in post and "reload" not in post
    assert "crlfile /etc/mosquitto/edge/crl.pem" in (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()


USB_UNIT = ROOT / "systemd" / "edge-agent-usb@.service"


def test_usb_unit_mounts_and_installs_in_one_namespace(tmp_path: Path) -> None:
    """The shape a real udev run needed (tests/system/test_usb_update.py runs it in QEMU): no mount from an
    ExecStartPre= (another namespace than ExecStart='s), a mount point systemd makes (RuntimeDirectory=), the
    mount private to the unit, a failure when the stick holds no bundle."""
    text = USB_UNIT.read_text()
    copy = tmp_path / USB_UNIT.name
    copy.write_text(text.replace("/opt/edge-agent/bin/edge-agent-usb-install", "/bin/true"))
    result = _run("verify", str(copy))
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr
    assert not re.search(r"^ExecStartPre=", text, re.M) and not re.search(r"^ExecStopPost=", text, re.M)
    assert re.search(r"^ExecStart=/opt/edge-agent/bin/edge-agent-usb-install %I$", text, re.M)
    assert re.search(r"^RuntimeDirectory=edge-agent-usb/%I$", text, re.M)
    assert re.search(r"^PrivateMounts=true$", text, re.M)
    assert not re.search(r"^ReadWritePaths=.*/run/", text, re.M)
    script = (ROOT / "deploy" / "edge-agent-usb-install").read_text()
    assert "mount -o ro,nosuid,nodev,noexec" in script and "exit 5" in script
    assert "setpriv --reuid=edge-agent --regid=edge-agent" in script
    assert "edge-agent-usb-install" in (ROOT / "deploy" / "install-lib.sh").read_text()
    unit = tmp_path / "edge-agent-usb@sda1.service"
    unit.write_text(copy.read_text())
    assert _exposure(unit) <= 2.5
