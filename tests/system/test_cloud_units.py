"""The cloud side's units as installed: `deploy/install-cloud.sh --wheelhouse` on a clean Debian 12 with systemd
as PID 1, the shipped units unchanged: the ingest worker `edge-trainer-ingest@1` (Type=notify, watchdog) against
the box's own mosquitto, the repository refresh and the CRL refresh (services and their timers) as an operator
enables them (docs/OPERATIONS.md §8 and §10)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

from tests.system.conftest import SRC, WHEELHOUSE, box_binds
from tests.system.nspawn import Box

TRAINER = "/opt/edge-trainer/venv/bin/edge-trainer"
INSTALL = f"cd {SRC} && deploy/install-cloud.sh --wheelhouse {WHEELHOUSE}"


@pytest.fixture
def cloud_box(rootfs: Path, wheelhouse: Path, apt_mirror: Path, tmp_path: Path) -> Iterator[Box]:
    """A clean OS (no agent), the cloud side installed on it by its script."""
    box = Box([rootfs], tmp_path / "upper", box_binds(wheelhouse, apt_mirror), tmp_path / "console.log")
    box.start()
    try:
        box.sh(INSTALL + " 2>&1", timeout=900)
        yield box
    finally:
        try:
            (tmp_path / "journal.txt").write_text(box.sh("journalctl --no-pager -n 300", check=False).stdout)
        finally:
            box.stop()


def wait_ingest(box: Box, condition: Callable[[Dict[str, Any]], bool], timeout: float = 60) -> Dict[str, Any]:
    """The worker's status document (`edge-trainer ingest-status --json`) once ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        out = box.sh(f"{TRAINER} ingest-status --json", check=False).stdout
        document = json.loads(out) if out.strip().startswith("{") else None
        if document is not None and condition(document):
            return document
        assert time.monotonic() < deadline, out
        time.sleep(0.5)


def test_the_ingest_worker_runs_under_its_unit(cloud_box: Box) -> None:
    box = cloud_box
    assert box.sh("systemctl is-enabled edge-trainer-ingest@1").stdout.strip() == "enabled"
    # the operator's steps (§8): the broker's password for `ops` (the box's mosquitto takes any: no password
    # file configured), the site name, then a restart
    box.write("/etc/edge-trainer/credentials/mqtt-password", "ops-secret\n", mode="0600")
    box.sh("sed -i 's/sites: \\[plant-1\\]/sites: [plant1]/' /etc/edge-trainer/trainer.yaml")
    box.sh("systemctl restart edge-trainer-ingest@1")  # Type=notify: returns at READY=1
    shown = box.show("edge-trainer-ingest@1", "ActiveState", "MainPID", "WatchdogUSec", "Environment")
    assert shown["ActiveState"] == "active" and shown["WatchdogUSec"] == "1min", shown
    assert "EDGE_TRAINER__INGEST__BROKER__CLIENT_ID=edge-ingest-1" in shown["Environment"]
    # it ingests: once connected, a message published to the box's broker is received and acknowledged (stored,
    # or kept in the rejected table when it is not a valid status: either way it is on disk first)
    document = wait_ingest(box, lambda d: d["mqtt"]["connected"])
    box.sh(
        "/opt/edge-trainer/venv/bin/python - <<'EOF'\n"
        "import paho.mqtt.publish as publish\n"
        "publish.single('edge/plant1/box-1/status', b'{}', qos=1, hostname='127.0.0.1', port=1883)\n"
        "EOF"
    )
    document = wait_ingest(box, lambda d: d["mqtt"]["acked"] >= 1)
    assert document["mqtt"]["received"] >= 1, document
    # SIGKILL: restarted (Restart=on-failure, RestartSec=3), nothing acknowledged is lost (tests/trainer prove that)
    pid = int(shown["MainPID"])
    box.sh(f"kill -9 {pid}")
    box.wait_for(
        'test "$(systemctl is-active edge-trainer-ingest@1)" = active && '
        f'test "$(systemctl show -p MainPID --value edge-trainer-ingest@1)" != {pid}',
        60,
        "the ingest worker restarted",
    )


def test_repository_and_crl_refresh_run_under_their_units_and_timers(cloud_box: Box) -> None:
    box = cloud_box
    # §10: the release repository and its online keys on this host; §3: the site PKI beside mosquitto
    box.sh(f"{TRAINER} keys init /root/keys --repo /var/lib/edge-trainer/repo")
    box.sh(
        "install -d -m 0750 -o root -g edge-trainer /etc/edge-trainer/keys && "
        "install -m 0600 -o edge-trainer -g edge-trainer /root/keys/keys.json /root/keys/snapshot-*.pem "
        "/root/keys/timestamp-*.pem /etc/edge-trainer/keys/ && "
        "chown -R edge-trainer:edge-trainer /var/lib/edge-trainer/repo"
    )
    box.sh(f"install -d -m 0750 /etc/mosquitto/edge && {TRAINER} devices init --pki /etc/mosquitto/edge")
    box.sh(INSTALL + " 2>&1", timeout=900)  # re-run: idempotent, and now enables both timers
    for timer in ("edge-trainer-repo-refresh.timer", "edge-trainer-crl-refresh.timer"):
        shown = box.show(timer, "ActiveState", "UnitFileState", "NextElapseUSecRealtime")
        assert shown["ActiveState"] == "active" and shown["UnitFileState"] == "enabled", (timer, shown)
    before = box.sh("cat /var/lib/edge-trainer/repo/metadata/timestamp.json").stdout
    box.sh("systemctl start edge-trainer-repo-refresh.service", timeout=300)
    shown = box.show("edge-trainer-repo-refresh.service", "Result", "ExecMainStatus")
    assert shown["Result"] == "success", (shown, box.journal("edge-trainer-repo-refresh.service")[-3000:])
    assert box.sh("cat /var/lib/edge-trainer/repo/metadata/timestamp.json").stdout != before
    metrics = box.read("/var/lib/edge-trainer/metrics/repo-refresh.prom")
    assert "edge_trainer_repo_refresh_success 1" in metrics, metrics
    crl_before = box.sh("stat -c %Y /etc/mosquitto/edge/crl.pem").stdout
    reloads = "grep -c 'Reloading config' /var/log/mosquitto/mosquitto.log || true"
    reloads_before = int(box.sh(reloads).stdout)
    time.sleep(1.1)
    box.sh("systemctl start edge-trainer-crl-refresh.service", timeout=300)
    shown = box.show("edge-trainer-crl-refresh.service", "Result")
    assert shown["Result"] == "success", (shown, box.journal("edge-trainer-crl-refresh.service")[-3000:])
    assert box.sh("stat -c %Y /etc/mosquitto/edge/crl.pem").stdout != crl_before
    # the broker was told to read it (SIGHUP from systemd)
    box.wait_for(f"test $({reloads}) -gt {reloads_before}", 10, "mosquitto reloading its configuration")
