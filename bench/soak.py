"""Soak with faults (issue 13): a real agent with 4 cameras, the real ingest, one mosquitto, a simulated fleet
beside them, and faults injected at random for ``--minutes``; then everything drains and every message is
accounted for.

    PYTHONPATH=. .venv/bin/python bench/soak.py [--minutes 30] [--seed 1] [--fleet 50] [--write]

::

    agent (edge-agent run) ──► FaultyProxy (loopback TCP) ──► mosquitto ◄── edge-trainer serve
      ▲  3 synthetic cameras + 1 IpCamera (MJPEG/HTTP)          ▲  ▲ └──► observer (persistent session, QoS 1)
      └─ state on a DiskFiller tmpfs; sd_notify → WatchdogListener  │  └── simulated fleet (--fleet boxes)
                                                                 └── release pushes (ReleaseKit, retained chunks)

Faults, one every ``--fault-every`` seconds on average (seeded; bench/chaos.py, bench/soak_releases.py): the
broker restarted (down 1-5 s); the network between agent and broker cut (every connection dropped, new ones
refused, 2-10 s) or stalled (connections kept, nothing forwarded, 2-10 s); the agent SIGKILLed and started
again (as systemd would: a start that fails is retried every second); the ingest SIGKILLed and started again;
the IP camera stalled or gone (3-15 s); the agent's disk filled to the last byte (5-20 s); a model pushed in
chunks: a good one (a faithful re-export: must commit), or a bad one (an impostor signed by our keys: the health
check must refuse it; or a release signed by someone else: verification must refuse it). One push at a time.

Accounting, after the faults stop, the pushes settle and the agent's spool has drained: every alert and sample
id the broker delivered to the observer must be in the store (lost = delivered − stored, plus what is left in
the spool), every sample's digest must verify (corrupted), duplicates are counted (at-least-once: the spool
resends what a kill or cut left unacknowledged; the store keeps one); what the agent could not spool while its
disk was full is counted by the agent itself (refused at the source, never accepted). The fleet: published -
stored. The agent's RSS and open file descriptors are sampled every 5 s (a plot), and the growth of RSS from
minute 5 to the end of the longest-lived agent process is the memory figure; watchdog trips are gaps of more
than WATCHDOG_USEC (10 s) between the agent's pings within one process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from bench.bench_ingest import Worker
from bench.chaos import DiskFiller, FaultyProxy, IpCamera, WatchdogListener
from bench.common import machine, write_section
from bench.fleet_sim import SITE as FLEET_SITE
from bench.soak_fleet import SoakFleet
from bench.soak_releases import ReleaseKit, ota_reports
from tests.agent.broker import MosquittoBroker
from tests.agent.daemon.helpers import (
    Collector,
    DaemonProcess,
    config_dict,
    sampling_rules,
    synthetic_camera,
    write_config,
)

REPO = Path(__file__).resolve().parents[1]
SITE, DEVICE = "site1", "dev1"


def proc_figures(pid: int) -> Tuple[float, int]:
    try:
        rss = 0.0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                rss = int(line.split()[1]) / 1024
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0.0, 0


def stored_ids(index: Path) -> Dict[str, List[str]]:
    try:
        db = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return {"alerts": [], "samples": []}
    try:
        return {
            "alerts": [r[0] for r in db.execute("SELECT id FROM alerts WHERE device = ?", (DEVICE,))],
            "samples": [r[0] for r in db.execute("SELECT id FROM samples WHERE device = ?", (DEVICE,))],
            "drops": [tuple(r) for r in db.execute("SELECT reason, count FROM drops WHERE device = ?", (DEVICE,))],
        }
    except sqlite3.Error:
        return {"alerts": [], "samples": [], "drops": []}
    finally:
        db.close()


def corrupted_samples(observer: Collector) -> int:
    from agent.protocol import ProtocolError, ProtocolLimits, parse_sample

    bad = 0
    for _, topic, payload in observer.on("/samples"):
        try:
            parse_sample(topic, payload, ProtocolLimits())
        except ProtocolError:
            bad += 1
    return bad


class Soak:
    def __init__(
        self, root: Path, model: Path, seed: int, fault_every: float, fleet: int = 0, cycle: bool = False
    ) -> None:
        self.root = root
        self.cycle = cycle
        self._queue: List[str] = []
        self.rng = random.Random(seed)
        self.fault_every = fault_every
        self.started = time.monotonic()
        self.broker = MosquittoBroker(root / "broker", persistence=True)
        self.broker.start()
        self.proxy = FaultyProxy(self.broker.port)
        self.observer = Collector(self.broker.port, topic=f"edge/{SITE}/{DEVICE}/#", client_id="soak-observer")
        # the agent's whole state (spool, OTA state and staging, status file) on a small disk of its own
        self.disk = DiskFiller(root / "disk")
        self.agent_root = root / "disk" if self.disk.available else root / "agent"
        self.watchdog = WatchdogListener(root / "notify.sock")
        self.camera = IpCamera(fps=4.0)
        self.releases = ReleaseKit(root / "releases", model, self.agent_root / "ota", self.broker.port, SITE)
        self.fleet_size = fleet
        store = root / "store"
        self.index = store / "index.sqlite3"
        self.ingest = Worker(root, self.broker.port, "soak-ingest", store)
        self.configure_ingest()
        self.ingest.start()
        self.ingest.wait_subscribed(60)
        # after the ingest's first subscription: what a fleet publishes before it has a session is not queued
        self.fleet = SoakFleet(fleet, self.broker.port) if fleet else None
        self.model = model
        self.config_path = root / "agent.yaml"
        self.generation = 0
        self.events: List[Tuple[float, str]] = []
        self.samples: List[Dict[str, Any]] = []
        self.agent_pids: List[int] = []
        self.lives: List[Tuple[float, float]] = []  # (start, end) of each agent process, monotonic
        self.start_failures: List[Dict[str, Any]] = []
        self.camera_faults: List[Dict[str, Any]] = []  # kind, down_s, back_after_s (from the camera's return)
        self.disk_fills: List[Dict[str, Any]] = []
        self.last_status: Dict[int, Dict[str, Any]] = {}  # the latest status document of each agent process
        self.agent_rc: Optional[int] = None
        self.agent = self._start_agent()

    def configure_ingest(self) -> None:
        """This site and the fleet's, and one worker without a shared subscription: mosquitto 2.0 drops shared
        subscriptions at a restart (docs/CLOUD.md), which a soak with broker restarts would count as losses."""
        import yaml

        config = yaml.safe_load(self.ingest.config_path.read_text())
        config["ingest"]["sites"] = [SITE] + ([FLEET_SITE] if self.fleet_size else [])
        config["ingest"].pop("share_group", None)
        self.ingest.config_path.write_text(yaml.safe_dump(config))

    def _agent_config(self, cameras: bool) -> Path:
        # Each start renders other scenes (seeds shifted): a synthetic camera restarted with the same seed
        # would show the same frames again, and the store keeps one sample per image (duplicate_image).
        self.generation += 1
        rules = sampling_rules(per_minute=30, burst=5)
        configs = [synthetic_camera(f"cam{i}", seed=100 * self.generation + i, fps=4.0, **rules) for i in range(3)]
        configs.append(
            {
                "name": "ipcam",
                "fps_limit": 4.0,
                "source": {"type": "http", "url": self.camera.url, "open_timeout_s": 2, "read_timeout_s": 3},
                "stall_timeout_s": 2.0,
                "reconnect": {"initial_s": 0.2, "max_s": 2.0},
                "rules": rules,
            }
        )
        data = config_dict(self.agent_root, self.proxy.port, self.model, configs if cameras else [])
        data["spool"]["synchronous"] = "FULL"
        data["daemon"]["status_interval_s"] = 1.0
        data["ota"] = self.releases.ota_section()
        return write_config(self.config_path, data)

    def _start_agent(self, cameras: bool = True, timeout: float = 180) -> DaemonProcess:
        """Start the agent as systemd would (Restart=always, RestartSec=1): a start that exits (a full disk at
        start-up, say) is recorded and tried again until one runs."""
        config = self._agent_config(cameras)
        deadline = time.monotonic() + timeout
        while True:
            agent = DaemonProcess(config, env=self.watchdog.env)
            t0 = time.monotonic()
            try:
                agent.wait_running(60)
            except AssertionError as exc:  # it exited (or did not come up): what systemd would restart
                agent.close()
                self.start_failures.append(
                    {"t": t0 - self.started, "rc": agent.proc.returncode, "why": str(exc)[-300:]}
                )
                self.lives.append((t0, time.monotonic()))
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
                continue
            self.agent_pids.append(agent.proc.pid)
            self._life_start = t0
            return agent

    def _end_life(self) -> None:
        self.lives.append((self._life_start, time.monotonic()))

    def fault(self, spare_agent: bool = False) -> str:
        kinds = {
            "broker_restart": 3.0,
            "network_cut": 3.0,
            "network_stall": 3.0,
            "kill_agent": 0.0 if spare_agent else 2.0,
            "kill_ingest": 1.0,
            "camera_stall": 1.5,
            "camera_loss": 1.5,
            "disk_full": 1.0 if self.disk.available else 0.0,
            "push_good": 0.0 if self.releases.busy() else 2.0,
            "push_impostor": 0.0 if self.releases.busy() else 1.0,
            "push_foreign": 0.0 if self.releases.busy() else 1.0,
        }
        kind = self._next_kind(kinds)
        if kind == "broker_restart":
            self.broker.restart(down_for=self.rng.uniform(1, 5))
        elif kind == "network_cut":
            self.proxy.cut(self.rng.uniform(2, 10))
        elif kind == "network_stall":
            self.proxy.stall(self.rng.uniform(2, 10))
        elif kind == "kill_agent":
            self.agent.kill()
            self._end_life()
            self.agent.close()
            time.sleep(1)
            self.agent = self._start_agent()
        elif kind == "kill_ingest":
            assert self.ingest.proc is not None
            self.ingest.proc.kill()
            self.ingest.proc.wait(10)
            time.sleep(1)
            self.ingest.start()
            self.ingest.wait_subscribed(60)
        elif kind in ("camera_stall", "camera_loss"):
            down = self.rng.uniform(3, 15)
            (self.camera.stall if kind == "camera_stall" else self.camera.lose)(down)
            self.camera_faults.append(
                {"kind": kind, "down_s": down, "until": time.monotonic() + down, "back_after_s": None}
            )
        elif kind == "disk_full":
            hold = self.rng.uniform(5, 20)
            size = self.disk.fill(hold)
            self.disk_fills.append({"t": time.monotonic() - self.started, "hold_s": hold, "ballast_mb": size / 1e6})
        else:
            push = self.releases.push(kind[len("push_") :])
            print(f"[soak]           push {push.kind} {push.version}", flush=True)
        self.events.append((time.monotonic() - self.started, kind))
        return kind

    def _next_kind(self, weights: Dict[str, float]) -> str:
        """Drawn by weight; with ``cycle``, every kind in turn (a seeded shuffle, refilled when used up), so a
        short run meets each of them. A kind not possible now (a push while one is under way) is skipped."""
        if not self.cycle:
            return self.rng.choices(list(weights), list(weights.values()))[0]
        for _ in range(2 * len(weights)):
            if not self._queue:
                self._queue = [k for k, w in weights.items() if w > 0 or k.startswith("push")]
                self.rng.shuffle(self._queue)
            kind = self._queue.pop(0)
            if weights[kind] > 0:
                return kind
            self._queue.append(kind)  # later
        return "network_stall"

    def watch(self) -> None:
        """Between faults: the IP camera's recoveries, in seconds from its return until the agent has taken new
        frames from it (the agent's status, written every second)."""
        pending = [f for f in self.camera_faults if f["back_after_s"] is None and time.monotonic() >= f["until"]]
        if not pending:
            return
        status = self.agent.status()
        camera = status.get("cameras", {}).get("ipcam", {})
        now = (status.get("pid"), camera.get("frames", 0))
        for f in pending:
            if "frames_then" not in f:
                f["frames_then"] = now
            elif camera.get("state") == "streaming" and (now[0] != f["frames_then"][0] or now[1] > f["frames_then"][1]):
                f["back_after_s"] = time.monotonic() - f["until"]

    def sample(self) -> None:
        rss, fds = proc_figures(self.agent.proc.pid)
        status = self.agent.status()
        if status.get("pid") == self.agent.proc.pid:
            self.last_status[self.agent.proc.pid] = status
        spool = status.get("spool", {}) if isinstance(status.get("spool"), dict) else {}
        self.samples.append(
            {
                "t": time.monotonic() - self.started,
                "pid": self.agent.proc.pid,
                "rss_mb": rss,
                "fds": fds,
                "spool_items": spool.get("items", 0),
                "disk_free_mb": self.disk.free_bytes() / 1e6 if self.disk.available else None,
            }
        )

    def run(self, seconds: float) -> None:
        """Faults until ``seconds`` have passed; the agent is not killed in the last third (at least 6 min long
        in a full run), so that one agent process lives long enough for the memory figure."""
        deadline = time.monotonic() + seconds
        spare_from = time.monotonic() + seconds * 2 / 3
        next_fault = time.monotonic() + self.rng.expovariate(1 / self.fault_every)
        next_sample = time.monotonic()
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_sample:
                self.sample()
                self.releases.update(ota_reports(self.observer))  # a settled push frees the next one
                next_sample = now + 5
            if now >= next_fault:
                kind = self.fault(spare_agent=now >= spare_from)
                print(f"[soak] {now - self.started:7.1f} s  {kind}", flush=True)
                next_fault = time.monotonic() + self.rng.expovariate(1 / self.fault_every)
            self.watch()
            time.sleep(0.2)

    def drain(self, timeout: float = 240) -> bool:
        """Faults off and production stopped: the pushes under way settle (the agent keeps its cameras for
        that: probation judges a running pipeline), the agent is stopped (SIGTERM: its spool stays on disk)
        and started again without cameras, so that what it holds drains while nothing new is made; then wait
        until its spool is empty and the store has every alert and sample the broker delivered."""
        self.disk.free()
        settle_until = time.monotonic() + timeout
        while self.releases.busy(timeout_s=1e9) and time.monotonic() < settle_until:
            self.releases.update(ota_reports(self.observer))
            self.watch()
            time.sleep(1)
        # a camera fault injected just before the end: see its camera come back before the agent is stopped
        # (else its recovery was never looked for and read as "never came back")
        recover_until = time.monotonic() + 60
        while any(f["back_after_s"] is None for f in self.camera_faults) and time.monotonic() < recover_until:
            self.watch()
            time.sleep(0.5)
        if self.fleet is not None:
            self.fleet.stop_traffic()
        self.agent_rc, _ = self.agent.terminate(30)
        self._end_life()
        self.agent.close()
        self.agent = self._start_agent(cameras=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sample()
            status = self.agent.status()
            spool = status.get("spool", {})
            connected = bool(status.get("mqtt", {}).get("connected"))
            delivered = set(self.observer.ids("/alerts")) | set(self.observer.ids("/samples"))
            stored = stored_ids(self.index)
            have = set(stored["alerts"]) | set(stored["samples"])
            fleet_done = self.fleet is None or self.fleet.drained(self.index)
            if (
                connected
                and isinstance(spool, dict)
                and spool.get("items", 1) == 0
                and delivered <= have
                and fleet_done
            ):
                return True
            time.sleep(1)
        return False

    def close(self) -> None:
        self.agent.terminate(30)
        self._end_life()
        self.agent.close()
        if self.fleet is not None:
            self.fleet.close()
        self.ingest.stop()
        self.observer.close()
        self.proxy.close()
        self.camera.close()
        self.releases.close()
        self.broker.close()
        self.watchdog.close()
        self.disk.close()


def memory_growth(samples: List[Dict[str, Any]]) -> Tuple[Optional[float], float]:
    """RSS growth of the longest-lived agent process from its 5th minute on (None if none lived 6 min)."""
    by_pid: Dict[int, List[Dict[str, Any]]] = {}
    for s in samples:
        if s["rss_mb"]:
            by_pid.setdefault(s["pid"], []).append(s)
    longest = max(by_pid.values(), key=lambda v: v[-1]["t"] - v[0]["t"], default=[])
    if not longest:
        return None, 0.0
    life = longest[-1]["t"] - longest[0]["t"]
    after = [s for s in longest if s["t"] - longest[0]["t"] >= 300]
    if life < 360 or len(after) < 2:
        return None, life
    return (after[-1]["rss_mb"] - after[0]["rss_mb"]) / after[0]["rss_mb"] * 100, life


def plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    t = [s["t"] / 60 for s in samples]
    top.plot(t, [s["rss_mb"] for s in samples], ".-", label="agent RSS (MB)")
    top.set_ylabel("RSS, MB")
    top2 = top.twinx()
    top2.plot(t, [s["fds"] for s in samples], "g.", label="open fds")
    top2.set_ylabel("open file descriptors", color="g")
    bottom.plot(t, [s["spool_items"] for s in samples], "r.-")
    bottom.set_ylabel("spool items")
    bottom.set_xlabel("minutes")
    for at, kind in report["events"]:
        for ax in (top, bottom):
            ax.axvline(at / 60, color="grey", alpha=0.25, lw=0.8)
        if kind == "kill_agent":
            top.annotate("kill", (at / 60, 0), fontsize=6, color="grey")
    top.set_title("agent under faults (grey lines: faults)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def render(report: Dict[str, Any]) -> str:
    counts: Dict[str, int] = {}
    for _, kind in report["events"]:
        counts[kind] = counts.get(kind, 0) + 1
    a, s = report["alerts"], report["samples_"]
    growth = report["rss_growth_pct"]
    agent = report["agent"]
    lines = [
        "## Soak with faults (issue 13)",
        "",
        f"Machine: {report['machine']}. {report['minutes']:g} minutes: a real `edge-agent run` with 4 cameras "
        "(3 synthetic, 1 MJPEG-over-HTTP IP camera serving rendered factory scenes; INT8 demo model from a signed "
        "release, samples and alerts on; its state on a 192 MB disk of its own; sd_notify watchdog at 10 s), a "
        "loopback proxy between it and mosquitto, the real `edge-trainer serve`"
        + (f", and {report['fleet']['boxes']} simulated boxes beside it" if report["fleet"] else "")
        + f"; a fault every {report['fault_every']:.0f} s on average (seed {report['seed']}): "
        + ", ".join(f"{n} × {k.replace('_', ' ')}" for k, n in sorted(counts.items()))
        + " (none of the agent in the last third). Then the faults stop, the pushes under way settle, the agent is "
        "stopped (SIGTERM) and started again without cameras, and its spool drains"
        + ("." if report["drained"] else " (**it did not drain within the wait**)."),
        "",
        "| kind | delivered by the broker (unique) | duplicates | stored | lost | corrupted |",
        "|---|---:|---:|---:|---:|---:|",
        f"| alerts | {a['unique']:,} | {a['duplicates']:,} | {a['stored']:,} | **{a['lost']}** | — |",
        f"| samples | {s['unique']:,} | {s['duplicates']:,} | {s['stored']:,} | **{s['lost']}** | "
        f"**{report['corrupted']}** |",
    ]
    fleet = report["fleet"]
    if fleet:
        p, st = fleet["published"], fleet["stored"]
        lines += [
            f"| fleet alerts ({fleet['boxes']} boxes) | {p['alert']:,} published | — | {st['alert']:,} | "
            f"**{fleet['lost']['alert']}** | — |",
            f"| fleet samples | {p['sample']:,} published | — | {st['sample']:,} | **{fleet['lost']['sample']}** | — |",
        ]
    lines += [
        "",
        f"Left in the agent's spool at the end: {report['spool_left']}; spool high-water mark "
        f"{report['spool_high_water']:,} items. Agent processes: {len(report['agent_pids'])} (every kill restarts "
        f"it; starts that failed and were retried: {len(report['start_failures'])}); exit code of the last one with "
        f"cameras {report['agent_rc']} (SIGTERM). Ingest drops for the device: "
        f"{report['drops'] or 'none'}. RSS growth of the longest-lived agent process from its 5th minute "
        + (
            f"to its end: **{growth:+.1f} %** (target ≤ 5 %)"
            if growth is not None
            else f"on: not measured (no agent process lived 6 minutes; the longest {report['longest_life_s']:.0f} s)"
        )
        + f"; open fds {min(x['fds'] for x in report['samples'] if x['fds'])}-"
        f"{max(x['fds'] for x in report['samples'])}. Watchdog: {report['watchdog']['pings']:,} pings, "
        f"**{len(report['watchdog']['trips'])} trips**"
        + (f" {report['watchdog']['trips']}" if report["watchdog"]["trips"] else "")
        + ". Thread deaths reported: "
        + (", ".join(f"{k} {v}" for k, v in agent["thread_deaths"].items()) or "none")
        + ".",
        "",
    ]
    disk = report["disk"]
    if disk["available"]:
        fills = disk["fills"]
        lines.append(
            f"Disk full {len(fills)} times ({sum(f['hold_s'] for f in fills):.0f} s in all): spool writes refused "
            f"{agent['spool_write_errors']:,} times (items refused at the source while the disk was full: never "
            f"accepted, so not lost; counted by the agent), spool counters {agent['spool_counters'] or '{}'}."
        )
    else:
        lines.append(f"Disk filling not injected: the tmpfs could not be mounted ({disk['why_not']}).")
    faults = report["camera_faults"]
    if faults:
        backs = sorted(f["back_after_s"] for f in faults if f["back_after_s"] is not None)
        lines.append(
            f"IP camera: {sum(f['kind'] == 'camera_stall' for f in faults)} stalls and "
            f"{sum(f['kind'] == 'camera_loss' for f in faults)} losses (3-15 s); back in the pipeline "
            + (
                f"{backs[len(backs) // 2]:.1f} s (median), {backs[-1]:.1f} s (worst) after the camera returned"
                if backs
                else "never"
            )
            + f"; {len(faults) - len(backs)} not back; reconnects counted by the agent: {agent['ipcam_reconnects']}."
        )
    pushes = report["pushes"]
    if pushes:
        lines += [
            "",
            "| push | kind | outcome | phases seen (the box's ota/state reports) | last detail |",
            "|---|---|---|---|---|",
        ]
        for push in pushes:
            detail = push["detail"].replace("|", "/")[:120]
            lines.append(
                f"| {push['version']} | {push['kind']} | **{push['outcome']}** | "
                f"{' → '.join(push['phases'])} | {detail} |"
            )
    problems = failures(report)
    lines += [
        "",
        "Goals (0 lost, 0 corrupted, every bad push rejected, memory flat): "
        + ("**all met**." if not problems else "**not met**: " + "; ".join(problems) + "."),
        "",
        "![agent RSS, open fds and spool depth under faults](img/soak.png)",
        "",
        "Reproduce: `make setup && PYTHONPATH=. .venv/bin/python bench/soak.py --minutes 30 --write` (as root, for "
        "the tmpfs); raw figures in bench/results/soak.json; the suite runs a 1-minute version "
        "(tests/trainer/loop/test_soak.py).",
    ]
    return "\n".join(lines)


def agent_figures(soak: Soak) -> Dict[str, Any]:
    """What the agent counted itself, over its processes: spool counters persist across restarts (the last
    document has them all); the output writer's and the cameras' are per process (summed)."""
    statuses = list(soak.last_status.values())
    last_spool = next((s["spool"] for s in reversed(statuses) if isinstance(s.get("spool"), dict)), {})
    counters = last_spool.get("counters", {}) if isinstance(last_spool, dict) else {}

    def total(path: Tuple[str, ...]) -> int:
        out = 0
        for status in statuses:
            value: Any = status
            for key in path:
                value = value.get(key, {}) if isinstance(value, dict) else {}
            out += value if isinstance(value, int) else 0
        return out

    return {
        "spool_write_errors": total(("output", "spool_write_errors")),
        "spool_full": total(("output", "spool_full")),
        "queue_full_dropped": sum(
            total(("output", f"{k}_dropped_queue_full")) for k in ("alerts", "samples", "snapshots")
        ),
        "spool_counters": {k: v for k, v in counters.items() if k.startswith(("evicted", "refused_full", "write_"))},
        "ipcam_reconnects": total(("cameras", "ipcam", "reconnects")),
        "thread_deaths": {
            t["name"]: t["deaths"]
            for status in statuses
            for t in status.get("threads", [])
            if isinstance(t, dict) and t.get("deaths")
        },
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fault-every", type=float, default=20.0, help="Mean seconds between faults.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fleet", type=int, default=50, help="Simulated boxes beside the agent (0: none).")
    parser.add_argument("--cycle", action="store_true", help="Every fault kind in turn instead of by weight.")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "demo" / "demo-int8.onnx")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--keep", type=Path, help="Run in this (new) folder and keep it: logs, store, broker.")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True)
            tmp = str(args.keep)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
        soak = Soak(Path(tmp), args.model, args.seed, args.fault_every, fleet=args.fleet, cycle=args.cycle)
        try:
            print(f"[soak] running {args.minutes:.1f} min with faults ...", flush=True)
            soak.run(args.minutes * 60)
            print("[soak] faults off; pushes settling, then draining ...", flush=True)
            drained = soak.drain()
            stored = stored_ids(soak.index)
            alerts, samples = soak.observer.ids("/alerts"), soak.observer.ids("/samples")
            spool_left = soak.agent.status().get("spool", {}).get("items")
            corrupted = corrupted_samples(soak.observer)
            soak.releases.update(ota_reports(soak.observer))
            fleet = soak.fleet.report(soak.index) if soak.fleet else None
        finally:
            soak.close()
        growth, life = memory_growth(soak.samples)
        trips = soak.watchdog.trips(soak.lives)
        report: Dict[str, Any] = {
            "machine": machine(),
            "minutes": args.minutes,
            "fault_every": args.fault_every,
            "seed": args.seed,
            "drained": drained,
            "events": soak.events,
            "alerts": {
                "unique": len(set(alerts)),
                "duplicates": len(alerts) - len(set(alerts)),
                "stored": len(stored["alerts"]),
                "lost": len(set(alerts) - set(stored["alerts"])),
            },
            "samples_": {
                "unique": len(set(samples)),
                "duplicates": len(samples) - len(set(samples)),
                "stored": len(stored["samples"]),
                "lost": len(set(samples) - set(stored["samples"])),
            },
            "corrupted": corrupted,
            "drops": stored.get("drops", []),
            "spool_left": spool_left,
            "spool_high_water": max((s["spool_items"] for s in soak.samples), default=0),
            "agent_pids": soak.agent_pids,
            "agent_rc": soak.agent_rc,
            "start_failures": soak.start_failures,
            "rss_growth_pct": growth,
            "longest_life_s": life,
            "pushes": [p.as_dict() for p in soak.releases.pushes],
            "camera_faults": [
                {k: v for k, v in f.items() if k not in ("until", "frames_then")} for f in soak.camera_faults
            ],
            "disk": {"available": soak.disk.available, "why_not": soak.disk.why_not, "fills": soak.disk_fills},
            "watchdog": {
                "pings": sum(1 for _, m in soak.watchdog.messages if m == "WATCHDOG=1"),
                "trips": [(round(t - soak.started, 1), round(gap, 1)) for t, gap in trips],
            },
            "agent": agent_figures(soak),
            "fleet": fleet,
            "samples": soak.samples,
        }
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1, default=str))
    print(render(report))
    if args.write:
        plot(report, REPO / "docs" / "img" / "soak.png")
        write_section("soak", render(report))
        (REPO / "bench" / "results" / "soak.json").write_text(
            json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1, default=str) + "\n"
        )
    return 0 if not failures(report) else 1


