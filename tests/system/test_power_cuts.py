"""Power cuts: the QEMU box killed (SIGKILL to QEMU: no shutdown, its page cache lost) at chosen points, then
powered on again. Each cut point is a test case; each starts from the same prepared box (running release
COMMISSIONED, connected to the site broker) and ends with a real cold boot after the cut.

What must hold after every cut (docs/OTA.md, "Device: state machine"; docs/OPERATIONS.md §7):
- the box comes up by itself and the agent serves a model that passed its health check;
- the spool passes ``PRAGMA integrity_check`` and no message the spool had taken is lost: every one was either
  acknowledged by the site broker (which is outside the box and records what it acknowledged) or is still in the
  spool, counted against the spool's own sequence (``sqlite_sequence``: AUTOINCREMENT never reuses a number);
- the install resumes or is abandoned as docs/OTA.md's table says, and a release that is healthy on the box is
  never marked bad because the power went out.

How the cut is placed: at an install step, the installer's own fault seam (``EDGE_AGENT_OTA_FAULT``, agent/ota/
installer.py: the process SIGKILLs itself right after that step's state is on disk) stops the installer exactly
there, and the power goes before anything else runs (the test cuts as soon as it sees the kill; the daemon's
RestartSec=5 leaves it that long). Elsewhere the test watches the box (staging files, the state file, the
broker's acknowledgements) and cuts when the chosen point is under way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from tests.system import vm as vmlib
from tests.system.conftest import (
    AGENT_BIN,
    COMMISSIONED,
    NEW_RELEASE,
    RUN_AS_AGENT,
    Releases,
    Site,
    VMSnapshot,
    read_spool,
    record_figure,
)
from tests.system.test_usb_update import USB_UNIT, stick_files, wait_unit_done
from tests.system.vm import VM

STATUS = "/var/lib/edge-agent/status.json"
REPO_URL = "http://10.0.2.100:8080/repo"
PUSH_TOPIC = "edge/plant1/fleet/models"
HOW = "make test-system (tests/system/test_power_cuts.py), QEMU TCG, 1 vCPU, on 2 shared cores"


# ------------------------------------------------------------------------------------------- helpers


def ota_status(box: VM) -> Dict[str, Any]:
    return json.loads(box.sh(f"{AGENT_BIN} ota status --json").stdout)


def serving(box: VM) -> Dict[str, Any]:
    out = box.sh(f"cat {STATUS}", check=False).stdout
    return json.loads(out) if out.strip().startswith("{") else {}


def power_on_after_cut(box: VM, usb_stick: Optional[Path] = None) -> float:
    """Cold boot after the cut; returns the seconds from power-on to the agent's READY=1 (systemd's own clock)."""
    box.start(usb_stick=usb_stick)
    box.wait_for('test "$(systemctl is-active edge-agent)" = active', 600, "the agent after the power cut")
    return int(box.sh("systemctl show -p ActiveEnterTimestampMonotonic --value edge-agent").stdout) / 1e6


def wait_serving(box: VM, sha256: str, timeout: float = 600) -> Dict[str, Any]:
    """Wait until the agent runs the model with this hash and has run frames through it."""
    deadline = time.monotonic() + timeout
    while True:
        document = serving(box)
        model = document.get("model") or {}
        if model.get("sha256") == sha256 and (document.get("inference") or {}).get("frames", 0) > 0:
            return document
        assert time.monotonic() < deadline, (model, box.sh("journalctl -u edge-agent -o cat -n 30").stdout)
        time.sleep(2)


def came_up_on(box: VM, releases: Releases) -> str:
    """The release whose model the agent loaded first in this boot (what the box came up on, read from its
    journal: the daemon may move on to another release right after), once it runs frames on a model: either
    passed its health check (both are signed releases that did, on this box)."""
    box.wait_for(
        f"python3 -c \"import json; exit(json.load(open('{STATUS}'))['inference']['frames'] < 1)\"",
        300,
        "the agent running frames",
    )
    journal = box.sh("journalctl -b -o cat -u edge-agent").stdout
    loaded = [json.loads(line) for line in journal.splitlines() if '"model_loaded"' in line]
    assert loaded, journal[-3000:]
    versions = {digest: version for version, digest in releases.model_sha256.items()}
    assert loaded[0]["sha256"] in versions, loaded[0]
    return versions[loaded[0]["sha256"]]


def never_marked_bad(box: VM) -> None:
    status = ota_status(box)
    assert status["bad"] == [], status


def spool_holds(items: int) -> str:
    """A check, in the box, that the agent's status says its spool holds at least ``items`` messages."""
    check = f"import json; exit(json.load(open('{STATUS}'))['spool']['items'] < {items})"
    return f'python3 -c "{check}"'


