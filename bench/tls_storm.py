"""A mutual-TLS connect storm on the shipped broker configuration (issue 13): ``N`` boxes, each with its own
client certificate from the site CA (``edge-trainer devices provision``), connect to deploy/mosquitto as
shipped (TLS 1.2+, ``require_certificate``, the CN as username, the ACL and the CRL), all at once; then the
broker restarts and every box reconnects at the same moment (paho's reconnect: 1 s, then doubling; no
jitter, so a worse storm than the agent's jittered backoff).

    PYTHONPATH=. .venv/bin/python bench/tls_storm.py [--sizes 300,1000] [--write]

Figures per N: time until every box holds a CONNACK (cold start, and after the restart), mosquitto's CPU
seconds over each storm (the handshakes are on its single thread) and its RSS after. The clients run on the
same 2 cores (one paho thread each, in processes of 250), so the times are an upper bound of what the broker
alone needs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from bench.common import machine, write_section

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


class Box:
    def __init__(self, device: str, port: int, context: Any) -> None:
        import paho.mqtt.client as mqtt

        self.connects = 0
        self.refused: List[int] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5
        )
        self.client.tls_set_context(context)
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(1, 30)
        self.client.connect_async("localhost", port, keepalive=60)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self.lock:
            if getattr(reason, "is_failure", False):
                self.refused.append(reason.value)
            else:
                self.connects += 1


PER_PROCESS = 250  # paho's select() takes no descriptor above 1,023 and each client holds 3: ~340 per process


def client_process(conn: Any, port: int, pki: str, devices: List[str]) -> None:
    """One process of simulated boxes: connect on "start", report (connected once, twice, refused) as it
    changes, disconnect on "stop". Runs in a spawned process (the parent's paho and ssl state stay there)."""
    import ssl

    boxes = []
    for device in devices:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=f"{pki}/ca.crt")
        context.load_cert_chain(f"{pki}/devices/{device}.crt", f"{pki}/devices/{device}.key")
        boxes.append(Box(device, port, context))
    conn.send("ready")
    assert conn.recv() == "start"
    for box in boxes:
        box.client.loop_start()
    last = None
    while not conn.poll(0.05):
        now = (
            sum(b.connects >= 1 for b in boxes),
            sum(b.connects >= 2 for b in boxes),
            sum(len(b.refused) for b in boxes),
        )
        if now != last:
            conn.send(now)
            last = now
    for box in boxes:
        box.client.disconnect()
        box.client.loop_stop()
    conn.send("stopped")


class ClientProcesses:
    """``n`` boxes over ``ceil(n / PER_PROCESS)`` processes; :meth:`counts` sums what they last reported."""

    def __init__(self, n: int, port: int, pki: Path) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        devices = [f"box-{i:04d}" for i in range(n)]
        self.conns: List[Any] = []
        self.procs: List[Any] = []
        self.last: List[Any] = []
        for k in range(0, n, PER_PROCESS):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=client_process, args=(child, port, str(pki), devices[k : k + PER_PROCESS]), daemon=True
            )
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
            self.last.append((0, 0, 0))
        for conn in self.conns:
            if not conn.poll(120) or conn.recv() != "ready":
                raise RuntimeError("a client process did not come up")

    def start(self) -> None:
        for conn in self.conns:
            conn.send("start")

    def counts(self) -> Any:
        for i, conn in enumerate(self.conns):
            while conn.poll():
                message = conn.recv()
                if isinstance(message, tuple):
                    self.last[i] = message
        return tuple(sum(c[k] for c in self.last) for k in range(3))

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send("stop")
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