def failures(report: Dict[str, Any]) -> List[str]:
    """What the soak's goals say went wrong (empty: all met)."""
    out = []
    if not report["drained"]:
        out.append("the spool did not drain")
    lost = report["alerts"]["lost"] + report["samples_"]["lost"] + (report["spool_left"] or 0)
    if lost:
        out.append(f"{lost} lost")
    if report["corrupted"]:
        out.append(f"{report['corrupted']} corrupted")
    growth = report["rss_growth_pct"]
    if growth is not None and growth > 5.0:
        out.append(f"RSS grew {growth:.1f} %")
    for push in report["pushes"]:
        if push["kind"] != "good" and push["outcome"] != "rejected":
            out.append(f"bad push {push['version']} ({push['kind']}): {push['outcome']}")
        if push["kind"] == "good" and push["outcome"] == "pending":
            out.append(f"good push {push['version']} never settled")
    fleet = report["fleet"]
    if fleet and (sum(fleet["lost"].values()) or fleet["unacked"]):
        out.append(f"fleet: lost {fleet['lost']}, unacked {fleet['unacked']}")
    if any(back is None for back in (f["back_after_s"] for f in report["camera_faults"])):
        out.append("the IP camera did not come back after a fault")
    return out


if __name__ == "__main__":
    sys.exit(main())