def spool_accounting(box: VM, site: Site, snapshot: VMSnapshot) -> Dict[str, Any]:
    """Stop the agent, check the spool file, and account for every message it took since it was pointed at the
    site broker (see the module docstring)."""
    box.sh("systemctl stop edge-agent", timeout=120)
    time.sleep(2)  # what the broker acknowledged last reaches the recorder
    spool = read_spool(box)
    counters = spool["counters"]
    evicted = sum(v for k, v in counters.items() if k.startswith("evicted.") and k != "evicted_bytes")
    quarantined = sum(v for k, v in counters.items() if k.startswith("quarantined."))
    acknowledged = set(site.recorder.ids_between(0, snapshot.recorded)) | set(
        site.recorder.ids_since(box.recorder_mark)
    )
    taken = spool["max_seq"] - snapshot.spool_base_seq  # AUTOINCREMENT: one number per message, never reused
    accounted = (acknowledged | set(spool["remaining"])) - set(snapshot.spool_base_ids)
    assert spool["integrity"] == "ok", spool["integrity"]
    assert len(accounted) + evicted + quarantined == taken, (
        f"the spool took {taken} messages since it was pointed at the site broker; acknowledged by the broker or "
        f"still queued: {len(accounted)}, evicted {evicted}, quarantined {quarantined}"
    )
    spool["taken"] = taken
    return spool


def push(site: Site, releases: Releases) -> None:
    """The fleet's push of NEW_RELEASE (retained, as `edge-trainer push --url` publishes it)."""
    from agent.protocol import encode_json
    from trainer.release.push import build_push

    publication = build_push(PUSH_TOPIC, "stable", urls=[REPO_URL], repo=releases.repo)
    client = site.broker.client("evl-system-push")
    client.loop_start()
    try:
        client.publish(PUSH_TOPIC, encode_json(publication.push), qos=1, retain=True).wait_for_publish(30)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.fixture
def box(box_vm: VM, site: Site) -> Iterator[VM]:
    site.server.rate = 0
    yield box_vm
    # no retained push may reach the next test's box
    client = site.broker.client("evl-system-clear")
    client.loop_start()
    client.publish(PUSH_TOPIC, b"", qos=1, retain=True).wait_for_publish(30)
    client.loop_stop()
    client.disconnect()
    site.server.rate = 0
    site.broker.resume()


def cut_when(box: VM, script: str, timeout: float, what: str, interval: float = 0.2) -> None:
    """Cut the power as soon as ``script`` succeeds in the box."""
    box.wait_for(script, timeout, what, interval=interval)
    box.power_cut()


# ------------------------------------------------------------------------------------------- the spool


def test_power_cut_while_the_spool_fills(box: VM, site: Site, releases: Releases, vm_snapshot: VMSnapshot) -> None:
    """The broker hangs (SIGSTOP): nothing is acknowledged, samples and alerts pile up in the spool; cut."""
    site.broker.pause()
    cut_when(box, spool_holds(8), 180, "a backlog of 8 messages in the spool", interval=1.0)
    site.broker.resume()
    power_on_after_cut(box)
    assert came_up_on(box, releases) == COMMISSIONED
    box.wait_for(f"grep -q '\"connected\": true' {STATUS}", 120, "the broker again")
    time.sleep(5)  # the backlog drains
    spool = spool_accounting(box, site, vm_snapshot)
    assert spool["taken"] > 8