def storm(n: int) -> Dict[str, Any]:
    from tests.agent.broker import wait_port
    from tests.deploy.test_broker_acl import SiteBroker
    from trainer.commands.devices import main as devices_main

    with tempfile.TemporaryDirectory() as tmp:
        site = SiteBroker(Path(tmp))
        t = time.monotonic()
        for i in range(n):
            with contextlib.redirect_stdout(io.StringIO()):
                assert devices_main(["devices", "provision", "--pki", str(site.pki), f"box-{i:04d}"]) == 0
        provision_s = time.monotonic() - t
        site.broker.start()
        wait_port(site.ops_port)
        clients = ClientProcesses(n, site.tls_port, site.pki)
        try:
            figures: Dict[str, Any] = {
                "boxes": n,
                "client_processes": len(clients.procs),
                "provision_ms_per_box": round(1000 * provision_s / n, 1),
            }
            for phase in ("cold", "after_restart"):
                pid = site.broker.proc.pid
                cpu0, t0 = cpu_seconds(pid), time.monotonic()
                which = 0 if phase == "cold" else 1
                if phase == "cold":
                    clients.start()
                deadline = t0 + 300
                counts = clients.counts()
                while time.monotonic() < deadline and counts[which] < n:
                    time.sleep(0.05)
                    counts = clients.counts()
                figures[phase] = {
                    "connected": counts[which],
                    "all_in_s": round(time.monotonic() - t0, 2) if counts[which] == n else None,
                    "broker_cpu_s": round(cpu_seconds(pid) - cpu0, 2),
                    "broker_rss_mb": round(rss_mb(pid), 1),
                    "refused": counts[2],
                }
                print(f"[tls-storm] {n} boxes {phase}: {figures[phase]}", flush=True)
                if phase == "cold":
                    site.broker.restart(down_for=2.0)  # every box loses its connection at once
            return figures
        finally:
            clients.close()
            site.broker.close()


def render(report: Dict[str, Any]) -> str:
    lines = [
        "## Mutual-TLS connect storm on the shipped broker configuration (issue 13)",
        "",
        f"Machine: {report['machine']}. deploy/mosquitto/mosquitto.conf as shipped (ports and paths rewritten): "
        "TLS with `require_certificate`, the certificate's CN as the username, the ACL and the site CRL; one "
        "client certificate per box from `edge-trainer devices provision` (ECDSA P-256). Every box connects at "
        "once (cold), then the broker restarts (down 2 s) and every box reconnects at once (paho: 1 s, then "
        "doubling, no jitter). The clients share the machine's 2 cores with the broker (one Python thread each).",
        "",
        "| boxes | cold: all connected in | broker CPU | after restart: all in | broker CPU | broker RSS |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        cold, again = row["cold"], row["after_restart"]

        def when(p: Dict[str, Any], n: int = row["boxes"]) -> str:
            return f"{p['all_in_s']:.1f} s" if p["all_in_s"] is not None else f"{p['connected']} of {n}"

        lines.append(
            f"| {row['boxes']:,} | {when(cold)} | {cold['broker_cpu_s']:.1f} s | {when(again)} | "
            f"{again['broker_cpu_s']:.1f} s | {again['broker_rss_mb']:.0f} MB |"
        )
    lines += [
        "",
        "Broker CPU per handshake: "
        + ", ".join(f"{1000 * r['cold']['broker_cpu_s'] / r['boxes']:.1f} ms at {r['boxes']:,}" for r in report["rows"])
        + f". The clients run in processes of {PER_PROCESS} (one process of paho clients stops near 340: its "
        "select() takes no descriptor above 1,023). Reproduce: "
        "`PYTHONPATH=. .venv/bin/python bench/tls_storm.py --write`; raw figures in bench/results/tls_storm.json.",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="300,1000,2000")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    # each paho client holds 3 descriptors (its socket and a wake-up pair): the default 1,024 stops the
    # simulator at about 340 boxes, long before the broker (which raises its own limit as root)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    rows = [storm(int(n)) for n in args.sizes.split(",")]
    report = {"machine": machine(), "rows": rows}
    print(render(report))
    if args.write:
        write_section("tls-storm", render(report))
        (REPO / "bench" / "results" / "tls_storm.json").write_text(json.dumps(report, indent=1) + "\n")
    ok = all(r[p]["connected"] == r["boxes"] for r in rows for p in ("cold", "after_restart"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
