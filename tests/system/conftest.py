"""Fixtures of the system tests: the clean OS, the wheelhouse, the install on a clean OS (once per session),
and a box booted from it for each test (``make test-system``; root on Linux, skipped elsewhere).

What the layers hold::

    rootfs        debootstrap's clean Debian bookworm (cached tarball, tests/system/images.py)
    installed     what `deploy/install-x86.sh --wheelhouse` wrote on that clean OS: the session's one install
    <test>/upper  what one test's box writes; thrown away with the test
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests.system import images
from tests.system.nspawn import Box
from tests.system.site import Recorder, ReleaseServer, SiteBroker
from tests.system.vm import VM

REPO = images.REPO
SRC = "/srv/edge-vision-loop"  # the checkout on the box (read-only), as an operator unpacks a release
WHEELHOUSE = "/srv/wheelhouse"
APT_MIRROR = "/srv/apt"
# The plant's own apt mirror (the boxes have no network): what an offline site sets up before installing
USE_PLANT_MIRROR = (
    f"echo 'deb [trusted=yes] file:{APT_MIRROR} ./' > /etc/apt/sources.list && rm -f /etc/apt/sources.list.d/*"
)
TOOLS = ("systemd-nspawn", "debootstrap", "nsenter", "zstd")
FIGURES = Path(os.environ.get("EVL_SYSTEM_FIGURES", str(REPO / "runs" / "system" / "figures.json")))


def _why_not() -> str:
    if not sys.platform.startswith("linux"):
        return "the system tests boot Linux containers and VMs: Linux only"
    if os.geteuid() != 0:
        return "the system tests need root (systemd-nspawn, overlay mounts, QEMU with tap-less devices)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (make test-system installs them with apt)"
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    reason = _why_not()
    if not reason:
        return
    skip = pytest.mark.skip(reason=f"SKIPPED LOUDLY: {reason}")
    for item in items:
        if "tests/system" in str(item.fspath):
            item.add_marker(skip)


def record_figure(name: str, value: float, unit: str, how: str) -> None:
    """A measured figure for docs/BENCHMARKS.md (runs/system/figures.json, merged across tests)."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    # the two pytest-xdist workers of make test-system record into one file: read, merge, write under a lock
    with open(FIGURES.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        figures: Dict[str, object] = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        figures[name] = {
            "value": round(value, 2),
            "unit": unit,
            "how": how,
            "at": time.strftime("%Y-%m-%d %H:%M"),
            "workers": int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")),
        }
        FIGURES.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def rootfs() -> Path:
    return images.build_rootfs()


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    return images.build_wheelhouse()


@pytest.fixture(scope="session")
def apt_mirror(rootfs: Path) -> Path:
    return images.build_apt_mirror(rootfs)


@pytest.fixture(scope="session")
def system_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("system")


def box_binds(wheelhouse: Path, apt_mirror: Path) -> Dict[Path, str]:
    return {REPO: SRC, wheelhouse: WHEELHOUSE, apt_mirror: APT_MIRROR}


@dataclass
class Install:
    """The session's install on a clean OS, as an operator ran it."""

    layer: Path
    command: str
    output: str
    seconds: float
    boot_s: float


INSTALL_COMMAND = f"cd {SRC} && deploy/install-x86.sh --wheelhouse {WHEELHOUSE}"


@pytest.fixture(scope="session")
def installed(rootfs: Path, wheelhouse: Path, apt_mirror: Path, system_tmp: Path) -> Iterator[Install]:
    """`deploy/install-x86.sh` run once, as root, on a freshly booted clean OS with no network (apt from the
    plant's mirror, pip from the wheelhouse)."""
    layer = system_tmp / "installed"
    box = Box([rootfs], layer, box_binds(wheelhouse, apt_mirror), system_tmp / "install-console.log")
    boot_s = box.start()
    try:
        box.sh(USE_PLANT_MIRROR)
        started = time.monotonic()
        result = box.sh(INSTALL_COMMAND + " 2>&1", timeout=900)
        seconds = time.monotonic() - started
    finally:
        box.stop()
    yield Install(layer, INSTALL_COMMAND, result.stdout, seconds, boot_s)


@pytest.fixture
def box(rootfs: Path, wheelhouse: Path, apt_mirror: Path, installed: Install, tmp_path: Path) -> Iterator[Box]:
    """A box booted from the installed layer (as it is after the install: the unit enabled, the example
    configuration in place), with a write layer of its own."""
    binds = box_binds(wheelhouse, apt_mirror)
    booted = Box([rootfs, installed.layer], tmp_path / "upper", binds, tmp_path / "console.log")
    booted.start()
    try:
        yield booted
    finally:
        try:
            journal = booted.sh("journalctl --no-pager -o short-monotonic -n 400", check=False, timeout=30).stdout
            (tmp_path / "journal.txt").write_text(journal)
        finally:
            booted.stop()


# ------------------------------------------------------------------------------------------- the QEMU box

# The box's configuration for the QEMU tests, as an operator writes it from the example (docs/OPERATIONS.md §2):
# the site broker outside the box (10.0.2.100, see tests/system/vm.py), OTA from the release server, a camera
# whose every frame is a sample (the spool sees a steady stream, a backlog while the broker is away). Emulated,
# the box runs the INT8 model in about 0.8 s a frame (0.004 s on this host's CPU): one frame every 2 s leaves
# it time for the rest; one timed run per golden image; probation short enough for a test to see the commit.
VM_CONFIG = """\
mqtt:
  host: 10.0.2.100
  port: 1883
  site: plant1
  device: box-vm
  keepalive_s: 10
  backoff: {initial_s: 0.5, max_s: 2.0}
model:
  path: /opt/edge-agent/models/demo-int8.onnx
  backend: {type: onnxruntime, providers: [CPUExecutionProvider], intra_op_threads: 1}
cameras:
  - name: line
    fps_limit: 0.5
    source: {type: synthetic, domain: factory, seed: 1, width: 320, height: 192, fps: 2, prerender: 8}
    rules:
      alerts: [{name: any-part, min_confidence: 0.3, cooldown_s: 0.5}]
      triage:
        random: {probability: 1.0, rate: {per_minute: 6000, burst: 100}}
        uncertainty: {enabled: false}
        inconsistency: {enabled: false}
        near_duplicate: {enabled: false}
spool:
  path: /var/lib/edge-agent/spool.sqlite3
  max_bytes: 268435456
ota:
  state_dir: /var/lib/edge-agent/ota
  trusted_root: /etc/edge-agent/trust/root.json
  offline_root: /etc/edge-agent/trust/offline-root.json
  repository_url: http://10.0.2.100:8080/repo
  channel: stable
  probation: {period_s: 30, max_crashes: 2}
  health: {latency_repeats: 1}
daemon:
  state_dir: /var/lib/edge-agent
  status_interval_s: 1
"""
COMMISSIONED = "1.0.1"  # the signed release the box runs when every QEMU test starts (installed at commissioning)
NEW_RELEASE = "1.1.0"  # the update the tests deliver (MQTT push, the operator's `ota install`, a USB stick)
RUN_AS_AGENT = "setpriv --reuid=edge-agent --regid=edge-agent --init-groups"
AGENT_BIN = "/opt/edge-agent/venv/bin/edge-agent"


@dataclass
class Releases:
    """The release host's side: keys and the online repository (served to the box over HTTP at /repo), with
    COMMISSIONED then NEW_RELEASE of the INT8 demo model (each a copy with its own doc string: another file,
    another hash, the same arithmetic, so the emulated box runs either at the same cost); /repo-1.0.1 is the
    repository as it was before NEW_RELEASE; the USB bundle of NEW_RELEASE."""

    served: Path
    keys: Path
    repo: Path
    usb_bundle: Path
    model_sha256: Dict[str, str]


def _model_variant(source: Path, out: Path, version: str) -> str:
    import hashlib

    import onnx

    model = onnx.load(str(source))
    model.doc_string = f"edge-vision-loop system tests: demo INT8 as release {version}"
    onnx.save(model, str(out))
    return hashlib.sha256(out.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def releases(system_tmp: Path) -> Releases:
    import subprocess

    served = system_tmp / "release-host" / "served"
    keys, repo = system_tmp / "release-host" / "keys", served / "repo"
    bundles = system_tmp / "release-host" / "usb"
    trainer = [sys.executable, "-m", "trainer.cli"]

    def run(*args: str) -> None:
        subprocess.run([*trainer, *args], check=True, capture_output=True)

    run("keys", "init", str(keys), "--repo", str(repo))
    digests = {}
    for version in (COMMISSIONED, NEW_RELEASE):
        model = system_tmp / "release-host" / f"demo-{version}.onnx"
        digests[version] = _model_variant(REPO / "models" / "demo" / "demo-int8.onnx", model, version)
        # the emulated box runs a model 100 times slower than this host: a latency bound for that
        run(
            "release",
            "--model",
            str(model),
            "--name",
            "demo",
            "--version",
            version,
            "--repo",
            str(repo),
            "--keys",
            str(keys),
            "--max-latency-ms",
            "20000",
        )
        run("usb-bundle", str(bundles / f"demo-{version}"), "--repo", str(repo), "--keys", str(keys))
        if version == COMMISSIONED:
            shutil.copytree(repo, served / f"repo-{version}")
    return Releases(served, keys, repo, bundles / f"demo-{NEW_RELEASE}", digests)


@dataclass
class Site:
    broker: SiteBroker
    recorder: Recorder
    server: ReleaseServer
    services: Dict[int, Path]


@pytest.fixture(scope="session")
def site(system_tmp: Path, releases: Releases) -> Iterator[Site]:
    broker = SiteBroker(system_tmp / "site")
    broker.start()
    recorder = Recorder(broker)
    server = ReleaseServer(releases.served, system_tmp / "site" / "http.sock")
    try:
        yield Site(broker, recorder, server, {1883: broker.socket, 8080: server.socket})
    finally:
        server.stop()
        recorder.stop()
        broker.stop()


@dataclass
class VMSnapshot:
    """A box booted once, configured by the operator (VM_CONFIG, the trust roots), its agent running: saved,
    so that every QEMU test resumes it in seconds instead of booting (the boot after a power cut is real)."""

    disk: Path
    state: Path
    boot: Dict[str, Path]
    boot_to_ready_s: float
    recorded: int  # the site recorder's messages up to the save: what the saved box's broker acknowledged
    # the spool when the box was pointed at the site broker: messages up to spool_base_seq went to the box's
    # own mosquitto (the example configuration's localhost:1883) or were still queued (spool_base_ids)
    spool_base_seq: int
    spool_base_ids: List[str]


@pytest.fixture(scope="session")
def vm_snapshot(rootfs: Path, installed: Install, releases: Releases, site: Site, system_tmp: Path) -> VMSnapshot:
    from tests.system import vm

    work = system_tmp / "vm"
    boot = vm.boot_files(rootfs)
    harness = vm.harness_layer(work / "harness")
    base = vm.build_disk([harness, installed.layer, rootfs], work / "base.raw")
    machine = vm.VM(base, boot, work / "prepare", site.services)
    try:
        machine.start()
        machine.sh("systemctl is-system-running --wait", check=False, timeout=600)
        ready_us = int(machine.sh("systemctl show -p ActiveEnterTimestampMonotonic --value edge-agent").stdout)
        # the operator's steps: configuration and the release keys' roots (docs/OPERATIONS.md §2 and §4)
        machine.sh(f"cat > /etc/edge-agent/config.yaml <<'EOF'\n{VM_CONFIG}EOF")
        for name, source in (
            ("root.json", releases.repo / "metadata" / "1.root.json"),
            ("offline-root.json", releases.repo / "offline" / "metadata" / "1.root.json"),
        ):
            machine.sh(f"cat > /etc/edge-agent/trust/{name} <<'EOF'\n{source.read_text()}\nEOF")
        machine.sh(
            "chown root:edge-agent /etc/edge-agent/config.yaml /etc/edge-agent/trust/* && "
            "chmod 0640 /etc/edge-agent/config.yaml /etc/edge-agent/trust/*"
        )
        machine.sh(f"{AGENT_BIN} run --check --config /etc/edge-agent/config.yaml")
        machine.sh("systemctl stop edge-agent", timeout=600)
        base = read_spool(machine)
        machine.sh("systemctl start edge-agent", timeout=600)
        machine.wait_for("grep -q '\"connected\": true' /var/lib/edge-agent/status.json", 300, "the site broker")
        # commissioning (docs/OPERATIONS.md §9.2): a signed release, so that an update has one to return to
        machine.sh(f"{RUN_AS_AGENT} {AGENT_BIN} ota install http://10.0.2.100:8080/repo-{COMMISSIONED}", timeout=900)
        machine.wait_for(
            f"grep -q '{releases.model_sha256[COMMISSIONED]}' /var/lib/edge-agent/status.json", 300, "the agent on it"
        )
        machine.sh("sync")
        machine.save_state(work / "prepared.state")
        time.sleep(1)  # the last acknowledged messages reach the recorder
    except BaseException:
        if machine.process is not None and machine.process.poll() is None:
            machine.power_cut()
        raise
    return VMSnapshot(
        machine.disk,
        work / "prepared.state",
        boot,
        ready_us / 1e6,
        site.recorder.mark(),
        int(base["max_seq"]),
        list(base["remaining"]),
    )


SPOOL_READER = """\
import json, sqlite3
db = sqlite3.connect('/var/lib/edge-agent/spool.sqlite3')
print(json.dumps({
 'integrity': db.execute('PRAGMA integrity_check').fetchone()[0],
 'max_seq': (db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone() or [0])[0],
 'remaining': [r[0] for r in db.execute('SELECT message_id FROM items')],
 'quarantine': [r[0] for r in db.execute('SELECT message_id FROM quarantine')],
 'counters': dict(db.execute('SELECT name, value FROM counters').fetchall())}))
"""


def read_spool(machine: VM) -> Dict[str, Any]:
    """The spool file, read while the agent is stopped (it holds it locked while it runs)."""
    out = machine.sh(f"/opt/edge-agent/venv/bin/python - <<'EOF'\n{SPOOL_READER}EOF").stdout
    return dict(json.loads(out))


@pytest.fixture
def box_vm(vm_snapshot: VMSnapshot, site: Site, tmp_path: Path) -> Iterator[VM]:
    """The prepared QEMU box, resumed (its agent running, connected to the site broker)."""
    machine = VM(vm_snapshot.disk, vm_snapshot.boot, tmp_path / "vm", site.services)
    machine.recorder_mark = site.recorder.mark()
    try:
        machine.start(incoming=vm_snapshot.state)
        yield machine
    finally:
        try:
            if machine.process is not None and machine.process.poll() is None:
                journal = machine.sh("journalctl --no-pager -o short-monotonic -n 500", check=False, timeout=60)
                (tmp_path / "journal.txt").write_text(journal.stdout)
        except AssertionError:
            pass
        if machine.process is not None and machine.process.poll() is None:
            machine.power_cut()  # its disk is thrown away with the test