def test_power_cut_while_a_spool_backlog_drains(
    box: VM, site: Site, releases: Releases, vm_snapshot: VMSnapshot
) -> None:
    """A backlog built while the broker hung; the broker comes back, the spool drains at full speed; cut after
    the broker acknowledged the first few, while the rest is in flight."""
    site.broker.pause()
    box.wait_for(spool_holds(30), 300, "a backlog of 30 messages", interval=1.0)
    mark = site.recorder.mark()
    site.broker.resume()
    deadline = time.monotonic() + 120
    while len(site.recorder.ids_since(mark)) < 5:
        assert time.monotonic() < deadline, "the backlog did not start draining"
        time.sleep(0.005)
    box.power_cut()
    delivered_before_cut = len(set(site.recorder.ids_since(mark)))
    power_on_after_cut(box)
    assert came_up_on(box, releases) == COMMISSIONED
    box.wait_for(f"grep -q '\"connected\": true' {STATUS}", 120, "the broker again")
    time.sleep(5)
    spool = spool_accounting(box, site, vm_snapshot)
    drained_after = len(set(site.recorder.ids_since(mark)))
    # the cut came in the middle of the drain: some of the backlog went only after the power came back
    assert delivered_before_cut < drained_after, (delivered_before_cut, drained_after)
    assert spool["integrity"] == "ok"


# ------------------------------------------------------------------------------------------- an online update


def test_power_cut_during_a_download(box: VM, site: Site, releases: Releases) -> None:
    """The fleet's push, the model downloading slowly from the release server; cut with part of it staged."""
    site.server.rate = 50_000  # bytes/s: the model (1.2 MB) takes about 25 s
    push(site, releases)
    cut_when(
        box,
        "test -n \"$(find /var/lib/edge-agent/ota/staging -name '*.part' -size +20k)\"",
        300,
        "a partial download in staging",
    )
    site.server.rate = 0
    power_on_after_cut(box)
    # docs/OTA.md: killed while downloading -> the attempt is abandoned, the old model stays active ...
    assert came_up_on(box, releases) == COMMISSIONED
    # ... and the retained push brings the release in again
    wait_serving(box, releases.model_sha256[NEW_RELEASE])
    status = ota_status(box)
    assert status["active"]["version"] == NEW_RELEASE, status
    never_marked_bad(box)


# docs/OTA.md, "killed after": step -> (what the box serves after the power comes back, the active release then)
INSTALL_STEPS = {
    "verified": (COMMISSIONED, COMMISSIONED),  # attempt abandoned, the old model active
    "installed": (COMMISSIONED, COMMISSIONED),  # staged: abandoned too
    "health_checked": (NEW_RELEASE, NEW_RELEASE),  # the switch is completed: it passed its check -> trial
    "trial": (NEW_RELEASE, NEW_RELEASE),  # probation goes on
}


@pytest.mark.parametrize("step", list(INSTALL_STEPS))
def test_power_cut_at_an_install_step(box: VM, releases: Releases, step: str) -> None:
    """The operator's `edge-agent ota install URL` (docs/OPERATIONS.md §5), the power cut right after ``step``
    reached the disk."""
    if INSTALL_STEPS[step][0] == NEW_RELEASE:
        # a probation longer than the test, so that the trial's counters can be read after the boot (the box's
        # 30 s could end before an emulated box, slowed by a second test beside it, is looked at)
        box.sh(
            "sed -i 's/period_s: 30,/period_s: 900,/' /etc/edge-agent/config.yaml && grep -q 'period_s: 900' "
            "/etc/edge-agent/config.yaml && sync"
        )
    install = f"EDGE_AGENT_OTA_FAULT={step} {RUN_AS_AGENT} {AGENT_BIN} ota install {REPO_URL}"
    result = box.sh(install, check=False, timeout=900)
    assert result.returncode in (137, -9), (result.returncode, result.stdout, result.stderr)  # the seam fired
    box.power_cut()
    boot_s = power_on_after_cut(box)
    served, active = INSTALL_STEPS[step]
    assert came_up_on(box, releases) == served
    status = ota_status(box)
    assert (status["active"] or {}).get("version") == active, status
    never_marked_bad(box)
    if step in ("health_checked", "trial"):
        # on probation still, and the power cut is not a crash of the release (a power loss at most, when the
        # running daemon had switched to it before the cut); its commit after cuts: test_power_cut_during_probation
        assert status["probation"], status
        assert status["probation"]["crashes"] == 0 and status["probation"]["power_losses"] <= 1, status
    record_figure(f"power_cut_{step}_boot_to_ready_s", boot_s, "s", f"{HOW}: power on after the cut to READY=1")


