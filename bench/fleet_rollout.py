"""A staged rollout through groups, on a simulated fleet (issue 13): the real ``trainer.rollout`` driver, the real
``edge-trainer serve`` filling the registry, one mosquitto, ``--boxes`` simulated boxes.

    PYTHONPATH=. .venv/bin/python bench/fleet_rollout.py [--boxes 300] [--write]

Stages: ``canary`` (group canary, 10 boxes), ``wide`` (group wide, the next 90), ``fleet`` (every box), each
promoted when all its boxes committed and ``--watch`` seconds passed with their figures inside the bounds.

Each simulated box (paho, its own network thread; the boxes in processes of 250, as one process of paho clients
stops near 340) does what an agent does on the wire: a retained status every
``--status-every`` seconds naming its groups, the model it runs and that model's figures (frames, detections,
confidence, alerts, uncertain frames since it started serving: the ``quality`` block the rollout judges); it
follows the highest counter among the fleet push and its groups' pushes, takes the retained chunks (each
verified with the agent's ``parse_model_chunk``), reports ``downloading`` → ``probation`` → ``committed`` on its
``ota/state`` topic (``--probation`` seconds of probation), then runs the new model; a ``rollback`` command that
names the running release (``if_active``) puts it back on the previous one (``rolled_back``). What is simulated:
the install itself (no TUF verification, no health check: tests/agent/ota cover those on a real agent) and the
figures (a box under the *bad* release raises 5 × the alerts, which the bounds must catch).

Two rollouts, in one run:

1. a good release (same figures): must reach every box, stage by stage; figures: time from start to each
   stage's commits and to the end;
2. a bad release: must halt in the canary, roll the canary back, and never reach a box outside it; figures:
   time from the canary's commits to the halt, and to every canary box back on the previous release.

``--write`` replaces the rollout section of docs/BENCHMARKS.md and writes bench/results/fleet_rollout.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from bench.bench_ingest import Worker
from bench.common import machine, write_section
from tests.agent.broker import MosquittoBroker

REPO = Path(__file__).resolve().parents[1]
SITE = "plant-1"
PREFIX = "edge"
FPS = 10.0


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ReleaseInfo:
    """What a box needs to know of a release to run it (the parent built it; a box does not unpack it)."""

    def __init__(self, name: str, version: str, counter: int, sha256: str, alert_factor: float) -> None:
        self.name, self.version, self.counter, self.sha256 = name, version, counter, sha256
        self.alert_factor = alert_factor

    def ref(self) -> Any:
        from agent.protocol import ReleaseRef

        return ReleaseRef(name=self.name, version=self.version, counter=self.counter)


class RolloutBox:
    """One simulated box: status with groups and figures, pushes and chunks, OTA reports, rollback."""

    def __init__(
        self, device: str, groups: List[str], port: int, releases: Dict[int, ReleaseInfo], probation_s: float
    ) -> None:
        import paho.mqtt.client as mqtt

        from agent.protocol import Topics

        self.device = device
        self.groups = groups
        self.topics = Topics(PREFIX, SITE, device)
        self.releases = releases
        self.probation_s = probation_s
        self.lock = threading.Lock()
        self.running = releases[min(releases)]  # the release it starts on
        self.previous: Optional[ReleaseInfo] = None
        self.serving_since = _now()
        self.refused: set = set()  # counters rolled back: never again
        self.transfer: Optional[Tuple[int, str, int]] = None  # (counter, push topic, total chunks)
        self.chunks: set = set()
        self.committed_at: Dict[int, float] = {}
        self.rolled_back_at: Dict[int, float] = {}
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()

    # ------------------------------------------------------------------ what it publishes

    def status(self) -> None:
        from agent.protocol import DeviceStatus, ModelRef, encode_json
        from agent.protocol.models import ModelQuality

        with self.lock:
            release, since = self.running, self.serving_since
        seconds = max(0.0, (_now() - since).total_seconds())
        frames = int(seconds * FPS)
        quality = ModelQuality(
            model_sha256=release.sha256,
            since=since,
            frames=frames,
            detections=2 * frames,
            confidence_sum=1.6 * frames,
            alerts=int(frames * release.alert_factor / 100),
            uncertain_frames=frames // 20,
        )
        status = DeviceStatus(
            device=self.device,
            site=SITE,
            state="online",
            agent_version="0.1.0",
            model=ModelRef(name=release.name, version=release.version, sha256=release.sha256),
            groups=self.groups,
            quality=quality,
            ts=_now(),
        )
        self.client.publish(self.topics.status, encode_json(status), qos=1, retain=True)

    def report(self, phase: str, release: ReleaseInfo, detail: Optional[str] = None) -> None:
        from agent.protocol import OtaStateReport, encode_json

        with self.lock:
            active = self.running
        message = OtaStateReport(
            id=uuid.uuid4().hex,
            device=self.device,
            phase=phase,
            release=release.ref(),
            active=active.ref(),
            detail=detail,
            ts=_now(),
        )
        self.client.publish(self.topics.ota_state, encode_json(message), qos=1)

    # ------------------------------------------------------------------ what it receives

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        for topic in self.topics.subscriptions(self.groups):
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        from agent.protocol import (
            ProtocolError,
            ProtocolLimits,
            Topics,
            parse_command,
            parse_model_chunk,
            parse_model_push,
        )

        limits = ProtocolLimits()
        topic, payload = message.topic, bytes(message.payload)
        try:
            if topic == self.topics.cmd:
                command = parse_command(topic, payload, limits)
                if getattr(command, "type", None) == "rollback":
                    self._rollback(command)
                return
            if topic.endswith("/models"):
                if not payload:
                    return
                push = parse_model_push(topic, payload, limits)
                counter = push.release.counter
                with self.lock:
                    newer = counter > self.running.counter and counter not in self.refused
                    busy = self.transfer is not None and self.transfer[0] >= counter
                if newer and not busy and push.chunks is not None and counter in self.releases:
                    with self.lock:
                        self.transfer = (counter, topic, push.chunks.total)
                        self.chunks = set()
                    client.subscribe(Topics.chunk_filter(topic, counter), qos=1)
                    self.report("downloading", self.releases[counter])
                return
            header, _ = parse_model_chunk(topic, payload, limits)  # digest checked
        except ProtocolError:
            return
        with self.lock:
            transfer = self.transfer
            if transfer is None or header.release.counter != transfer[0]:
                return
            self.chunks.add(header.index)
            done = len(self.chunks) == transfer[2]
            if done:
                self.transfer = None
        if done:
            client.unsubscribe(Topics.chunk_filter(transfer[1], transfer[0]))
            threading.Thread(target=self._install, args=(self.releases[transfer[0]],), daemon=True).start()

    def _install(self, release: ReleaseInfo) -> None:
        with self.lock:
            self.previous, self.running, self.serving_since = self.running, release, _now()
        self.report("probation", release)
        self.status()
        time.sleep(self.probation_s)
        with self.lock:
            still = self.running is release
        if still:
            self.report("committed", release, "probation passed")
            self.committed_at[release.counter] = time.time()

    def _rollback(self, command: Any) -> None:
        wanted = command.if_active
        with self.lock:
            running, previous = self.running, self.previous
            if previous is None or (wanted is not None and wanted.counter != running.counter):
                return
            self.refused.add(running.counter)
            self.running, self.previous, self.serving_since = previous, None, _now()
        self.report("rolled_back", running, command.reason)
        self.rolled_back_at[running.counter] = time.time()
        self.status()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ------------------------------------------------------------------ the boxes, in processes of PER_PROCESS

PER_PROCESS = 250  # paho's select() takes no descriptor above 1,023 and each client holds 3: ~340 per process


class BoxState:
    """What the parent reads of one box (a snapshot from its process)."""

    def __init__(self, running: int, committed_at: Dict[int, float], rolled_back_at: Dict[int, float]) -> None:
        self.running, self.committed_at, self.rolled_back_at = running, committed_at, rolled_back_at


def box_process(
    conn: Any,
    port: int,
    releases: Dict[int, ReleaseInfo],
    probation_s: float,
    status_every: float,
    boxes_spec: List[Tuple[str, List[str]]],
) -> None:
    """A share of the fleet in a spawned process: its boxes, their status ticker; answers "snapshot" with a
    :class:`BoxState` per box, ends on "stop". A death of the ticker is sent as ("error", text)."""
    boxes = [RolloutBox(device, groups, port, releases, probation_s) for device, groups in boxes_spec]
    for box in boxes:
        box.connected.wait(30)
    stop = threading.Event()
    errors: List[str] = []

    def statuses() -> None:
        # one status per box every status_every, spread evenly
        try:
            while True:
                for box in boxes:
                    box.status()
                    if stop.wait(status_every / len(boxes)):
                        return
        except BaseException as exc:
            errors.append(repr(exc))
            raise

    threading.Thread(target=statuses, name="statuses", daemon=True).start()
    conn.send("ready")
    while True:
        request = conn.recv()
        if request == "stop":
            break
        if errors:  # one answer per request: the error instead of the snapshot
            conn.send(("error", errors[0]))
            continue
        states = []
        for box in boxes:
            with box.lock:
                states.append(BoxState(box.running.counter, dict(box.committed_at), dict(box.rolled_back_at)))
        conn.send(states)
    stop.set()
    for box in boxes:
        box.close()
    conn.send("stopped")


class BoxProcesses:
    """The simulated fleet over ``ceil(n / PER_PROCESS)`` processes (one process of paho clients stops near
    340 boxes); :meth:`snapshot` gives every box's :class:`BoxState`, in box order."""

    def __init__(
        self,
        specs: List[Tuple[str, List[str]]],
        port: int,
        releases: Dict[int, ReleaseInfo],
        probation_s: float,
        status_every: float,
    ) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conns: List[Any] = []
        self.procs: List[Any] = []
        for k in range(0, len(specs), PER_PROCESS):
            parent, child = ctx.Pipe()
            args = (child, port, releases, probation_s, status_every, specs[k : k + PER_PROCESS])
            proc = ctx.Process(target=box_process, args=args, name=f"boxes-{k}", daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            if not conn.poll(120) or conn.recv() != "ready":
                raise RuntimeError("a process of simulated boxes did not come up")

    def snapshot(self) -> List[BoxState]:
        states: List[BoxState] = []
        for conn in self.conns:
            conn.send("snapshot")
        for proc, conn in zip(self.procs, self.conns):
            if not conn.poll(60):
                raise RuntimeError(f"{proc.name} does not answer (alive: {proc.is_alive()})")
            answer = conn.recv()
            if isinstance(answer, tuple):  # a silent death would leave the registry stale: raised, not hidden
                raise RuntimeError(f"{proc.name}: the status ticker died: {answer[1]}")
            states += answer
        return states

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send("stop")
            except OSError:
                pass
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


# ------------------------------------------------------------------ the releases and the driver


def build_releases(root: Path) -> Tuple[Dict[int, ReleaseInfo], Dict[int, Path]]:
    """Three signed releases of the demo model (1.0.0 the boxes run, 1.1.0 good, 1.2.0 bad), online bundles."""
    from trainer.release.build import ReleaseSpec, build_bundle, build_release, default_golden_images
    from trainer.release.keys import KeyRing, init_keys
    from trainer.release.push import bundle_manifest
    from trainer.release.repo import Repository

    init_keys(root / "keys")
    ring = KeyRing.load(root / "keys")
    repo = root / "repo"
    Repository(repo, ring).init()
    golden = default_golden_images(root, count=1)
    model = REPO / "models" / "demo" / "demo-int8.onnx"
    infos, bundles = {}, {}
    for i, (version, factor) in enumerate((("1.0.0", 1.0), ("1.1.0", 1.0), ("1.2.0", 5.0))):
        data = model.read_bytes().replace(b"trained on /work/data", f"trained on /work/v{i:03d}".encode(), 1)
        path = root / f"model-{version}.onnx"
        path.write_bytes(data)
        spec = ReleaseSpec(name="widget", version=version, channel="stable", files={"onnx": path}, golden=golden)
        build_release(Repository(repo, ring), spec)
        bundle = build_bundle(repo, ring, root / f"{version}.tar", "stable", trust="online")
        manifest, _ = bundle_manifest(bundle)
        infos[manifest.counter] = ReleaseInfo(
            "widget", version, manifest.counter, manifest.files["onnx"].sha256, factor
        )
        bundles[manifest.counter] = bundle
    return infos, bundles


def rollout_config(root: Path, port: int, boxes: int, watch_s: float) -> Any:
    from trainer.rollout.config import RolloutConfig

    return RolloutConfig.model_validate(
        {
            "state_dir": str(root / "rollouts"),
            "site": SITE,
            "broker": {"host": "127.0.0.1", "port": port},
            "stages": [
                {"name": "canary", "group": "canary", "min_committed": 10, "watch_s": watch_s},
                {"name": "wide", "group": "wide", "min_committed": 100, "watch_s": watch_s},
                {"name": "fleet", "group": None, "min_committed": boxes, "watch_s": 0},
            ],
            "bounds": {"min_frames": 100},
            "tick_s": 1.0,
        }
    )


def drive(rollout: Any, bundle: Path, timeout: float, fleet: BoxProcesses, counter: int) -> Dict[str, Any]:
    """Start a rollout and tick it once a second until it completes or halts (and the canary is back)."""
    t0 = time.time()
    rollout.start(bundle)
    events: List[Tuple[float, str, str]] = []
    seen = 0
    state: Dict[str, Any] = {}
    while time.time() - t0 < timeout:
        state = rollout.tick()
        for e in state.get("events", [])[seen:]:
            events.append((round(time.time() - t0, 1), e.get("event", ""), str(e.get("detail", ""))[:200]))
            print(
                f"[rollout] {time.time() - t0:6.1f} s  {e.get('event')}: {str(e.get('detail', ''))[:150]}", flush=True
            )
        seen = len(state.get("events", []))
        if state["state"] == "completed":
            break
        if state["state"] == "halted" and all(b.running != counter for b in fleet.snapshot()):
            break
        time.sleep(1.0)
    return {"t0": t0, "state": state.get("state"), "events": events, "halt": state.get("halt")}


def stage_of(index: int) -> str:
    return "canary" if index < 10 else "wide" if index < 100 else "fleet"


def run(boxes_n: int, watch_s: float, status_every: float, probation_s: float) -> Dict[str, Any]:
    from trainer.rollout.driver import MqttActions, Rollout
    from trainer.store import open_reader

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = MosquittoBroker(root / "broker")
        broker.start()
        store = root / "store"
        ingest = Worker(root, broker.port, "rollout-ingest", store)
        ingest.start()
        ingest.wait_subscribed(60)
        releases, bundles = build_releases(root / "releases")
        counters = sorted(releases)
        specs = [(f"box-{i:04d}", ["canary"] if i < 10 else ["wide"] if i < 100 else []) for i in range(boxes_n)]
        fleet = BoxProcesses(specs, broker.port, releases, probation_s, status_every)
        config = rollout_config(root, broker.port, boxes_n, watch_s)
        index = store / "index.sqlite3"
        try:
            deadline = time.time() + 120
            while time.time() < deadline:  # every box in the registry with its groups
                fleet.snapshot()  # raises if a ticker died
                rows = [r for r in _fleet(open_reader, index) if r.model_sha256]
                if len(rows) >= boxes_n:
                    break
                time.sleep(1)
            results = {}
            for name, counter in (("good", counters[1]), ("bad", counters[2])):
                rollout = Rollout(config, lambda: open_reader(index), lambda: MqttActions(config))
                try:
                    outcome = drive(rollout, bundles[counter], 900, fleet, counter)
                finally:
                    rollout.close()
                t0 = outcome["t0"]
                boxes = fleet.snapshot()  # figures judged on stale statuses would not be the rollout's: raises
                per_stage: Dict[str, List[float]] = {}
                for i, box in enumerate(boxes):
                    if counter in box.committed_at:
                        per_stage.setdefault(stage_of(i), []).append(box.committed_at[counter] - t0)
                outcome["committed_by_stage"] = {
                    stage: {"boxes": len(v), "first_s": round(min(v), 1), "last_s": round(max(v), 1)}
                    for stage, v in per_stage.items()
                }
                outcome["outside_canary_got_it"] = sum(
                    1 for i, b in enumerate(boxes) if i >= 10 and counter in b.committed_at
                )
                backs = [b.rolled_back_at[counter] - t0 for b in boxes if counter in b.rolled_back_at]
                outcome["rolled_back"] = {"boxes": len(backs), "last_s": round(max(backs), 1) if backs else None}
                outcome["running_at_end"] = sum(1 for b in boxes if b.running == counter)
                outcome["box_processes"] = len(fleet.procs)
                results[name] = outcome
                # the next rollout starts from a fleet whose figures are steady again
                time.sleep(2 * status_every)
        finally:
            fleet.close()
            ingest.stop()
            broker.close()
    return results


def _fleet(open_reader: Any, index: Path) -> List[Any]:
    from trainer.store import fleet

    try:
        db = open_reader(index)
    except Exception:
        return []
    try:
        return list(fleet(db, now=time.time(), site=SITE))
    except Exception:
        return []
    finally:
        db.close()


def render(report: Dict[str, Any]) -> str:
    good, bad = report["good"], report["bad"]
    lines = [
        "## Staged rollout through groups on a simulated fleet (issue 13)",
        "",
        f"Machine: {report['machine']}. {report['boxes']} simulated boxes (10 in group canary, 90 in group wide, "
        f"the rest in no group), statuses every {report['status_every']:g} s, {report['probation']:g} s of "
        f"probation; the real `trainer.rollout` driver (ticking every second) against the registry that the real "
        f"`edge-trainer serve` fills; stages canary → wide → fleet, each watched {report['watch']:g} s after its "
        "boxes committed. Release bundles of the demo INT8 model (1.2 MB) in retained 256 KiB chunks.",
        "",
        "| rollout | outcome | stage | boxes committed | first commit | last commit |",
        "|---|---|---|---:|---:|---:|",
    ]
    for name, outcome in (("good release", good), ("bad release (5 × alerts)", bad)):
        for stage, fig in outcome["committed_by_stage"].items():
            lines.append(
                f"| {name} | {outcome['state']} | {stage} | {fig['boxes']} | {fig['first_s']:.1f} s | "
                f"{fig['last_s']:.1f} s |"
            )
    halt_at = next((t for t, kind, _ in bad["events"] if kind == "halted"), None)
    done_at = next((t for t, kind, _ in good["events"] if kind == "completed"), None)
    lines += [
        "",
        f"Good release: **{good['state']}**"
        + (f" in {done_at:.0f} s" if done_at is not None else "")
        + f", running on {good['running_at_end']} of {report['boxes']} boxes at the end. Bad release: "
        f"**{bad['state']}**"
        + (f" {halt_at:.0f} s after its start" if halt_at is not None else "")
        + "; reason: "
        + "; ".join((bad.get("halt") or {}).get("reasons", [])[:2])[:300]
        + f"; canary boxes rolled back: {bad['rolled_back']['boxes']}"
        + (f" (the last {bad['rolled_back']['last_s']:.0f} s after the start)" if bad["rolled_back"]["last_s"] else "")
        + f"; boxes outside the canary that installed it: **{bad['outside_canary_got_it']}**; running it at the "
        f"end: {bad['running_at_end']}.",
        "",
        f"Reproduce: `PYTHONPATH=. .venv/bin/python bench/fleet_rollout.py --boxes {report['boxes']} --write`; raw "
        "figures in bench/results/fleet_rollout.json.",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--boxes", type=int, default=300)
    parser.add_argument("--watch", type=float, default=20.0, help="Seconds each stage is watched.")
    parser.add_argument("--status-every", type=float, default=5.0)
    parser.add_argument("--probation", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    if args.boxes < 101:
        parser.error("--boxes: at least 101 (10 canary, 90 wide, one more)")
    # the broker inherits this limit (one descriptor per box); each box process stays under select()'s 1,024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    results = run(args.boxes, args.watch, args.status_every, args.probation)
    report = {
        "machine": machine(),
        "boxes": args.boxes,
        "watch": args.watch,
        "status_every": args.status_every,
        "probation": args.probation,
        **results,
    }
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    print(render(report))
    if args.write:
        write_section("fleet-rollout", render(report))
        (REPO / "bench" / "results" / "fleet_rollout.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    good, bad = report["good"], report["bad"]
    ok = (
        good["state"] == "completed"
        and good["running_at_end"] == args.boxes
        and bad["state"] == "halted"
        and bad["outside_canary_got_it"] == 0
        and bad["running_at_end"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
