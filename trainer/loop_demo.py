"""``make loop-demo``: the whole loop on one machine, with the real parts, in the order an operator runs them.

::

    mosquitto ◄── edge-agent run (demo model 1.0.0, a synthetic camera in the DRIFTED domain, group canary)
        │ samples (uncertain, random), statuses, OTA reports
        ▼
    edge-trainer serve ──► sample store ──► edge-trainer label oracle (stand-in for human review)
                                              ──► edge-trainer round (fine-tune, export, gate on INT8, sign 1.1.0)
                                              ──► edge-trainer rollout start + watch (canary = this agent)
    edge-agent ◄── chunks of the signed 1.1.0 over MQTT ── verify (TUF) ── health check ── probation ── commit

It prints what it does as it goes, then the drifted-holdout and factory-holdout mAP50-95 of the shipped INT8
models before and after, the agent's alert and uncertain-frame rates under each model, and the time from
"round published" to the agent running the new model. Everything is written under ``--workdir``.

    python -m trainer.loop_demo [--workdir runs/loop-demo] [--samples 400] [--epochs 14]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from trainer.evaluate import evaluate as score
from trainer.rounds import list_rounds

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
DEMO = REPO / "models" / "demo"
SITE, DEVICE, CAMERA = "plant-1", "demo-box", "line-1"
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.0f} s] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(args: List[str], log: Optional[Path] = None, check: bool = True) -> int:
    """Run a project command (the same entry points an operator types), its output to ``log`` or ours."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", YOLO_OFFLINE="1")
    if log is None:
        code = subprocess.call(args, env=env)
    else:
        with open(log, "ab") as out:
            code = subprocess.call(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    if check and code != 0:
        raise SystemExit(
            f"loop-demo: {' '.join(map(str, args[:4]))} ... exited {code}" + (f" (see {log})" if log else "")
        )
    return code


def bin_of(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


# ------------------------------------------------------------------------------------------------ the parts


def ensure_data(log: Path) -> Dict[str, Path]:
    """The base set and the two holdouts (the demo model's own: make demo-model renders the same seeds)."""
    sets = {
        "factory-train": ("factory", 1, 900, ["--val-fraction", "0.1111"]),
        "factory-holdout": ("factory", 1000, 500, []),
        "drifted-holdout": ("drifted", 2000, 500, []),
    }
    out = {}
    for name, (domain, seed, count, extra) in sets.items():
        target = DATA / name / "data.yaml"
        if not target.is_file():
            say(f"rendering {name} ({count} frames of the {domain} domain, seed {seed})")
            run(
                [
                    bin_of("edge-trainer"),
                    "synth",
                    "--domain",
                    domain,
                    "--seed",
                    str(seed),
                    "--count",
                    str(count),
                    "--size",
                    "256x256",
                    "--out",
                    str(DATA / name),
                    "--overwrite",
                    *extra,
                ],
                log,
            )
        out[name] = target
    return out


def make_release(work: Path, log: Path) -> Dict[str, Path]:
    keys, repo = work / "keys", work / "repo"
    if not (repo / "metadata" / "1.root.json").is_file():
        say("release keys and a repository; the demo model signed as release 1.0.0 (what the box runs)")
        run([bin_of("edge-trainer"), "keys", "init", str(keys), "--repo", str(repo)], log)
        model = work / "release-1.0.0"
        model.mkdir(exist_ok=True)
        shutil.copyfile(DEMO / "demo.onnx", model / "model.onnx")
        shutil.copyfile(DEMO / "demo-int8.onnx", model / "model-int8.onnx")
        run(
            [
                bin_of("edge-trainer"),
                "release",
                "--model",
                str(model),
                "--name",
                "demo",
                "--version",
                "1.0.0",
                "--repo",
                str(repo),
                "--keys",
                str(keys),
                "--health-role",
                "onnx_int8",  # the box serves the INT8 model
            ],
            log,
        )
        usb = [bin_of("edge-trainer"), "usb-bundle", str(work / "usb-1.0.0"), "--repo", str(repo), "--keys", str(keys)]
        run(usb, log)
    return {"keys": keys, "repo": repo, "usb": work / "usb-1.0.0"}


class Mosquitto:
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        conf = work / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("loop-demo: mosquitto did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def trainer_yaml(
    work: Path, port: int, data: Dict[str, Path], release: Dict[str, Path], args: argparse.Namespace
) -> Path:
    from agent.synthetic import CLASS_NAMES  # noqa: PLC0415 (agent.synthetic imports OpenCV)

    cloud = work / "cloud"
    document = {
        "state_dir": str(cloud),
        "ingest": {"broker": {"host": "127.0.0.1", "port": port, "client_id": "loop-ingest"}, "sites": [SITE]},
        "store": {"path": str(cloud / "store"), "budget": {"min_free_bytes": 0}},
        "labelling": {"classes": list(CLASS_NAMES)},
        "http": {"enabled": False},
        "logging": {"level": "warning"},
        "rounds": {
            "workdir": str(cloud / "rounds"),
            "base_data": str(data["factory-train"]),
            "base_holdout": str(data["factory-holdout"]),
            "baseline": {
                "weights": str(DEMO / "demo.pt"),
                "onnx": str(DEMO / "demo.onnx"),
                "onnx_int8": str(DEMO / "demo-int8.onnx"),
            },
            "min_train_samples": 100,
            "min_holdout_samples": 30,
            "training": {"epochs": args.epochs, "replay_fraction": args.replay, "lr0": args.lr0, "workers": 2},
            "gate": {"min_new_domain_gain": args.min_gain, "max_base_regression": args.max_base_regression},
            "release": {"repo": str(release["repo"]), "keys": str(release["keys"])},
        },
        "rollout": {
            "state_dir": str(cloud / "rollouts"),
            "site": SITE,
            "broker": {"host": "127.0.0.1", "port": port},
            "stages": [{"name": "canary", "group": "canary", "min_committed": 1, "watch_s": args.watch_s}],
            # the drifted domain: the old model was nearly blind there, so its alert rate is no reference (runs
            # moved it by x0.5 and more); that change is the improvement, not a fault. Uncertain share,
            # confidence and FPS keep their default bounds.
            "bounds": {"min_frames": 100, "max_alert_ratio": 1000.0, "min_alert_ratio": 0.0},
            "tick_s": 2,
        },
    }
    path = work / "trainer.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def agent_yaml(work: Path, port: int, release: Dict[str, Path], args: argparse.Namespace) -> Path:
    box = work / "box"
    document = {
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "site": SITE,
            "device": DEVICE,
            "groups": ["canary"],
            "keepalive_s": 10,
            "backoff": {"initial_s": 0.2, "max_s": 2.0},
        },
        "model": {"path": str(DEMO / "demo-int8.onnx"), "backend": {"type": "onnxruntime", "intra_op_threads": 1}},
        "cameras": [
            {
                "name": CAMERA,
                "fps_limit": args.fps,
                "source": {
                    "type": "synthetic",
                    "domain": "drifted",
                    "seed": 7,
                    "width": 256,
                    "height": 256,
                    "fps": args.fps,
                },
                "rules": {
                    "alerts": [
                        {
                            "name": "defects",
                            "classes": ["bent_bolt", "cracked_washer"],
                            "min_confidence": 0.5,
                            "min_consecutive_frames": 2,
                            "cooldown_s": 5,
                        }
                    ],
                    # a demo wants its few hundred samples in minutes, not hours: higher rate limits than a
                    # site would run, and near-duplicates judged more finely (the belt moves 2 px a frame, so
                    # the default 4 bits of 64 suppress most frames; 2 bits measured ~105 samples/min at 12 fps)
                    "triage": {
                        "uncertainty": {"lo": 0.15, "hi": 0.5, "rate": {"per_minute": 150, "burst": 20}},
                        "random": {"probability": 0.1, "rate": {"per_minute": 30, "burst": 10}},
                        "near_duplicate": {"max_distance": 2},
                    },
                },
            }
        ],
        "spool": {"path": str(box / "spool.sqlite3")},
        "ota": {
            "state_dir": str(box / "ota"),
            "trusted_root": str(release["repo"] / "metadata" / "1.root.json"),
            "offline_root": str(release["repo"] / "offline" / "metadata" / "1.root.json"),
            "channel": "stable",
            "probation": {"period_s": args.probation_s},
            "health": {"model_role": "onnx_int8", "intra_op_threads": 1},
        },
        "output": {"alert_snapshots": False},
        "daemon": {"state_dir": str(box), "status_interval_s": 2},
        "logging": {"level": "warning"},
    }
    box.mkdir(parents=True, exist_ok=True)
    path = box / "agent.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def index_query(index: Path, sql: str, params: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    if not index.is_file():
        return []
    db = sqlite3.connect(str(index), timeout=10)
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()


def figures(index: Path, model_sha: str) -> Optional[Dict[str, float]]:
    """The agent's own figures under one model (its newest quality report, cumulative over that model's run)."""
    rows = index_query(
        index,
        "SELECT frames, status_time - since, alerts, uncertain, detections, confidence_sum "
        "FROM device_quality WHERE device = ? AND model_sha256 = ? ORDER BY status_time DESC "
        "LIMIT 1",
        (DEVICE, model_sha),
    )
    if not rows or not rows[0][0]:
        return None
    frames, seconds, alerts, uncertain, detections, conf = rows[0]
    return {
        "frames": frames,
        "minutes": seconds / 60,
        "alerts_per_1000_frames": 1000 * alerts / frames,
        "alerts_per_minute": alerts / max(seconds / 60, 1e-9),
        "uncertain_share": uncertain / frames,
        "mean_confidence": conf / detections if detections else 0.0,
    }


def agent_model(box: Path) -> Dict[str, Any]:
    try:
        return json.loads((box / "status.json").read_text()).get("model") or {}
    except (OSError, ValueError):
        return {}


def wait(predicate: Any, timeout: float, what: str, every: float = 1.0, show: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    last = 0.0
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"loop-demo: timed out after {timeout:.0f} s waiting for {what}")
        if show is not None and time.monotonic() - last > 15:
            last = time.monotonic()
            say(show())
        time.sleep(every)


def evaluate(model: Path, data: Path) -> float:
    return float(score(model, data, "val", threads=0, progress=False)["map50_95"])


# ------------------------------------------------------------------------------------------------ the demo


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.loop_demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "loop-demo")
    parser.add_argument("--samples", type=int, default=400, help="field samples to collect before the round")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--replay", type=float, default=0.8, help="replay share of the base set")
    parser.add_argument("--lr0", type=float, default=0.001)
    parser.add_argument("--min-gain", type=float, default=0.10, help="the gate's new-domain gain margin")
    parser.add_argument("--max-base-regression", type=float, default=0.01, help="the gate's base-holdout limit")
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument("--probation-s", type=float, default=20.0)
    parser.add_argument("--watch-s", type=float, default=20.0)
    parser.add_argument("--after-s", type=float, default=45.0, help="run the new model this long before measuring")
    args = parser.parse_args(argv)

    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log = work / "commands.log"
    say(f"loop demo in {work} (every command's output: {log})")
    data = ensure_data(log)
    release = make_release(work, log)
    broker = Mosquitto(work)
    say(f"mosquitto on 127.0.0.1:{broker.port}")
    config = trainer_yaml(work, broker.port, data, release, args)
    agent_config = agent_yaml(work, broker.port, release, args)
    say("commissioning the box: edge-agent ota install of the signed 1.0.0 bundle (verify, health check, commit)")
    run([bin_of("edge-agent"), "ota", "--config", str(agent_config), "install", str(release["usb"])], log)
    index = work / "cloud" / "store" / "index.sqlite3"
    processes: List[subprocess.Popen[bytes]] = []
    summary: Dict[str, Any] = {"workdir": str(work)}
    try:
        env = dict(os.environ, PYTHONUNBUFFERED="1", YOLO_OFFLINE="1")
        with open(work / "serve.log", "ab") as out:
            processes.append(
                subprocess.Popen(
                    [bin_of("edge-trainer"), "serve", "--config", str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        status_file = work / "cloud" / "ingest-loop-ingest.status.json"
        wait(
            lambda: status_file.is_file() and json.loads(status_file.read_text())["mqtt"]["subscribed"],
            60,
            "the ingest service",
        )
        say("edge-trainer serve is subscribed; starting the agent: demo model 1.0.0 on a DRIFTED synthetic camera")
        with open(work / "agent.log", "ab") as out:
            processes.append(
                subprocess.Popen(
                    [bin_of("edge-agent"), "run", "--config", str(agent_config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )

        def stored() -> int:
            rows = index_query(index, "SELECT count(*) FROM samples")
            return int(rows[0][0]) if rows else 0

        wait(
            lambda: stored() >= args.samples,
            900,
            f"{args.samples} samples",
            every=2,
            show=lambda: f"  {stored()} of {args.samples} misdetection samples stored",
        )
        old_sha = agent_model(work / "box").get("sha256")
        by_reason = dict(index_query(index, "SELECT reason, count(*) FROM samples GROUP BY reason"))
        say(f"{stored()} samples stored ({by_reason}); the oracle labels them (a stand-in for human review)")
        run([bin_of("edge-trainer"), "label", "oracle", "--config", str(config)], log)
        say("learning round: field samples + replay -> fine-tune -> export FP32 + INT8 -> gate (INT8) -> sign")
        code = run([bin_of("edge-trainer"), "round", "--config", str(config)], check=False)
        published_at = time.monotonic()

        record = list_rounds(work / "cloud" / "rounds")[-1]
        summary["round"] = {k: record.get(k) for k in ("id", "state", "reasons", "gate", "release", "steps")}
        summary["round"]["report"] = (record.get("report") or {}).get("markdown")
        if code != 0:
            say(f"the round did not publish ({record['state']}): {'; '.join(record.get('reasons', []))}")
            return 1
        new_version = record["release"]["version"]
        say(f"published {record['release']['name']} {new_version}; rolling out to the canary group (this agent)")
        run([bin_of("edge-trainer"), "rollout", "start", "--config", str(config)], log)
        with open(work / "rollout.log", "ab") as out:
            watcher = subprocess.Popen(
                [bin_of("edge-trainer"), "rollout", "watch", "--config", str(config), "--max-minutes", "10"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        processes.append(watcher)
        wait(
            lambda: agent_model(work / "box").get("version") == new_version,
            300,
            f"the agent running {new_version}",
            show=lambda: f"  agent runs {agent_model(work / 'box').get('version')}",
        )
        summary["published_to_running_s"] = round(time.monotonic() - published_at, 1)
        new_sha = agent_model(work / "box").get("sha256")
        say(
            f"the agent runs {new_version} {summary['published_to_running_s']} s after the round published; "
            f"measuring it for {args.after_s:.0f} s"
        )
        time.sleep(args.after_s)
        code = watcher.wait(600)
        summary["rollout"] = {0: "completed", 1: "halted", 3: "out of time"}.get(code, f"exit {code}")
        candidate = record["candidate"]
        say("scoring the shipped INT8 models on the drifted and factory holdouts (agent engine, Ultralytics metrics)")
        summary["map50_95"] = {
            "drifted_holdout": {
                "before": evaluate(DEMO / "demo-int8.onnx", data["drifted-holdout"]),
                "after": evaluate(Path(candidate["onnx_int8"]), data["drifted-holdout"]),
            },
            "factory_holdout": {
                "before": record["gate"]["figures"]["base_before"],
                "after": record["gate"]["figures"]["base_after"],
            },
            "field_holdout": {
                "before": record["gate"]["figures"]["new_domain_before"],
                "after": record["gate"]["figures"]["new_domain_after"],
            },
        }
        summary["agent"] = {"before": figures(index, old_sha or ""), "after": figures(index, new_sha or "")}
        summary["elapsed_s"] = round(time.monotonic() - STARTED, 1)
        (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print_summary(summary)
        return 0
    finally:
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        broker.stop()


def print_summary(summary: Dict[str, Any]) -> None:
    m = summary["map50_95"]
    print()
    print("closed loop, end to end:")
    for key, title in (
        ("drifted_holdout", "drifted holdout (500 rendered scenes)"),
        ("factory_holdout", "factory holdout (500 rendered scenes)"),
        ("field_holdout", "field holdout (the agent's samples, never trained on)"),
    ):
        before_map, after_map = m[key]["before"], m[key]["after"]
        print(f"  {title:<58} mAP50-95 {before_map:.3f} -> {after_map:.3f} ({after_map - before_map:+.3f})")
    before, after = summary["agent"]["before"], summary["agent"]["after"]
    if before and after:
        print(
            f"  agent alerts per 1000 frames {before['alerts_per_1000_frames']:.1f} -> "
            f"{after['alerts_per_1000_frames']:.1f}; uncertain frames {before['uncertain_share']:.1%} -> "
            f"{after['uncertain_share']:.1%}; "
            f"mean confidence {before['mean_confidence']:.2f} -> {after['mean_confidence']:.2f}"
        )
    print(
        f"  round published -> agent running the new model: {summary['published_to_running_s']} s; "
        f"rollout {summary['rollout']}; whole demo {summary['elapsed_s'] / 60:.1f} min"
    )
    print(f"  round report: {summary['round']['report']}")


if __name__ == "__main__":
    sys.exit(main())