AGENT_FAULT_DROP_IN = "/run/systemd/system/edge-agent.service.d/fault.conf"


def test_power_cut_as_the_daemon_commits(box: VM, releases: Releases) -> None:
    """The operator's `ota install` puts NEW_RELEASE on probation; the daemon commits it when probation is over
    (raising the anti-rollback floor) and the power goes right after (the seam in the daemon, set by a runtime
    drop-in: gone with the power)."""
    box.sh(
        f"mkdir -p {Path(AGENT_FAULT_DROP_IN).parent} && printf '[Service]\\nEnvironment="
        f"EDGE_AGENT_OTA_FAULT=committed\\n' > {AGENT_FAULT_DROP_IN} && systemctl daemon-reload && "
        "systemctl restart edge-agent",
        timeout=600,
    )
    box.sh(f"{RUN_AS_AGENT} {AGENT_BIN} ota install {REPO_URL}", timeout=900)
    assert ota_status(box)["probation"], "on probation"
    cut_when(
        box,
        'test "$(systemctl show -p ExecMainStatus --value edge-agent)" = 9',
        600,
        "the daemon's commit (the seam kills it right after)",
        interval=0.3,
    )
    power_on_after_cut(box)
    assert came_up_on(box, releases) == NEW_RELEASE
    status = ota_status(box)
    assert status["probation"] is None and status["known_good"]["version"] == NEW_RELEASE, status
    assert status["floor"] == 2, status  # raised at the commit, and the raise is on disk
    never_marked_bad(box)


def test_power_cut_during_probation(box: VM, site: Site, releases: Releases) -> None:
    """The fleet's push installed NEW_RELEASE; it runs on probation; the power goes twice. A healthy release is
    not rolled back or marked bad for it (docs/OTA.md: a power loss is not a crash)."""
    push(site, releases)
    wait_serving(box, releases.model_sha256[NEW_RELEASE])
    assert ota_status(box)["probation"], "on probation"
    for _ in range(2):
        time.sleep(5)
        box.power_cut()
        power_on_after_cut(box)
        assert came_up_on(box, releases) == NEW_RELEASE
        assert ota_status(box)["active"]["version"] == NEW_RELEASE
    box.wait_for(f"{AGENT_BIN} ota status --json | grep -q '\"probation\": null'", 300, "the commit")
    status = ota_status(box)
    assert status["active"]["version"] == NEW_RELEASE and status["known_good"]["version"] == NEW_RELEASE, status
    never_marked_bad(box)


# ------------------------------------------------------------------------------------------- a USB stick


USB_FAULT_DROP_IN = "/run/systemd/system/edge-agent-usb@.service.d/fault.conf"


@pytest.mark.parametrize("step", ["verified", "health_checked"])
def test_power_cut_during_a_usb_install(box: VM, releases: Releases, tmp_path: Path, step: str) -> None:
    """The stick's install stopped right after ``step`` (a runtime drop-in: gone with the power), the power cut;
    on the next boot udev finds the stick still plugged and the unit runs again."""
    box.sh(
        f"mkdir -p {Path(USB_FAULT_DROP_IN).parent} && printf '[Service]\\nEnvironment=EDGE_AGENT_OTA_FAULT={step}\\n'"
        f" > {USB_FAULT_DROP_IN} && systemctl daemon-reload"
    )
    stick = vmlib.usb_stick(tmp_path / "stick.img", stick_files(releases.usb_bundle))
    box.plug_usb(stick)
    shown = wait_unit_done(box, USB_UNIT, 900)
    assert shown["ExecMainStatus"] in ("137", "9"), shown  # the seam fired inside the unit
    box.power_cut()
    power_on_after_cut(box, usb_stick=stick)
    # the stick is still in: the unit runs at boot, from udev's coldplug, and finishes the job
    shown = wait_unit_done(box, USB_UNIT, 900)
    assert shown["Result"] == "success", (shown, box.sh(f"journalctl -o cat -u {USB_UNIT}").stdout[-3000:])
    wait_serving(box, releases.model_sha256[NEW_RELEASE])
    assert ota_status(box)["active"]["version"] == NEW_RELEASE
    never_marked_bad(box)
